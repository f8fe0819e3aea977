"""The benchmark's processes: the stack it runs on, the reference agencies, each mode's worker.

Every worker runs in a process of its own so that all modes are measured alike, from outside
(:mod:`benchmarks.measure`). The stack is the embedded one of ``nwd up`` (:class:`nwd.stack.Stack`)
in a fresh state folder on free ports, serving the benchmark registry
(``benchmarks/definitions``) instead of the demo's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from benchmarks.scenarios import AGENCY_COUNT
from nwd.stack import Stack, Watchdog
from runtime.process import free_port
from runtime.settings import PROJECT_ROOT, Settings

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
"""The benchmark's catalog: five generic agencies and one service per scenario shape."""


@dataclass(frozen=True)
class BenchEnv:
    """Where the benchmark runs: a Temporal server, PostgreSQL, the reference agencies."""

    temporal_address: str
    namespace: str
    postgres_dsn: str
    """DSN of the maintenance database; the harness creates one engine database per run."""
    agencies_url: str
    key: bytes
    server_pid: int | None = None
    agencies_pid: int | None = None
    postgres_pid: int | None = None
    """The PostgreSQL postmaster (its CPU with all its backends'); see
    :func:`benchmarks.measure.postmaster_pid`."""




@contextlib.contextmanager
def bench_stack(
    state_dir: Path, environ: Mapping[str, str], echo: Callable[[str], None]
) -> Iterator[BenchEnv]:
    """The embedded stack (PostgreSQL, Temporal, the reference agencies) for one bench run.

    Everything is on free ports under ``state_dir``, so it never meets a stack already on
    the machine. ``TEMPORAL_ADDRESS`` / ``DATABASE_URL`` in ``environ`` name running servers
    to use instead (their CPU is then measured only if they run here). Stopped on exit — and,
    owned by this process, by the stack's watchdog if the benchmark is killed; a second
    watchdog then sweeps the workers the benchmark started (docs/operations-stack.md).
    """
    with owned_stack(state_dir, environ, echo, catalog_dir=DEFINITIONS,
                     components=("postgres", "temporal", "agencies")) as stack:
        yield BenchEnv(
            temporal_address=stack.temporal_address,
            namespace=stack.settings.temporal_namespace,
            postgres_dsn=stack.postgres_dsn,
            agencies_url=stack.settings.agencies_url,
            key=base64.b64decode(stack.secrets().encryption_key),
            server_pid=stack.running_pid("temporal"),
            agencies_pid=stack.running_pid("agencies"),
            postgres_pid=stack.running_pid("postgres"),
        )


@contextlib.contextmanager
def owned_stack(
    state_dir: Path, environ: Mapping[str, str], echo: Callable[[str], None], *,
    catalog_dir: Path, components: Sequence[str],
) -> Iterator[Stack]:
    """An embedded stack on free ports under ``state_dir``, owned by this process, up.

    ``components`` start (with what they need) serving ``catalog_dir``; the benchmark starts
    PostgreSQL, Temporal and the agencies, the soak (:mod:`benchmarks.soak`) the whole stack.
    Stopped on exit; if this process is killed, the stack's watchdog stops it and a second
    watchdog sweeps the processes this one started itself.
    """
    env = dict(environ)
    given = Settings.from_environment()
    settings = Settings(
        temporal_address=given.temporal_address,
        temporal_namespace=given.temporal_namespace,
        database_url=given.database_url,
        state_dir=state_dir,
        catalog_dir=catalog_dir,
        agencies_url=f"http://127.0.0.1:{free_port()}",
        intake_url=f"http://127.0.0.1:{free_port()}",
        temporal_port=free_port(), temporal_ui_port=free_port(),
        temporal_metrics_port=free_port(), postgres_port=free_port(), oidc_port=free_port(),
        worker_metrics_address=None,
    )
    stack = Stack(settings, external_temporal=given.temporal_external, env=env, echo=echo,
                  owner_pid=os.getpid())
    sweeper = Watchdog.start(state_dir / "sweep", owner=os.getpid(), sweep=True)
    try:
        stack.up(list(components))
        yield stack
    finally:
        stack.down()
        sweeper.stop()


def agency_env(agencies_url: str) -> dict[str, str]:
    """Base URLs of the benchmark agencies, as the registry names them."""
    return {
        f"NWD_BENCH_AGENCY_{i}_URL": f"{agencies_url}/agencies/bench-{i}"
        for i in range(1, AGENCY_COUNT + 1)
    }


async def new_database(postgres_dsn: str, prefix: str) -> str:
    """Create an empty database on the server of ``postgres_dsn``; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, query = postgres_dsn.partition("?")
    url = base.rsplit("/", 1)[0] + f"/{name}"
    return f"{url}?{query}" if query else url


async def drop_database(postgres_dsn: str, url: str) -> None:
    """Drop the database ``url`` names, closing whatever connections it still has."""
    name = url.partition("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class WorkerProcess:
    """One mode's worker in its own process: ``python -m <module> <args>``.

    The process prints ``READY`` (or ``READY <url>`` when it serves HTTP, as the DBOS app
    does) on stdout once it takes work; stderr goes to ``log_path``. It gets the benchmark's
    Temporal server, key and agencies in its environment, and ``DATABASE_URL`` if given.

    Args:
        env: where the benchmark runs.
        argv: the module to run and its arguments, e.g.
            ``["benchmarks.worker_proc", "--mode", "engine", ...]``.
        name: what the process is, for errors (``engine worker``).
        database_url: the database this worker owns for the run (None: it needs none).
        log_path: where its stderr goes (appended).
        cprofile: profile the whole process into this file (``--cprofile FILE``).
    """

    def __init__(self, env: BenchEnv, argv: list[str], *, name: str, database_url: str | None,
                 log_path: Path, cprofile: Path | None = None) -> None:
        self.name = name
        self.url: str | None = None
        """The base URL from the ``READY <url>`` line, if the worker serves HTTP."""
        child_env = dict(os.environ)
        for name in ("DATABASE_URL", "TEMPORAL_ADDRESS"):
            child_env.pop(name, None)
        child_env.update(
            TEMPORAL_ADDRESS=env.temporal_address,
            TEMPORAL_NAMESPACE=env.namespace,
            NWD_ENCRYPTION_KEY=base64.b64encode(env.key).decode(),
            NWD_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
            **agency_env(env.agencies_url),
        )
        if database_url is not None:
            child_env["DATABASE_URL"] = database_url
        command = [sys.executable, "-m", *argv]
        if cprofile is not None:
            command += ["--cprofile", str(cprofile)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            command, env=child_env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=self._log,
            stdin=subprocess.DEVNULL,
        )

    async def ready(self, limit_s: float = 60.0) -> None:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), limit_s)
        words = line.decode(errors="replace").split()
        if not words or words[0] != "READY":
            raise RuntimeError(f"{self.name} did not start (see {self._log.name})")
        self.url = words[1] if len(words) > 1 else None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class AgenciesProcess:
    """The reference agencies serving the benchmark registry, in their own process."""

    def __init__(self, database_url: str, port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ)
        env.update(DATABASE_URL=database_url, NWD_AGENCIES_URL=self.url,
                   NWD_CATALOG_DIR=str(DEFINITIONS), NWD_LOG_FORMAT="json")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agency_kit"], env=env, cwd=PROJECT_ROOT,
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
        )

    async def ready(self, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the reference agencies exited (see {self._log.name})")
                try:
                    if (await http.get(f"{self.url}/agencies/bench-1/health")).is_success:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the reference agencies did not start (see {self._log.name})")

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self._log.close()
