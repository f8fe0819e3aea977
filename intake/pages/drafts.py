"""A citizen's answers between the check page and the submission: a sealed draft.

The answers travel in a hidden form field as a Fernet token (AES-128-CBC + HMAC-SHA256,
``cryptography``), under a key derived from ``NWD_REFERENCE_KEY`` by HKDF with its own
``info``: the browser holds them, the server keeps nothing, and the visitor — or anyone who
sees the page's HTML — reads nothing of them. Personal data is never in a URL, never in a
plain hidden field, never in a log. A draft lives :data:`DRAFT_TTL_S` (two hours); an expired,
forged or other service's draft is refused (:class:`DraftRefused`) and nothing is submitted.

A draft also carries the **idempotency key** of its submission, minted when the check page is
rendered: a double click or a reload of the submission sends the same draft, hence the same
key, and gets the same request.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DRAFT_TTL_S = 2 * 3600
DRAFT_FIELD = "draft"


class DraftRefused(Exception):  # noqa: N818 (reads as what happened to the draft)
    """The draft is expired, forged, damaged or for another service."""


@dataclass(frozen=True)
class Draft:
    service: str
    submission: dict[str, Any]
    idempotency_key: str


def draft_key(reference_key: bytes) -> bytes:
    """The drafts' Fernet key: HKDF-SHA256 of the reference key, for this use only."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"no-wrong-door pages draft v1").derive(reference_key)
    return base64.urlsafe_b64encode(raw)


class Drafts:
    """Seals and opens drafts with one key."""

    def __init__(self, reference_key: bytes, *, ttl_s: int = DRAFT_TTL_S) -> None:
        self._fernet = Fernet(draft_key(reference_key))
        self._ttl_s = ttl_s

    def new(self, service: str, submission: dict[str, Any]) -> Draft:
        """A draft of ``submission`` with a fresh idempotency key."""
        return Draft(service, submission, secrets.token_urlsafe(24))

    def seal(self, draft: Draft) -> str:
        body = json.dumps({"s": draft.service, "d": draft.submission, "k": draft.idempotency_key},
                          separators=(",", ":"), ensure_ascii=False)
        return self._fernet.encrypt(body.encode()).decode()

    def open(self, token: str, service: str) -> Draft:
        """The draft sealed in ``token`` for ``service``.

        Raises:
            DraftRefused: expired (older than the TTL), forged or damaged, or another service's.
        """
        try:
            body = json.loads(self._fernet.decrypt(token.encode(), ttl=self._ttl_s))
        except (InvalidToken, ValueError, UnicodeError) as exc:
            raise DraftRefused("the draft is expired or not one this site made") from exc
        if not isinstance(body, dict) or body.get("s") != service or \
                not isinstance(body.get("d"), dict) or not isinstance(body.get("k"), str):
            raise DraftRefused("the draft is for another service")
        return Draft(service, body["d"], body["k"])
