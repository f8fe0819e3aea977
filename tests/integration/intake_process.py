"""``python -m intake`` as a process of a test's own: the real composition root on uvicorn."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from runtime.process import free_port
from runtime.settings import Settings
from tests.conftest import new_database
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LiveIntake:
    url: str
    settings: Settings
    """What the process was started with (its database, key and task queue)."""


@asynccontextmanager
async def running_intake(
    temporal_env: WorkflowEnvironment, postgres_server: str,
    tmp_path_factory: pytest.TempPathFactory, *, codec_token: str,
    agency_env: dict[str, str] | None = None, **values: Any,
) -> AsyncIterator[LiveIntake]:
    """A running ``python -m intake`` on the session's dev server, a fresh
    database, the shipped catalog and a uuid task queue; stopped by its PID afterwards.
    ``values`` are further settings (``deployment="production"``, ``metrics_token``...)."""
    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings.build(
        temporal_address=str(temporal_env.client.service_client.config.target_host),
        database_url=await new_database(postgres_server, "intake"),
        intake_url=url, intake_metrics_address=f"127.0.0.1:{free_port()}",
        task_queue=f"tq-{uuid.uuid4()}", state_dir=tmp_path_factory.mktemp("intake-state"),
        encryption_key=base64.b64encode(os.urandom(32)).decode(), codec_token=codec_token,
        log_format="json", **{
            "reference_key": secrets.token_urlsafe(32),
            # nobody listens there: no bearer token verifies (unless a test gives an issuer)
            "oidc_issuer": f"http://127.0.0.1:{free_port()}", **values},
    )
    log = tmp_path_factory.mktemp("intake-log") / "intake.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "intake", cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", ""), **settings.environment(),
                 **(agency_env or {})},
        )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            async def healthy() -> None:
                assert process.returncode is None, log.read_text()
                try:
                    response = await http.get("/health")
                except httpx.TransportError as exc:
                    raise AssertionError(f"the intake does not answer yet: {exc}") from exc
                assert response.status_code == 200

            await eventually(healthy, within_s=30, every_s=0.1)
        yield LiveIntake(url, settings)
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
