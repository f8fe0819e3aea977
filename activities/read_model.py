"""The PostgreSQL read model: requests, their steps, and an append-only audit log.

Written by the activities (inside the agency-call activity and by a local activity at the
start and end of a request), read by the front door and `nwd status`/`nwd report`.
Holds no personal data: ids, statuses, agency references and reasons only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from definitions.requests import ItemOutcome, RecordRequestInput, StepOutcome


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


_STEP_CONFLICT = """
    ON CONFLICT (reference, step_id, item_key) DO UPDATE SET
        status = EXCLUDED.status,
        agency_reference = COALESCE(EXCLUDED.agency_reference, request_steps.agency_reference),
        attempts = GREATEST(EXCLUDED.attempts, request_steps.attempts),
        reason = EXCLUDED.reason,
        updated_at = now()"""
"""How a newer state of a step or item overwrites an older one (never losing a reference)."""


class ReadModel:
    """Reads and writes the read model through one asyncpg pool (owned by the caller)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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
                await self._upsert_steps(conn, record.reference, list(record.steps))
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

    @staticmethod
    async def _upsert_steps(
        conn: asyncpg.Connection, reference: str, steps: list[StepOutcome]
    ) -> None:
        """Every step's (and for_each item's) final state, in one pipelined batch."""
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
                 step.escalated or bool(item and item.escalated))
                for item in items
            ]
        await conn.executemany(
            f"""
            INSERT INTO request_steps (reference, step_id, item_key, agency, operation,
                status, agency_reference, attempts, reason, escalated)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            {_STEP_CONFLICT}, escalated = EXCLUDED.escalated OR request_steps.escalated
            """,
            rows,
        )

    async def record_item(
        self,
        *,
        reference: str,
        step_id: str,
        item_key: str | None,
        agency: str,
        operation: str,
        status: str,
        agency_reference: str | None,
        attempts: int,
        reason: str | None = None,
        event: str,
    ) -> None:
        """Upsert one agency call's progress and append an audit event, atomically.

        One statement (a data-modifying CTE) rather than a transaction of two: this runs once
        per agency call, and a round trip saved here is saved on every call.
        """
        await self._pool.execute(
            f"""
            WITH progress AS (
                INSERT INTO request_steps (reference, step_id, item_key, agency, operation,
                    status, agency_reference, attempts, reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                {_STEP_CONFLICT}
            )
            INSERT INTO request_events (reference, step_id, item_key, kind, detail)
            VALUES ($1, $2, NULLIF($3, ''), $10, $11)
            """,
            reference, step_id, item_key or "", agency, operation, status,
            agency_reference, attempts, reason, event,
            json.dumps({"status": status, "attempts": attempts,
                        "agency_reference": agency_reference}),
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
                )
                for s in steps
            ],
        )
