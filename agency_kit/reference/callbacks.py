"""Accepted calls of the reference agencies: finished when due, their callbacks via the outbox.

An accepted (202) call is a record with ``status = 'accepted'`` and ``due_at`` = now + the
behaviour's ``callback_delay_s``, written in the transaction that accepted it: the durable
form of "finish this later". :class:`DueOutcomes` is the loop that finishes due records. For
each one, in **one transaction**, it carries out the effect (completes the record, or rejects
it when the behaviour planned so), clears ``due_at`` and stores the callback in the agency's
outbox (:class:`agency_kit.outbox.Outbox`); the outbox sender delivers it. A cancel clears
``due_at`` and voids the outbox row in the cancel's transaction, so a withdrawn call is
neither finished nor told.

Nothing lives only in memory: a restarted process finishes what fell due while it was away,
a second process on the same database shares the work (rows are claimed with ``FOR UPDATE
SKIP LOCKED``), and while PostgreSQL is down the loop backs off and resumes
(:func:`agency_kit.wakeup.run_until_stopped`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

from agency_kit.reference.hosted import DATABASE_UNAVAILABLE, HostedAgencies
from agency_kit.reference.operations import complete
from agency_kit.reference.store import AgencyStore, Record
from agency_kit.wakeup import Wakeup, run_until_stopped

log = structlog.get_logger("agency_kit.reference")

FAILED_WORK_RETRY = timedelta(seconds=30)
"""When finishing one record raises (not the database: a bug), it is tried again this late."""


class DueOutcomes:
    """The loop finishing accepted calls when they fall due (one per process, any number of
    processes).

    Args:
        hosted: The agencies, their stores (records and outboxes) and pool.
        batch: At most this many records of one agency per transaction.
        poll_interval_s: How often every agency is looked at even without a notification.
    """

    def __init__(
        self, hosted: HostedAgencies, *, batch: int = 20, poll_interval_s: float = 5.0
    ) -> None:
        self._hosted = hosted
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self._by_channel = {store.work_channel: (agency_id, store)
                            for agency_id, store in hosted.stores.items()}
        self._wakeup: Wakeup | None = None
        self._loop: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._loop.done()

    async def start(self) -> None:
        """Start the loop (call once the pool is open)."""
        if self._loop is not None:
            return
        wakeup = self._wakeup = Wakeup(
            self._hosted.pool, self._by_channel, poll_interval_s=self.poll_interval_s
        )
        self._loop = asyncio.create_task(
            run_until_stopped(self._step, wakeup, name="agency.due_work"), name="due-outcomes"
        )

    async def stop(self) -> None:
        """Stop the loop; what is not finished stays due for the next process."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        if self._wakeup is not None:
            await self._wakeup.close()
            self._wakeup = None

    async def _step(self, fired: set[str]) -> None:
        assert self._wakeup is not None
        for channel in sorted(fired):
            agency_id, store = self._by_channel[channel]
            async with self._hosted.pool.acquire() as conn:
                async with conn.transaction():
                    records = await store.claim_due(conn, self.batch)
                    for record in records:
                        await self._finish_one(conn, agency_id, store, record)
                if len(records) == self.batch:
                    self._wakeup.due_in(channel, 0)  # maybe more: look again at once
                else:
                    self._wakeup.due_in(channel, await store.next_due_s(conn))

    async def _finish_one(
        self, conn: asyncpg.Connection, agency_id: str, store: AgencyStore, record: Record
    ) -> None:
        """Finish one record in a savepoint: a bug in one record does not hold up the rest.

        A database failure is not caught here: it ends the whole transaction, and the loop
        tries again once the database is back.
        """
        bound = log.bind(agency=agency_id, operation=record.operation,
                         reference=record.reference, step=record.step, item=record.item,
                         agency_reference=record.agency_reference)
        try:
            async with conn.transaction():
                await self._finish(conn, agency_id, store, record)
        except DATABASE_UNAVAILABLE:
            raise
        except Exception:
            bound.exception("agency.due_work_failed", retry_in_s=FAILED_WORK_RETRY.seconds)
            await store.update(conn, record.id, due_at=datetime.now(UTC) + FAILED_WORK_RETRY)

    async def _finish(
        self, conn: asyncpg.Connection, agency_id: str, store: AgencyStore, record: Record
    ) -> None:
        """The effect, the cleared due time and the callback: one transaction (the caller's)."""
        agency = self._hosted.agencies[agency_id]
        operation = agency.operation(record.operation)
        if record.outcome is None and operation is not None:
            output = await complete(conn, store, agency, operation, record)
            record = dataclasses.replace(record, status="completed", output=output)
        else:
            outcome = record.outcome or {
                "status": "rejected",
                "code": "unknown_operation",
                "reason": f"the agency no longer offers operation {record.operation!r}",
            }
            await store.update(conn, record.id, status="rejected", outcome=outcome)
            record = dataclasses.replace(record, status="rejected", outcome=outcome)
        await store.update(conn, record.id, due_at=None)
        callback = record.callback()
        if callback is not None and record.callback_url is not None:
            await store.outbox.enqueue(
                conn, callback, url=record.callback_url, reference=record.reference,
                step=record.step, item=record.item, subject=record.agency_reference,
            )
        log.info("agency.outcome_due", agency=agency_id, agency_reference=record.agency_reference,
                 reference=record.reference, outcome=record.status)

