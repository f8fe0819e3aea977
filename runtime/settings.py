"""Configuration, read once from the environment at a composition root and passed down.

Nothing below the composition roots (``worker.py``, the intake's start-up, the CLI) reads the
environment: they call :meth:`Settings.from_env` and hand the values to constructors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = PROJECT_ROOT / ".state"
DEFAULT_CATALOG_DIR = PROJECT_ROOT / "definitions"
_TRUE = {"1", "true", "yes", "on"}
TASK_QUEUE = "citizen-requests"
"""The engine's one task queue (workflows and agency-call activities)."""


@dataclass(frozen=True)
class Settings:
    """Every setting the engine's processes use, with the embedded stack's defaults."""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    task_queue: str = TASK_QUEUE
    database_url: str | None = None
    """PostgreSQL DSN; None means: use the embedded server under ``state_dir``."""
    state_dir: Path = DEFAULT_STATE_DIR
    catalog_dir: Path = DEFAULT_CATALOG_DIR
    intake_url: str = "http://127.0.0.1:8000"
    """Public base URL of the intake: agencies' callbacks go to ``{intake_url}/callbacks/...``."""
    agencies_url: str = "http://127.0.0.1:8090"
    """Base URL of the reference agencies (the demo's default agency endpoints)."""
    encryption_key: str | None = None
    """Base64 AES-256 key for the payload codec; None means: the key file under ``state_dir``."""
    log_format: str = "auto"
    codec_token: str | None = None
    """Bearer token the intake's codec server (``/codec``) accepts; None disables it."""
    agency_env: Mapping[str, str] = field(default_factory=dict)
    """The environment as given, for agency base URLs and signing secrets named in the registry."""
    workflow_sandbox: bool = False
    """Run workflow code inside the SDK's sandbox (a development guard; see worker.py)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        state_dir = Path(env.get("NWD_STATE_DIR", str(DEFAULT_STATE_DIR)))
        return cls(
            temporal_address=env.get("TEMPORAL_ADDRESS", cls.temporal_address),
            temporal_namespace=env.get("TEMPORAL_NAMESPACE", cls.temporal_namespace),
            temporal_ui_url=env.get("TEMPORAL_UI_URL", cls.temporal_ui_url),
            task_queue=env.get("NWD_TASK_QUEUE", cls.task_queue),
            database_url=env.get("DATABASE_URL") or None,
            state_dir=state_dir,
            catalog_dir=Path(env.get("NWD_CATALOG_DIR", str(DEFAULT_CATALOG_DIR))),
            intake_url=env.get("NWD_INTAKE_URL", cls.intake_url).rstrip("/"),
            agencies_url=env.get("NWD_AGENCIES_URL", cls.agencies_url).rstrip("/"),
            encryption_key=env.get("NWD_ENCRYPTION_KEY") or None,
            log_format=env.get("NWD_LOG_FORMAT", cls.log_format),
            codec_token=env.get("NWD_CODEC_TOKEN") or None,
            agency_env=env,
            workflow_sandbox=env.get("NWD_WORKFLOW_SANDBOX", "").lower() in _TRUE,
        )
