"""Rendering the service-quality report (``nwd report``): a text table and a PNG chart.

The figures come from :mod:`readmodel.report` (the read model's own queries); this module only
lays them out. See that module for what each figure means.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from readmodel.report import Figures, Report

# ------------------------------------------------------------------------------- rendering


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.0f}%" if signed else f"{value * 100:.0f}%"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


_HEADERS = ("", "volume", "completed", "median", "p95", "SLA breaches", "info requests")


def _row(f: Figures) -> list[str]:
    return [f.name, str(f.volume), _percent(f.completion_rate), human_duration(f.median_s),
            human_duration(f.p95_s), str(f.sla_breaches), str(f.information_requests)]


def render_text(report: Report) -> str:
    """The report as plain-text tables for a terminal."""
    last_day = (report.end - timedelta(days=1)).date()
    parts = [
        f"Service quality, requests submitted {report.start.date()} to {last_day} "
        f"(SLA {human_duration(report.sla.total_seconds())})",
        "",
        "Per service",
        _table([*_HEADERS, "contacts spared"],
               [[*_row(f), str(f.contacts_spared)] for f in [*report.services, report.total]]),
        "",
        "Per agency (one row per agency call)",
        _table([*_HEADERS, "joint requests"],
               [[*_row(f), str(f.contacts_spared)] for f in report.agencies]),
        "",
        "Week over week (weeks start on Monday, UTC)",
        _table(
            ["", "week", "volume", "change", "completed", "change", "median", "SLA breaches",
             "contacts spared"],
            [[w.figures.name, str(w.week), str(w.figures.volume),
              _percent(w.volume_change, signed=True), _percent(w.figures.completion_rate),
              "-" if w.completion_change is None else f"{w.completion_change * 100:+.0f} pt",
              human_duration(w.figures.median_s), str(w.figures.sla_breaches),
              str(w.figures.contacts_spared)]
             for w in report.weeks],
        ),
        "",
        f"Value delivered: {report.total.contacts_spared} separate agency contacts spared "
        f"across {report.total.volume} requests.",
    ]
    return "\n".join(parts) + "\n"


def render_chart(report: Report, path: Path) -> None:
    """A PNG of the weekly volume, completion rate, durations and value per service.

    Needs matplotlib (imported here only, so the table needs nothing beyond the engine).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = sorted({w.week for w in report.weeks})
    names = [f.name for f in report.services]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    fig.suptitle(f"No Wrong Door — service quality {report.start.date()} to "
                 f"{(report.end - timedelta(days=1)).date()}")
    volume_ax, rate_ax, duration_ax, value_ax = axes.flat
    width = 0.8 / max(len(names), 1)
    labels = [w.strftime("%d %b") for w in weeks]
    for i, name in enumerate(names):
        series = {w.week: w.figures for w in report.weeks if w.figures.name == name}
        xs = [j + i * width for j in range(len(weeks))]
        volume_ax.bar(xs, [series[w].volume if w in series else 0 for w in weeks], width,
                      label=name)
        rate_ax.plot(range(len(weeks)),
                     [100 * (series[w].completion_rate or 0) if w in series else float("nan")
                      for w in weeks], marker="o", label=name)
        value_ax.bar(xs, [series[w].contacts_spared if w in series else 0 for w in weeks],
                     width, label=name)
    for ax, title in ((volume_ax, "Requests per week"), (rate_ax, "Completion rate (%)"),
                      (value_ax, "Agency contacts spared per week")):
        ax.set_title(title)
        ax.set_xticks(range(len(weeks)), labels)
        ax.legend(fontsize="small")
    rate_ax.set_ylim(0, 105)
    positions = range(len(report.services))
    duration_ax.bar([p - 0.2 for p in positions],
                    [(f.median_s or 0) / 3600 for f in report.services], 0.4, label="median")
    duration_ax.bar([p + 0.2 for p in positions],
                    [(f.p95_s or 0) / 3600 for f in report.services], 0.4, label="p95")
    duration_ax.set_xticks(list(positions), names)
    duration_ax.set_title("Duration (hours, log scale)")
    duration_ax.set_yscale("log")
    duration_ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
