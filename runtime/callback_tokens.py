"""Single-use, unguessable callback URLs for agencies answering asynchronously.

A token names the request, step, item and agency it is for, and carries an HMAC over them
with a key only the engine holds: a forged or altered token fails the check at the intake
before anything else happens. *Single use* is enforced by the workflow itself: its update
validator accepts a callback for a call whose branch has not ended (kept until the call's
outcome is known if it comes early, see ``workflows/callbacks.py``), answers a copy of one
already applied as already received, and refuses any other.

A token also names the one agency that may use it — the intake verifies the callback's
RFC 9421 signature with that agency's keys only — and when it expires (unix seconds,
``NWD_CALLBACK_TOKEN_TTL_S`` after the call was first scheduled): a late callback is refused
(401 ``bad_token``). Tokens issued before expiry existed carry none and stay valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass


class InvalidCallbackToken(Exception):  # noqa: N818 (reads as the state of the token)
    """The token was not issued by this engine (forged, altered or truncated)."""


@dataclass(frozen=True)
class CallbackTarget:
    reference: str
    step_id: str
    item_key: str | None
    agency_id: str
    expires: int | None = None
    """Unix seconds after which the token is refused; None: no expiry (older tokens)."""


def callback_key(encryption_key: bytes) -> bytes:
    """A key for tokens derived from the payload key, so no extra secret must be managed."""
    return hmac.new(encryption_key, b"nwd-callback-tokens-v1", hashlib.sha256).digest()


def issue(key: bytes, target: CallbackTarget) -> str:
    fields: list[object] = [target.reference, target.step_id, target.item_key, target.agency_id]
    if target.expires is not None:
        fields.append(target.expires)
    payload = json.dumps(fields, separators=(",", ":")).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str, *, now: float | None = None) -> CallbackTarget:
    """The target a token names; :class:`InvalidCallbackToken` if forged or expired."""
    body, _, mac = token.partition(".")
    if not body or not mac or not hmac.compare_digest(_mac(key, body), mac):
        raise InvalidCallbackToken("the callback token is not valid")
    try:
        fields = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        reference, step_id, item_key, agency_id = fields[:4]
        expires = int(fields[4]) if len(fields) > 4 else None
    except (ValueError, TypeError, IndexError) as exc:
        raise InvalidCallbackToken("the callback token is malformed") from exc
    if expires is not None and (time.time() if now is None else now) > expires:
        raise InvalidCallbackToken("the callback URL has expired")
    return CallbackTarget(str(reference), str(step_id), item_key, str(agency_id), expires)


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:40]
