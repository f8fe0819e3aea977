"""Each party's Ed25519 keys: its private keyring, and everyone else's public keys as a JWKS.

- A **private keyring** holds one party's private keys (PEM, or a private JWK), each under a
  key id (``kid``); the newest — the last one given — signs. It comes from a secret only its
  owner's process reads (the engine's ``NWD_SIGNING_KEY``, an agency's keys file).
- A party publishes the public halves as a **JWKS** (RFC 7517, ``kty: OKP``, ``crv: Ed25519``,
  RFC 8037): the engine at ``GET /.well-known/jwks.json`` of the intake, an agency wherever the
  registry says (``keys.jwks_url_env`` / ``keys.default_jwks_url``, or inline ``keys.public``).
- A receiver verifies with a :class:`KeySource` (a JWKS URL, cached; fetched again when a
  signature names a ``kid`` it does not know, at most once per ``min_refresh_s``) or
  :class:`StaticKeys` (keys given inline).

**Rotation** is by ``kid``: publish the new public key beside the old one, then switch the
signer to the new key (it becomes the newest), then, once no message signed with the old one
can still be valid (its ``expires`` has passed), stop publishing it. While both are published
either signature verifies; afterwards the old one is refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agency_kit.signing import SignatureError, Signer, Verified, Verifier
from definitions.models import AgencyKeys

log = structlog.get_logger("agency_kit.keys")


class InvalidKeyError(ValueError):
    """A key or key set that cannot be used; the message says which and why."""


class KeysUnavailable(Exception):  # noqa: N818 - a state, like the contract's "unavailable"
    """The sender's keys could not be fetched (its JWKS URL did not answer): whether the
    signature is good is not known yet. Answer 503 (try again), never 401: a 401 is final and
    would drop a genuine message for a network blip."""


class PublicJwk(BaseModel):
    """One Ed25519 public key as a JWK (RFC 8037)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    kid: str = Field(min_length=1, max_length=200)
    x: str = Field(min_length=43, max_length=43, description="base64url of the 32-byte key")


class PrivateJwk(PublicJwk):
    """One Ed25519 private key as a JWK (``d`` is the 32-byte seed, base64url)."""

    d: str = Field(min_length=43, max_length=43)


class Jwks(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    keys: tuple[PublicJwk, ...]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_key_from_x(x: str) -> Ed25519PublicKey:
    """The public key a JWK's ``x`` holds; :class:`InvalidKeyError` if it is not one."""
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(x))
    except ValueError as exc:
        raise InvalidKeyError(f"not an Ed25519 public key (x={x[:12]}...): {exc}") from None


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK of a public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": _b64(raw)}


def private_jwk(kid: str, key: Ed25519PrivateKey) -> dict[str, str]:
    """The private JWK of a key (for a keys file only its owner reads)."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return {**public_jwk(kid, key.public_key()), "d": _b64(raw)}


def jwks(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """A JWKS document of public keys by kid."""
    return {"keys": [public_jwk(kid, key) for kid, key in keys.items()]}


def parse_jwks(data: Any) -> dict[str, Ed25519PublicKey]:
    """The public keys of a JWKS document (parsed JSON) by kid; :class:`InvalidKeyError` if bad."""
    try:
        document = Jwks.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise InvalidKeyError(f"not an Ed25519 JWKS: {where}: {first['msg']}") from None
    return {jwk.kid: public_key_from_x(jwk.x) for jwk in document.keys}


def load_private_key(text: str, *, kid: str | None = None) -> tuple[str, Ed25519PrivateKey]:
    """``(kid, key)`` from a PEM (PKCS#8) private key or a private JWK (JSON).

    A PEM carries no key id: ``kid`` names it. A JWK's own ``kid`` is used unless ``kid``
    is given (then they must agree).
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        if not kid:
            raise InvalidKeyError("a PEM key needs its key id (kid) given beside it")
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKeyError(f"not a readable PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKeyError(f"the PEM key is {type(key).__name__}, not Ed25519")
        return kid, key
    try:
        jwk = PrivateJwk.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "key"
        raise InvalidKeyError(
            f"not a PEM or a private Ed25519 JWK ({where}: {first['msg']})") from None
    if kid and kid != jwk.kid:
        raise InvalidKeyError(f"the JWK's kid {jwk.kid!r} is not the key id given ({kid!r})")
    key = Ed25519PrivateKey.from_private_bytes(_unb64(jwk.d))
    if public_jwk(jwk.kid, key.public_key())["x"] != jwk.x:
        raise InvalidKeyError(f"the JWK {jwk.kid!r}: its x is not the public half of its d")
    return jwk.kid, key


def new_key(kid: str) -> dict[str, str]:
    """A fresh private JWK under ``kid``."""
    return private_jwk(kid, Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class Keyring:
    """One party's private keys by kid, in age order; the newest (last) signs."""

    keys: tuple[tuple[str, Ed25519PrivateKey], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise InvalidKeyError("a keyring needs at least one key")
        kids = [kid for kid, _ in self.keys]
        if len(set(kids)) != len(kids):
            raise InvalidKeyError(f"a keyring's key ids must be distinct, got {kids}")

    @classmethod
    def from_jwks(cls, private_jwks: Sequence[Mapping[str, Any]]) -> Keyring:
        return cls(tuple(load_private_key(json.dumps(dict(jwk))) for jwk in private_jwks))

    @property
    def signing(self) -> tuple[str, Ed25519PrivateKey]:
        return self.keys[-1]

    def signer(self, *, expires_s: int | None = None) -> Signer:
        kid, key = self.signing
        if expires_s is None:
            return Signer(key, kid)
        return Signer(key, kid, expires_s=expires_s)

    def public(self) -> dict[str, Ed25519PublicKey]:
        return {kid: key.public_key() for kid, key in self.keys}


@dataclass
class StaticKeys:
    """Public keys given inline (the registry's ``keys.public``, a test's)."""

    keys: Mapping[str, Ed25519PublicKey]

    failing = False

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self.keys.get(kid)

    async def refresh(self) -> bool:
        return False


@dataclass
class KeySource:
    """A party's public keys from its JWKS URL, cached.

    The set is fetched on first use, again after ``ttl_s``, and at once when a signature names
    a kid not in it (a rotation) — but at most once per ``min_refresh_s``, so a stream of
    made-up kids cannot turn the receiver into a flood of fetches. A failed fetch keeps the
    keys already known — for ``max_stale_s`` after the last good fetch (default twice
    ``ttl_s``); after that the keys are unavailable (503, try again) rather than trusted while
    their URL cannot be reached, so blocking it cannot keep a withdrawn key alive.

    Args:
        url: The JWKS URL.
        http: A shared client, owned by the caller; None: a client for each fetch (they are
            rare: the set is cached).
    """

    url: str
    http: httpx.AsyncClient | None = None
    ttl_s: float = 300.0
    min_refresh_s: float = 1.0
    max_stale_s: float | None = None
    """How long after the last good fetch the keys are still used while fetches fail
    (None: twice ``ttl_s``)."""
    _keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    _fetched_at: float | None = None
    _tried_at: float = float("-inf")
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failing: bool = False
    """The last fetch failed (the set may be stale or empty)."""

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    async def ensure(self) -> None:
        """Fetch the keys if never fetched or older than ``ttl_s``."""
        if self._fetched_at is None or time.monotonic() - self._fetched_at > self.ttl_s:
            await self.refresh()
        if self.failing and self._fetched_at is not None:
            age = time.monotonic() - self._fetched_at
            limit = 2 * self.ttl_s if self.max_stale_s is None else self.max_stale_s
            if age > limit:
                raise KeysUnavailable(f"the sender's keys were last fetched {age:.0f} s ago "
                                      "and cannot be fetched now")

    async def refresh(self) -> bool:
        """Fetch the set again (rate-bounded); whether it is fresher than when asked.

        Callers arriving together share one fetch: they wait for it rather than see the
        rate bound and give up.
        """
        asked = time.monotonic()
        async with self._lock:
            if self._fetched_at is not None and self._fetched_at >= asked:
                return True  # fetched while this caller waited
            return await self._fetch()

    async def _fetch(self) -> bool:
        now = time.monotonic()
        if now - self._tried_at < self.min_refresh_s:
            return False
        self._tried_at = now
        try:
            if self.http is not None:
                response = await self.http.get(self.url, timeout=5.0)
            else:
                async with httpx.AsyncClient() as http:
                    response = await http.get(self.url, timeout=5.0)
            response.raise_for_status()
            self._keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("keys.fetch_failed", url=self.url, error=type(exc).__name__)
            self.failing = True
            return False
        self.failing = False
        self._fetched_at = time.monotonic()  # after the fetch: callers who waited see it
        return True


PublicKeys = StaticKeys | KeySource
"""Where a receiver finds one sender's public keys."""


async def verify_request(
    keys: PublicKeys,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    tag: str,
    require_nonce: bool = False,
) -> Verified:
    """:meth:`Verifier.verify_request` with ``keys``, refreshed once for an unknown kid."""
    return await _verified(keys, lambda verifier: verifier.verify_request(
        method, url, body, headers, tag=tag, require_nonce=require_nonce))


async def verify_answer(
    keys: PublicKeys,
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    request_method: str,
    request_url: str,
    request_headers: Mapping[str, str],
) -> Verified:
    """:meth:`Verifier.verify_answer` with ``keys``, refreshed once for an unknown kid."""
    return await _verified(keys, lambda verifier: verifier.verify_answer(
        status, body, headers, request_method=request_method, request_url=request_url,
        request_headers=request_headers))


async def _verified(keys: PublicKeys, check: Callable[[Verifier], Verified]) -> Verified:
    """``check`` with a verifier over ``keys`` (fetched if stale), tried once more after a
    refetch when the signature names a key id the set does not hold (a rotation)."""
    if isinstance(keys, KeySource):
        await keys.ensure()
    try:
        return check(Verifier(keys.get))
    except SignatureError as exc:
        await _refreshed_or_raise(keys, exc)
    return check(Verifier(keys.get))


async def _refreshed_or_raise(keys: PublicKeys, error: SignatureError) -> None:
    """Return when a fresh key set is worth a second try; else raise ``error``, or
    :class:`KeysUnavailable` when the key is unknown because the set could not be fetched."""
    if error.unknown_key_id is None:
        raise error
    if not await keys.refresh():
        if keys.failing:
            raise KeysUnavailable(f"the sender's keys cannot be fetched just now ({error.reason})"
                                  ) from None
        raise error


class RegistryKeys:
    """The public keys of each agency as the registry names them, resolved in ``env``.

    Inline ``keys.public`` are used as they are; a JWKS URL (``keys.jwks_url_env``'s value,
    else ``keys.default_jwks_url``) becomes one cached :class:`KeySource` per URL.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._sources: dict[str, KeySource] = {}
        self._inline: dict[tuple[tuple[str, str], ...], StaticKeys] = {}

    def of(self, agency_id: str, keys: AgencyKeys | None) -> PublicKeys | None:
        """Where ``agency_id``'s signatures are verified; None for an agency without keys.

        Raises:
            InvalidKeyError: the registry names a JWKS variable that is not set and no default.
        """
        if keys is None:
            return None
        if keys.public:  # decoded once per key set, not on every message
            named = tuple((k.kid, k.x) for k in keys.public)
            inline = self._inline.get(named)
            if inline is None:
                inline = self._inline[named] = StaticKeys(
                    {kid: public_key_from_x(x) for kid, x in named})
            return inline
        url = self._env.get(keys.jwks_url_env or "") or keys.default_jwks_url
        if not url:
            raise InvalidKeyError(
                f"agency {agency_id!r} signs its messages but its keys are not configured: "
                f"set {keys.jwks_url_env}")
        source = self._sources.get(url)
        if source is None:
            source = self._sources[url] = KeySource(url)
        return source
