"""The embedded stack's generated secrets, kept in ``<state>/secrets.json`` (mode 0600).

Created on the first ``nwd up``: the payload key, the codec server's token, the key request
references are keyed with, the engine client's secret at the embedded OIDC provider, the
engine's Ed25519 signing key, and one Ed25519 key per agency of the registry with ``keys`` (written
separately to ``agency-keys.json``, the only file the reference agencies' process is given);
an agency added to the registry later gets its key on the next start. The file is written
whole to a temporary file and renamed, so a crash never leaves half a file, and it is never
readable by another user.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets as _secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agency_kit.keys import new_key

SECRETS_FILE = "secrets.json"
AGENCY_KEYS_FILE = "agency-keys.json"
"""The reference agencies' private keys, apart from the engine's secrets (mode 0600)."""


@dataclass(frozen=True)
class Secrets:
    """The stack's generated secrets."""

    encryption_key: str
    """Base64 of 32 random bytes: the AES-256-GCM payload key (``NWD_ENCRYPTION_KEY``)."""
    codec_token: str
    """Bearer token the codec server accepts (``NWD_CODEC_TOKEN``)."""
    engine_key: dict[str, str] = field(default_factory=dict)
    """The engine's private JWK (``NWD_SIGNING_KEY``): the worker's alone."""
    agency_keys: Mapping[str, dict[str, str]] = field(default_factory=dict)
    """Each agency's private JWK, by agency id: the reference agencies' alone."""
    reference_key: str = ""
    """The key request references are keyed with (``NWD_REFERENCE_KEY``)."""
    oidc_client_secret: str = ""
    """The secret of the engine's client at the embedded OIDC provider
    (``NWD_OIDC_CLIENT_SECRET``)."""


def read_secrets(state_dir: Path) -> Secrets | None:
    """The secrets of the stack under ``state_dir``, or None before its first start."""
    path = state_dir / SECRETS_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Secrets(
        encryption_key=str(data["encryption_key"]),
        codec_token=str(data["codec_token"]),
        engine_key=dict(data.get("engine_key") or {}),
        agency_keys={str(k): dict(v) for k, v in dict(data.get("agency_keys", {})).items()},
        reference_key=str(data.get("reference_key", "")),
        oidc_client_secret=str(data.get("oidc_client_secret", "")),
    )


def ensure_secrets(state_dir: Path, agency_ids: Iterable[str]) -> Secrets:
    """Load the secrets, creating the file or adding keys for agencies new to the registry."""
    current = read_secrets(state_dir)
    ids = sorted(set(agency_ids))
    if current is not None and current.engine_key and all(
            i in current.agency_keys for i in ids) \
            and current.reference_key and current.oidc_client_secret:
        return current
    agency = dict(current.agency_keys) if current else {}
    for agency_id in ids:
        agency.setdefault(agency_id, new_key(f"{agency_id}-{_secrets.token_hex(4)}"))
    result = Secrets(
        encryption_key=current.encryption_key if current else _new_key(),
        codec_token=current.codec_token if current else _secrets.token_urlsafe(32),
        engine_key=(current.engine_key if current and current.engine_key
                    else new_key(f"engine-{_secrets.token_hex(4)}")),
        agency_keys=agency,
        # a stack created before these secrets existed gets them on its next start
        reference_key=(current.reference_key if current else "") or _secrets.token_urlsafe(32),
        oidc_client_secret=((current.oidc_client_secret if current else "")
                            or _secrets.token_urlsafe(32)),
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SECRETS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(dataclasses.asdict(result), out, indent=2, sort_keys=True)
    tmp.replace(path)
    path.chmod(0o600)
    return result


def _new_key() -> str:
    return base64.b64encode(_secrets.token_bytes(32)).decode("ascii")
