"""The reference agencies' own keys: each agency's private Ed25519 keys, and the engine's JWKS.

A real agency keeps its private key to itself; the reference agencies read theirs from one
file only their process reads — ``NWD_AGENCY_KEYS_FILE``, JSON, mode 0600 (the embedded stack
writes it, one key per agency)::

    {"agencies": {"driver-licensing": [{"kty": "OKP", "crv": "Ed25519", "kid": "...",
                                        "x": "...", "d": "..."}]}}

Several keys under one agency are a rotation: the last one signs. The engine's public keys come
from its JWKS URL (``NWD_ENGINE_JWKS_URL``), cached (:class:`agency_kit.keys.KeySource`). No
process but the agencies' ever gets this file; the agencies never get the engine's private key.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agency_kit.keys import Keyring, KeySource, PublicKeys
from agency_kit.signing import DEFAULT_EXPIRES_S, Signer


class CredentialsError(ValueError):
    """The keys file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class AgencyCredentials:
    """What the hosted agencies sign and verify with.

    Attributes:
        keyrings: Agency id -> its private keys; an agency with ``keys`` in the registry but
            none here refuses every call (it cannot sign its answers).
        engine_keys: The engine's public keys; None: every signed agency refuses every call.
        expires_s: Validity of the agencies' signatures.
    """

    keyrings: Mapping[str, Keyring] = field(default_factory=dict)
    engine_keys: PublicKeys | None = None
    expires_s: int = DEFAULT_EXPIRES_S

    def signer(self, agency_id: str) -> Signer | None:
        ring = self.keyrings.get(agency_id)
        return None if ring is None else ring.signer(expires_s=self.expires_s)

    @classmethod
    def load(cls, keys_file: Path | None, engine_jwks_url: str | None,
             expires_s: int = DEFAULT_EXPIRES_S) -> AgencyCredentials:
        return cls(
            keyrings=read_keys_file(keys_file) if keys_file is not None else {},
            engine_keys=KeySource(engine_jwks_url) if engine_jwks_url else None,
            expires_s=expires_s,
        )


def read_keys_file(path: Path) -> dict[str, Keyring]:
    """The keyrings in ``path``; :class:`CredentialsError` if it is unreadable, malformed or
    readable by other users."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot be read ({exc.strerror}); set "
                               "NWD_AGENCY_KEYS_FILE to the agencies' keys file") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(f"{path}: holds private keys but is readable by other users; "
                               f"chmod 600 {path}")
    try:
        data = json.loads(text)
        agencies = data["agencies"]
        return {str(agency): Keyring.from_jwks(list(keys)) for agency, keys in agencies.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CredentialsError(f"{path}: not an agency keys file ({exc})") from None


def write_keys_file(path: Path, keys: Mapping[str, list[dict[str, Any]]]) -> None:
    """Write the keys file whole (temporary file, rename), mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"agencies": dict(keys)}, out, indent=2, sort_keys=True)
    tmp.replace(path)
    path.chmod(0o600)
