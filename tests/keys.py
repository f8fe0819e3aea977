"""Test keys: the engine's and each agency's Ed25519 keys, made fresh for each test process.

Real keys, real signatures (agency_kit.signing): only where they come from is the tests'.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from agency_kit.keys import Keyring, StaticKeys, load_private_key, new_key
from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.signing import Signer
from definitions.models import AgencyRegistry


def keyring(owner: str) -> Keyring:
    """One fresh key under a kid naming ``owner``."""
    return Keyring((load_private_key(_jwk(f"{owner}-{uuid.uuid4().hex[:8]}")),))


def _jwk(kid: str) -> str:
    return json.dumps(new_key(kid))


ENGINE = keyring("engine")
"""The engine's keyring in tests: the worker signs with it, the agencies verify with it."""


def engine_signer() -> Signer:
    return ENGINE.signer()


def engine_keys() -> StaticKeys:
    """The engine's public keys as the agencies know them."""
    return StaticKeys(ENGINE.public())


def agency_credentials(
    registry: AgencyRegistry, *, without: frozenset[str] = frozenset(),
    engine: StaticKeys | None = None,
) -> AgencyCredentials:
    """A fresh key for each agency with ``keys`` in ``registry`` (but those ``without``)."""
    rings: dict[str, Keyring] = {
        agency.id: keyring(agency.id) for agency in registry.agencies
        if agency.keys is not None and agency.id not in without}
    return AgencyCredentials(keyrings=rings, engine_keys=engine or engine_keys())


def jwks_env(registry: AgencyRegistry, agencies_url: str) -> Mapping[str, str]:
    """Each agency's JWKS variable -> the reference agencies' JWKS URL of that agency."""
    return {agency.keys.jwks_url_env: f"{agencies_url}/agencies/{agency.id}/.well-known/jwks.json"
            for agency in registry.agencies
            if agency.keys is not None and agency.keys.jwks_url_env}
