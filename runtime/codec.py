"""Payload encryption: citizen data never reaches the Temporal server in clear text.

Every payload (workflow and activity inputs and results, summaries, failure attributes) is
sealed with AES-256-GCM before it leaves the process; only holders of the key — the worker,
the intake, the CLI, and the authorised codec server the Temporal UI calls — can read it.
Search attributes are NOT covered by a codec: they never hold personal data.

**Bound to its workflow.** The SDK hands the codec a serialization context naming the workflow
a payload belongs to (its input, an activity's input or result, a query's answer...). A payload
sealed in such a context carries that workflow's id in its metadata (``nwd-workflow-id``, in
clear: a workflow id holds no personal data) and the id is the AES-GCM *associated data*, so:

- a payload copied into another workflow's history does not open there: the worker decoding it
  in that workflow's context refuses it (:class:`PayloadDecryptionError`), and rewriting the
  metadata to match breaks the authentication tag;
- the codec server, which gets payloads without a context (the Temporal UI sends only the
  namespace), still opens them, and knows from the authenticated metadata which workflow each
  belongs to: the audit log names it (:mod:`intake.codec_server`).

Payloads sealed before this (no ``nwd-workflow-id``) have no associated data and still open,
in any context: the committed replay histories hold such payloads.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

ENCODING = b"binary/encrypted"
WORKFLOW_ID_KEY = "nwd-workflow-id"
"""Metadata key of the workflow a payload is bound to (its AES-GCM associated data)."""
_NONCE_BYTES = 12


class PayloadDecryptionError(Exception):
    """A payload was sealed with another key, or was tampered with."""


class MissingKeyError(Exception):
    """No payload key is configured: the request data could not be sealed or read."""


def load_key(state_dir: Path, configured: str | None) -> bytes:
    """The configured base64 key (NWD_ENCRYPTION_KEY), or the embedded stack's generated one."""
    if not configured:
        secrets_file = state_dir / "secrets.json"
        if not secrets_file.exists():
            raise MissingKeyError(
                "no payload encryption key: set NWD_ENCRYPTION_KEY, or start the embedded stack "
                "(`nwd up`), which generates one"
            )
        configured = str(json.loads(secrets_file.read_text())["encryption_key"])
    key = base64.b64decode(configured)
    if len(key) != 32:
        raise ValueError("the payload encryption key must be 32 bytes (base64 of 256 bits)")
    return key


def load_secret(state_dir: Path, configured: str | None, name: str, variable: str) -> str:
    """A configured secret, or the embedded stack's generated one of that ``name``."""
    if configured:
        return configured
    secrets_file = state_dir / "secrets.json"
    value = (json.loads(secrets_file.read_text()).get(name) if secrets_file.exists() else None)
    if not value:
        raise MissingKeyError(
            f"no {name.replace('_', ' ')}: set {variable}, or start the embedded stack "
            "(`nwd up`), which generates one")
    return str(value)


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over each whole payload, bound to its workflow (see the module docstring).

    Args:
        key: The 32-byte AES key.
        workflow_id: The workflow the payloads belong to; set by :meth:`with_context`, which
            the SDK calls with each payload's serialization context (None: unbound).
    """

    def __init__(self, key: bytes, *, workflow_id: str | None = None) -> None:
        self._key = key
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16].encode()
        self.workflow_id = workflow_id

    def with_context(self, context: SerializationContext) -> Self:
        workflow_id = (context.workflow_id if isinstance(
            context, WorkflowSerializationContext | ActivitySerializationContext) else None)
        if workflow_id == self.workflow_id:
            return self
        return type(self)(self._key, workflow_id=workflow_id)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        metadata = {"encoding": ENCODING, "encryption-key-id": self.key_id}
        if self.workflow_id is not None:
            metadata[WORKFLOW_ID_KEY] = self.workflow_id.encode()
        aad = _associated_data(self.workflow_id)
        return [Payload(metadata=metadata, data=self._seal(p.SerializeToString(), aad))
                for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            if payload.metadata.get("encryption-key-id") != self.key_id:
                raise PayloadDecryptionError("payload was encrypted with a different key")
            bound = bound_workflow(payload)
            if bound is not None and self.workflow_id is not None and bound != self.workflow_id:
                raise PayloadDecryptionError(
                    "payload belongs to another workflow: it was moved, and is refused")
            decoded.append(Payload.FromString(self._open(payload.data,
                                                         _associated_data(bound))))
        return decoded

    def _seal(self, data: bytes, aad: bytes | None) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def _open(self, data: bytes, aad: bytes | None) -> bytes:
        try:
            return self._aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], aad)
        except Exception as exc:
            raise PayloadDecryptionError("payload could not be decrypted") from exc


def bound_workflow(payload: Payload) -> str | None:
    """The workflow id a sealed payload is bound to (None: sealed unbound, or not sealed).

    Only trustworthy once the payload opened: the id is authenticated as associated data."""
    raw = payload.metadata.get(WORKFLOW_ID_KEY)
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise PayloadDecryptionError("payload's workflow id is not UTF-8") from None


def _associated_data(workflow_id: str | None) -> bytes | None:
    return None if workflow_id is None else f"{WORKFLOW_ID_KEY}={workflow_id}".encode()
