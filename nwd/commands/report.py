"""`nwd report` (service-quality report) and `nwd setup-search-attributes` (a real cluster)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from nwd.cli import UserError
from runtime.settings import Settings

DEFAULT_WEEKS = 4
DEFAULT_SLA_DAYS = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = subparsers.add_parser(
        "report",
        help="service-quality report per service and agency, from the read model",
        description="Volume, completion rate, median/p95 duration, SLA breaches, requests for "
                    "information, contacts spared and week-over-week trends for requests "
                    "submitted in a date range (default: the last 4 weeks). Reads DATABASE_URL, "
                    "or the embedded stack's database.",
    )
    report.add_argument("--from", dest="start", type=_date, metavar="DATE",
                        help="first day, YYYY-MM-DD (default: 4 weeks before --to)")
    report.add_argument("--to", dest="end", type=_date, metavar="DATE",
                        help="last day, included, YYYY-MM-DD (default: today, UTC)")
    report.add_argument("--sla-days", type=float, default=DEFAULT_SLA_DAYS, metavar="DAYS",
                        help="a request (or agency call) longer than this breaches the SLA "
                             f"(default {DEFAULT_SLA_DAYS:g}); escalations always do")
    report.add_argument("--chart", type=Path, metavar="PATH",
                        help="also write a PNG chart there (needs matplotlib)")
    report.set_defaults(handler=lambda a: asyncio.run(_report(a)))

    setup = subparsers.add_parser(
        "setup-search-attributes",
        help="register the engine's search attributes on a Temporal cluster (idempotent)",
        description="Adds every search attribute the engine uses to the namespace through the "
                    "operator service, skipping those already there. The embedded dev server "
                    "registers them itself at start-up. Uses TEMPORAL_ADDRESS and "
                    "TEMPORAL_NAMESPACE.",
    )
    setup.set_defaults(handler=lambda a: asyncio.run(_setup(a)))


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def report_range(start: date | None, end: date | None,
                 today: date | None = None) -> tuple[datetime, datetime]:
    """``[start 00:00, day after end 00:00)`` in UTC; defaults: the 4 weeks up to today."""
    last = end or today or datetime.now(UTC).date()
    first = start or last - timedelta(weeks=DEFAULT_WEEKS) + timedelta(days=1)
    if first > last:
        raise UserError(f"--from {first} is after --to {last}")
    return (datetime.combine(first, time(), UTC),
            datetime.combine(last + timedelta(days=1), time(), UTC))


def _settings() -> Settings:
    env_settings = Settings.from_environment()
    if env_settings.database_url:
        return env_settings
    from nwd.stack import Stack

    return Stack.from_env().client_settings()


async def _report(args: argparse.Namespace) -> int:
    import asyncpg

    from nwd.report import render_chart, render_text
    from readmodel.report import build_report

    start, end = report_range(args.start, args.end)
    if args.sla_days <= 0:
        raise UserError("--sla-days must be positive")
    settings = _settings()
    if not settings.database_url:
        raise UserError("no database: set DATABASE_URL or start the stack with `nwd up`")
    if args.chart is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise UserError("--chart needs matplotlib: pip install matplotlib") from exc
    try:
        conn = await asyncpg.connect(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise UserError(f"cannot reach the read model database ({exc.__class__.__name__}: "
                        f"{exc}); is the stack up (`nwd up`)?") from exc
    try:
        report = await build_report(conn, start=start, end=end,
                                    sla=timedelta(days=args.sla_days), now=datetime.now(UTC))
    except asyncpg.UndefinedTableError as exc:
        raise UserError("the database has no read model yet (start a worker once)") from exc
    finally:
        await conn.close()
    print(render_text(report), end="")
    if args.chart is not None:
        render_chart(report, args.chart)
        print(f"chart: {args.chart}")
    return 0


_TYPES = {
    "KEYWORD": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "KEYWORD_LIST": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
    "BOOL": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "DATETIME": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "INT": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "FLOAT": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "TEXT": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
}


async def setup_search_attributes(
    client: Client, namespace: str, keys: Iterable[SearchAttributeKey[Any]] | None = None,
) -> tuple[list[str], list[str]]:
    """Register ``keys`` (default: the engine's) on ``namespace``; return (added, present).

    Idempotent: attributes already registered with the same type are left alone; one already
    registered with another type is an error (the cluster's, not ours, to change).
    """
    from workflows.search_attributes import ALL

    wanted: list[SearchAttributeKey[Any]] = list(keys if keys is not None else ALL)
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    present_types = {**dict(existing.system_attributes), **dict(existing.custom_attributes)}
    missing: dict[str, IndexedValueType.ValueType] = {}
    present: list[str] = []
    for key in wanted:
        kind = _TYPES[key.indexed_value_type.name]
        if key.name in present_types:
            if present_types[key.name] != kind:
                raise UserError(
                    f"search attribute {key.name} exists on {namespace} with type "
                    f"{IndexedValueType.Name(present_types[key.name])}, the engine needs "
                    f"{IndexedValueType.Name(kind)}")
            present.append(key.name)
        else:
            missing[key.name] = kind
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))
    return sorted(missing), present


async def _setup(_args: argparse.Namespace) -> int:
    settings = Settings.from_environment()
    try:
        client = await Client.connect(settings.temporal_address,
                                      namespace=settings.temporal_namespace)
    except RuntimeError as exc:
        raise UserError(f"cannot reach Temporal at {settings.temporal_address} ({exc})") from exc
    added, present = await setup_search_attributes(client, settings.temporal_namespace)
    for name in added:
        print(f"added    {name}")
    for name in present:
        print(f"present  {name}")
    print(f"{len(added)} added, {len(present)} already there "
          f"(namespace {settings.temporal_namespace} at {settings.temporal_address})")
    return 0
