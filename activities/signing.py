"""Request signing, as the agency contract specifies (docs/agency-contract.md).

``X-NWD-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` with the timestamp in
``X-NWD-Timestamp``: the agency recomputes it and refuses stale or forged requests.
"""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(secret: bytes, timestamp: int, body: bytes, header: str, *, now: float,
           tolerance_s: int = 300) -> bool:
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), header)
