"""Request signing: HMAC-SHA256 over ``"{timestamp}." + raw body``, sent as ``v1=<hex>``.

The engine signs every call to an agency, and an agency signs every callback to the engine,
with the agency's shared secret::

    X-NWD-Timestamp: 1767225600
    X-NWD-Signature: v1=5f0c...  (hex HMAC-SHA256(secret, b"1767225600." + body))

A receiver recomputes the HMAC over the *raw* bytes it received (never a re-serialised JSON),
compares in constant time, and refuses timestamps more than :data:`REPLAY_WINDOW_S` seconds
away from its clock, so a captured request cannot be replayed later. This module has no
dependency beyond the standard library: an agency can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SCHEME = "v1"
"""The signature scheme; a future scheme gets a new prefix so both can be accepted at once."""
REPLAY_WINDOW_S = 300
"""How far (seconds, either direction) a request's timestamp may be from the receiver's clock."""

TIMESTAMP_HEADER = "X-NWD-Timestamp"
SIGNATURE_HEADER = "X-NWD-Signature"


class SignatureError(Exception):
    """A request's signature is missing, malformed, stale or wrong; ``reason`` says which.

    The receiver answers 401 ``{"status": "rejected", "code": "bad_signature", "reason": ...}``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-NWD-Signature`` header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(_secret_bytes(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(
    secret: str | bytes | None, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The timestamp and (when there is a secret) signature headers for ``body``."""
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {TIMESTAMP_HEADER: str(ts)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, ts, body)
    return headers


def verify(
    secret: str | bytes,
    body: bytes,
    *,
    timestamp: str | None,
    signature: str | None,
    now: float | None = None,
    window_s: int = REPLAY_WINDOW_S,
) -> None:
    """Check a signature; return nothing when it is good, raise :class:`SignatureError` if not.

    Args:
        secret: The agency's shared secret.
        body: The raw request body, byte for byte as received.
        timestamp: The ``X-NWD-Timestamp`` header (unix seconds), or None when absent.
        signature: The ``X-NWD-Signature`` header (``v1=<hex>``), or None when absent.
        now: The receiver's clock (unix seconds); defaults to ``time.time()``.
        window_s: The replay window in seconds.
    """
    if not timestamp:
        raise SignatureError(f"the {TIMESTAMP_HEADER} header is missing")
    if not signature:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} must be unix seconds (an integer)") from None
    current = time.time() if now is None else now
    if abs(current - ts) > window_s:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {int(current - ts)} s away from the receiver's clock "
            f"(allowed: {window_s} s); sign each attempt afresh and check the clocks"
        )
    expected = sign(secret, ts, body)
    candidates = [part.strip() for part in signature.split(",")]
    if not any(c.startswith(f"{SCHEME}=") for c in candidates):
        raise SignatureError(f"{SIGNATURE_HEADER} must look like '{SCHEME}=<hex HMAC-SHA256>'")
    if not any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates):
        raise SignatureError(
            "the signature does not match the body; sign the exact bytes sent, "
            "prefixed by the timestamp and a dot, with the agency's secret"
        )


def verify_headers(
    secret: str | bytes, body: bytes, headers: Mapping[str, str], *, now: float | None = None
) -> None:
    """:func:`verify` reading the two headers from a (case-insensitive) header mapping."""
    verify(
        secret,
        body,
        timestamp=headers.get(TIMESTAMP_HEADER) or headers.get(TIMESTAMP_HEADER.lower()),
        signature=headers.get(SIGNATURE_HEADER) or headers.get(SIGNATURE_HEADER.lower()),
        now=now,
    )
