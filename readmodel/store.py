"""The PostgreSQL read model: requests, their steps, and an append-only audit log.

Written by the activities — inside the agency-call activity, and by local activities at the
start of a request, after each message that lands (callback, answer, decision) and at its
end — and read by the front door and `nwd status`/`nwd report`. Holds no personal data:
ids, statuses, agency references, reasons and who decided only.

A step's row (one per item of a call step) has two kinds of writer, which can land out of
order — a call attempt cut off by a timeout may still write after the workflow moved on, a
local activity may be retried — so each upsert says which write may overwrite which:

- the workflow's writes (``record_progress``, the end's ``record_request``) carry ``as_of``,
  the workflow time of the state they hold: one older than the row's is ignored;
- an agency call's write never overwrites a state the workflow has settled
  (:data:`SETTLED`); it does overwrite the workflow's running or waiting states, as the
  call that follows them (the answer's call, a withdrawal) is newer news.

So the row only moves forward, and the end's record — the newest workflow write, every
step — makes it equal to the workflow's result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from runtime.messages import ItemOutcome, RecordProgressInput, RecordRequestInput, StepOutcome


@dataclass(frozen=True)
class StepRow:
    step_id: str
    item_key: str | None
    agency: str | None
    operation: str | None
    status: str
    agency_reference: str | None
    attempts: int
    reason: str | None
    escalated: bool
    updated_at: datetime
    decided_by: str | None = None
    kind: str | None = None
    """``call`` or ``decision`` (None in rows only agency calls wrote: calls)."""
    due_at: datetime | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class RequestRow:
    reference: str
    service: str
    version: int
    content_hash: str
    language: str
    status: str
    agencies: list[str]
    agencies_contacted: int
    submitted_at: datetime
    finished_at: datetime | None
    steps: list[StepRow]


SETTLED = ("completed", "failed", "cancelled", "compensated", "skipped")
"""States an agency call's write never overwrites once the workflow has written them."""

_WORKFLOW_STEP_CONFLICT = """
    ON CONFLICT (reference, step_id, item_key) DO UPDATE SET
        status = EXCLUDED.status,
        agency_reference = COALESCE(EXCLUDED.agency_reference, request_steps.agency_reference),
        attempts = GREATEST(EXCLUDED.attempts, request_steps.attempts),
        reason = EXCLUDED.reason,
        escalated = EXCLUDED.escalated OR request_steps.escalated,
        decided_by = COALESCE(EXCLUDED.decided_by, request_steps.decided_by),
        kind = COALESCE(EXCLUDED.kind, request_steps.kind),
        due_at = COALESCE(EXCLUDED.due_at, request_steps.due_at),
        as_of = GREATEST(EXCLUDED.as_of, request_steps.as_of),
        updated_at = now()
    WHERE EXCLUDED.as_of IS NULL OR request_steps.as_of IS NULL
        OR EXCLUDED.as_of >= request_steps.as_of"""
"""A workflow's state of a step or item overwrites an older one, never a newer one (and never
loses a reference). A write without ``as_of`` (from a worker older than the column) applies."""

_CALL_STEP_CONFLICT = f"""
    ON CONFLICT (reference, step_id, item_key) DO UPDATE SET
        status = EXCLUDED.status,
        agency_reference = COALESCE(EXCLUDED.agency_reference, request_steps.agency_reference),
        attempts = GREATEST(EXCLUDED.attempts, request_steps.attempts),
        reason = EXCLUDED.reason,
        updated_at = now()
    WHERE request_steps.as_of IS NULL
        OR request_steps.status NOT IN ({", ".join(f"'{s}'" for s in SETTLED)})"""
"""An agency call's progress overwrites what calls wrote and the workflow's live states,
never what the workflow settled."""


async def open_pool(dsn: str, *, max_size: int) -> asyncpg.Pool:
    """The read model's connection pool; the caller closes it.

    Connections go back to the pool without asyncpg's reset query (advisory unlock, CLOSE
    ALL, UNLISTEN, RESET ALL: a round trip and four statements after every pooled call,
    i.e. after every agency call's progress write). The read model keeps no session state:
    no LISTEN, no SET, and the migrations release their advisory lock in ``finally``.
    """
    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, reset=_keep_session)


async def _keep_session(conn: asyncpg.Connection) -> None:
    return None


@dataclass(frozen=True)
class ItemProgress:
    """One agency call's outcome, as the agency-call activity records it."""

    reference: str
    step_id: str
    item_key: str | None
    agency: str
    operation: str
    status: str
    agency_reference: str | None
    attempts: int
    reason: str | None
    event: str
    """The audit event's kind, e.g. ``agency_operation_completed``."""


def _latest_per_item(items: Sequence[ItemProgress]) -> dict[tuple[str, str, str], ItemProgress]:
    """Each item's state after applying ``items`` in order, as one upsert each would have:
    the last status and reason, the last agency reference given, the most attempts."""
    latest: dict[tuple[str, str, str], ItemProgress] = {}
    for item in items:
        key = (item.reference, item.step_id, item.item_key or "")
        before = latest.get(key)
        if before is not None:
            item = replace(item, agency_reference=item.agency_reference or before.agency_reference,
                           attempts=max(item.attempts, before.attempts))
        latest[key] = item
    return latest


class ReadModel:
    """Reads and writes the read model through one asyncpg pool (owned by the caller)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool, for the other tables' writers sharing it (audit log, digests, the
        signature nonce cache, access)."""
        return self._pool

    async def record_request(self, record: RecordRequestInput) -> None:
        """Upsert the request row and, when given, every step's final state, atomically."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO requests (reference, service, version, content_hash, language,
                    status, agencies, agencies_contacted, submitted_at, finished_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                        CASE WHEN $10 THEN now() ELSE NULL END)
                ON CONFLICT (reference) DO UPDATE SET
                    status = EXCLUDED.status,
                    agencies_contacted = EXCLUDED.agencies_contacted,
                    finished_at = COALESCE(requests.finished_at, EXCLUDED.finished_at),
                    updated_at = now()
                """,
                record.reference, record.service, record.version, record.content_hash,
                record.language, record.status, record.agencies, record.agencies_contacted,
                record.submitted_at, record.finished,
            )
            if record.steps:
                await self._upsert_steps(conn, record.reference, list(record.steps),
                                         record.as_of)
            await conn.execute(
                "INSERT INTO request_events (reference, kind, detail) VALUES ($1, $2, $3)",
                record.reference,
                "request_finished" if record.finished else "request_started",
                json.dumps({"status": record.status}),
            )

    async def record_submitted(self, record: RecordRequestInput) -> bool:
        """Write a new request's row at submission; False if the request had one already."""
        inserted = await self._pool.fetchval(
            """
            WITH new AS (
                INSERT INTO requests (reference, service, version, content_hash, language,
                    status, agencies, submitted_at)
                VALUES ($1, $2, $3, $4, $5, 'running', $6, $7)
                ON CONFLICT (reference) DO NOTHING
                RETURNING reference
            ), started AS (
                INSERT INTO request_events (reference, kind, detail)
                SELECT reference, 'request_started', '{"status": "running"}' FROM new
            )
            SELECT count(*) > 0 FROM new
            """,
            record.reference, record.service, record.version, record.content_hash,
            record.language, record.agencies, record.submitted_at,
        )
        return bool(inserted)

    async def forget_submitted(self, reference: str) -> None:
        """Take back a row written at submission for a request that was not started."""
        async with self._pool.acquire() as conn, conn.transaction():
            deleted = await conn.fetchval(
                "DELETE FROM requests WHERE reference = $1 AND finished_at IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM request_steps WHERE reference = $1)"
                " RETURNING true",
                reference,
            )
            if deleted:
                await conn.execute("DELETE FROM request_events WHERE reference = $1", reference)

    async def record_progress(self, record: RecordProgressInput) -> None:
        """What a message changed (a step, or its changed item), with its audit event."""
        step = record.step
        async with self._pool.acquire() as conn, conn.transaction():
            await self._upsert_steps(conn, record.reference, [step], record.as_of)
            items: list[ItemOutcome | None] = list(step.items) or [None]
            await conn.executemany(
                "INSERT INTO request_events (reference, step_id, item_key, kind, detail)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(record.reference, step.step_id, item.key if item else None, record.event,
                  json.dumps({"status": item.status if item else step.status,
                              "agency_reference": item.agency_reference if item else None,
                              "decided_by": step.decided_by}))
                 for item in items],
            )

    @staticmethod
    async def _upsert_steps(
        conn: asyncpg.Connection, reference: str, steps: list[StepOutcome],
        as_of: datetime | None,
    ) -> None:
        """Steps' (and for_each items') states as the workflow has them, in one pipelined
        batch; rows already holding a newer state keep it."""
        rows = []
        for step in steps:
            items: list[ItemOutcome | None] = list(step.items) or [None]
            rows += [
                (reference, step.step_id, (item.key or "") if item else "",
                 step.agency, step.operation,
                 item.status if item else step.status,
                 item.agency_reference if item else None,
                 item.attempts if item else 0,
                 (item.reason if item else None) or step.reason,
                 step.escalated or bool(item and item.escalated),
                 step.decided_by, as_of, step.kind, step.deadline_at)
                for item in items
            ]
        await conn.executemany(
            f"""
            INSERT INTO request_steps (reference, step_id, item_key, agency, operation,
                status, agency_reference, attempts, reason, escalated, decided_by, as_of,
                kind, due_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
            {_WORKFLOW_STEP_CONFLICT}
            """,
            rows,
        )

    async def record_items(self, items: Sequence[ItemProgress]) -> None:
        """Several agency calls' progress in one statement: each item's latest state, upserted
        (in key order, so concurrent batches lock rows in the same order) unless the workflow
        settled it already, and every audit event, in the order given."""
        latest = sorted(_latest_per_item(items).items())
        steps = [row for _, row in latest]
        await self._pool.execute(
            f"""
            WITH progress AS (
                INSERT INTO request_steps (reference, step_id, item_key, agency, operation,
                    status, agency_reference, attempts, reason)
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                    $5::text[], $6::text[], $7::text[], $8::int[], $9::text[])
                {_CALL_STEP_CONFLICT}
            )
            INSERT INTO request_events (reference, step_id, item_key, kind, detail)
            SELECT reference, step_id, NULLIF(item_key, ''), kind, detail::jsonb
            FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[])
                AS e(reference, step_id, item_key, kind, detail)
            """,
            [r.reference for r in steps], [r.step_id for r in steps],
            [r.item_key or "" for r in steps], [r.agency for r in steps],
            [r.operation for r in steps], [r.status for r in steps],
            [r.agency_reference for r in steps], [r.attempts for r in steps],
            [r.reason for r in steps],
            [r.reference for r in items], [r.step_id for r in items],
            [r.item_key or "" for r in items], [r.event for r in items],
            [json.dumps({"status": r.status, "attempts": r.attempts,
                         "agency_reference": r.agency_reference}) for r in items],
        )

    async def record_event(
        self, reference: str, kind: str, detail: dict[str, Any], step_id: str | None = None
    ) -> None:
        await self._pool.execute(
            "INSERT INTO request_events (reference, step_id, kind, detail) VALUES ($1, $2, $3, $4)",
            reference, step_id, kind, json.dumps(detail),
        )

    async def mark_escalated(self, reference: str, step_id: str) -> None:
        await self._pool.execute(
            "UPDATE request_steps SET escalated = true, updated_at = now()"
            " WHERE reference = $1 AND step_id = $2",
            reference, step_id,
        )

    async def get_request(self, reference: str) -> RequestRow | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM requests WHERE reference = $1", reference)
            if row is None:
                return None
            steps = await conn.fetch(
                "SELECT * FROM request_steps WHERE reference = $1 ORDER BY started_at, step_id,"
                " item_key",
                reference,
            )
        return RequestRow(
            reference=row["reference"], service=row["service"], version=row["version"],
            content_hash=row["content_hash"], language=row["language"], status=row["status"],
            agencies=list(row["agencies"]), agencies_contacted=row["agencies_contacted"],
            submitted_at=row["submitted_at"], finished_at=row["finished_at"],
            steps=[
                StepRow(
                    step_id=s["step_id"], item_key=s["item_key"] or None, agency=s["agency"],
                    operation=s["operation"], status=s["status"],
                    agency_reference=s["agency_reference"], attempts=s["attempts"],
                    reason=s["reason"], escalated=s["escalated"], updated_at=s["updated_at"],
                    decided_by=s["decided_by"], kind=s["kind"], due_at=s["due_at"],
                    started_at=s["started_at"],
                )
                for s in steps
            ],
        )

    async def get_events(self, reference: str, *, limit: int = 500) -> list[EventRow]:
        """The request's audit events, oldest first (at most ``limit``, the newest kept)."""
        rows = await self._pool.fetch(
            "SELECT id, step_id, item_key, kind, detail, at FROM ("
            " SELECT * FROM request_events WHERE reference = $1 ORDER BY id DESC LIMIT $2"
            ") newest ORDER BY id", reference, limit)
        return [EventRow(id=r["id"], step_id=r["step_id"], item_key=r["item_key"],
                         kind=r["kind"], detail=_json_object(r["detail"]), at=r["at"])
                for r in rows]

    async def waiting_decisions(self, steps: Sequence[tuple[str, str]], *,
                                limit: int = 500) -> list[WaitingDecision]:
        """The decision steps waiting now among ``steps`` ((service, step id) pairs), oldest
        waiting first."""
        if not steps:
            return []
        rows = await self._pool.fetch(
            """
            SELECT s.reference, r.service, r.version, s.step_id, s.started_at, s.due_at,
                   s.escalated, r.submitted_at
            FROM request_steps s JOIN requests r USING (reference)
            JOIN unnest($1::text[], $2::text[]) AS w(service, step_id)
              ON w.service = r.service AND w.step_id = s.step_id
            WHERE s.kind = 'decision' AND s.status = 'waiting' AND r.finished_at IS NULL
            ORDER BY s.started_at, s.reference LIMIT $3
            """,
            [service for service, _ in steps], [step for _, step in steps], limit)
        return [WaitingDecision(reference=r["reference"], service=r["service"],
                                version=r["version"], step_id=r["step_id"],
                                waiting_since=r["started_at"], due_at=r["due_at"],
                                escalated=r["escalated"], submitted_at=r["submitted_at"])
                for r in rows]


@dataclass(frozen=True)
class EventRow:
    """One audit event of a request (ids, statuses and references only)."""

    id: int
    step_id: str | None
    item_key: str | None
    kind: str
    detail: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class WaitingDecision:
    """A decision step waiting for a caseworker, as the task list shows it."""

    reference: str
    service: str
    version: int
    step_id: str
    waiting_since: datetime
    due_at: datetime | None
    escalated: bool
    submitted_at: datetime


def _json_object(value: Any) -> dict[str, Any]:
    data = json.loads(value) if isinstance(value, str) else value
    return data if isinstance(data, dict) else {}
