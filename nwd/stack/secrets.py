"""The embedded stack's generated secrets, kept in ``<state>/secrets.json`` (mode 0600).

Created on the first ``nwd up``: the payload key, the codec server's token, the key request
references are keyed with, the engine client's secret at the embedded OIDC provider, and one
signing secret per ``auth_secret`` the agency registry names; an agency added to the registry later
gets its secret on the next start. The file is written whole to a temporary file and renamed,
so a crash never leaves half a file, and it is never readable by another user.
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

SECRETS_FILE = "secrets.json"


@dataclass(frozen=True)
class Secrets:
    """The stack's generated secrets."""

    encryption_key: str
    """Base64 of 32 random bytes: the AES-256-GCM payload key (``NWD_ENCRYPTION_KEY``)."""
    codec_token: str
    """Bearer token the codec server accepts (``NWD_CODEC_TOKEN``)."""
    agency_secrets: Mapping[str, str] = field(default_factory=dict)
    """Signing secret per variable name listed as ``auth_secret`` in the agency registry."""
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
        agency_secrets={str(k): str(v) for k, v in dict(data.get("agency_secrets", {})).items()},
        reference_key=str(data.get("reference_key", "")),
        oidc_client_secret=str(data.get("oidc_client_secret", "")),
    )


def ensure_secrets(state_dir: Path, agency_secret_names: Iterable[str]) -> Secrets:
    """Load the secrets, creating the file or adding secrets for agencies new to the registry."""
    current = read_secrets(state_dir)
    names = sorted(set(agency_secret_names))
    if (current is not None and all(n in current.agency_secrets for n in names)
            and current.reference_key and current.oidc_client_secret):
        return current
    agency = dict(current.agency_secrets) if current else {}
    for name in names:
        agency.setdefault(name, _secrets.token_urlsafe(32))
    result = Secrets(
        encryption_key=current.encryption_key if current else _new_key(),
        codec_token=current.codec_token if current else _secrets.token_urlsafe(32),
        agency_secrets=agency,
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
