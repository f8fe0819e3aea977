"""Signed exchanges: RFC 9421 HTTP Message Signatures with Ed25519 and RFC 9530 Content-Digest.

Every message between the engine and an agency is signed by its sender's own private key and
verified with the sender's published public key (:mod:`agency_kit.keys`)::

    engine ──call (tag "nwd-call")──────────▶ agency      verified with the engine's JWKS
    engine ◀─answer (tag "nwd-answer")──────  agency      verified with the agency's keys
    engine ◀─callback (tag "nwd-callback")──  agency      verified with the *bound* agency's keys

A request's signature covers ``@method``, ``@target-uri``, ``content-type``,
``content-digest`` (sha-256 of the exact body bytes) and ``idempotency-key`` when the message
has one, with the parameters ``created``, ``expires`` (short: :data:`DEFAULT_EXPIRES_S`),
``keyid``, ``alg="ed25519"``, a random ``nonce`` and the ``tag`` naming the kind of message.
So a captured message cannot be sent to another URL, with another body or another
``Idempotency-Key``, later than its ``expires``, or as another kind of message (an answer as a
callback). A receiver that must not take the same message twice (the engine's callback
endpoint) keeps the nonces it saw until they expire. An answer's signature covers ``@status``,
its own ``content-type`` and ``content-digest``, and the request it answers (``;req``): that
request's ``@method``, ``@target-uri``, ``content-digest`` and ``idempotency-key``, so an
answer captured for one call is worthless for any other.

The signing and verifying is `http-message-signatures`' (a maintained RFC 9421
implementation); this module only fixes the profile above and turns every failure into one
:class:`SignatureError` — a receiver answers it 401 ``bad_signature``. Malformed, non-ASCII,
duplicated or absent ``Signature``/``Signature-Input`` headers are such failures, never a 500.
docs/agency-contract.md has a worked example (a fixed key, a fixed request, the exact
signature base) that a unit test recomputes.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    algorithms,
)

LABEL = "nwd"
"""The signature's label in the ``Signature`` and ``Signature-Input`` dictionaries."""
CALL_TAG = "nwd-call"
"""``tag`` of the engine's calls to an agency."""
ANSWER_TAG = "nwd-answer"
"""``tag`` of an agency's answers to the engine's calls."""
CALLBACK_TAG = "nwd-callback"
"""``tag`` of an agency's callbacks to the engine."""
DEFAULT_EXPIRES_S = 60
"""How long a signature is valid after ``created`` unless the signer is told otherwise."""
MAX_EXPIRES_S = 300
"""The longest validity a receiver accepts (``expires - created``): a longer one is refused."""
CLOCK_SKEW_S = 5
"""How far the sender's and the receiver's clocks may differ."""

SIGNATURE_HEADER = "Signature"
SIGNATURE_INPUT_HEADER = "Signature-Input"
DIGEST_HEADER = "Content-Digest"
IDEMPOTENCY_HEADER = "Idempotency-Key"

REQUEST_COMPONENTS = ("@method", "@target-uri", "content-type", "content-digest")
"""What every signed request covers; ``idempotency-key`` is added when the request has one."""
ANSWER_COMPONENTS = ("@status", "content-type", "content-digest", '"@method";req',
                     '"@target-uri";req')
"""What every signed answer covers; the request's ``content-digest`` and ``idempotency-key``
(``;req``) are added when the request has them (the engine's always do)."""
_REQUEST_FIELDS = ("content-digest", "idempotency-key")


def _answer_components(request: _Request) -> list[str]:
    return [*ANSWER_COMPONENTS,
            *(f'"{name}";req' for name in _REQUEST_FIELDS if name in request.headers)]

PublicKeyLookup = Callable[[str], Ed25519PublicKey | None]
"""The public key a ``keyid`` names, or None when the receiver knows no such key."""


class SignatureError(Exception):
    """A message's signature is missing, malformed, stale, replayed or wrong; ``reason`` says
    which. ``unknown_key_id`` is set when the only problem may be a key the receiver has not
    fetched yet (a rotation): refresh the keys and verify once more.

    The receiver answers 401 ``{"code": "bad_signature", "reason": ...}``.
    """

    def __init__(self, reason: str, *, unknown_key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unknown_key_id = unknown_key_id


@dataclass(frozen=True)
class Verified:
    """What a good signature says about its message."""

    key_id: str
    created: int
    expires: int
    nonce: str | None
    tag: str


# ---- the message views the library signs and verifies --------------------------------------


class _Headers:
    """A case-insensitive header list the library can read and write (one value a name)."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in headers.items():
            self[name] = value

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())

    def __iter__(self) -> Any:
        return iter([name for name, _ in self._items.values()])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __setitem__(self, name: str, value: str) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def get(self, name: str) -> str | None:
        found = self._items.get(name.lower())
        return None if found is None else found[1]

    def as_dict(self) -> dict[str, str]:
        return dict(self._items.values())


@dataclass
class _Request:
    method: str
    url: str
    headers: _Headers


@dataclass
class _Response:
    status_code: int
    headers: _Headers
    request: _Request


class _Keys(HTTPSignatureKeyResolver):
    """The library's key resolver over a lookup; remembers a keyid it could not resolve."""

    def __init__(
        self, lookup: PublicKeyLookup | None = None, private: Ed25519PrivateKey | None = None
    ) -> None:
        self._lookup = lookup
        self._private = private
        self.unknown: str | None = None

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey | None:
        key = self._lookup(key_id) if self._lookup is not None else None
        if key is None:
            self.unknown = key_id
        return key

    def resolve_private_key(self, key_id: str) -> Ed25519PrivateKey:
        if self._private is None:
            raise HTTPMessageSignaturesException("no private key to sign with")
        return self._private


_SINGLE_HEADERS = frozenset(h.lower() for h in (
    SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER, DIGEST_HEADER, IDEMPOTENCY_HEADER, "Content-Type"))
"""Headers a message may carry once only: a second copy could be read by the receiver's
application where the signature check read the other (a captured call sent again with a new
``Idempotency-Key`` put before the signed one)."""


def _ascii(headers: Mapping[str, str]) -> None:
    """Refuse non-ASCII signature headers, and a second copy of any header the signature
    covers or is carried in (``headers.items()`` of a multi-dict yields every copy)."""
    seen: set[str] = set()
    for name, _ in headers.items():
        lowered = name.lower()
        if lowered in _SINGLE_HEADERS:
            if lowered in seen:
                raise SignatureError(f"the {name} header appears more than once")
            seen.add(lowered)
    for name in (SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER, DIGEST_HEADER):
        value = _get(headers, name)
        if value is not None and not value.isascii():
            raise SignatureError(f"the {name} header is not ASCII")


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


# ---- signing --------------------------------------------------------------------------------


class Signer:
    """Signs messages with one party's private key, under the key id its JWKS publishes.

    Args:
        private_key: The Ed25519 private key; only its owner's process holds it.
        key_id: The ``kid`` of its public half in the owner's JWKS.
        expires_s: Validity of each signature, counted from its ``created``.
        clock: Unix seconds now (tests pin it).
    """

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        key_id: str,
        *,
        expires_s: int = DEFAULT_EXPIRES_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"expires_s must be 1..{MAX_EXPIRES_S} seconds, got {expires_s}")
        self.key_id = key_id
        self.public_key = private_key.public_key()
        self.expires_s = expires_s
        self._clock = clock
        self._signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519, key_resolver=_Keys(private=private_key))

    def request_headers(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        tag: str = CALL_TAG,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """``headers`` plus ``Content-Digest``, ``Signature-Input`` and ``Signature``.

        ``headers`` must hold the ``Content-Type`` sent (and the ``Idempotency-Key``, if
        any); every call gets a fresh ``created`` and ``nonce`` unless ``nonce`` is given.
        """
        message = _Request(method.upper(), url, _Headers(headers))
        components = list(REQUEST_COMPONENTS)
        if IDEMPOTENCY_HEADER in message.headers:
            components.append("idempotency-key")
        self._sign(message, components, body, tag, nonce)
        return message.headers.as_dict()

    def answer_headers(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        *,
        request_method: str,
        request_url: str,
        request_headers: Mapping[str, str],
    ) -> dict[str, str]:
        """``headers`` of an answer to the given request, signed and bound to that request."""
        request = _Request(request_method.upper(), request_url, _Headers(request_headers))
        message = _Response(status, _Headers(headers), request)
        self._sign(message, _answer_components(request), body, ANSWER_TAG, None)
        return message.headers.as_dict()

    def _sign(
        self, message: _Request | _Response, components: list[str], body: bytes, tag: str,
        nonce: str | None,
    ) -> None:
        created = int(self._clock())
        self._signer.sign(
            message, key_id=self.key_id, label=LABEL, tag=tag,
            created=dt.datetime.fromtimestamp(created, dt.UTC),
            expires=dt.datetime.fromtimestamp(created + self.expires_s, dt.UTC),
            nonce=nonce if nonce is not None else secrets.token_urlsafe(16),
            covered_component_ids=components, body=body,
        )


# ---- verifying ------------------------------------------------------------------------------


class _ClockedVerifier(HTTPMessageVerifier):
    max_clock_skew = dt.timedelta(seconds=CLOCK_SKEW_S)

    def __init__(self, keys: _Keys, clock: Callable[[], float]) -> None:
        super().__init__(signature_algorithm=algorithms.ED25519, key_resolver=keys)
        self._clock = clock

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        """The library's check, on our clock, and ``expires`` required and bounded."""
        params = sig_input.params
        created, expires = params.get("created"), params.get("expires")
        if type(created) is not int or type(expires) is not int:
            raise SignatureError("the signature needs integer created and expires parameters")
        now = self._clock()
        if created > now + CLOCK_SKEW_S:
            raise SignatureError("the signature's created time is in the future; check the clocks")
        if expires < now - CLOCK_SKEW_S:
            raise SignatureError(
                f"the signature expired {int(now - expires)} s ago; sign each attempt afresh")
        if expires - created > MAX_EXPIRES_S:
            raise SignatureError(
                f"the signature is valid for {expires - created} s; at most {MAX_EXPIRES_S} s "
                "is accepted")


class Verifier:
    """Checks signatures made with the keys ``lookup`` knows (one party's, by ``keyid``).

    Args:
        lookup: keyid -> that party's public key, None for a key it does not know.
        clock: Unix seconds now (tests pin it).
    """

    def __init__(self, lookup: PublicKeyLookup, *, clock: Callable[[], float] = time.time) -> None:
        self._lookup = lookup
        self._clock = clock

    def verify_request(
        self,
        method: str,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        tag: str = CALL_TAG,
        require_nonce: bool = False,
    ) -> Verified:
        """Check a request's signature; raise :class:`SignatureError` when it is not good.

        ``url`` is the absolute URL the receiver was asked for, ``body`` the raw bytes it
        received. An ``Idempotency-Key`` the message carries must be covered.
        """
        _ascii(headers)
        message = _Request(method.upper(), url, _Headers(dict(headers.items())))
        required = list(REQUEST_COMPONENTS)
        if IDEMPOTENCY_HEADER in message.headers:
            required.append("idempotency-key")
        verified = self._verify(message, required, body, tag)
        if require_nonce and not verified.nonce:
            raise SignatureError("the signature needs a nonce parameter")
        return verified

    def verify_answer(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str],
        *,
        request_method: str,
        request_url: str,
        request_headers: Mapping[str, str],
    ) -> Verified:
        """Check an answer's signature, and that it answers exactly this request."""
        _ascii(headers)
        request = _Request(request_method.upper(), request_url, _Headers(request_headers))
        message = _Response(status, _Headers(dict(headers.items())), request)
        return self._verify(message, _answer_components(request), body, ANSWER_TAG)

    def _verify(
        self, message: _Request | _Response, required: list[str], body: bytes, tag: str
    ) -> Verified:
        headers = message.headers
        for name in (SIGNATURE_HEADER, SIGNATURE_INPUT_HEADER):
            if headers.get(name) is None:
                raise SignatureError(f"the {name} header is missing")
        keys = _Keys(self._lookup)
        verifier = _ClockedVerifier(keys, self._clock)
        try:
            results = verifier.verify(
                message, max_age=None, expect_tag=tag, require_components=required, body=body)
        except SignatureError:
            raise
        except HTTPMessageSignaturesException as exc:
            if keys.unknown is not None:
                raise SignatureError(
                    f"no key {keys.unknown!r} is published for this sender",
                    unknown_key_id=keys.unknown) from None
            raise SignatureError(f"the signature is not valid: {_reason(exc)}") from None
        except (ValueError, TypeError, UnicodeError, KeyError, AttributeError) as exc:
            # a header the parser could not take: the sender's fault, never a 500
            raise SignatureError(f"the signature headers are malformed ({type(exc).__name__})"
                                 ) from None
        if len(results) != 1:
            raise SignatureError(f"expected one signature tagged {tag!r}, found {len(results)}")
        params = results[0].parameters
        return Verified(
            key_id=str(params["keyid"]), created=int(params["created"]),
            expires=int(params["expires"]), nonce=results[0].nonce, tag=tag)


def _reason(exc: BaseException) -> str:
    """The library's message, without a chained cause's internals; ASCII, bounded."""
    text = str(exc) or type(exc).__name__
    if text == "InvalidSignature":  # cryptography's, with no message: the bytes do not match
        return ("it does not match the message (its method, URL, content type, digest or "
                "idempotency key differ from what was signed, or another key signed it)")
    return text.encode("ascii", "replace").decode()[:200]
