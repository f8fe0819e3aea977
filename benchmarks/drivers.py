"""One driver per mode: how its worker starts, how one request goes through it, what one
request left behind.

The harness runs every mode the same way (:meth:`benchmarks.harness.Harness.run_once`): it
asks the mode's driver to :meth:`~Driver.start` (a fresh worker process, and the database it
owns for the run), times :meth:`~Driver.request` for each of the scenario's requests, asks for
the :meth:`~Driver.sample` of one of them (its history length) and finally :meth:`~Driver.stop`.
Everything that differs between the modes is here, one class each:

- :class:`BaselineDriver`: the hand-written :class:`~benchmarks.baseline_workflow.BaselineFanOut`,
  started directly on the Temporal client;
- :class:`EngineDriver`: the engine's front door (:class:`intake.submissions.Submissions`,
  with the read model) and its worker;
- :class:`DbosDriver`: the same workflow on DBOS, reached through the app's HTTP API.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import aiohttp
import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from benchmarks.agency_call import BaselineInput, BaselineResult
from benchmarks.baseline_workflow import BaselineFanOut, baseline_input
from benchmarks.processes import BenchEnv, WorkerProcess, drop_database, new_database
from benchmarks.scenarios import Mode, Scenario
from definitions.catalog import Catalog
from intake.submissions import Submissions, build_submissions
from readmodel.store import ReadModel, open_pool
from runtime.settings import Settings


@dataclass(frozen=True)
class RunContext:
    """What a driver is given for one run of one scenario."""

    env: BenchEnv
    client: Client
    """The harness's Temporal client (with the run's data converter); shared by all runs."""
    catalog: Catalog
    """The benchmark catalog, for the engine's front door."""
    scenario: Scenario
    out_dir: Path
    """Where worker logs and sample histories go."""
    starting: asyncio.Semaphore
    """Held around each start (RPC or POST), so at most so many are in flight at once."""
    cprofile: Path | None = None
    """Run the worker under cProfile, writing here."""


SampleEvents = tuple[int | None, dict[str, int]]
"""Events in one request's history (DBOS: its step rows) and their types with counts."""


class Driver(Protocol):
    """One mode, for one run. ``stop`` releases whatever ``start`` acquired, even when
    ``start`` failed halfway."""

    mode: ClassVar[Mode]

    def __init__(self, ctx: RunContext) -> None: ...

    @staticmethod
    def unavailable() -> str | None:
        """Why this mode cannot run on this machine (None: it can)."""
        ...

    async def start(self) -> int:
        """Start the mode's worker; its PID, once it takes work."""
        ...

    async def request(self, index: int) -> tuple[str, bool]:
        """Submit request ``index`` and wait for its result: (its reference, completed?)."""
        ...

    async def sample(self, reference: str) -> SampleEvents:
        """What the request ``reference`` left: its history's events, by type."""
        ...

    async def stop(self) -> None: ...


class _Run:
    """What every driver does alike: own resources for the run, start a worker process."""

    mode: ClassVar[Mode]

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.run_id = uuid.uuid4().hex[:8]
        """Part of every idempotency key, so no two runs share a request."""
        self._owned = contextlib.AsyncExitStack()

    @staticmethod
    def unavailable() -> str | None:
        return None

    async def fresh_database(self, prefix: str) -> str:
        """An empty database on the benchmark's PostgreSQL, dropped at :meth:`stop`."""
        dsn = self.ctx.env.postgres_dsn
        url = await new_database(dsn, prefix)
        self._owned.push_async_callback(drop_database, dsn, url)
        return url

    async def ready_worker(self, argv: list[str], database_url: str | None) -> WorkerProcess:
        """The mode's worker process, started and ready; stopped at :meth:`stop`."""
        self.ctx.out_dir.mkdir(parents=True, exist_ok=True)
        worker = WorkerProcess(
            self.ctx.env, argv, name=f"{self.mode} worker", database_url=database_url,
            log_path=self.ctx.out_dir / f"worker-{self.mode}.log", cprofile=self.ctx.cprofile,
        )
        self._owned.push_async_callback(worker.stop)
        await worker.ready()
        return worker

    async def stop(self) -> None:
        await self._owned.aclose()


class _TemporalRun(_Run):
    """A mode on the Temporal server: a ``benchmarks.worker_proc`` worker on a fresh task
    queue, and the sample request's history (kept for ``benchmarks.replay_cost``)."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.task_queue = f"bench-{self.mode}-{uuid.uuid4().hex[:8]}"

    async def ready_temporal_worker(self, database_url: str | None) -> int:
        worker = await self.ready_worker(
            ["benchmarks.worker_proc", "--mode", self.mode, "--task-queue", self.task_queue],
            database_url,
        )
        return worker.pid

    async def sample(self, reference: str) -> SampleEvents:
        keep = self.ctx.out_dir / "histories" / f"{self.ctx.scenario.name}-{self.mode}.json"
        return await history_events(self.ctx.client, reference, keep)


class BaselineDriver(_TemporalRun):
    """The hand-written Temporal workflow, started directly with the client."""

    mode: ClassVar[Mode] = "baseline"

    async def start(self) -> int:
        return await self.ready_temporal_worker(database_url=None)

    async def request(self, index: int) -> tuple[str, bool]:
        request = _baseline_request(self.ctx, f"{self.run_id}-{index}", index)
        async with self.ctx.starting:
            handle = await self.ctx.client.start_workflow(
                BaselineFanOut.run, request, id=request.reference, task_queue=self.task_queue,
            )
        result = await handle.result()
        return request.reference, result.completed == len(request.calls)


class EngineDriver(_TemporalRun):
    """No Wrong Door: submitted through its front door, run by its worker, with a fresh
    read-model database per run."""

    mode: ClassVar[Mode] = "engine"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._submissions: Submissions | None = None

    async def start(self) -> int:
        database_url = await self.fresh_database("bench_engine")
        pid = await self.ready_temporal_worker(database_url)
        # The engine gets a real front door: it writes each request's first read-model row
        # at submission (in this process, as the intake would).
        pool = await open_pool(database_url, max_size=5)
        self._owned.push_async_callback(pool.close)
        # A run's own reference key: its references need to be stable only within the run.
        self._submissions = build_submissions(
            Settings(task_queue=self.task_queue,
                     encryption_key=base64.b64encode(self.ctx.env.key).decode()),
            self.ctx.client, self.ctx.catalog, ReadModel(pool), reference_key=os.urandom(32))
        return pid

    async def request(self, index: int) -> tuple[str, bool]:
        assert self._submissions is not None, "start() first"
        scenario = self.ctx.scenario
        data = scenario.submission(index)
        async with self.ctx.starting:
            submitted = await self._submissions.submit(
                scenario.service, data, idempotency_key=f"{self.run_id}-{index}",
            )
        result = await self._submissions.handle(submitted.reference).result()
        return submitted.reference, result.status == "completed"


class DbosDriver(_Run):
    """The baseline's workflow on DBOS (``benchmarks.dbos_app``), on a fresh system database,
    reached through the app's own HTTP API as a DBOS application's callers would."""

    mode: ClassVar[Mode] = "dbos"

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self._front_door: aiohttp.ClientSession | None = None
        self._url: str | None = None
        self._database_url: str | None = None

    @staticmethod
    def unavailable() -> str | None:
        if importlib.util.find_spec("dbos") is None:
            return "not installed: pip install -e '.[dev]'"
        return None

    async def start(self) -> int:
        self._database_url = await self.fresh_database("bench_dbos")
        worker = await self.ready_worker(["benchmarks.dbos_app"], self._database_url)
        if worker.url is None:
            raise RuntimeError("the DBOS app did not say where it serves (READY <url>)")
        self._url = worker.url
        # Every request holds a connection while it waits for its result, hence no limit.
        self._front_door = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None),
        )
        self._owned.push_async_callback(self._front_door.close)
        return worker.pid

    async def request(self, index: int) -> tuple[str, bool]:
        assert self._front_door is not None and self._url is not None, "start() first"
        request = _baseline_request(self.ctx, f"{self.run_id}-{index}", index)
        async with self.ctx.starting, self._front_door.post(
            f"{self._url}/workflows", data=request.model_dump_json(),
            headers={"Content-Type": "application/json"},
        ) as response:
            response.raise_for_status()
        async with self._front_door.get(
            f"{self._url}/workflows/{request.reference}/result"
        ) as response:
            response.raise_for_status()
            result = BaselineResult.model_validate_json(await response.read())
        return request.reference, result.completed == len(request.calls)

    async def sample(self, reference: str) -> SampleEvents:
        """DBOS keeps no event history: its step rows (``operation_outputs``) for one workflow."""
        assert self._database_url is not None, "start() first"
        return await dbos_steps(self._database_url, reference)


DRIVERS: dict[Mode, type[Driver]] = {
    "baseline": BaselineDriver,
    "engine": EngineDriver,
    "dbos": DbosDriver,
}
"""The driver of each mode."""


def _baseline_request(ctx: RunContext, key: str, index: int) -> BaselineInput:
    """The hand-written workflows' input for request ``index``: the engine's calls for the
    same submission, under the reference ``<service>-<key>``."""
    scenario = ctx.scenario
    data = scenario.submission(index)
    return baseline_input(
        f"{scenario.service}-{key}", scenario.baseline_calls(ctx.env.agencies_url, data),
        sequential=scenario.shape == "chain",
    )


async def history_events(client: Client, workflow_id: str, keep: Path) -> SampleEvents:
    """Events in one sample history, by type; the history is kept in ``keep`` so its
    workflow-code cost can be measured offline (``benchmarks/replay_cost.py``)."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except Exception:  # a figure we can live without
        return None, {}
    keep.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(keep.write_text, history.to_json())
    return count_types(history.events)


def count_types(events: Sequence[Any]) -> tuple[int, dict[str, int]]:
    """How many events, and how many of each type (``EVENT_TYPE_`` dropped)."""
    types: dict[str, int] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        types[name] = types.get(name, 0) + 1
    return len(events), types


async def dbos_steps(database_url: str, workflow_id: str) -> SampleEvents:
    """DBOS's step rows (``dbos.operation_outputs``) of one workflow, by function name."""
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
