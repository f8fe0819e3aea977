"""A real OpenID Connect provider over HTTP for the operators' tests, and tokens from it.

``oidc-provider-mock`` (PyPI) serves discovery, JWKS and the authorization-code flow on a
free port in a thread of the test process. :meth:`Provider.token` signs a user in through
that flow (the sign-in form's POST, then the token endpoint) and returns the signed JWT the
provider issues for them, whose claims carry the user's ``roles``. :class:`JwksVerifier`
verifies such a token with PyJWT against the provider's published keys — the shape of the
engine's own verifier (:class:`intake.codec_server.OperatorTokens`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from oidc_provider_mock import User, run_server_in_thread

from runtime.identity import InvalidToken, IssuerUnavailable

CLIENT_ID = "nwd-temporal-ui"
REDIRECT_URI = "http://127.0.0.1:8233/auth/sso/callback"


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Provider:
    issuer: str

    def token(self, subject: str) -> str:
        """Sign ``subject`` in (authorization-code flow) and return their signed JWT."""
        with httpx.Client(base_url=self.issuer, timeout=10) as http:
            state = uuid.uuid4().hex
            signed_in = http.post("/oauth2/authorize", params={
                "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI, "response_type": "code",
                "scope": "openid", "state": state}, data={"sub": subject})
            assert signed_in.status_code == 302, signed_in.text
            query = parse_qs(urlsplit(signed_in.headers["location"]).query)
            assert query["state"] == [state]
            tokens = http.post("/oauth2/token", data={
                "grant_type": "authorization_code", "code": query["code"][0],
                "redirect_uri": REDIRECT_URI, "client_id": CLIENT_ID,
                "client_secret": "unused"})
            assert tokens.status_code == 200, tokens.text
            return str(tokens.json()["id_token"])


@contextlib.contextmanager
def running_provider(*, token_lifetime: timedelta = timedelta(minutes=10),
                     users: dict[str, list[str]] | None = None) -> Iterator[Provider]:
    """The provider on a free port, with ``users`` (subject -> roles)."""
    known = users if users is not None else {"operator": ["operator"], "citizen": []}
    with run_server_in_thread(
        access_token_max_age=token_lifetime, issue_refresh_token=False,
        user_claims=[User(sub=sub, claims={"roles": roles}) for sub, roles in known.items()],
    ) as server:
        yield Provider(issuer=f"http://localhost:{server.server_port}")


class JwksVerifier:
    """PyJWT against the issuer's discovery document and JWKS (fetched on each call)."""

    def __init__(self, issuer: str, audience: str = CLIENT_ID) -> None:
        self.issuer = issuer
        self.audience = audience

    async def verify(self, token: str) -> Principal:
        return await asyncio.to_thread(self._verify, token)

    def _verify(self, token: str) -> Principal:
        try:
            config = httpx.get(f"{self.issuer}/.well-known/openid-configuration",
                               timeout=3).json()
            keys = jwt.PyJWKClient(config["jwks_uri"], timeout=3)
            kid = jwt.get_unverified_header(token).get("kid")
            # The mock's one key has no kid in its tokens' headers: then it is the only one.
            key = keys.get_signing_key(kid) if kid else keys.get_signing_keys()[0]
        except (httpx.HTTPError, jwt.PyJWKClientConnectionError) as exc:
            raise IssuerUnavailable(str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=self.audience,
                issuer=config["issuer"], options={"require": ["exp", "iat", "sub"]})
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        return Principal(subject=str(claims["sub"]),
                         roles=frozenset(str(r) for r in claims.get("roles", [])))
