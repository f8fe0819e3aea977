"""A tiny run of the benchmark harness (R = 3 requests x N = 2 calls) on the session servers.

It checks the harness end to end — the three workers as processes (baseline, engine, DBOS),
the reference agencies, the statistics — not their speed: the figures only have to exist for
every mode, and the DBOS runs must have made every agency call.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from benchmarks.harness import Harness
from benchmarks.measure import postmaster_pid
from benchmarks.processes import AgenciesProcess, BenchEnv, new_database
from benchmarks.report import table
from benchmarks.scenarios import scenarios
from runtime.process import free_port


@pytest_asyncio.fixture
async def bench(
    temporal_env: WorkflowEnvironment, postgres_server: str, tmp_path: Path
) -> AsyncIterator[tuple[AgenciesProcess, BenchEnv]]:
    """The reference agencies in their own process, and the session's servers as a BenchEnv."""
    agencies = AgenciesProcess(
        await new_database(postgres_server, "bench_agencies"), free_port(),
        tmp_path / "agencies.log",
    )
    try:
        await agencies.ready()
        yield agencies, BenchEnv(
            temporal_address=str(temporal_env.client.service_client.config.target_host),
            namespace=temporal_env.client.namespace,
            postgres_dsn=postgres_server,
            agencies_url=agencies.url,
            key=os.urandom(32),
            agencies_pid=agencies.proc.pid,
            postgres_pid=await postmaster_pid(postgres_server),
        )
    finally:
        await agencies.stop()


@pytest.mark.timeout(150)
async def test_harness_measures_baseline_engine_and_dbos(
    bench: tuple[AgenciesProcess, BenchEnv], tmp_path: Path
) -> None:
    agencies, env = bench
    assert env.postgres_pid is not None  # the session's embedded server runs here
    harness = Harness(env, tmp_path, echo=lambda _line: None)
    report = await harness.run(scenarios("smoke", 0.0), repetitions=1, measure_client=False)
    # The agencies' side, before they stop: every DBOS request reached both agencies
    # once (the fan-out scenario ran last, so its records are the current ones).
    (dbos_run,) = [r for r in report.runs if r.mode == "dbos"]
    assert dbos_run.sample_reference is not None
    prefix = dbos_run.sample_reference.rsplit("-", 1)[0]
    async with httpx.AsyncClient(base_url=agencies.url, timeout=10) as admin:
        for agency in ("bench-1", "bench-2"):
            for index in range(dbos_run.requests):
                response = await admin.get(f"/_admin/agencies/{agency}/records",
                                           params={"reference": f"{prefix}-{index}"})
                response.raise_for_status()
                records = response.json()
                assert len(records) == 1, (agency, index, records)
                assert records[0]["status"] == "completed"

    assert all(r.failures == 0 for r in report.runs)
    assert {(r.scenario, r.mode) for r in report.runs} == {
        ("3x2", "baseline"), ("3x2", "engine"),
        ("3x2-fanout", "baseline"), ("3x2-fanout", "engine"), ("3x2-fanout", "dbos"),
    }
    summaries = report.summary()
    for scenario, modes in (("3x2", ("baseline", "engine")),
                            ("3x2-fanout", ("baseline", "engine", "dbos"))):
        summary = summaries[scenario]
        for mode in modes:
            figures = summary[mode]
            assert figures["requests_per_s"] is not None and figures["requests_per_s"] > 0
            assert figures["e2e_p99_ms"] is not None and figures["e2e_p99_ms"] > 0
            assert figures["worker_cpu_s"] is not None
            assert figures["postgres_cpu_s"] is not None
            assert figures["worker_peak_rss_mb"] is not None
            assert figures["worker_peak_rss_mb"] > 10
            assert figures["history_events"] is not None
        assert summary["baseline"]["history_events"] > 5  # type: ignore[operator]
        assert summary["ratio"]["requests_per_s"] is not None
    assert "dbos" not in summaries["3x2"]  # DBOS runs the fan-out and chain shapes only

    dbos = summaries["3x2-fanout"]["dbos"]
    assert dbos["history_events"] == 2  # one step row per agency call
    assert dbos_run.event_types == {"agency_call": 2}
    # DBOS's server is PostgreSQL: the same figure in both columns, and measured (a smoke run's
    # few requests can stay under the kernel's 10 ms CPU tick, so 0.0 happens: CI saw it once)
    assert dbos["server_cpu_s"] == dbos["postgres_cpu_s"]
    assert dbos["postgres_cpu_s"] is not None and dbos["postgres_cpu_s"] >= 0
    assert summaries["3x2-fanout"]["dbos_ratio"]["requests_per_s"] is not None

    printed = table(report)
    assert "3x2" in printed and "dbos÷base" in printed
    assert "no UI like Temporal's" in printed


@pytest.mark.timeout(120)
async def test_failure_rate_makes_every_mode_retry_the_same_seeded_failures(
    bench: tuple[AgenciesProcess, BenchEnv], tmp_path: Path
) -> None:
    """`--failure-rate`: the agencies answer a seeded share of calls 503; every mode
    retries them (≥ 1 s each, the retry policies' first interval) and still completes."""
    agencies, env = bench
    with pytest.raises(ValueError, match="failure rate"):
        Harness(env, tmp_path, failure_rate=1.0)
    harness = Harness(env, tmp_path, echo=lambda _line: None, failure_rate=0.5)
    fanout = [s for s in scenarios("smoke", 0.0) if s.name == "3x2-fanout"]
    report = await harness.run(fanout, repetitions=1, measure_client=False,
                               modes=["baseline", "engine"])
    async with httpx.AsyncClient(base_url=agencies.url, timeout=10) as admin:
        behaviour = (await admin.get("/_admin/agencies/*/behaviour")).json()

    assert behaviour["error_rate"] == 0.5 and behaviour["seed"] == 7
    assert {r.mode for r in report.runs} == {"baseline", "engine"}
    for run in report.runs:
        assert run.failures == 0, run.mode
        # with half the calls failing once or more, some request waited out a retry
        assert max(run.e2e_s) >= 1.0, (run.mode, run.e2e_s)
