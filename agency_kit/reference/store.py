"""Each reference agency's own PostgreSQL schema ``agency_<id>``: records, outbox, idempotency.

Tables (created on start-up, idempotently, under an advisory lock):

``records`` — one row per effect the agency carried out or has in hand:
    id bigserial, agency_reference text unique (``DMV-000042``), operation, reference (the
    engine's request reference), step, item, input jsonb, output jsonb, answers jsonb,
    status (``accepted`` | ``needs_information`` | ``completed`` | ``rejected`` |
    ``cancelled``), is_undo, outcome jsonb (a planned rejection for callback mode),
    requested_fields jsonb (what needs_information asked), callback_url, due_at (when an
    accepted call's outcome falls due: the durable form of "finish this later"; null once
    it is finished or withdrawn), language, reverted_at, reverted_by (the undo record's
    agency reference), created_at, updated_at.

``outbox`` — :class:`agency_kit.outbox.Outbox`'s table: the callbacks owed to the engine,
written in the transaction that finishes the record.

``idempotency`` — :class:`agency_kit.idempotency.IdempotencyStore`'s table.

The sequence ``agency_reference_seq`` numbers agency references.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from agency_kit.contract import Callback
from agency_kit.idempotency import IdempotencyStore, quote_ident
from agency_kit.outbox import Outbox
from agency_kit.reference.outputs import agency_reference
from agency_kit.signing import Signer
from agency_kit.wakeup import notify, seconds_until


def schema_name(agency_id: str) -> str:
    """``driver-licensing`` -> ``agency_driver_licensing``."""
    return "agency_" + re.sub(r"[^a-z0-9]+", "_", agency_id.lower()).strip("_")


_JSON_COLUMNS = ("input", "output", "answers", "outcome", "requested_fields")


@dataclass(frozen=True)
class Record:
    """One row of ``records``."""

    id: int
    agency_reference: str
    operation: str
    reference: str
    step: str
    item: str | None
    input: dict[str, Any]
    output: dict[str, Any] | None
    answers: dict[str, Any] | None
    status: str
    is_undo: bool
    outcome: dict[str, Any] | None
    requested_fields: dict[str, Any] | None
    callback_url: str | None
    due_at: datetime | None
    language: str
    number: int
    created_at: datetime
    updated_at: datetime
    reverted_at: datetime | None
    reverted_by: str | None

    @classmethod
    def from_row(cls, row: Any) -> Record:
        data = dict(row)
        for column in _JSON_COLUMNS:
            if data[column] is not None:
                data[column] = json.loads(data[column])
        return cls(**data)

    def callback(self) -> Callback | None:
        """The callback telling the engine this record's outcome; None while it has none."""
        if self.status == "completed":
            return Callback(
                status="completed", agency_reference=self.agency_reference,
                output=self.output or {},
            )
        if self.status == "rejected":
            outcome = self.outcome or {}
            return Callback(
                status="rejected",
                agency_reference=self.agency_reference,
                code=str(outcome.get("code", "rejected")),
                reason=str(outcome.get("reason", "")),
            )
        return None

    def as_json(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        for key in ("created_at", "updated_at", "reverted_at", "due_at"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        return data


class AgencyStore:
    """SQL for one agency's schema. Every method takes the caller's connection.

    Args:
        agency_id: The agency; its schema is :func:`schema_name` of it.
        signer: Signs the agency's callbacks with its own key (None: unsigned).
    """

    def __init__(self, agency_id: str, *, signer: Signer | None = None) -> None:
        self.agency_id = agency_id
        self.schema = schema_name(agency_id)
        s = quote_ident(self.schema)
        self.records = f"{s}.records"
        self.sequence = f"{s}.agency_reference_seq"
        self.idempotency = IdempotencyStore(schema=self.schema)
        self.outbox = Outbox(schema=self.schema, signer=signer)
        self.work_channel = f"nwd_due_work.{self.schema}"
        """Woken (NOTIFY) when an accepted call's outcome is scheduled."""
        self._select = (
            "SELECT id, agency_reference, operation, reference, step, item, input::text AS input,"
            " output::text AS output, answers::text AS answers, status, is_undo,"
            " outcome::text AS outcome, requested_fields::text AS requested_fields,"
            " callback_url, due_at, language, number, created_at, updated_at,"
            f" reverted_at, reverted_by FROM {self.records}"
        )

    def ddl(self) -> str:
        """The statements creating the schema, sequence and tables (all idempotent)."""
        return ";\n".join(
            [
                f"SELECT pg_advisory_xact_lock(hashtext('{self.schema}'))",
                f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}",
                f"CREATE SEQUENCE IF NOT EXISTS {self.sequence}",
                f"CREATE TABLE IF NOT EXISTS {self.records} ("
                " id bigserial PRIMARY KEY,"
                " agency_reference text NOT NULL UNIQUE,"
                " number bigint NOT NULL,"
                " operation text NOT NULL,"
                " reference text NOT NULL,"
                " step text NOT NULL,"
                " item text,"
                " input jsonb NOT NULL,"
                " output jsonb,"
                " answers jsonb,"
                " status text NOT NULL,"
                " is_undo boolean NOT NULL DEFAULT false,"
                " outcome jsonb,"
                " requested_fields jsonb,"
                " callback_url text,"
                " due_at timestamptz,"
                " language text NOT NULL DEFAULT 'en',"
                " created_at timestamptz NOT NULL DEFAULT now(),"
                " updated_at timestamptz NOT NULL DEFAULT now(),"
                " reverted_at timestamptz,"
                " reverted_by text)",
                # tables made before outcomes became durable have no due_at yet
                f"ALTER TABLE {self.records} ADD COLUMN IF NOT EXISTS due_at timestamptz",
                f"CREATE INDEX IF NOT EXISTS records_reference_step"
                f" ON {self.records} (reference, step, item)",
                f"CREATE INDEX IF NOT EXISTS records_due ON {self.records} (due_at)"
                " WHERE status = 'accepted' AND due_at IS NOT NULL",
                self.idempotency.ddl(),
                self.outbox.ddl(),
            ]
        )

    async def create(self, conn: asyncpg.Connection) -> None:
        """Create the schema, tables and sequence if missing (safe on every start-up)."""
        async with conn.transaction():
            await conn.execute(self.ddl())

    async def adopt_owed_callbacks(self, conn: asyncpg.Connection) -> int:
        """Move callbacks owed in a table from before the outbox into it; how many.

        Such tables marked an owed callback ``callback_state = 'pending'``: an accepted record
        becomes due now, a finished one gets its outbox row; then the column goes. Under the
        schema's advisory lock, so two processes starting together adopt each row once.
        """
        async with conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock(hashtext('{self.schema}'))")
            legacy = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE"
                " table_schema = $1 AND table_name = 'records' AND column_name = 'callback_state')",
                self.schema,
            )
            if not legacy:
                return 0
            due = await conn.execute(
                f"UPDATE {self.records} SET due_at = now() WHERE callback_state = 'pending'"
                " AND status = 'accepted' AND due_at IS NULL"
            )
            rows = await conn.fetch(
                f"{self._select} WHERE callback_state = 'pending' AND callback_url IS NOT NULL"
                " AND status IN ('completed', 'rejected')"
            )
            for record in map(Record.from_row, rows):
                callback = record.callback()
                assert callback is not None and record.callback_url is not None
                await self.outbox.enqueue(
                    conn, callback, url=record.callback_url, reference=record.reference,
                    step=record.step, item=record.item, subject=record.agency_reference,
                )
            await conn.execute(f"ALTER TABLE {self.records} DROP COLUMN callback_state")
        return int(due.split()[-1]) + len(rows)

    async def reset(self, conn: asyncpg.Connection) -> None:
        """Delete every row and restart the numbering."""
        # DELETE, not TRUNCATE: on the small tables of a demo or a test it is much faster.
        await conn.execute(
            f"DELETE FROM {self.records}; DELETE FROM {self.idempotency.table};"
            f" DELETE FROM {self.outbox.qualified};"
            f" ALTER SEQUENCE {self.sequence} RESTART;"
            f" ALTER SEQUENCE {quote_ident(self.schema)}.records_id_seq RESTART"
        )

    async def insert(
        self,
        conn: asyncpg.Connection,
        *,
        operation: str,
        reference: str,
        step: str,
        item: str | None,
        input: dict[str, Any],
        status: str,
        is_undo: bool,
        language: str,
        callback_url: str | None = None,
        outcome: dict[str, Any] | None = None,
        requested_fields: dict[str, Any] | None = None,
        due_in_s: float | None = None,
    ) -> Record:
        """Insert a record; with ``due_in_s`` its outcome falls due that many seconds later
        (and the agency's due-work loop is woken when the caller's transaction commits)."""
        number = int(await conn.fetchval(f"SELECT nextval('{self.sequence}')"))
        row = await conn.fetchrow(
            f"WITH inserted AS (INSERT INTO {self.records} (agency_reference, number, operation,"
            " reference, step, item, input, status, is_undo, language, callback_url, outcome,"
            " requested_fields, due_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8,"
            " $9, $10, $11, $12::jsonb, $13::jsonb,"
            " now() + make_interval(secs => $14::float8)) RETURNING *) "
            + self._select.replace(f"FROM {self.records}", "FROM inserted"),
            agency_reference(self.agency_id, number),
            number,
            operation,
            reference,
            step,
            item,
            json.dumps(input),
            status,
            is_undo,
            language,
            callback_url,
            None if outcome is None else json.dumps(outcome),
            None if requested_fields is None else json.dumps(requested_fields),
            due_in_s,
        )
        if due_in_s is not None:
            await notify(conn, self.work_channel)
        return Record.from_row(row)

    async def schedule(self, conn: asyncpg.Connection, record_id: int, due_in_s: float) -> None:
        """Accept the record again; its outcome falls due in ``due_in_s`` seconds."""
        await conn.execute(
            f"UPDATE {self.records} SET status = 'accepted',"
            " due_at = now() + make_interval(secs => $2::float8), updated_at = now()"
            " WHERE id = $1",
            record_id,
            due_in_s,
        )
        await notify(conn, self.work_channel)

    async def claim_due(self, conn: asyncpg.Connection, limit: int) -> list[Record]:
        """Accepted records whose outcome is due, locked (inside the caller's transaction)
        against every other process doing the same; locked ones are skipped, not awaited."""
        rows = await conn.fetch(
            f"{self._select} WHERE status = 'accepted' AND due_at IS NOT NULL"
            " AND due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            limit,
        )
        return [Record.from_row(row) for row in rows]

    async def next_due_s(self, conn: asyncpg.Connection) -> float | None:
        """Seconds until the earliest accepted record falls due (0: one is due), or None."""
        return await seconds_until(
            conn, "due_at", f"{self.records} WHERE status = 'accepted' AND due_at IS NOT NULL")

    async def get(
        self, conn: asyncpg.Connection, agency_ref: str, *, for_update: bool = False
    ) -> Record | None:
        row = await conn.fetchrow(
            self._select + " WHERE agency_reference = $1" + (" FOR UPDATE" if for_update else ""),
            agency_ref,
        )
        return None if row is None else Record.from_row(row)

    async def update(self, conn: asyncpg.Connection, record_id: int, **values: Any) -> None:
        """Set columns (JSON columns given as Python values) and ``updated_at``."""
        sets = []
        args: list[Any] = []
        for index, (column, value) in enumerate(values.items(), start=2):
            if column in _JSON_COLUMNS:
                sets.append(f"{quote_ident(column)} = ${index}::jsonb")
                args.append(None if value is None else json.dumps(value))
            else:
                sets.append(f"{quote_ident(column)} = ${index}")
                args.append(value)
        await conn.execute(
            f"UPDATE {self.records} SET {', '.join(sets)}, updated_at = now() WHERE id = $1",
            record_id,
            *args,
        )

    async def undo_target(
        self, conn: asyncpg.Connection, undo: Record
    ) -> Record | None:
        """The record an undo call reverts (see docs/agency-contract.md, "Undo operations").

        1. the record whose agency reference is the undo input's ``agency_reference`` or
           ``reference``; else 2. the latest record whose output has a field with the same
           name and value as one of the undo input's text fields; else 3. the latest record
           of the same engine reference, step and item. Only completed, not yet reverted,
           non-undo records count.
        """
        eligible = "status = 'completed' AND NOT is_undo AND reverted_at IS NULL AND id <> $1"
        explicit = [
            v for k, v in undo.input.items() if k in ("agency_reference", "reference")
            and isinstance(v, str)
        ]
        if explicit:
            row = await conn.fetchrow(
                f"{self._select} WHERE {eligible} AND agency_reference = ANY($2::text[])"
                " ORDER BY id DESC LIMIT 1 FOR UPDATE",
                undo.id,
                explicit,
            )
            if row is not None:
                return Record.from_row(row)
        pairs = [json.dumps({k: v}) for k, v in undo.input.items() if isinstance(v, str)]
        if pairs:
            row = await conn.fetchrow(
                f"{self._select} WHERE {eligible} AND output IS NOT NULL AND EXISTS"
                " (SELECT 1 FROM unnest($2::text[]) AS p(pair) WHERE output @> p.pair::jsonb)"
                " ORDER BY id DESC LIMIT 1 FOR UPDATE",
                undo.id,
                pairs,
            )
            if row is not None:
                return Record.from_row(row)
        row = await conn.fetchrow(
            f"{self._select} WHERE {eligible} AND reference = $2 AND step = $3"
            " AND item IS NOT DISTINCT FROM $4 ORDER BY id DESC LIMIT 1 FOR UPDATE",
            undo.id,
            undo.reference,
            undo.step,
            undo.item,
        )
        return None if row is None else Record.from_row(row)

    async def list_records(
        self,
        conn: asyncpg.Connection,
        *,
        reference: str | None = None,
        operation: str | None = None,
    ) -> list[Record]:
        rows = await conn.fetch(
            f"{self._select} WHERE ($1::text IS NULL OR reference = $1)"
            " AND ($2::text IS NULL OR operation = $2) ORDER BY id",
            reference,
            operation,
        )
        return [Record.from_row(row) for row in rows]
