"""Single-use, unguessable callback URLs for agencies answering asynchronously.

A token names the request, step, item and agency it is for, and carries an HMAC over them
with a key only the engine holds: a forged or altered token fails the check at the intake
before anything else happens. *Single use* is enforced by the workflow itself: its update
validator accepts a callback for a call whose branch has not ended (kept until the call's
outcome is known if it comes early, see ``workflows/callbacks.py``), answers a copy of one
already applied as already received, and refuses any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass


class InvalidCallbackToken(Exception):  # noqa: N818 (reads as the state of the token)
    """The token was not issued by this engine (forged, altered or truncated)."""


@dataclass(frozen=True)
class CallbackTarget:
    reference: str
    step_id: str
    item_key: str | None
    agency_id: str


def callback_key(encryption_key: bytes) -> bytes:
    """A key for tokens derived from the payload key, so no extra secret must be managed."""
    return hmac.new(encryption_key, b"nwd-callback-tokens-v1", hashlib.sha256).digest()


def issue(key: bytes, target: CallbackTarget) -> str:
    payload = json.dumps(
        [target.reference, target.step_id, target.item_key, target.agency_id],
        separators=(",", ":"),
    ).encode()
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str) -> CallbackTarget:
    body, _, mac = token.partition(".")
    if not body or not mac or not hmac.compare_digest(_mac(key, body), mac):
        raise InvalidCallbackToken("the callback token is not valid")
    try:
        reference, step_id, item_key, agency_id = json.loads(
            base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        )
    except ValueError as exc:
        raise InvalidCallbackToken("the callback token is malformed") from exc
    return CallbackTarget(str(reference), str(step_id), item_key, str(agency_id))


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()[:40]
