"""Presenting a benchmark report: the printed table, the JSON file and the PNG chart."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from benchmarks.runs import BenchReport
from benchmarks.scenarios import MODE_NOTES

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests_per_s", "req/s", "{:.2f}"),
    ("calls_per_s", "calls/s", "{:.0f}"),
    ("e2e_p50_ms", "p50 ms", "{:.0f}"),
    ("e2e_p95_ms", "p95 ms", "{:.0f}"),
    ("e2e_p99_ms", "p99 ms", "{:.0f}"),
    ("overhead_p50_ms", "ovh ms", "{:.0f}"),
    ("history_events", "events", "{:.0f}"),
    ("server_cpu_s", "srv cpu", "{:.1f}"),
    ("postgres_cpu_s", "pg cpu", "{:.1f}"),
    ("worker_cpu_s", "wrk cpu", "{:.1f}"),
    ("agencies_cpu_s", "agy cpu", "{:.1f}"),
    ("client_cpu_s", "cli cpu", "{:.1f}"),
    ("total_cpu_ms_per_request", "cpu ms/req", "{:.0f}"),
    ("worker_cpu_ms_per_call", "wrk ms/call", "{:.2f}"),
    ("worker_peak_rss_mb", "RSS MB", "{:.0f}"),
)


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


ROWS: tuple[tuple[str, str], ...] = (
    ("baseline", "baseline"),
    ("engine", "engine"),
    ("ratio", "ratio"),
    ("dbos", "dbos"),
    ("dbos_ratio", "dbos÷base"),
)
"""Summary rows in table order, with their labels: ``ratio`` is engine ÷ baseline."""
RATIO_ROWS = ("ratio", "dbos_ratio")


def table(report: BenchReport) -> str:
    """A fixed-width table: per scenario, the medians of each mode and the ratios to the
    baseline, then what each mode shown gives the user (:data:`MODE_NOTES`)."""
    summary = report.summary()
    head = f"{'scenario':<10} {'':<9}" + "".join(f" {label:>11}" for _, label, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    shown: set[str] = set()
    for name, rows in summary.items():
        first = True
        for row, label in ROWS:
            if row not in rows:
                continue
            values = rows[row]
            cells = "".join(
                f" {_cell(values.get(key), '{:.2f}' if row in RATIO_ROWS else fmt):>11}"
                for key, _, fmt in COLUMNS
            )
            lines.append(f"{name if first else '':<10} {label:<9}{cells}")
            first = False
            if values and row in MODE_NOTES:
                shown.add(row)
    lines.append("")
    lines.extend(f"{mode}: {note}" for mode, note in MODE_NOTES.items() if mode in shown)
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
    """Throughput and p99 by scenario, the modes side by side; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary = report.summary()
    names = list(summary)
    modes = [m for m in ("baseline", "engine", "dbos")
             if any(summary[n].get(m) for n in names)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / max(len(modes), 1)
    labels = {"baseline": "Temporal, hand-written", "engine": "Temporal, No Wrong Door",
              "dbos": "DBOS on PostgreSQL"}
    for index, mode in enumerate(modes):
        offset = (index - (len(modes) - 1) / 2) * width
        xs = [i + offset for i in range(len(names))]
        left.bar(xs, [(summary[n].get(mode) or {}).get("calls_per_s") or 0 for n in names],
                 width, label=labels[mode])
        right.bar(xs, [(summary[n].get(mode) or {}).get("e2e_p99_ms") or 0 for n in names],
                  width, label=labels[mode])
    for axis, title in ((left, "throughput (agency calls/s)"), (right, "e2e p99 (ms)")):
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names)
        axis.set_title(title)
        axis.legend(fontsize="small")
    right.set_yscale("log")
    title = "No Wrong Door engine vs hand-written Temporal workflow"
    fig.suptitle(title + (" vs DBOS" if "dbos" in modes else "") + " (medians)")
    if "dbos" in modes:
        fig.text(0.01, 0.01, "Temporal: UI (history, search, decrypted payloads), server-side "
                 "timers, scale-out workers and server.  DBOS: a library on PostgreSQL only, "
                 "no server, no UI like Temporal's; scales by more app processes.",
                 fontsize=7)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    else:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
