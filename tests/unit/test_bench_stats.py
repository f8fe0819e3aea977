"""The benchmark's statistics on known inputs (percentiles, medians, ratios, the summary)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks import agency_call, cli
from benchmarks.measure import CpuProbe, cpu_s, tree_cpu_s
from benchmarks.report import table
from benchmarks.runs import BenchReport, RunResult
from benchmarks.scenarios import MODE_NOTES, Mode, Scenario, rotated, scenarios
from benchmarks.stats import latency_summary, median, median_of_runs, percentile, ratio, ratios
from runtime.settings import PROJECT_ROOT


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 3, 2, 1], 0) == 1
    assert percentile([4, 3, 2, 1], 100) == 4
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)
    assert percentile([10], 99) == 10


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_median_odd_and_even() -> None:
    assert median([3, 1, 2]) == 2
    assert median([5, 1, 2, 10]) == 3.5


def test_latency_summary() -> None:
    summary = latency_summary([0.1 * i for i in range(1, 11)])
    assert summary["p50"] == pytest.approx(0.55)
    assert summary["p99"] == pytest.approx(0.991)
    assert summary["mean"] == pytest.approx(0.55)
    assert summary["max"] == pytest.approx(1.0)


def test_ratio() -> None:
    assert ratio(9.0, 10.0) == pytest.approx(0.9)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None


def test_median_of_runs_skips_missing_values() -> None:
    runs = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 4.0}, {"a": 2.0, "c": 7.0}]
    assert median_of_runs(runs) == {"a": 2.0, "b": 4.0, "c": 7.0}
    assert median_of_runs([{"a": None}]) == {"a": None}


def test_ratios_per_key() -> None:
    got = ratios({"rps": 9.0, "p99": 2.0, "only": 1.0}, {"rps": 10.0, "p99": 1.0})
    assert got == {"rps": pytest.approx(0.9), "p99": pytest.approx(2.0)}


def _run(scenario: str, mode: Mode, rps: float, rep: int = 0) -> RunResult:
    """A run of 10 requests x 5 calls over 10 / rps seconds, every e2e 1 s."""
    return RunResult(
        scenario=scenario, mode=mode, repetition=rep, requests=10, calls_per_request=5,
        latency_ms=50.0, wall_s=10 / rps, e2e_s=[1.0] * 10, history_events=None,
        server_cpu_s=2.0, worker_cpu_s=1.0, agencies_cpu_s=0.5, worker_peak_rss_mb=100.0,
        postgres_cpu_s=4.0 if mode == "dbos" else 1.0,
    )


class TestSummaryWithDbos:
    """The summary keeps baseline/engine/ratio and adds dbos and dbos ÷ baseline where DBOS ran."""

    def _report(self) -> BenchReport:
        fanout = Scenario("5x5", "fanout", 10, 5, 50.0)
        foreach = Scenario("5x50", "foreach", 10, 5, 50.0)
        report = BenchReport(scenarios=[fanout, foreach])
        report.runs += [
            _run("5x5", "baseline", 10.0), _run("5x5", "baseline", 12.0, rep=1),
            _run("5x5", "engine", 8.0), _run("5x5", "engine", 8.0, rep=1),
            _run("5x5", "dbos", 20.0), _run("5x5", "dbos", 30.0, rep=1),
            _run("5x50", "baseline", 10.0), _run("5x50", "engine", 5.0),
        ]
        return report

    def test_ratios_against_the_baseline(self) -> None:
        summary = self._report().summary()["5x5"]
        assert summary["baseline"]["requests_per_s"] == pytest.approx(11.0)  # median of 10, 12
        assert summary["dbos"]["requests_per_s"] == pytest.approx(25.0)
        assert summary["ratio"]["requests_per_s"] == pytest.approx(8.0 / 11.0)
        assert summary["dbos_ratio"]["requests_per_s"] == pytest.approx(25.0 / 11.0)
        assert summary["dbos"]["postgres_cpu_s"] == pytest.approx(4.0)
        assert summary["dbos_ratio"]["postgres_cpu_s"] == pytest.approx(4.0)

    def test_no_dbos_rows_where_dbos_did_not_run(self) -> None:
        summary = self._report().summary()["5x50"]
        assert set(summary) == {"baseline", "engine", "ratio"}
        assert summary["ratio"]["requests_per_s"] == pytest.approx(0.5)

    def test_table_labels_the_modes(self) -> None:
        printed = table(self._report())
        assert "dbos÷base" in printed
        assert f"dbos: {MODE_NOTES['dbos']}" in printed
        assert f"baseline: {MODE_NOTES['baseline']}" in printed

    def test_table_without_dbos_has_no_dbos_note(self) -> None:
        report = self._report()
        report.runs = [r for r in report.runs if r.mode != "dbos"]
        printed = table(report)
        assert "dbos" not in printed
        assert "engine: " in printed


class TestModes:
    def test_dbos_runs_fanout_and_chain_only(self) -> None:
        by_name = {s.name: s.modes for s in scenarios("quick", 50.0)}
        assert by_name["200x5"] == ("baseline", "engine", "dbos")
        assert by_name["1x20-seq"] == ("baseline", "engine", "dbos")
        assert by_name["200x5-0ms"] == ("baseline", "engine", "dbos")
        assert by_name["50x50"] == ("baseline", "engine")
        assert by_name["10x500"] == ("baseline", "engine")

    def test_order_rotates_with_the_repetition(self) -> None:
        three: list[Mode] = ["baseline", "engine", "dbos"]
        assert rotated(three, 0) == ["baseline", "engine", "dbos"]
        assert rotated(three, 1) == ["engine", "dbos", "baseline"]
        assert rotated(three, 2) == ["dbos", "baseline", "engine"]
        assert rotated(three, 3) == three
        assert rotated(["baseline", "engine"], 1) == ["engine", "baseline"]  # as before
        assert rotated([], 4) == []


def test_tree_cpu_counts_the_children() -> None:
    """A process tree's CPU is at least its root's, and None without a process."""
    child = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
    try:
        child.wait(timeout=30)
        me = os.getpid()
        own = cpu_s(me)
        tree = tree_cpu_s(me)  # the child, reaped, is in children_user/children_system
        assert own is not None and tree is not None
        assert tree > own
    finally:
        child.kill()
    assert tree_cpu_s(None) is None


async def test_dbos_client_is_configured_as_the_engines() -> None:
    """DBOS's copy of the agency client (it must not import the worker) matches the worker's."""
    import worker

    assert agency_call.HTTP_MAX_CONNECTIONS == worker.HTTP_MAX_CONNECTIONS
    async with worker.agency_http_session() as engine, agency_call.agency_http_session() as ours:
        assert ours.timeout == engine.timeout
        assert ours.connector is not None and engine.connector is not None
        assert ours.connector.limit == engine.connector.limit
        assert ours.connector.limit_per_host == engine.connector.limit_per_host


def test_dbos_process_loads_neither_temporal_nor_the_engine() -> None:
    """The DBOS worker's peak RSS is comparable only if it carries no Temporal or engine code."""
    probe = (
        "import sys, benchmarks.dbos_app\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in "
        "('temporalio', 'worker', 'workflows', 'activities', 'intake')]\n"
        "print(loaded)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_total_cpu_per_request_counts_each_process_once() -> None:
    """Temporal modes: server + PostgreSQL + worker + agencies + client; DBOS's server is
    PostgreSQL, counted once."""
    temporal = _run("5x5", "engine", 8.0)
    temporal.client_cpu_s = 0.5
    dbos = _run("5x5", "dbos", 20.0)
    dbos.client_cpu_s = 0.5
    # (2.0 + 1.0 + 1.0 + 0.5 + 0.5) s over 10 requests; DBOS (4.0 + 1.0 + 0.5 + 0.5) s
    assert temporal.figures(0.05)["total_cpu_ms_per_request"] == pytest.approx(500.0)
    assert dbos.figures(0.05)["total_cpu_ms_per_request"] == pytest.approx(600.0)
    assert _run("5x5", "engine", 8.0).figures(0.05)["total_cpu_ms_per_request"] is None


class TestCommandLine:
    """``python -m benchmarks`` checks its options first; ``nwd bench`` only launches it."""

    @pytest.mark.parametrize(("args", "expected"), [
        (("--failure-rate", "1.5"), "--failure-rate must be at least 0 and below 1"),
        (("--failure-rate", "-0.1"), "--failure-rate must be at least 0 and below 1"),
        (("--scenario", "9x9"), "unknown scenario 9x9"),
        (("--repetitions", "0"), "--repetitions must be at least 1"),
        (("--requests", "0"), "--requests must be at least 1"),
    ])
    def test_refuses_bad_options_before_starting_anything(
        self, args: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err
        assert err.startswith("python -m benchmarks: error: ") and expected in err, err
        assert "Traceback" not in err

    def test_plan_applies_the_profile_and_the_overrides(self) -> None:
        """--full means 3 repetitions; --requests replaces every scenario's R, keeping N."""
        args = cli.build_parser().parse_args(
            ["--full", "--scenario", "10x500", "--scenario", "200x5", "--requests", "4"])
        checked = cli.plan(args)
        assert checked.repetitions == 3
        assert [(s.name, s.requests, s.calls) for s in checked.scenarios] == [
            ("200x5", 4, 5), ("10x500", 4, 500)]

    def test_nwd_bench_passes_arguments_and_exit_code_through(
        self, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """`nwd bench ARGS` is `python -m benchmarks ARGS`: its message, its exit code."""
        from nwd.cli import main

        assert main(["bench", "--quick", "--scenario", "9x9"]) == 2
        err = capfd.readouterr().err
        assert "python -m benchmarks: error: unknown scenario 9x9" in err, err
        assert "Traceback" not in err

    def test_nwd_bench_help_is_the_programs(self, capfd: pytest.CaptureFixture[str]) -> None:
        from nwd.cli import main

        assert main(["bench", "--help"]) == 0
        out = capfd.readouterr().out
        assert out.startswith("usage: python -m benchmarks"), out
        for option in ("--quick", "--full", "--scenario", "--failure-rate", "--mode", "--out"):
            assert option in out


def test_cpu_probe_reads_each_process_and_subtracts() -> None:
    """A reading minus an earlier one is each process's CPU in between; unmeasured stays None."""
    me = os.getpid()
    probe = CpuProbe(server=None, worker=me, agencies=None, postgres=me, client=me)
    before = probe.read()
    busy_until = time.process_time() + 0.2
    while time.process_time() < busy_until:
        pass
    spent = probe.read() - before
    assert spent.server is None and spent.agencies is None
    for figure in (spent.worker, spent.postgres, spent.client):
        assert figure is not None and 0.15 < figure < 5.0, spent
