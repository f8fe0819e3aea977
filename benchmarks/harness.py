"""The benchmark harness: the engine against the hand-written baseline, and DBOS, in one run.

For each scenario (:mod:`benchmarks.scenarios`) and repetition it runs every mode the same
way, through the mode's driver (:mod:`benchmarks.drivers`): a fresh worker *process*, ``R``
requests submitted (all at once; the chain scenario one at a time), every result awaited, and
per-request end-to-end latency (submit → result) recorded with throughput, the CPU seconds of
every process around the run and the worker's peak RSS (:mod:`benchmarks.measure`), and the
history length of a sample request (for DBOS: its step rows). Modes take turns within a
scenario, the order rotating with each repetition (baseline, engine, dbos, then engine, dbos,
baseline, ...), so noise hits all alike. DBOS runs only the fan-out and chain scenarios.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from benchmarks.drivers import DRIVERS, Driver, RunContext
from benchmarks.http_client_cost import client_cpu_per_call
from benchmarks.measure import CpuProbe, peak_rss_mb
from benchmarks.processes import DEFINITIONS, BenchEnv
from benchmarks.runs import BenchReport, RunResult
from benchmarks.scenarios import MODE_FACTS, MODES, Mode, Scenario, rotated
from definitions.catalog import Catalog
from definitions.loader import load_catalog
from runtime.temporal import data_converter

MAX_CONCURRENT_STARTS = 100
"""Start RPCs in flight at once (1,000 at once time out on the dev server); e2e still counts
from the moment a request is offered, so waiting for a start slot is part of its latency."""
FAILURE_SEED = 7
"""Seed of the agencies' injected 503s: the same calls fail in every mode's run."""
CLIENT_PROBE_LATENCY_MS = 50.0
"""Agency latency while the HTTP client's CPU per call is measured (calls stay in flight)."""


class Harness:
    """Runs scenarios on the modes against one :class:`BenchEnv`.

    Args:
        env: the servers and agencies to run against; the harness owns none of them.
        out_dir: where worker logs and the sample histories (with the run's key) go.
        echo: where progress lines go.
        catalog: the engine's catalog (default: ``benchmarks/definitions``).
        failure_rate: share of agency calls answered 503, in [0, 1) (retried by all modes).
    """

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
        """One scenario on one mode: a fresh worker, every request, the figures."""
        driver = DRIVERS[mode](RunContext(
            env=self.env, client=await self.connect(), catalog=self.catalog,
            scenario=scenario, out_dir=self.out_dir,
            starting=asyncio.Semaphore(MAX_CONCURRENT_STARTS), cprofile=cprofile,
        ))
        try:
            probe = CpuProbe(server=self.env.server_pid, worker=await driver.start(),
                             agencies=self.env.agencies_pid, postgres=self.env.postgres_pid,
                             client=os.getpid())
            before = probe.read()
            started = time.perf_counter()
            if scenario.sequential_requests:
                outcomes = [await _timed(driver, i) for i in range(scenario.requests)]
            else:
                outcomes = list(await asyncio.gather(
                    *(_timed(driver, i) for i in range(scenario.requests))))
            wall = time.perf_counter() - started
            cpu = probe.read() - before
            peak = peak_rss_mb(probe.worker)
            sample = outcomes[0][1]
            events, event_types = await driver.sample(sample)
        finally:
            await driver.stop()

        return RunResult(
            scenario=scenario.name, mode=mode, repetition=repetition,
            requests=scenario.requests, calls_per_request=scenario.calls,
            latency_ms=scenario.latency_ms, wall_s=wall, e2e_s=[o[0] for o in outcomes],
            history_events=events, event_types=event_types,
            server_cpu_s=cpu.postgres if MODE_FACTS[mode].server == "postgres" else cpu.server,
            worker_cpu_s=cpu.worker, agencies_cpu_s=cpu.agencies, worker_peak_rss_mb=peak,
            failures=sum(1 for o in outcomes if not o[2]),
            load_avg_1m=os.getloadavg()[0],
            postgres_cpu_s=cpu.postgres, sample_reference=sample, client_cpu_s=cpu.client,
        )

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
        wanted = list(MODES if modes is None else modes)
        runnable: list[Mode] = []
        for mode in wanted:
            reason = DRIVERS[mode].unavailable()
            if reason is None:
                runnable.append(mode)
            else:
                self.echo(f"  {mode}: skipped ({reason})")
        if measure_client and selected:
            await self.set_latency(CLIENT_PROBE_LATENCY_MS, failure_rate=0.0)
            report.http_client_cpu_ms = await client_cpu_per_call(self.env.agencies_url)
            for client, by_n in report.http_client_cpu_ms.items():
                self.echo(f"  HTTP client CPU per call, {client}: " + ", ".join(
                    f"{v:.2f} ms @ {n} in flight" for n, v in by_n.items()))
        for scenario in selected:
            await self.set_latency(scenario.latency_ms)
            run_modes = [m for m in scenario.modes if m in runnable]
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


async def _timed(driver: Driver, index: int) -> tuple[float, str, bool]:
    """(e2e seconds, reference, completed?) of request ``index``: e2e counts from the moment
    the request is offered, so waiting for a start slot is part of it."""
    started = time.perf_counter()
    reference, ok = await driver.request(index)
    return time.perf_counter() - started, reference, ok
