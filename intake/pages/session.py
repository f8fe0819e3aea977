"""The visitor's session: a signed cookie, its CSRF token, who is signed in, codes unlocked.

The cookie (``nwd_session``) is Starlette's ``SessionMiddleware``: JSON signed with
itsdangerous under a key derived from ``NWD_REFERENCE_KEY`` (HKDF, its own ``info``), HttpOnly,
``SameSite=Lax``, ``Secure`` in production. It holds no more than the visitor already has:
the CSRF token of their forms, the access token of their sign-in (verified again on every
use, exactly as the API verifies a bearer token), and the access codes they typed or were
shown, by reference. It is signed, not encrypted: nothing in it is a secret from the visitor.

Every form that changes something carries :func:`csrf_token` in a hidden ``csrf_token``
field; :func:`csrf_ok` compares it in constant time. ``SameSite=Lax`` already keeps the cookie
off a cross-site POST; the token is the second lock.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import FastAPI, Request
from starlette.middleware.sessions import SessionMiddleware

SESSION_COOKIE = "nwd_session"
SESSION_MAX_AGE_S = 8 * 3600
"""A working day: then the visitor signs in again (their access codes still work)."""
MAX_CODES = 20
"""Most access codes one session remembers (the oldest is forgotten first)."""
CSRF_FIELD = "csrf_token"


def session_key(reference_key: bytes) -> bytes:
    """The cookie's signing key: HKDF-SHA256 of the reference key, for this use only."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"no-wrong-door pages session v1").derive(reference_key)


def install(app: FastAPI, reference_key: bytes, *, https_only: bool) -> None:
    app.add_middleware(SessionMiddleware, secret_key=session_key(reference_key).hex(),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE_S,
                       same_site="lax", https_only=https_only)


def _session(request: Request) -> dict[str, Any]:
    if "session" not in request.scope:
        return {}  # an app without the middleware (the JSON API's own tests)
    return request.session


def csrf_token(request: Request) -> str:
    session = _session(request)
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(request: Request, form: dict[str, list[str]]) -> bool:
    expected = _session(request).get("csrf")
    given = (form.get(CSRF_FIELD) or [""])[0]
    return isinstance(expected, str) and hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Visitor:
    """Who is signed in, as their token said at sign-in (shown, never trusted: every
    decision verifies :func:`bearer` again)."""

    subject: str
    name: str
    roles: tuple[str, ...] = ()


def visitor(request: Request) -> Visitor | None:
    user = _session(request).get("user")
    if not isinstance(user, dict):
        return None
    return Visitor(subject=str(user.get("sub", "")), name=str(user.get("name") or
                   user.get("sub", "")), roles=tuple(user.get("roles") or ()))


def bearer(request: Request) -> str | None:
    """The signed-in visitor's access token, for the same checks as an API bearer token."""
    token = _session(request).get("token")
    return token if isinstance(token, str) else None


def sign_in(request: Request, *, token: str, subject: str, name: str,
            roles: tuple[str, ...]) -> None:
    session = _session(request)
    session["token"] = token
    session["user"] = {"sub": subject, "name": name, "roles": list(roles)}
    session["csrf"] = secrets.token_urlsafe(32)  # a new identity gets a new token


def sign_out(request: Request) -> None:
    session = _session(request)
    for key in ("token", "user"):
        session.pop(key, None)


def remember_code(request: Request, reference: str, code: str) -> None:
    session = _session(request)
    codes = dict(session.get("codes") or {})
    codes.pop(reference, None)
    codes[reference] = code
    while len(codes) > MAX_CODES:
        codes.pop(next(iter(codes)))
    session["codes"] = codes


def access_code(request: Request, reference: str) -> str | None:
    code = (_session(request).get("codes") or {}).get(reference)
    return code if isinstance(code, str) else None
