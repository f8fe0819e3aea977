"""Start-up configuration of the reference agencies, read once from the environment.

This is the agencies' own configuration, not the engine's: an agency system is a separate
program that must run without the engine installed, so it has its own small settings model
(pydantic-settings, like the engine's ``runtime.settings``) and imports nothing of the engine
(an import-linter contract holds it). Some names are shared with the engine on purpose — the
embedded stack hands both the same environment.

- ``DATABASE_URL`` (required): PostgreSQL DSN; each agency gets schema ``agency_<id>``.
- ``NWD_AGENCIES_URL`` (default ``http://127.0.0.1:8090``): the address to listen on.
- ``NWD_CATALOG_DIR`` (default: the repository's ``definitions/``): the registry is
  ``agencies.yaml`` in it.
- ``NWD_AGENCY_BEHAVIOUR`` (optional): behaviour JSON (see
  :mod:`agency_kit.reference.behaviour`).
- ``NWD_LOG_FORMAT`` (``auto`` | ``json`` | ``console``).
- ``NWD_AGENCY_KEYS_FILE`` (optional): the agencies' own private keys (JSON, mode 0600,
  :mod:`agency_kit.reference.credentials`); an agency with ``keys`` in the registry and no
  key here refuses every call.
- ``NWD_ENGINE_JWKS_URL`` (optional): the engine's public keys, verifying its calls; unset,
  every agency with ``keys`` refuses every call.
- ``NWD_SIGNATURE_EXPIRES_S`` (default 60): validity of the agencies' signatures.
- ``NWD_DEPLOYMENT`` (``development`` | ``production``): in production the admin API is off.

A wrong value stops the agencies at start-up with one line naming the variable
(:class:`ConfigError`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    SettingsConfigDict,
)

from agency_kit.reference.behaviour import AgencyBehaviour, parse_behaviours
from agency_kit.reference.credentials import AgencyCredentials, CredentialsError
from definitions.loader import load_registry_file
from definitions.models import AgencyRegistry

DEFAULT_CATALOG_DIR = Path(__file__).resolve().parents[2] / "definitions"
DEFAULT_AGENCIES_URL = "http://127.0.0.1:8090"
REGISTRY_FILE = "agencies.yaml"


class ConfigError(Exception):
    """The environment does not describe a runnable set of reference agencies."""


def _listen_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or port == 0:
        raise PydanticCustomError("listen_url", "must look like http://HOST:PORT")
    return value


def _behaviour(value: str) -> str:
    try:
        parse_behaviours(json.loads(value))
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise PydanticCustomError(
            "behaviour", "is not valid behaviour JSON: {reason}", {"reason": reason}
        ) from None
    return value


class AgenciesSettings(BaseSettings):
    """The variables the reference agencies read (documented in docs/cli.md)."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, validate_by_name=True,
        extra="forbid", use_attribute_docstrings=True,
    )

    database_url: str = Field(validation_alias="DATABASE_URL")
    """PostgreSQL DSN of the agencies' own tables."""
    agencies_url: Annotated[str, AfterValidator(_listen_url)] = Field(
        DEFAULT_AGENCIES_URL, validation_alias="NWD_AGENCIES_URL")
    """Where the agencies listen."""
    catalog_dir: Path = Field(DEFAULT_CATALOG_DIR, validation_alias="NWD_CATALOG_DIR")
    """The catalog folder whose ``agencies.yaml`` is served."""
    agency_behaviour: Annotated[str, AfterValidator(_behaviour)] | None = Field(
        None, validation_alias="NWD_AGENCY_BEHAVIOUR")
    """Start-up behaviour JSON: agency id (or ``*``) -> latency, errors, mode, ..."""
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias="NWD_LOG_FORMAT")
    """``json`` lines, a ``console`` for people, or ``auto``."""
    agency_keys_file: Path | None = Field(None, validation_alias="NWD_AGENCY_KEYS_FILE")
    """The agencies' own private keys (JSON, mode 0600)."""
    engine_jwks_url: str | None = Field(None, validation_alias="NWD_ENGINE_JWKS_URL")
    """The engine's JWKS URL, verifying its calls."""
    signature_expires_s: int = Field(60, ge=1, le=300, validation_alias="NWD_SIGNATURE_EXPIRES_S")
    """Validity of the agencies' signatures (seconds)."""
    deployment: Literal["development", "production"] = Field(
        "development", validation_alias="NWD_DEPLOYMENT")
    """``production``: the admin API (``/_admin``) is not served."""

    @classmethod
    def variables(cls) -> set[str]:
        """The names of the variables read."""
        return {str(f.validation_alias) for f in cls.model_fields.values()}

    @classmethod
    def from_environment(cls) -> AgenciesSettings:
        """The settings in this process's environment; raises :class:`ConfigError`."""
        try:
            return cls()  # pydantic-settings reads each field's variable from the environment
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = str(error["loc"][0]) if error["loc"] else "settings"
            if error["type"] == "missing":
                raise ConfigError(f"{name} is required") from None
            raise ConfigError(f"{name}={error.get('input')!r} {error['msg']}") from None


@dataclass(frozen=True)
class AgenciesConfig:
    registry: AgencyRegistry
    database_url: str
    host: str
    port: int
    credentials: AgencyCredentials
    behaviour: Mapping[str, AgencyBehaviour]
    log_format: str = "auto"
    admin: bool = True
    """Serve the admin API (off with ``NWD_DEPLOYMENT=production``)."""

    @classmethod
    def from_environment(cls) -> AgenciesConfig:
        """Settings from the environment, the registry they name, and the agencies' keys."""
        settings = AgenciesSettings.from_environment()
        try:
            credentials = AgencyCredentials.load(
                settings.agency_keys_file, settings.engine_jwks_url,
                settings.signature_expires_s)
        except CredentialsError as exc:
            raise ConfigError(f"NWD_AGENCY_KEYS_FILE: {exc}") from None
        registry = load_registry(settings.catalog_dir / REGISTRY_FILE)
        url = urlsplit(settings.agencies_url)
        raw: Any = json.loads(settings.agency_behaviour) if settings.agency_behaviour else None
        return cls(
            registry=registry,
            database_url=settings.database_url,
            host=url.hostname or "127.0.0.1",
            port=url.port or 80,
            credentials=credentials,
            behaviour=parse_behaviours(raw),
            log_format=settings.log_format,
            admin=settings.deployment != "production",
        )


def load_registry(path: Path) -> AgencyRegistry:
    """The agency registry in ``path``, validated by the definition loader."""
    if not path.is_file():
        raise ConfigError(f"no agency registry at {path}; set NWD_CATALOG_DIR")
    return load_registry_file(path)
