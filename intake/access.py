"""Who may follow a request: its owner's token or its one-time access code, nobody else.

A submission is made signed in (``Authorization: Bearer <access token>``: the token's subject
owns the request) or without an account: then the 202 answer carries an **access code**
(192 random bits, shown once). Status, answers and cancellation need one of the two::

    caller ── Bearer token? ── verify (runtime.identity) ── invalid ──────────────▶ 401
      │                              │ valid: HMAC(issuer, sub) = the owner's? ── yes ──▶ ok
      └── X-Access-Code? ── HMAC(reference, code) = the stored one? ─────────── yes ──▶ ok
    anything else (no credential, another citizen, a wrong code, no such request) ────▶ 404

- **Nothing secret is stored.** The read model keeps HMACs keyed with the reference key
  (``NWD_REFERENCE_KEY``): of the owner's issuer and subject, and of the code bound to its
  reference (:mod:`readmodel.access`). Comparisons are ``hmac.compare_digest``; a reference
  without a row is compared against a dummy value, so the answer takes as long.
- **A stranger learns nothing.** The refusal is the very 404 a reference that does not exist
  gets (same status, same body): :func:`unknown_request`.
- **Guessing is rate-limited** in PostgreSQL: :data:`FAILURE_LIMIT` refusals within
  :data:`FAILURE_WINDOW` from one client address, or with codes for one reference, and the
  next attempts get ``429`` with ``Retry-After`` until the oldest leaves the window. A
  verified owner's token is not held back by the per-reference count (a token cannot be
  guessed), so a stranger hammering a reference cannot lock its owner out.
- **References are unguessable**: HMAC of the service and the idempotency key under the same
  server key (:func:`runtime.messages.request_reference`), so knowing one reference, or how
  they are made, gives no other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse

from intake import errors
from readmodel.access import AccessStore
from runtime.identity import (
    InvalidToken,
    IssuerUnavailable,
    Principal,
    TokenVerifier,
    bearer_token,
)

log = structlog.get_logger(__name__)

ACCESS_CODE_HEADER = "X-Access-Code"
ACCESS_CODE_BYTES = 24
"""192 bits of randomness (the issue asks for at least 128)."""
FAILURE_LIMIT = 10
FAILURE_WINDOW = timedelta(minutes=5)
_SCOPE_MAX = 160
"""A scope names a client address or a reference; longer input is cut (it is a key only)."""
_DUMMY = b"\0" * 32


def unknown_request(reference: str) -> JSONResponse:
    """The one 404 of a request that does not exist, or that the caller may not see."""
    return errors.error(404, "unknown_request", f"no request {reference!r}")


def invalid_token(reason: str) -> JSONResponse:
    """401 for a bearer token that cannot be trusted (RFC 6750's ``invalid_token``)."""
    # a header value is ASCII without quotes: a reason naming something the caller sent must
    # not turn the refusal into a 500 (or break out of the quoted string)
    description = reason.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "/")
    return errors.error(401, "invalid_token", reason, headers={
        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'})


def token_required(what: str) -> JSONResponse:
    return errors.error(401, "token_required", f"{what} needs a bearer access token",
                        headers={"WWW-Authenticate": "Bearer"})


def issuer_unavailable() -> JSONResponse:
    return errors.unavailable("the identity provider")


class AccessKeys:
    """The HMACs of owners and access codes, keyed with the server's reference key."""

    def __init__(self, reference_key: bytes) -> None:
        self._key = hashlib.sha256(b"nwd-request-access\0" + reference_key).digest()

    def owner(self, issuer: str, subject: str) -> bytes:
        return hmac.new(self._key, f"owner\0{issuer}\0{subject}".encode(), "sha256").digest()

    def code(self, reference: str, code: str) -> bytes:
        return hmac.new(self._key, f"code\0{reference}\0{code}".encode(), "sha256").digest()


@dataclass(frozen=True)
class Grant:
    """What a new request's submitter gets: the code (None when signed in, or when the
    request already had its access row)."""

    granted: bool
    access_code: str | None


class RequestAccess:
    """The front door's access policy over the read model's access tables.

    Args:
        store: the tables; owned by the caller.
        verifier: the trusted issuer's token verifier; owned by the caller.
        reference_key: the server secret (``NWD_REFERENCE_KEY``).
        failure_limit, failure_window: the rate limit of refused attempts.
    """

    def __init__(self, store: AccessStore, verifier: TokenVerifier, reference_key: bytes, *,
                 failure_limit: int = FAILURE_LIMIT,
                 failure_window: timedelta = FAILURE_WINDOW) -> None:
        self.store = store
        self.verifier = verifier
        self.keys = AccessKeys(reference_key)
        self.failure_limit = failure_limit
        self.failure_window = failure_window

    # ---- granting -----------------------------------------------------------------------

    async def grant(self, reference: str, owner: Principal | None) -> Grant:
        """Write a new request's access row: its owner's HMAC, or a fresh code's."""
        code = None if owner is not None else secrets.token_urlsafe(ACCESS_CODE_BYTES)
        granted = await self.store.grant(
            reference,
            owner_hash=self.keys.owner(self.verifier.issuer, owner.subject) if owner else None,
            code_hash=self.keys.code(reference, code) if code is not None else None)
        return Grant(granted, code if granted else None)

    async def revoke(self, reference: str) -> None:
        await self.store.revoke(reference)

    # ---- checking -----------------------------------------------------------------------

    async def principal(self, request: Request) -> Principal | JSONResponse | None:
        """The verified principal of the request's bearer token; None without one; a 401
        (or 503 when the issuer cannot be reached) for a token that fails."""
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return None
        try:
            return await self.verifier.verify(token)
        except InvalidToken as exc:
            log.info("token_refused", reason=exc.reason, path=request.url.path)
            return invalid_token(exc.reason)
        except IssuerUnavailable:
            return issuer_unavailable()

    async def check(self, reference: str, request: Request) -> JSONResponse | None:
        """None when the caller may see ``reference``; else the answer to give (404, 401,
        429 or 503). Every refusal that is not a bad token counts towards the rate limit."""
        principal = await self.principal(request)
        if isinstance(principal, JSONResponse):
            return principal
        return await self.check_credentials(
            reference, principal=principal, code=request.headers.get(ACCESS_CODE_HEADER.lower()),
            client_host=request.client.host if request.client else "unknown")

    async def check_credentials(self, reference: str, *, principal: Principal | None,
                                code: str | None, client_host: str) -> JSONResponse | None:
        """:meth:`check` once the credentials are read: a verified ``principal`` (or None),
        the access ``code`` given (or None), the caller's address for the rate limit. The
        pages call it with the session's token and codes; the answers are the API's."""
        address = _scope("address", client_host)
        per_reference = _scope("reference", reference)
        scopes = [address] if principal is not None and not code else [address, per_reference]
        throttles = await self.store.throttles(scopes, self.failure_window)
        held = {scope: t for scope, t in throttles.items() if t.failures >= self.failure_limit}
        if address in held:  # this caller guessed too often: nothing is even checked
            return self._limited(reference, held[address].retry_after_s)
        row = await self.store.get(reference)
        allowed = False
        if principal is not None:
            expected = row.owner_hash if row is not None and row.owner_hash else _DUMMY
            given = self.keys.owner(self.verifier.issuer, principal.subject)
            allowed = hmac.compare_digest(expected, given) and row is not None
        if not allowed and code is not None:
            expected = row.code_hash if row is not None and row.code_hash else _DUMMY
            allowed = hmac.compare_digest(
                expected, self.keys.code(reference, code)) and row is not None
        if allowed:
            # a reference others have guessed at still opens to its own credential: strangers
            # must not be able to lock a citizen out of their request
            return None
        if per_reference in held:
            await self.store.record_failure([address], self.failure_window)
            return self._limited(reference, held[per_reference].retry_after_s)
        await self.store.record_failure([address, per_reference], self.failure_window)
        log.info("access_refused", reference=reference,
                 credential="token" if principal else "code" if code else "none")
        return unknown_request(reference)

    @staticmethod
    def _limited(reference: str, wait: int) -> JSONResponse:
        log.warning("access_rate_limited", reference=reference)
        return errors.error(429, "too_many_attempts", (
            f"too many refused attempts; try again in {wait} s"),
            headers={"Retry-After": str(wait)})


def _scope(kind: str, value: str) -> str:
    return f"{kind}:{value[:_SCOPE_MAX]}"
