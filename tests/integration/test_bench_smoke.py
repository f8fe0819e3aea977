"""A tiny run of the benchmark harness (R = 3 requests x N = 2 calls) on the session servers.

It checks the harness end to end — both workers as processes, the reference agencies, the
statistics — not the engine's speed: the figures only have to exist for both modes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from benchmarks.harness import AgenciesProcess, BenchEnv, Harness, new_database, scenarios
from benchmarks.report import table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(60)
async def test_harness_measures_baseline_and_engine(
    temporal_env: WorkflowEnvironment, postgres_server: str, tmp_path: Path
) -> None:
    agencies = AgenciesProcess(
        await new_database(postgres_server, "bench_agencies"), _free_port(),
        tmp_path / "agencies.log",
    )
    try:
        await agencies.ready()
        env = BenchEnv(
            temporal_address=str(temporal_env.client.service_client.config.target_host),
            namespace=temporal_env.client.namespace,
            postgres_dsn=postgres_server,
            agencies_url=agencies.url,
            key=os.urandom(32),
            agencies_pid=agencies.proc.pid,
        )
        harness = Harness(env, tmp_path, echo=lambda _line: None)
        report = await harness.run(scenarios("smoke", 0.0), repetitions=1, measure_client=False)
    finally:
        await agencies.stop()

    summary = report.summary()["3x2"]
    for mode in ("baseline", "engine"):
        figures = summary[mode]
        assert figures["requests_per_s"] is not None and figures["requests_per_s"] > 0
        assert figures["e2e_p99_ms"] is not None and figures["e2e_p99_ms"] > 0
        assert figures["worker_cpu_s"] is not None
        assert figures["worker_peak_rss_mb"] is not None and figures["worker_peak_rss_mb"] > 10
        assert figures["history_events"] is not None and figures["history_events"] > 5
    assert all(r.failures == 0 for r in report.runs)
    assert summary["ratio"]["requests_per_s"] is not None
    assert "3x2" in table(report)
