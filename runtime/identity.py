"""Who is asking: OpenID Connect access tokens, verified against one configured issuer.

The engine trusts exactly one issuer (``NWD_OIDC_ISSUER``): the government's identity
provider in production (Login.gov, GOV.UK One Login, Entra ID, any standard issuer), the
embedded development provider otherwise (:mod:`nwd.stack.oidc`). A caller sends
``Authorization: Bearer <access token>``; :class:`TokenVerifier` answers the
:class:`Principal` it names, or refuses it::

    discovery  GET {issuer}/.well-known/openid-configuration   (its "issuer" must be ours)
       │         → jwks_uri
    JWKS       GET {jwks_uri}        cached for ``jwks_ttl_s``; an unknown ``kid`` refetches
       │                             it at most once per ``refetch_interval_s`` (key rotation,
       │                             without letting random kids hammer the issuer)
    verify     PyJWT: signature with the key of the token's ``kid``, an asymmetric algorithm
               of the issuer's (never ``none`` or HMAC), ``iss``, ``aud``, ``exp``, ``nbf``
               and ``iat`` with a bounded leeway; ``sub`` required
    roles      the claim named by ``roles_claim``: a dotted path (``realm_access.roles``),
               a list of strings or one space-separated string

No JWT code is written here: parsing, key handling and every check are PyJWT's.

Exceptions::

    IdentityError
     ├ InvalidToken          the token is missing, malformed, expired, not ours... (401)
     └ IssuerUnavailable     the issuer's discovery document or keys cannot be fetched (503)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import structlog

if TYPE_CHECKING:
    from runtime.settings import Settings

log = structlog.get_logger(__name__)

ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                               "ES256", "ES384", "ES512", "EdDSA")
"""Asymmetric algorithms only: a token signed with ``none`` or an HMAC (``HS256``, whose
"key" would be public) is refused whatever the issuer's keys say."""
MAX_LEEWAY_S = 300
"""The clock skew a verifier tolerates at most (``NWD_OIDC_LEEWAY_S`` is bounded by it)."""
DISCOVERY_PATH = "/.well-known/openid-configuration"


class IdentityError(Exception):
    """The root of the identity errors."""


class InvalidToken(IdentityError):  # noqa: N818 (reads as the state of the token)
    """The token cannot be trusted; ``reason`` says why in a few words (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IssuerUnavailable(IdentityError):  # noqa: N818 (the state of the issuer)
    """The issuer's discovery document or keys could not be fetched just now."""


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    """The token's ``sub``: the issuer's stable identifier of the person or client."""
    roles: frozenset[str]
    """The roles the issuer gives them (the configured roles claim)."""
    client_id: str | None = None
    """The OAuth client the token was issued to (``client_id`` or ``azp``), if named."""

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class _Keys:
    keys: Mapping[str, jwt.PyJWK]
    fetched_at: float


class TokenVerifier:
    """Verifies access tokens of one issuer.

    Args:
        issuer: the issuer identifier, exactly as its tokens' ``iss`` and its discovery
            document's ``issuer`` spell it (no trailing slash is added or removed).
        audience: the ``aud`` this engine's tokens carry (``NWD_OIDC_AUDIENCE``).
        roles_claim: the claim holding the roles; a dotted path reads nested objects.
        leeway_s: clock skew tolerated on ``exp``/``nbf``/``iat``, 0 to ``MAX_LEEWAY_S``.
        jwks_ttl_s: how long fetched keys are used before they are fetched again.
        refetch_interval_s: the shortest time between two fetches forced by an unknown
            ``kid``.
        http: the client for the issuer's endpoints; owned by the caller (default: one of
            the verifier's own, closed by :meth:`aclose`).
    """

    def __init__(
        self,
        issuer: str,
        *,
        audience: str,
        roles_claim: str = "roles",
        leeway_s: float = 30,
        jwks_ttl_s: float = 300,
        refetch_interval_s: float = 10,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be between 0 and {MAX_LEEWAY_S} s, not {leeway_s}")
        if not roles_claim.strip():
            raise ValueError("roles_claim must name a claim")
        self.issuer = issuer
        self.audience = audience
        self.roles_claim = roles_claim
        self.leeway_s = leeway_s
        self.jwks_ttl_s = jwks_ttl_s
        self.refetch_interval_s = refetch_interval_s
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=5)
        self._jwks_uri: str | None = None
        self._keys: _Keys | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0
        """How many times the keys were fetched (the JWKS cache's tests read it)."""

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def verify(self, token: str) -> Principal:
        """The principal of a valid access token.

        Raises:
            InvalidToken: the token fails a check (malformed, wrong issuer or audience,
                expired, not yet valid, unknown key, bad signature, no subject).
            IssuerUnavailable: the issuer's keys cannot be fetched.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the token is not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken("the token's algorithm is not accepted (asymmetric ones only)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("the token names no signing key (kid)")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key.key, algorithms=[algorithm], audience=self.audience,
                issuer=self.issuer, leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the token is not valid yet (nbf/iat)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is not from the trusted issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token is not valid") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("the token has no subject")
        client = claims.get("client_id", claims.get("azp"))
        return Principal(subject=subject, roles=roles_in(claims, self.roles_claim),
                         client_id=client if isinstance(client, str) else None)

    async def _key(self, kid: str) -> jwt.PyJWK:
        keys = self._keys
        if keys is None or time.monotonic() - keys.fetched_at > self.jwks_ttl_s:
            keys = await self._refresh(keys)
        if kid in keys.keys:
            return keys.keys[kid]
        if time.monotonic() - keys.fetched_at >= self.refetch_interval_s:
            keys = await self._refresh(keys)  # the issuer may have rotated its keys
            if kid in keys.keys:
                return keys.keys[kid]
        raise InvalidToken("the token's signing key is not one of the issuer's")

    async def _refresh(self, seen: _Keys | None) -> _Keys:
        async with self._lock:
            if self._keys is not seen and self._keys is not None:
                return self._keys  # another caller fetched them meanwhile
            try:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover()
                response = await self._http.get(self._jwks_uri)
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
                log.warning("oidc_keys_unavailable", issuer=self.issuer,
                            error=type(exc).__name__)
                raise IssuerUnavailable(
                    f"the identity provider {self.issuer} cannot be reached for its keys"
                ) from exc
            self.fetches += 1
            self._keys = _Keys({k.key_id: k for k in key_set.keys if k.key_id}, time.monotonic())
            return self._keys

    async def _discover(self) -> str:
        response = await self._http.get(self.issuer.rstrip("/") + DISCOVERY_PATH)
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise ValueError("the discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ValueError("the discovery document has no jwks_uri")
        return jwks_uri


def verifier_for(settings: Settings) -> TokenVerifier:
    """The verifier of the issuer ``settings`` trust (issuer, audience, roles claim, leeway)."""
    return TokenVerifier(settings.oidc_issuer, audience=settings.oidc_audience,
                         roles_claim=settings.oidc_roles_claim, leeway_s=settings.oidc_leeway_s)


def roles_in(claims: Mapping[str, Any], claim: str) -> frozenset[str]:
    """The roles at the dotted path ``claim``: a list of strings, or one string of roles
    separated by spaces; anything else (absent, a number) is no role."""
    value: Any = claims
    for part in claim.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return frozenset()
        value = value[part]
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None for another scheme
    or none (the scheme is case-insensitive, RFC 9110)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
