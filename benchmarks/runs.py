"""What one run measured, the figures derived from it, and the summary over runs.

A run is one scenario on one mode for one repetition (:class:`RunResult`); its figures are
rates, latency percentiles and CPU shares (:meth:`RunResult.figures`). A report holds every
run and summarises them per scenario: medians over repetitions per mode, and ratios to the
hand-written baseline (:meth:`BenchReport.summary`). The field names are the keys of
``bench.json``: renaming one breaks the comparison with committed results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks import stats
from benchmarks.scenarios import MODE_FACTS, MODE_NOTES, MODES, TEMPORAL_MODES, Mode, Scenario


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
        """Every measured process's CPU per request (a server that *is* PostgreSQL: once)."""
        parts = [self.postgres_cpu_s, self.worker_cpu_s, self.agencies_cpu_s, self.client_cpu_s]
        if MODE_FACTS[self.mode].server != "postgres":
            parts.append(self.server_cpu_s)
        if any(p is None for p in parts):
            return None
        return sum(p for p in parts if p is not None) / self.requests * 1000


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
