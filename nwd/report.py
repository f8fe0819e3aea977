"""The service-quality report: figures from the PostgreSQL read model, as a table and a chart.

For any date range (requests *submitted* in ``[start, end)``), per service and per agency:

- **volume**: requests (per service) or agency calls, one per step item (per agency);
- **completion rate**: completed / volume (a request or item still running counts as not
  completed);
- **median / p95 duration**: submission to finish of finished requests; for an agency, first
  call to the item's final state (``request_steps.started_at`` → ``updated_at``) of finished items;
- **SLA breaches**: requests with an escalated step or that took (or have been running) longer
  than the SLA; for an agency, its escalated items and items that took longer than the SLA;
- **requests for information**: step items with an audit event whose kind contains
  ``information`` (an agency asked the citizen for more, and the answer went back);
- **value delivered**: a request that reached k agencies spared the citizen k - 1 separate
  contacts (``requests.agencies_contacted``); for an agency: the requests in which it was one of
  several agencies reached, so the citizen never had to contact it separately;
- **trends**: the same per ISO week (Monday, UTC), with the change from the previous week.

Holds no personal data: the read model has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

FINISHED_STEP_STATES = ("completed", "failed", "cancelled", "compensated", "skipped")


@dataclass(frozen=True)
class Figures:
    """One row of the report: a service, an agency, or ``all``."""

    name: str
    volume: int
    completed: int
    median_s: float | None
    p95_s: float | None
    sla_breaches: int
    information_requests: int
    contacts_spared: int

    @property
    def completion_rate(self) -> float | None:
        return self.completed / self.volume if self.volume else None


@dataclass(frozen=True)
class WeekFigures:
    """One service's (or ``all``'s) figures for one week, with the change from the week before."""

    week: date
    figures: Figures
    volume_change: float | None
    """Relative change of volume from the previous week (0.5 = +50%); None without one."""
    completion_change: float | None
    """Change of completion rate from the previous week, in percentage points / 100."""


@dataclass(frozen=True)
class Report:
    start: datetime
    end: datetime
    sla: timedelta
    total: Figures
    services: list[Figures]
    agencies: list[Figures]
    weeks: list[WeekFigures]


# ------------------------------------------------------------------------------- queries
# $1 = start, $2 = end, $3 = SLA in seconds, $4 = "now" (for requests still running)

_REQUESTS = """
WITH r AS (
    SELECT r.*,
           EXTRACT(EPOCH FROM (r.finished_at - r.submitted_at))::float8 AS duration_s,
           (EXISTS (SELECT 1 FROM request_steps s
                    WHERE s.reference = r.reference AND s.escalated)
            OR EXTRACT(EPOCH FROM (COALESCE(r.finished_at, $4) - r.submitted_at)) > $3)
               AS breached,
           (SELECT count(*) FROM (
                SELECT DISTINCT e.step_id, COALESCE(e.item_key, '') FROM request_events e
                WHERE e.reference = r.reference AND e.kind ILIKE '%information%') i)
               AS information,
           date_trunc('week', r.submitted_at AT TIME ZONE 'UTC')::date AS week
    FROM requests r
    WHERE r.submitted_at >= $1 AND r.submitted_at < $2
)
SELECT {group} AS name,
       count(*)::int AS volume,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS median_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_s) AS p95_s,
       count(*) FILTER (WHERE breached)::int AS sla_breaches,
       COALESCE(sum(information), 0)::int AS information_requests,
       COALESCE(sum(GREATEST(agencies_contacted - 1, 0)), 0)::int AS contacts_spared
       {extra}
FROM r
GROUP BY {grouping}
ORDER BY {grouping}
"""

_AGENCIES = """
WITH s AS (
    SELECT s.*, r.agencies_contacted,
           CASE WHEN s.status = ANY($5::text[])
                THEN EXTRACT(EPOCH FROM (s.updated_at - s.started_at))::float8 END AS duration_s,
           (s.escalated OR EXTRACT(EPOCH FROM (
                CASE WHEN s.status = ANY($5::text[]) THEN s.updated_at ELSE $4 END
                - s.started_at)) > $3) AS breached,
           EXISTS (SELECT 1 FROM request_events e
                   WHERE e.reference = s.reference AND e.step_id = s.step_id
                     AND COALESCE(e.item_key, '') = s.item_key
                     AND e.kind ILIKE '%information%') AS information
    FROM request_steps s JOIN requests r USING (reference)
    WHERE r.submitted_at >= $1 AND r.submitted_at < $2 AND s.agency IS NOT NULL
      AND s.status <> 'skipped'
)
SELECT agency AS name,
       count(*)::int AS volume,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS median_s,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_s) AS p95_s,
       count(*) FILTER (WHERE breached)::int AS sla_breaches,
       count(*) FILTER (WHERE information)::int AS information_requests,
       count(DISTINCT reference) FILTER (
           WHERE agencies_contacted > 1 AND agency_reference IS NOT NULL)::int
           AS contacts_spared
FROM s
GROUP BY agency
ORDER BY agency
"""


def _figures(row: asyncpg.Record) -> Figures:
    return Figures(
        name=str(row["name"]), volume=row["volume"], completed=row["completed"],
        median_s=row["median_s"], p95_s=row["p95_s"], sla_breaches=row["sla_breaches"],
        information_requests=row["information_requests"],
        contacts_spared=row["contacts_spared"],
    )


async def build_report(
    conn: asyncpg.Connection,
    *,
    start: datetime,
    end: datetime,
    sla: timedelta,
    now: datetime,
) -> Report:
    """Every figure of the report for requests submitted in ``[start, end)``."""
    args: tuple[Any, ...] = (start, end, sla.total_seconds(), now)
    total_rows = await conn.fetch(
        _REQUESTS.format(group="'all'", extra="", grouping="1"), *args)
    services = [_figures(r) for r in await conn.fetch(
        _REQUESTS.format(group="service", extra="", grouping="service"), *args)]
    agencies = [_figures(r) for r in await conn.fetch(
        _AGENCIES, *args, list(FINISHED_STEP_STATES))]
    weekly = await conn.fetch(
        _REQUESTS.format(group="service", extra=", week", grouping="service, week"), *args)
    weekly_all = await conn.fetch(
        _REQUESTS.format(group="'all'", extra=", week", grouping="week"), *args)
    total = _figures(total_rows[0]) if total_rows else Figures("all", 0, 0, None, None, 0, 0, 0)
    return Report(start=start, end=end, sla=sla, total=total, services=services,
                  agencies=agencies, weeks=_trends([*weekly, *weekly_all]))


def _trends(rows: Sequence[asyncpg.Record]) -> list[WeekFigures]:
    by_name: dict[str, list[tuple[date, Figures]]] = {}
    for row in rows:
        by_name.setdefault(str(row["name"]), []).append((row["week"], _figures(row)))
    weeks: list[WeekFigures] = []
    for name in sorted(by_name, key=lambda n: (n == "all", n)):
        previous: Figures | None = None
        previous_week: date | None = None
        for week, figures in sorted(by_name[name], key=lambda wf: wf[0]):
            consecutive = previous is not None and previous_week == week - timedelta(days=7)
            volume_change = completion_change = None
            if consecutive and previous is not None:
                volume_change = (figures.volume - previous.volume) / previous.volume
                rate, before = figures.completion_rate, previous.completion_rate
                if rate is not None and before is not None:
                    completion_change = rate - before
            weeks.append(WeekFigures(week, figures, volume_change, completion_change))
            previous, previous_week = figures, week
    return weeks


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
