"""Payload encryption: citizen data never reaches the Temporal server in clear text.

Every payload (workflow and activity inputs and results, summaries, failure attributes) is
sealed with AES-256-GCM before it leaves the process; only holders of the key — the worker,
the intake, the CLI, and the authorised codec server the Temporal UI calls — can read it.
Search attributes are NOT covered by a codec: they never hold personal data.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

ENCODING = b"binary/encrypted"
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


class EncryptionCodec(PayloadCodec):
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16].encode()

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            Payload(
                metadata={"encoding": ENCODING, "encryption-key-id": self.key_id},
                data=self._seal(p.SerializeToString()),
            )
            for p in payloads
        ]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            if payload.metadata.get("encryption-key-id") != self.key_id:
                raise PayloadDecryptionError("payload was encrypted with a different key")
            decoded.append(Payload.FromString(self._open(payload.data)))
        return decoded

    def _seal(self, data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data, None)

    def _open(self, data: bytes) -> bytes:
        try:
            return self._aead.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None)
        except Exception as exc:
            raise PayloadDecryptionError("payload could not be decrypted") from exc
