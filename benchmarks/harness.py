"""The benchmark harness: the engine against the hand-written baseline, and DBOS, in one run.

For each scenario and repetition it starts a fresh worker *process* (engine or baseline, see
:mod:`benchmarks.worker_proc`; DBOS, see :mod:`benchmarks.dbos_app`) so all are measured the
same way — CPU seconds from ``psutil`` and peak RSS from ``VmHWM`` — submits ``R`` requests,
waits for every result, and records per-request end-to-end latency (submit → result),
throughput, the CPU seconds of the server (Temporal's; PostgreSQL's for DBOS), of PostgreSQL
(every mode), of the worker and of the reference agencies, and the history length of a sample
request (for DBOS: its step rows). Modes take turns within a scenario, the order rotating with
each repetition (baseline, engine, dbos, then engine, dbos, baseline, ...), so noise hits all
alike. DBOS runs only the fan-out and chain scenarios (the issue's comparison).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import asyncpg
import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]
from temporalio.client import Client

from benchmarks import stats
from benchmarks.agency_call import BaselineResult
from benchmarks.baseline_workflow import BaselineFanOut, baseline_input
from definitions.catalog import Catalog
from definitions.loader import load_catalog
from intake.submissions import build_submissions
from readmodel.store import ReadModel, open_pool
from runtime.settings import PROJECT_ROOT, Settings
from runtime.temporal import data_converter

DEFINITIONS = Path(__file__).resolve().parent / "definitions"
AGENCY_COUNT = 5
Mode = Literal["baseline", "engine", "dbos"]
MODES: tuple[Mode, ...] = ("baseline", "engine", "dbos")
TEMPORAL_MODES: tuple[Mode, ...] = ("baseline", "engine")
DBOS_SHAPES = ("fanout", "chain")
"""The scenarios DBOS runs (issue 7: "the 200 x 5 and sequential scenarios also on DBOS")."""
MODE_NOTES: dict[str, str] = {
    "baseline": "hand-written Temporal workflow (not a product). Temporal gives: a UI with "
                "history, search and payloads decrypted through a codec server; durable timers "
                "kept by the server; workers scaling out across hosts, and a server scaling "
                "separately. srv cpu = Temporal server.",
    "engine": "No Wrong Door on Temporal: all of the baseline's, plus YAML services, intake "
              "validation, the PostgreSQL read model, search attributes and activity "
              "summaries. srv cpu = Temporal server.",
    "dbos": "DBOS (library, dbos on PyPI) on the same PostgreSQL: no server to run; no UI like "
            "Temporal's (DBOS Conductor is a separate, licensed product); scaling by more app "
            "processes on the same PostgreSQL; payloads stored unencrypted. "
            "srv cpu = PostgreSQL; events = step rows.",
}
"""What each mode gives the user, printed and stored next to the figures."""
MAX_CONCURRENT_STARTS = 100
"""Start RPCs in flight at once (1,000 at once time out on the dev server); e2e still counts
from the moment a request is offered, so waiting for a start slot is part of its latency."""
FAILURE_SEED = 7
"""Seed of the agencies' injected 503s: the same calls fail in every mode's run."""
CLIENT_PROBE_LATENCY_MS = 50.0
"""Agency latency while the HTTP client's CPU per call is measured (calls stay in flight)."""


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: Literal["fanout", "foreach", "chain"]
    requests: int
    calls: int
    """Agency calls per request (N)."""
    latency_ms: float
    sequential_requests: bool = False
    """Submit one request at a time (the chain scenario: pure per-request overhead)."""

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes this scenario runs: DBOS too for fan-outs and the chain."""
        return MODES if self.shape in DBOS_SHAPES else TEMPORAL_MODES

    @property
    def depth(self) -> int:
        """Agency calls on the critical path of one request."""
        return self.calls if self.shape == "chain" else 1

    @property
    def critical_path_s(self) -> float:
        return self.depth * self.latency_ms / 1000


def scenarios(profile: str, latency_ms: float) -> list[Scenario]:
    """The issue's scenarios; ``quick`` shrinks R (and N=500 keeps N) for a run of minutes."""
    if profile == "full":
        return [
            Scenario("200x5", "fanout", 200, 5, latency_ms),
            Scenario("50x50", "foreach", 50, 50, latency_ms),
            Scenario("10x500", "foreach", 10, 500, latency_ms),
            Scenario("1x20-seq", "chain", 10, 20, latency_ms, sequential_requests=True),
            Scenario("200x5-0ms", "fanout", 200, 5, 0.0),
            # Memory with 1,000 requests open at once: slow agencies (4 s), one call each; the
            # worker's 200 connections serve them in 5 waves, inside the calls' 30 s timeout.
            Scenario("1000-inflight", "foreach", 1000, 1, 4000.0),
        ]
    if profile == "smoke":
        return [Scenario("3x2", "foreach", 3, 2, latency_ms),
                Scenario("3x2-fanout", "fanout", 3, 2, latency_ms)]
    return [
        Scenario("200x5", "fanout", 60, 5, latency_ms),
        Scenario("50x50", "foreach", 10, 50, latency_ms),
        Scenario("10x500", "foreach", 2, 500, latency_ms),
        Scenario("1x20-seq", "chain", 3, 20, latency_ms, sequential_requests=True),
        Scenario("200x5-0ms", "fanout", 60, 5, 0.0),
    ]


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
    """The PostgreSQL postmaster (its CPU with all its backends'); see :func:`postmaster_pid`."""


@dataclass
class RunResult:
    scenario: str
    mode: Mode
    repetition: int
    requests: int
    calls_per_request: int
    latency_ms: float
    wall_s: float
    e2e_s: list[float]
    history_events: int | None
    server_cpu_s: float | None
    worker_cpu_s: float | None
    agencies_cpu_s: float | None
    worker_peak_rss_mb: float | None
    failures: int = 0
    event_types: dict[str, int] = field(default_factory=dict)
    """Event types in the sample history, with counts."""
    load_avg_1m: float | None = None
    """The machine's 1-minute load average at the end of the run (others share the cores)."""
    postgres_cpu_s: float | None = None
    """PostgreSQL (postmaster and backends) — every mode: the engine's read model, DBOS's
    state, and in all modes the reference agencies' own records."""
    sample_reference: str | None = None
    """The request whose history (or DBOS step rows) gave ``history_events``."""
    client_cpu_s: float | None = None
    """The harness process: submitting and awaiting results — for the engine that includes
    its front door (submission validation, the first read-model row)."""

    def figures(self, critical_path_s: float) -> dict[str, float | None]:
        lat = stats.latency_summary(self.e2e_s)
        overhead = [e - critical_path_s for e in self.e2e_s]
        calls = self.requests * self.calls_per_request
        return {
            "requests_per_s": self.requests / self.wall_s,
            "calls_per_s": calls / self.wall_s,
            "e2e_p50_ms": lat["p50"] * 1000,
            "e2e_p95_ms": lat["p95"] * 1000,
            "e2e_p99_ms": lat["p99"] * 1000,
            "overhead_p50_ms": stats.median(overhead) * 1000,
            "history_events": None if self.history_events is None else float(self.history_events),
            "server_cpu_s": self.server_cpu_s,
            "postgres_cpu_s": self.postgres_cpu_s,
            "worker_cpu_s": self.worker_cpu_s,
            "agencies_cpu_s": self.agencies_cpu_s,
            "worker_cpu_ms_per_call": (
                None if self.worker_cpu_s is None else self.worker_cpu_s / calls * 1000
            ),
            "worker_peak_rss_mb": self.worker_peak_rss_mb,
            "client_cpu_s": self.client_cpu_s,
            "total_cpu_ms_per_request": self._total_cpu_ms_per_request(),
        }

    def _total_cpu_ms_per_request(self) -> float | None:
        """Every measured process's CPU per request (DBOS's server *is* PostgreSQL: once)."""
        parts = [self.postgres_cpu_s, self.worker_cpu_s, self.agencies_cpu_s, self.client_cpu_s]
        if self.mode != "dbos":
            parts.append(self.server_cpu_s)
        if any(p is None for p in parts):
            return None
        return sum(p for p in parts if p is not None) / self.requests * 1000


def _cpu_s(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _tree_cpu_s(pid: int | None) -> float | None:
    """CPU seconds of a process and its children: PostgreSQL's postmaster and its backends.

    Live children are read one by one; children already reaped (backends of closed
    connections) are in the parent's ``children_user``/``children_system``. A child ending
    between the listing and its reading loses its last figure: small against a run's total.
    """
    if pid is None:
        return None
    try:
        parent = psutil.Process(pid)
        times = parent.cpu_times()
        children = parent.children(recursive=True)
    except psutil.Error:
        return None
    total = float(times.user + times.system + times.children_user + times.children_system)
    for child in children:
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += float(child_times.user + child_times.system)
    return total


async def postmaster_pid(postgres_dsn: str) -> int | None:
    """The PostgreSQL postmaster's PID, if the server runs on this machine; else None.

    Reads ``postmaster.pid`` in the server's data directory (asked of the server itself) and
    checks that the PID is a running ``postgres``, so a remote server gives None.
    """
    try:
        conn = await asyncpg.connect(postgres_dsn)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        data_dir = await conn.fetchval("SELECT current_setting('data_directory')")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        name = psutil.Process(pid).name()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if "postgres" in name else None


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


class WorkerProcess:
    """A benchmark worker in its own process (``benchmarks.worker_proc``, or for DBOS
    ``benchmarks.dbos_app``, which loads neither Temporal nor the engine)."""

    def __init__(self, env: BenchEnv, mode: Mode, task_queue: str, database_url: str | None,
                 log_path: Path, cprofile: Path | None = None) -> None:
        self.mode = mode
        self.url: str | None = None
        """The DBOS front door's base URL, from its ``READY <url>`` line."""
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
        if mode == "dbos":
            argv = [sys.executable, "-m", "benchmarks.dbos_app"]
        else:
            argv = [sys.executable, "-m", "benchmarks.worker_proc", "--mode", mode,
                    "--task-queue", task_queue]
        if cprofile is not None:
            argv += ["--cprofile", str(cprofile)]
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, env=child_env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=self._log,
            stdin=subprocess.DEVNULL,
        )

    async def ready(self, limit_s: float = 60.0) -> None:
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), limit_s)
        if b"READY" not in line:
            raise RuntimeError(f"{self.mode} worker did not start (see {self._log.name})")
        if self.mode == "dbos":
            self.url = line.decode().split()[-1]

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


def isolate_server(server_pid: int, others: Sequence[int]) -> tuple[list[int], list[int]]:
    """Give the Temporal server the first core to itself and everything else the rest (Linux).

    In production the Temporal server runs on machines of its own; on one small machine the
    worker, the agencies and PostgreSQL otherwise take CPU from it. With the server on its own
    core, a run shows which side is the bound. Every thread of each process is moved (the
    affinity of a Linux thread is its own); processes started later by this one (the
    workers) inherit the rest. Returns (server cores, other cores).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise RuntimeError("isolating the server needs at least 2 cores")
    server_cores, rest = cores[:1], cores[1:]
    _pin(server_pid, server_cores)
    for pid in (*others, os.getpid()):
        _pin(pid, rest)
    return server_cores, rest


def _pin(pid: int, cores: Sequence[int]) -> None:
    """Pin every thread of ``pid`` and of its descendants to ``cores``."""
    try:
        processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return
    for process in processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
                os.sched_setaffinity(int(task.name), cores)


def agency_env(agencies_url: str) -> dict[str, str]:
    """Base URLs of the benchmark agencies, as the registry names them."""
    return {
        f"NWD_BENCH_AGENCY_{i}_URL": f"{agencies_url}/agencies/bench-{i}"
        for i in range(1, AGENCY_COUNT + 1)
    }


async def new_database(postgres_dsn: str, prefix: str) -> str:
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
    name = url.partition("?")[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _submission(scenario: Scenario, index: int) -> dict[str, Any]:
    data: dict[str, Any] = {"label": f"bench-{index}"}
    if scenario.shape == "foreach":
        data["items"] = [{"n": n} for n in range(scenario.calls)]
    return data


def _baseline_calls(
    scenario: Scenario, agencies_url: str, data: dict[str, Any]
) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    def url(agency: int) -> str:
        return f"{agencies_url}/agencies/bench-{agency}/operations/record"

    label = data["label"]
    if scenario.shape == "fanout":
        return [(url(i), f"call_{i}", None, {"label": label}) for i in range(1, scenario.calls + 1)]
    if scenario.shape == "foreach":
        return [(url(1), "each", str(n), {"label": label, "n": n}) for n in range(scenario.calls)]
    return [(url((k - 1) % AGENCY_COUNT + 1), f"step_{k:02d}", None, {"label": label})
            for k in range(1, scenario.calls + 1)]


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


SERVICE = {"fanout": "bench-fanout", "foreach": "bench-foreach", "chain": "bench-chain"}


def rotated(modes: Sequence[Mode], repetition: int) -> list[Mode]:
    """The modes in the order of one repetition: each repetition starts one mode later, so
    every mode runs first, second, ... equally often (two modes: A B, then B A)."""
    if not modes:
        return []
    shift = repetition % len(modes)
    return [*modes[shift:], *modes[:shift]]


class Harness:
    def __init__(self, env: BenchEnv, out_dir: Path, *, echo: Callable[[str], None] = print,
                 catalog: Catalog | None = None, failure_rate: float = 0.0) -> None:
        if not 0.0 <= failure_rate < 1.0:
            raise ValueError(f"failure rate must be in [0, 1), not {failure_rate}")
        self.env = env
        self.failure_rate = failure_rate
        """Share of agency calls answered 503 (retried by all modes alike)."""
        self.out_dir = out_dir
        self.echo = echo
        self.catalog = catalog or load_catalog(DEFINITIONS)
        self.client: Client | None = None

    async def connect(self) -> Client:
        if self.client is None:
            self.client = await Client.connect(
                self.env.temporal_address, namespace=self.env.namespace,
                data_converter=data_converter(self.env.key),
            )
        return self.client

    async def set_latency(self, latency_ms: float, failure_rate: float | None = None) -> None:
        """Reset the agencies and give every one this latency and share of 503 answers
        (default: the harness's ``failure_rate``; seeded, so runs are comparable)."""
        rate = self.failure_rate if failure_rate is None else failure_rate
        behaviour: dict[str, Any] = {"latency_ms": latency_ms}
        if rate > 0:
            behaviour.update(error_rate=rate, seed=FAILURE_SEED)
        async with httpx.AsyncClient(base_url=self.env.agencies_url, timeout=30) as admin:
            (await admin.post("/_admin/reset")).raise_for_status()
            response = await admin.put("/_admin/agencies/*/behaviour", json=behaviour)
            response.raise_for_status()

    async def run_once(self, scenario: Scenario, mode: Mode, repetition: int,
                       cprofile: Path | None = None) -> RunResult:
        client = await self.connect()
        task_queue = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
        # engine: its read model; dbos: DBOS's system database. A fresh one per run.
        database_url = (
            await new_database(self.env.postgres_dsn, f"bench_{mode}")
            if mode in ("engine", "dbos") else None
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(self.env, mode, task_queue, database_url,
                               self.out_dir / f"worker-{mode}.log", cprofile)
        pool: asyncpg.Pool | None = None
        front_door: aiohttp.ClientSession | None = None
        try:
            await worker.ready()
            # The engine gets a real front door: it writes each request's first read-model
            # row at submission (in this process, as the intake would).
            if mode == "engine" and database_url is not None:
                pool = await open_pool(database_url, max_size=5)
            submissions = build_submissions(Settings(task_queue=task_queue), client,
                                            self.catalog, ReadModel(pool) if pool else None)
            if mode == "dbos":
                # DBOS's front door is the app's own HTTP API (see benchmarks.dbos_app); every
                # request holds a connection while it waits for its result, hence no limit.
                front_door = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=None),
                )
            service = SERVICE[scenario.shape]
            run_id = uuid.uuid4().hex[:8]

            starting = asyncio.Semaphore(MAX_CONCURRENT_STARTS)

            async def one(index: int) -> tuple[float, str, bool]:
                data = _submission(scenario, index)
                key = f"{run_id}-{index}"
                started = time.perf_counter()
                if mode == "engine":
                    async with starting:
                        submitted = await submissions.submit(service, data, idempotency_key=key)
                    reference = submitted.reference
                    result = await submissions.handle(reference).result()
                    ok = result.status == "completed"
                    return time.perf_counter() - started, reference, ok
                reference = f"{service}-{key}"
                request = baseline_input(
                    reference, _baseline_calls(scenario, self.env.agencies_url, data),
                    sequential=scenario.shape == "chain",
                )
                if mode == "dbos":
                    assert front_door is not None and worker.url is not None
                    async with starting, front_door.post(
                        f"{worker.url}/workflows", data=request.model_dump_json(),
                        headers={"Content-Type": "application/json"},
                    ) as response:
                        response.raise_for_status()
                    async with front_door.get(
                        f"{worker.url}/workflows/{reference}/result"
                    ) as response:
                        response.raise_for_status()
                        base_result = BaselineResult.model_validate_json(await response.read())
                else:
                    async with starting:
                        handle = await client.start_workflow(
                            BaselineFanOut.run, request, id=reference, task_queue=task_queue,
                        )
                    base_result = await handle.result()
                ok = base_result.completed == len(request.calls)
                return time.perf_counter() - started, reference, ok

            def cpu() -> tuple[float | None, ...]:
                return (_cpu_s(self.env.server_pid), _cpu_s(worker.pid),
                        _cpu_s(self.env.agencies_pid), _tree_cpu_s(self.env.postgres_pid),
                        _cpu_s(os.getpid()))

            cpu_before = cpu()
            started = time.perf_counter()
            outcomes: list[tuple[float, str, bool]] = []
            if scenario.sequential_requests:
                for index in range(scenario.requests):
                    outcomes.append(await one(index))
            else:
                outcomes = list(await asyncio.gather(*(one(i) for i in range(scenario.requests))))
            wall = time.perf_counter() - started
            cpu_after = cpu()
            peak = _peak_rss_mb(worker.pid)
            sample = outcomes[0][1]
            if mode == "dbos":
                assert database_url is not None
                events, event_types = await self._dbos_steps(database_url, sample)
            else:
                events, event_types = await self._history_events(
                    client, sample, self.out_dir / "histories" / f"{scenario.name}-{mode}.json")
        finally:
            await worker.stop()
            if front_door is not None:
                await front_door.close()
            if pool is not None:
                await pool.close()
            if database_url is not None:
                await drop_database(self.env.postgres_dsn, database_url)

        def delta(i: int) -> float | None:
            a, b = cpu_before[i], cpu_after[i]
            return None if a is None or b is None else b - a

        return RunResult(
            scenario=scenario.name, mode=mode, repetition=repetition,
            requests=scenario.requests, calls_per_request=scenario.calls,
            latency_ms=scenario.latency_ms, wall_s=wall, e2e_s=[o[0] for o in outcomes],
            history_events=events, event_types=event_types,
            # DBOS's server is PostgreSQL; the Temporal modes' is the Temporal server
            server_cpu_s=delta(3) if mode == "dbos" else delta(0), worker_cpu_s=delta(1),
            agencies_cpu_s=delta(2), worker_peak_rss_mb=peak,
            failures=sum(1 for o in outcomes if not o[2]),
            load_avg_1m=os.getloadavg()[0],
            postgres_cpu_s=delta(3), sample_reference=sample, client_cpu_s=delta(4),
        )

    @staticmethod
    async def _dbos_steps(database_url: str, workflow_id: str) -> tuple[int | None, dict[str, int]]:
        """DBOS keeps no event history: its step rows (``operation_outputs``) for one workflow."""
        try:
            conn = await asyncpg.connect(database_url)
        except (OSError, asyncpg.PostgresError):
            return None, {}
        try:
            rows = await conn.fetch(
                "SELECT function_name, count(*) AS n FROM dbos.operation_outputs"
                " WHERE workflow_uuid = $1 GROUP BY function_name", workflow_id,
            )
        except asyncpg.PostgresError:  # a figure we can live without
            return None, {}
        finally:
            await conn.close()
        types = {str(row["function_name"]): int(row["n"]) for row in rows}
        return sum(types.values()), types

    @staticmethod
    async def _history_events(
        client: Client, workflow_id: str, keep: Path
    ) -> tuple[int | None, dict[str, int]]:
        """Events in one sample history, by type; the history is kept in ``keep`` so its
        workflow-code cost can be measured offline (``benchmarks/replay_cost.py``)."""
        try:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
        except Exception:  # a figure we can live without
            return None, {}
        keep.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(keep.write_text, history.to_json())
        return _count_types(history.events)

    async def run(self, selected: Sequence[Scenario], repetitions: int,
                  measure_client: bool = True,
                  modes: Sequence[Mode] | None = None) -> BenchReport:
        """Every scenario in its modes (``Scenario.modes``, narrowed to ``modes`` if given)."""
        report = BenchReport()
        # The sample histories are sealed with this run's throwaway key (synthetic data only);
        # replay_cost.py needs it to decode them.
        histories = self.out_dir / "histories"
        histories.mkdir(parents=True, exist_ok=True)
        (histories / "key.b64").write_text(base64.b64encode(self.env.key).decode())
        if importlib.util.find_spec("dbos") is None and (modes is None or "dbos" in modes):
            self.echo("  dbos: skipped (not installed: pip install -e '.[dev]')")
            modes = [m for m in modes or MODES if m != "dbos"]
        if measure_client and selected:
            from benchmarks.http_client_cost import client_cpu_per_call

            await self.set_latency(CLIENT_PROBE_LATENCY_MS, failure_rate=0.0)
            report.http_client_cpu_ms = await client_cpu_per_call(self.env.agencies_url)
            for client, by_n in report.http_client_cpu_ms.items():
                self.echo(f"  HTTP client CPU per call, {client}: " + ", ".join(
                    f"{v:.2f} ms @ {n} in flight" for n, v in by_n.items()))
        for scenario in selected:
            await self.set_latency(scenario.latency_ms)
            run_modes = [m for m in scenario.modes if modes is None or m in modes]
            for rep in range(repetitions):
                for mode in rotated(run_modes, rep):
                    self.echo(f"  {scenario.name:<10} {mode:<8} rep {rep + 1}/{repetitions} ...")
                    result = await self.run_once(scenario, mode, rep)
                    fig = result.figures(scenario.critical_path_s)
                    self.echo(
                        f"    {fig['requests_per_s']:.2f} req/s, {fig['calls_per_s']:.0f} calls/s, "
                        f"p50 {fig['e2e_p50_ms']:.0f} ms, p99 {fig['e2e_p99_ms']:.0f} ms"
                        + (f", {result.failures} failed" if result.failures else "")
                        + f", load {result.load_avg_1m:.1f}"
                    )
                    report.runs.append(result)
            report.scenarios.append(scenario)
        return report


def _count_types(events: Sequence[Any]) -> tuple[int, dict[str, int]]:
    from temporalio.api.enums.v1 import EventType

    types: dict[str, int] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        types[name] = types.get(name, 0) + 1
    return len(events), types


@dataclass
class BenchReport:
    runs: list[RunResult] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)
    http_client_cpu_ms: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, dict[str, float | None]]]:
        """Per scenario: medians over repetitions for each mode, engine ÷ baseline (``ratio``)
        and, where DBOS ran, its medians (``dbos``) and dbos ÷ baseline (``dbos_ratio``)."""
        out: dict[str, dict[str, dict[str, float | None]]] = {}
        for scenario in self.scenarios:
            medians: dict[str, dict[str, float | None]] = {}
            for mode in MODES:
                runs = [r.figures(scenario.critical_path_s) for r in self.runs
                        if r.scenario == scenario.name and r.mode == mode]
                if runs or mode in TEMPORAL_MODES:
                    medians[mode] = stats.median_of_runs(runs) if runs else {}
            rows = {
                "baseline": medians["baseline"], "engine": medians["engine"],
                "ratio": stats.ratios(medians["engine"], medians["baseline"]),
            }
            if "dbos" in medians:
                rows["dbos"] = medians["dbos"]
                rows["dbos_ratio"] = stats.ratios(medians["dbos"], medians["baseline"])
            out[scenario.name] = rows
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "modes": MODE_NOTES,
            "scenarios": [asdict(s) for s in self.scenarios],
            "http_client_cpu_ms_per_call": self.http_client_cpu_ms,
            "summary": self.summary(),
            "runs": [asdict(r) for r in self.runs],
        }


