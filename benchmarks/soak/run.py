"""One soak run on its own stack: send the requests, inject the faults, drain, check, measure.

Two shapes (:class:`SoakConfig`):

- **soak** (default): ``requests`` requests across the catalog, open loop at ``rate`` per
  second (arrivals do not wait for completions, as citizens do not), the worker SIGKILLed
  ``kill_every_s`` seconds after each (re)start while requests are being sent, the Temporal
  dev server restarted at 35 % of the sending window and PostgreSQL at 65 %.
- **experiment** (the issue's): ``requests`` (50) changes of address, each with three
  callback-mode calls, sent at once; once half of their callbacks are owed the worker is
  SIGKILLed, and when its replacement runs the Temporal dev server and then PostgreSQL are
  each restarted, while the callbacks fall due.

Then it waits for every request to close (at most ``drain_timeout_s``) and runs the end checks
(:mod:`benchmarks.soak.checks`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from benchmarks.soak.chaos import Chaos, Fault, MemorySampler
from benchmarks.soak.checks import Checks, run_checks, schema_name
from benchmarks.soak.figures import summarise
from benchmarks.soak.workload import CALLBACK_DELAY_S, PlannedRequest, plan_requests
from nwd.stack import Stack
from nwd.stack.stack import COMPONENTS
from readmodel.store import ReadModel, open_pool
from runtime.temporal import data_converter


@dataclass(frozen=True)
class SoakConfig:
    """What one run does (see the module docstring); every field is a command-line option."""

    mode: str = "soak"
    requests: int = 1000
    rate: float = 4.0
    kill_every_s: float = 5.0
    max_kills: int | None = None
    restart_temporal: bool = True
    restart_postgres: bool = True
    outage_s: float = 3.0
    failure_rate: float = 0.05
    callback_delay_s: float | None = None
    drain_timeout_s: float = 600.0
    seed: int = 12


@dataclass
class Submitted:
    reference: str | None = None
    first_attempt: float = 0.0
    attempts: int = 0
    unavailable: int = 0
    error: str | None = None


class Soak:
    """The run's state: its stack, client, faults and what each request did."""

    def __init__(self, stack: Stack, config: SoakConfig, echo: Any) -> None:
        self.stack = stack
        self.config = config
        self.echo = echo
        self.chaos = Chaos(stack, echo)
        self.memory = MemorySampler(stack, COMPONENTS)
        self.planned = plan_requests(config.requests, config.seed,
                                     all_callbacks=config.mode == "experiment",
                                     services=(("change-of-address",)
                                               if config.mode == "experiment" else
                                               ("change-of-address", "report-a-death",
                                                "register-a-business")))
        self.submitted: dict[str, Submitted] = {}
        self.sending_done = asyncio.Event()

    # ---- sending -----------------------------------------------------------------------------

    async def submit(self, http: httpx.AsyncClient, request: PlannedRequest) -> None:
        """POST the request, resending with the same key after a 503 or a lost connection."""
        state = self.submitted[request.idempotency_key] = Submitted(first_attempt=time.time())
        body = {"service": request.service, "submission": request.submission,
                "language": request.submission.get("preferred_language", "en")}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state.attempts += 1
            try:
                response = await http.post("/requests", json=body,
                                           headers={"Idempotency-Key": request.idempotency_key})
            except httpx.HTTPError as exc:
                state.error = type(exc).__name__
                await asyncio.sleep(1.0)
                continue
            if response.status_code in (200, 202):
                state.reference = response.json()["reference"]
                state.error = None
                return
            if response.status_code == 503:
                state.unavailable += 1
                state.error = "503"
                await asyncio.sleep(min(5.0, float(response.headers.get("Retry-After", "1"))))
                continue
            state.error = f"{response.status_code} {response.text[:200]}"
            return
        state.error = f"gave up after {state.attempts} attempts ({state.error})"

    async def send_open_loop(self, http: httpx.AsyncClient) -> None:
        start = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        for i, request in enumerate(self.planned):
            delay = start + i / self.config.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.submit(http, request)))
        await asyncio.gather(*tasks)
        self.sending_done.set()

    # ---- faults ------------------------------------------------------------------------------

    async def kill_periodically(self) -> None:
        kills = 0
        while not self.sending_done.is_set():
            if self.config.max_kills is not None and kills >= self.config.max_kills:
                return
            due = self.chaos.worker_started_at + self.config.kill_every_s
            if time.time() < due:
                await asyncio.sleep(min(0.2, due - time.time()))
                continue
            await self.chaos.servers_up()
            if await self.chaos.kill_worker() is None:  # none running: its restart is due
                await asyncio.sleep(0.2)
                continue
            kills += 1
            await self.chaos.wait_worker_back(time.time() - 1)

    async def restart_servers(self) -> None:
        window = self.config.requests / self.config.rate
        start = time.monotonic()
        plan = []
        if self.config.restart_temporal:
            plan.append((0.35 * window, "temporal"))
        if self.config.restart_postgres:
            plan.append((0.65 * window, "postgres"))
        for at, name in plan:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            await self.chaos.restart(name, self.config.outage_s)

    async def experiment_faults(self) -> None:
        """The issue's sequence: SIGKILL once half the callbacks are owed, then restarts."""
        owed = sum(1 for p in self.planned for e in p.effects if e.callback)
        conn = await asyncpg.connect(self.stack.agencies_database_url)
        try:
            while True:
                accepted = 0
                for agency in ("electoral-registration", "benefits-agency"):
                    accepted += await conn.fetchval(
                        f"SELECT count(*) FROM {schema_name(agency)}.records"
                        " WHERE callback_url IS NOT NULL")
                if accepted >= owed // 2:
                    break
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        self.echo(f"  {accepted} of {owed} callbacks owed")
        kill = await self.chaos.kill_worker()
        assert kill is not None
        await self.chaos.wait_worker_back(kill.at)
        await self.chaos.restart("temporal", self.config.outage_s)
        await self.chaos.restart("postgres", self.config.outage_s)

    # ---- draining ----------------------------------------------------------------------------

    async def outbox_pending(self) -> int:
        """Outbox rows still being delivered, over every agency (0 without an outbox)."""
        registry = self.stack.registry()
        try:
            conn = await asyncpg.connect(self.stack.agencies_database_url)
        except (OSError, asyncpg.PostgresError):
            return -1
        try:
            total = 0
            for agency in registry.agencies if registry else ():
                schema = schema_name(agency.id)
                if await conn.fetchval(
                        "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1"
                        " AND table_name = 'outbox'", schema):
                    total += await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.outbox WHERE state = 'pending'")
            return int(total)
        finally:
            await conn.close()

    async def drain(self, client: Client, references: set[str]) -> dict[str, float]:
        """Wait until every accepted request's workflow closed and no callback is still being
        delivered (or the drain budget ran out); the close time of each request that did.
        Each workflow is described (not listed through visibility, which may lag behind),
        until it has closed."""
        deadline = time.monotonic() + self.config.drain_timeout_s
        closed: dict[str, float] = {}
        last_print = 0.0
        semaphore = asyncio.Semaphore(20)

        async def look(reference: str) -> None:
            async with semaphore:
                try:
                    described = await client.get_workflow_handle(reference).describe()
                except Exception:  # a server between restarts, or not there: look again
                    return
                if described.close_time is not None:
                    closed[reference] = described.close_time.timestamp()

        while True:
            await asyncio.gather(*(look(r) for r in references - closed.keys()))
            if time.monotonic() > deadline:
                return closed
            if len(closed) >= len(references):
                pending = await self.outbox_pending()
                if not pending:
                    return closed
                self.echo(f"  every request closed; {pending} outbox rows still pending")
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                self.echo(f"  draining: {len(closed)} of {len(references)} closed")
            await asyncio.sleep(1.0)


async def run_soak(stack: Stack, config: SoakConfig, echo: Any) -> dict[str, Any]:
    """Run one soak on ``stack`` (up, with every component); the report (JSON-ready)."""
    soak = Soak(stack, config, echo)
    key = base64.b64decode(stack.secrets().encryption_key)
    client = await Client.connect(stack.temporal_address,
                                  namespace=stack.settings.temporal_namespace,
                                  data_converter=data_converter(key))
    started = time.time()
    load_before = os.getloadavg()
    background = [asyncio.create_task(soak.chaos.supervise_worker()),
                  asyncio.create_task(soak.memory.run())]
    async with httpx.AsyncClient(base_url=stack.settings.intake_url, timeout=60) as http:
        if config.mode == "experiment":
            sender = asyncio.create_task(_send_all(soak, http))
            faults = [asyncio.create_task(soak.experiment_faults())]
        else:
            sender = asyncio.create_task(soak.send_open_loop(http))
            faults = [asyncio.create_task(soak.kill_periodically()),
                      asyncio.create_task(soak.restart_servers())]
        await sender
        await asyncio.gather(*faults)
    sent_at = time.time()
    echo(f"  sent {len(soak.planned)} requests, faults done, in {sent_at - started:.1f} s; "
         "draining")
    accepted = {k: s.reference for k, s in soak.submitted.items() if s.reference is not None}
    closed = await soak.drain(client, set(accepted.values()))
    drained_at = time.time()
    soak.chaos.stop()
    soak.memory.stop()
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    soak.memory.sample()
    for fault in soak.chaos.faults:
        if fault.kind == "worker_kill" and fault.detail.get("peak_rss_mb") is not None:
            soak.memory._note("worker", fault.detail["peak_rss_mb"])

    registry = stack.registry()
    agency_ids = [a.id for a in registry.agencies] if registry else []
    pool = await open_pool(stack.database_url, max_size=4)
    try:
        checks, records, outbox = await run_checks(
            planned=soak.planned, accepted=accepted, client=client,
            read_model=ReadModel(pool), agencies_dsn=stack.agencies_database_url,
            agency_ids=agency_ids)
    finally:
        await pool.close()
    submitted_at = {s.reference: s.first_attempt for s in soak.submitted.values()
                    if s.reference is not None}
    figures = summarise(submitted_at=submitted_at, closed_at=closed, faults=soak.chaos.faults)
    figures["callbacks_across_outages"] = _across_outages(outbox, soak.chaos.faults)
    figures["callbacks_due_during_outages"] = _due_during_outages(
        records, soak.chaos.faults, config)
    if config.mode == "experiment":
        _experiment_checks(checks, figures, outbox)
    return {
        "mode": config.mode,
        "config": dataclasses.asdict(config),
        "started": started,
        "duration_s": round(drained_at - started, 1),
        "sending_s": round(sent_at - started, 1),
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg()},
        "requests": {
            "planned": len(soak.planned), "accepted": len(accepted), "closed": len(closed),
            "by_service": _count(p.service for p in soak.planned),
            "submission_attempts": sum(s.attempts for s in soak.submitted.values()),
            "submission_503s": sum(s.unavailable for s in soak.submitted.values()),
            "refused": [s.error for s in soak.submitted.values() if s.reference is None][:5],
        },
        "effects_planned": sum(len(p.effects) for p in soak.planned),
        "faults": {"worker_kills": sum(f.kind == "worker_kill" for f in soak.chaos.faults),
                   "temporal_restarts": sum(f.kind == "temporal_restart"
                                            for f in soak.chaos.faults),
                   "postgres_restarts": sum(f.kind == "postgres_restart"
                                            for f in soak.chaos.faults),
                   "worker_restarts": len(soak.chaos.worker_starts),
                   "list": [f.as_json() for f in soak.chaos.faults]},
        "figures": figures,
        "peak_rss_mb": {k: round(v, 1) for k, v in sorted(soak.memory.peak_mb.items())},
        "checks": checks.as_json(),
    }


async def _send_all(soak: Soak, http: httpx.AsyncClient) -> None:
    await asyncio.gather(*(soak.submit(http, p) for p in soak.planned))
    soak.sending_done.set()


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def _across_outages(outbox: list[dict[str, Any]] | None,
                    faults: list[Fault]) -> dict[str, int] | None:
    """Per server restart: callbacks owed while the server was down and delivered once it was
    back — outbox rows written before it was back and delivered after its stop began. None
    without an outbox."""
    if outbox is None:
        return None
    out: dict[str, int] = {}
    for fault in faults:
        if fault.back_at is None:
            continue
        n = sum(1 for row in outbox
                if row["state"] == "delivered" and row["finished_at"] is not None
                and row["created_at"].timestamp() < fault.back_at
                and row["finished_at"].timestamp() > fault.at)
        out[fault.kind] = out.get(fault.kind, 0) + n
    return out


def _due_during_outages(records: list[dict[str, Any]], faults: list[Fault],
                        config: SoakConfig) -> dict[str, int]:
    """Per server restart: accepted calls whose work fell due (accepted + the agency's
    callback delay) while the server was stopping, down or starting again."""
    out: dict[str, int] = {}
    for fault in faults:
        if fault.back_at is None:
            continue
        n = 0
        for record in records:
            if record["callback_url"] is None or record["created_at"] is None:
                continue
            delay = (config.callback_delay_s if config.callback_delay_s is not None
                     else CALLBACK_DELAY_S.get(record["agency"], 0.0))
            due = record["created_at"].timestamp() + delay
            if fault.at <= due <= fault.back_at:
                n += 1
        out[fault.kind] = out.get(fault.kind, 0) + n
    return out


def _experiment_checks(checks: Checks, figures: dict[str, Any],
                       outbox: list[dict[str, Any]] | None) -> None:
    """The experiment proves something only if callbacks were owed across each restart: owed
    before the server was back and delivered after it stopped (the outbox's rows), or falling
    due while it was down."""
    across = figures.get("callbacks_across_outages") or {}
    due = figures.get("callbacks_due_during_outages") or {}
    for kind in ("temporal_restart", "postgres_restart"):
        checks.zero(f"no_callback_across_{kind}")
        if across.get(kind, 0) + due.get(kind, 0) == 0:
            checks.fail(f"no_callback_across_{kind}",
                        f"no callback was owed across the {kind}: the experiment missed it")
