"""The service-quality report's figures, queried from the read model (``nwd report`` renders them).


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
