"""The service-quality report's figures match a hand-computed fixture.

Seven requests in two weeks (Mon 2 to Sun 15 Nov 2026) plus two outside the range, written into
a fresh read model (real PostgreSQL, the engine's migrations). Every expected figure below is
worked out by hand in the comments.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from nwd.commands.report import report_range
from nwd.report import human_duration, render_chart, render_text
from readmodel.migrations import apply_migrations
from readmodel.report import Figures, Report, build_report

COA, RAD = "change-of-address", "report-a-death"
START = datetime(2026, 11, 2, tzinfo=UTC)
END = datetime(2026, 11, 16, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
SLA = timedelta(days=5)
H = 3600.0
D = 86400.0


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


# reference: (service, status, submitted, seconds to finish or None, agencies_contacted)
REQUESTS = {
    "A": (COA, "completed", at(2, 10), 1 * H, 4),
    "B": (COA, "completed", at(3, 10), 3 * H, 3),
    "C": (COA, "failed", at(4, 10), 2 * H, 1),
    "D": (RAD, "completed", at(5), 6 * D, 5),     # 6 days > SLA of 5: a breach
    "E": (COA, "completed", at(10, 12), 4 * H, 4),  # has an escalated step: a breach
    "F": (COA, "running", at(14), None, 0),        # running 6 days at NOW: a breach
    "G": (RAD, "completed", at(11), 1 * D, 2),
    "H": (COA, "completed", at(16), 1 * H, 2),      # submitted after the range
    "I": (COA, "completed", at(1, 23, 59), 1 * H, 2),  # submitted before the range
}
# (reference, step, item, agency, status, seconds from start to last update, ref, escalated)
STEPS = [
    ("A", "update_tax_address", "", "tax-authority", "completed", 600, "T1", False),
    ("A", "update_licence", "", "driver-licensing", "completed", 300, "D1", False),
    ("A", "update_voter_registration", "", "electoral-registration", "skipped", 0, None, False),
    ("B", "update_tax_address", "", "tax-authority", "completed", 1200, "T2", False),
    ("C", "update_tax_address", "", "tax-authority", "failed", 60, None, False),
    ("D", "register_death", "", "civil-registry", "completed", 6 * D, "R1", False),
    ("E", "update_tax_address", "", "tax-authority", "completed", 1800, "T3", True),
    ("E", "update_benefits", "b1", "benefits-agency", "completed", 100, "B1", False),
    ("E", "update_benefits", "b2", "benefits-agency", "completed", 200, "B2", False),
    ("F", "update_tax_address", "", "tax-authority", "waiting", 0, None, False),
    ("G", "register_death", "", "civil-registry", "completed", 1 * H, "R2", False),
    ("H", "update_tax_address", "", "tax-authority", "completed", 10, "T4", True),
]
# (reference, step, item or None, kind)
EVENTS = [
    ("A", None, None, "request_started"),
    ("A", "update_tax_address", None, "agency_operation_waiting"),
    ("A", "update_tax_address", None, "agency_information_retrying"),
    ("A", "update_tax_address", None, "agency_information_completed"),  # same item: counts 1
    ("E", "update_benefits", "b1", "information_requested"),
    ("E", "update_benefits", "b2", "information_requested"),
    ("H", "update_tax_address", None, "agency_information_completed"),  # out of range
]


async def seed(database_url: str) -> None:
    """Apply the migrations and write the fixture above."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await apply_migrations(pool)
        async with pool.acquire() as conn:
            for reference, (service, status, submitted, took, contacted) in REQUESTS.items():
                await conn.execute(
                    "INSERT INTO requests (reference, service, version, content_hash, language,"
                    " status, agencies, agencies_contacted, submitted_at, finished_at)"
                    " VALUES ($1, $2, 1, 'h', 'en', $3, '{}', $4, $5, $6)",
                    reference, service, status, contacted, submitted,
                    submitted + timedelta(seconds=took) if took is not None else None,
                )
            for reference, step, item, agency, status, took_s, ref, escalated in STEPS:
                started = REQUESTS[reference][2] + timedelta(minutes=1)
                await conn.execute(
                    "INSERT INTO request_steps (reference, step_id, item_key, agency, operation,"
                    " status, agency_reference, escalated, started_at, updated_at)"
                    " VALUES ($1, $2, $3, $4, 'op', $5, $6, $7, $8, $9)",
                    reference, step, item, agency, status, ref, escalated, started,
                    started + timedelta(seconds=took_s),
                )
            for reference, step, item, kind in EVENTS:
                await conn.execute(
                    "INSERT INTO request_events (reference, step_id, item_key, kind, detail)"
                    " VALUES ($1, $2, $3, $4, $5)",
                    reference, step, item, kind, json.dumps({}),
                )
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def report(database_url: str) -> AsyncIterator[Report]:
    await seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        yield await build_report(conn, start=START, end=END, sla=SLA, now=NOW)
    finally:
        await conn.close()


def by_name(rows: list[Figures]) -> dict[str, Figures]:
    return {f.name: f for f in rows}


def test_per_service_figures(report: Report) -> None:
    services = by_name(report.services)
    assert set(services) == {COA, RAD}
    coa = services[COA]
    # A, B, C, E, F; completed A, B, E
    assert (coa.volume, coa.completed) == (5, 3)
    assert coa.completion_rate == pytest.approx(0.6)
    # finished durations 1h, 2h, 3h, 4h: median 2.5 h; p95 at 0.95*3 = 2.85 -> 3h + 0.85h
    assert coa.median_s == pytest.approx(2.5 * H)
    assert coa.p95_s == pytest.approx(3.85 * H)
    assert coa.sla_breaches == 2  # E escalated, F running 6 days
    assert coa.information_requests == 3  # A: one item (two events), E: two items
    assert coa.contacts_spared == 3 + 2 + 0 + 3 + 0

    rad = services[RAD]
    assert (rad.volume, rad.completed) == (2, 2)
    assert rad.median_s == pytest.approx((6 * D + 1 * D) / 2)
    assert rad.p95_s == pytest.approx(1 * D + 0.95 * 5 * D)
    assert rad.sla_breaches == 1  # D took 6 days
    assert rad.information_requests == 0
    assert rad.contacts_spared == 4 + 1


def test_totals(report: Report) -> None:
    total = report.total
    assert (total.volume, total.completed) == (7, 5)
    # 1h 2h 3h 4h 1d 6d: median (3h+4h)/2; p95 at 0.95*5 = 4.75 -> 1d + 0.75 * 5d
    assert total.median_s == pytest.approx(3.5 * H)
    assert total.p95_s == pytest.approx(1 * D + 0.75 * 5 * D)
    assert total.sla_breaches == 3
    assert total.information_requests == 3
    assert total.contacts_spared == 13


def test_per_agency_figures(report: Report) -> None:
    agencies = by_name(report.agencies)
    # the skipped electoral step is no agency call
    assert set(agencies) == {"tax-authority", "driver-licensing", "benefits-agency",
                             "civil-registry"}
    tax = agencies["tax-authority"]
    assert (tax.volume, tax.completed) == (5, 3)  # A B C E F
    # finished: 60 s, 600 s, 1200 s, 1800 s -> median 900; p95 1200 + 0.85 * 600
    assert tax.median_s == pytest.approx(900)
    assert tax.p95_s == pytest.approx(1710)
    assert tax.sla_breaches == 2  # E escalated, F waiting 6 days
    assert tax.information_requests == 1  # A's tax item
    assert tax.contacts_spared == 3  # A, B, E reached it among several agencies

    benefits = agencies["benefits-agency"]
    assert (benefits.volume, benefits.completed) == (2, 2)
    assert benefits.median_s == pytest.approx(150)
    assert benefits.p95_s == pytest.approx(195)
    assert benefits.information_requests == 2
    assert benefits.contacts_spared == 1  # one request (E), two items

    registry = agencies["civil-registry"]
    assert registry.median_s == pytest.approx((6 * D + H) / 2)
    assert registry.p95_s == pytest.approx(H + 0.95 * (6 * D - H))
    assert registry.sla_breaches == 1
    assert registry.contacts_spared == 2

    licence = agencies["driver-licensing"]
    assert (licence.volume, licence.completed, licence.median_s, licence.p95_s) == (
        1, 1, pytest.approx(300), pytest.approx(300))
    assert licence.sla_breaches == 0


def test_week_over_week(report: Report) -> None:
    weeks = {(w.figures.name, w.week): w for w in report.weeks}
    w1, w2 = date(2026, 11, 2), date(2026, 11, 9)
    assert set(weeks) == {(n, w) for n in (COA, RAD, "all") for w in (w1, w2)}
    assert weeks[(COA, w1)].figures.volume == 3
    assert weeks[(COA, w1)].volume_change is None
    assert weeks[(COA, w2)].figures.volume == 2
    assert weeks[(COA, w2)].volume_change == pytest.approx(-1 / 3)
    assert weeks[(COA, w2)].completion_change == pytest.approx(1 / 2 - 2 / 3)
    assert weeks[(RAD, w2)].volume_change == pytest.approx(0)
    assert weeks[(RAD, w2)].completion_change == pytest.approx(0)
    assert weeks[("all", w2)].volume_change == pytest.approx(-0.25)
    assert weeks[("all", w2)].completion_change == pytest.approx(2 / 3 - 3 / 4)
    assert weeks[("all", w1)].figures.contacts_spared == 3 + 2 + 0 + 4
    assert weeks[("all", w2)].figures.contacts_spared == 3 + 0 + 1
    assert weeks[("all", w2)].figures.sla_breaches == 2
    # rows come per service, then "all", each in week order
    assert [(w.figures.name, w.week) for w in report.weeks][-2:] == [("all", w1), ("all", w2)]


def test_text_rendering(report: Report) -> None:
    text = render_text(report)
    assert "requests submitted 2026-11-02 to 2026-11-15 (SLA 5.0 d)" in text
    coa_line = next(line for line in text.splitlines() if line.startswith(COA))
    assert coa_line.split() == [COA, "5", "60%", "2.5", "h", "3.8", "h", "2", "3", "8"]  # 3.85 h
    assert "Value delivered: 13 separate agency contacts spared across 7 requests." in text
    assert "-33%" in text


def test_chart_is_a_png(report: Report, tmp_path: Path) -> None:
    path = tmp_path / "charts" / "quality.png"
    render_chart(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


async def test_empty_range_has_zero_figures(database_url: str) -> None:
    await seed(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        empty = await build_report(conn, start=at(20), end=at(27), sla=SLA, now=NOW)
    finally:
        await conn.close()
    assert empty.services == [] and empty.agencies == [] and empty.weeks == []
    assert (empty.total.volume, empty.total.completion_rate) == (0, None)
    assert "across 0 requests" in render_text(empty)


def test_range_and_durations() -> None:
    assert report_range(date(2026, 11, 2), date(2026, 11, 15)) == (START, END)
    assert report_range(None, None, today=date(2026, 11, 15)) == (
        datetime(2026, 10, 19, tzinfo=UTC), END)
    assert [human_duration(s) for s in (None, 5, 90, 2 * H, 3 * D)] == [
        "-", "5.0 s", "1.5 min", "2.0 h", "3.0 d"]
