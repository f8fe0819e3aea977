"""Start-up configuration of the reference agencies, read once from the environment.

- ``DATABASE_URL`` (required): PostgreSQL DSN; each agency gets schema ``agency_<id>``.
- ``NWD_AGENCIES_URL`` (default ``http://127.0.0.1:8090``): the address to listen on.
- ``NWD_CATALOG_DIR`` (default: the repository's ``definitions/``): the registry is
  ``agencies.yaml`` in it.
- For each agency with ``auth_secret: SOME_VAR``: the secret is the value of ``SOME_VAR``.
- ``NWD_AGENCY_BEHAVIOUR`` (optional): behaviour JSON (see
  :mod:`agency_kit.reference.behaviour`).
- ``NWD_LOG_FORMAT`` (``auto`` | ``json`` | ``console``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agency_kit.reference.behaviour import AgencyBehaviour, parse_behaviours
from definitions.loader import load_registry_file
from definitions.models import AgencyRegistry

DEFAULT_CATALOG_DIR = Path(__file__).resolve().parents[2] / "definitions"
DEFAULT_AGENCIES_URL = "http://127.0.0.1:8090"
REGISTRY_FILE = "agencies.yaml"


class ConfigError(Exception):
    """The environment does not describe a runnable set of reference agencies."""


@dataclass(frozen=True)
class AgenciesConfig:
    registry: AgencyRegistry
    database_url: str
    host: str
    port: int
    secrets: Mapping[str, str]
    behaviour: Mapping[str, AgencyBehaviour]
    log_format: str = "auto"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgenciesConfig:
        database_url = env.get("DATABASE_URL")
        if not database_url:
            raise ConfigError("DATABASE_URL is required (a PostgreSQL DSN)")
        url = urlsplit(env.get("NWD_AGENCIES_URL") or DEFAULT_AGENCIES_URL)
        if url.scheme != "http" or not url.hostname:
            raise ConfigError("NWD_AGENCIES_URL must look like http://HOST:PORT")
        catalog_dir = Path(env.get("NWD_CATALOG_DIR") or DEFAULT_CATALOG_DIR)
        registry = load_registry(catalog_dir / REGISTRY_FILE)
        secrets = {
            agency.id: env[agency.auth_secret]
            for agency in registry.agencies
            if agency.auth_secret and env.get(agency.auth_secret)
        }
        raw = env.get("NWD_AGENCY_BEHAVIOUR")
        try:
            behaviour = parse_behaviours(json.loads(raw)) if raw else {}
        except ValueError as exc:
            raise ConfigError(f"NWD_AGENCY_BEHAVIOUR is not valid behaviour JSON: {exc}") from exc
        return cls(
            registry=registry,
            database_url=database_url,
            host=url.hostname,
            port=url.port or 80,
            secrets=secrets,
            behaviour=behaviour,
            log_format=env.get("NWD_LOG_FORMAT", "auto"),
        )


def load_registry(path: Path) -> AgencyRegistry:
    """The agency registry in ``path``, validated by the definition loader."""
    if not path.is_file():
        raise ConfigError(f"no agency registry at {path}; set NWD_CATALOG_DIR")
    return load_registry_file(path)
