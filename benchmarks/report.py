"""Presenting a benchmark report: the printed table, the JSON file and the PNG chart."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.harness import MODES, BenchReport

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests_per_s", "req/s", "{:.2f}"),
    ("calls_per_s", "calls/s", "{:.0f}"),
    ("e2e_p50_ms", "p50 ms", "{:.0f}"),
    ("e2e_p95_ms", "p95 ms", "{:.0f}"),
    ("e2e_p99_ms", "p99 ms", "{:.0f}"),
    ("overhead_p50_ms", "ovh ms", "{:.0f}"),
    ("history_events", "events", "{:.0f}"),
    ("server_cpu_s", "srv cpu", "{:.1f}"),
    ("worker_cpu_s", "wrk cpu", "{:.1f}"),
    ("agencies_cpu_s", "agy cpu", "{:.1f}"),
    ("worker_cpu_ms_per_call", "wrk ms/call", "{:.2f}"),
    ("worker_peak_rss_mb", "RSS MB", "{:.0f}"),
)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table(report: BenchReport) -> str:
    """A fixed-width table: per scenario, baseline and engine medians and the ratio."""
    summary = report.summary()
    head = f"{'scenario':<10} {'':<8}" + "".join(f" {label:>11}" for _, label, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for name, rows in summary.items():
        for row in (*MODES, "ratio"):
            values = rows.get(row, {})
            cells = "".join(
                f" {_cell(values.get(key), '{:.2f}' if row == 'ratio' else fmt):>11}"
                for key, _, fmt in COLUMNS
            )
            lines.append(f"{name if row == 'baseline' else '':<10} {row:<8}{cells}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def write_json(report: BenchReport, path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"config": config, "machine": machine(), **report.as_json()}
    path.write_text(json.dumps(data, indent=2))


def chart(report: BenchReport, path: Path) -> bool:
    """Throughput and p99 by scenario, baseline beside engine; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = report.summary()
    names = list(summary)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for offset, mode in ((-width / 2, "baseline"), (width / 2, "engine")):
        xs = [i + offset for i in range(len(names))]
        left.bar(xs, [summary[n][mode].get("calls_per_s") or 0 for n in names], width,
                 label=mode)
        right.bar(xs, [summary[n][mode].get("e2e_p99_ms") or 0 for n in names], width,
                  label=mode)
    for axis, title in ((left, "throughput (agency calls/s)"), (right, "e2e p99 (ms)")):
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names)
        axis.set_title(title)
        axis.legend()
    right.set_yscale("log")
    fig.suptitle("No Wrong Door engine vs hand-written Temporal workflow (medians)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
