"""Callbacks of the reference agencies: finish accepted work later, then tell the engine.

An accepted (202) call is written with ``callback_state = 'pending'`` in the transaction that
accepted it; after commit, :meth:`CallbackSender.schedule` waits the behaviour's delay, finishes
the work (completes the record, or rejects it when the behaviour said so) and POSTs the signed
:class:`~agency_kit.contract.Callback` to the record's ``callback_url``, retrying 5xx, 408, 429
and connection errors with backoff. The delivery's end (``sent``, ``refused``, ``failed``) is
written back, so a restart resends only what is still pending (:meth:`CallbackSender.start`).

The schedule lives in this process's memory; the pending rows are what makes it durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import structlog

from agency_kit.contract import (
    IDEMPOTENCY_HEADER,
    REFERENCE_HEADER,
    RETRYABLE_STATUS,
    Callback,
    idempotency_key,
)
from agency_kit.reference.hosted import HostedAgencies
from agency_kit.reference.operations import complete
from agency_kit.reference.store import Record
from agency_kit.signing import signed_headers
from definitions.models import Agency

log = structlog.get_logger("agency_kit.reference")


class CallbackSender:
    """Schedules and delivers callbacks; owns their tasks and its HTTP client.

    Args:
        hosted: The agencies, their stores, secrets and pool.
        max_attempts: Attempts to deliver one callback (5xx/connection errors retry).
        initial_backoff_s: First wait between attempts; it doubles, up to 30 s.
    """

    def __init__(
        self, hosted: HostedAgencies, *, max_attempts: int = 8, initial_backoff_s: float = 0.2
    ) -> None:
        self._hosted = hosted
        self.max_attempts = max_attempts
        self.initial_backoff_s = initial_backoff_s
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, pending: list[tuple[str, Record]]) -> None:
        """Open the HTTP client and resend the callbacks still owed from before a restart."""
        self._http = httpx.AsyncClient(timeout=10.0)
        for agency_id, record in pending:
            self.schedule(agency_id, record.agency_reference, 0.0)

    async def stop(self) -> None:
        await self.cancel_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def cancel_all(self) -> None:
        """Drop every scheduled callback (their rows stay pending)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def schedule(self, agency_id: str, agency_reference: str, delay_s: float) -> None:
        """Finish and deliver the record's callback after ``delay_s`` (call after commit)."""
        task = asyncio.create_task(self._send(agency_id, agency_reference, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, agency_id: str, agency_ref: str, delay_s: float) -> None:
        agency = self._hosted.agencies[agency_id]
        store = self._hosted.stores[agency_id]
        await asyncio.sleep(delay_s)
        try:
            async with self._hosted.pool.acquire() as conn, conn.transaction():
                record = await store.get(conn, agency_ref, for_update=True)
                if record is None or record.callback_state != "pending":
                    return  # cancelled, or already delivered by an earlier task
                operation = agency.operation(record.operation)
                if record.status == "accepted" and record.outcome is not None:
                    await store.update(conn, record.id, status="rejected")
                    record = dataclasses.replace(record, status="rejected")
                elif record.status == "accepted" and operation is not None:
                    output = await complete(conn, store, agency, operation, record)
                    record = dataclasses.replace(record, status="completed", output=output)
            payload = self.payload(record)
            if payload is None:
                return
            state = await self.deliver(agency, record, payload)
            async with self._hosted.pool.acquire() as conn:
                await store.update(conn, record.id, callback_state=state)
        except Exception:
            log.exception("agency.callback_crashed", agency=agency_id, agency_reference=agency_ref)
            raise

    @staticmethod
    def payload(record: Record) -> Callback | None:
        """The callback body for a finished record; None while there is nothing to tell."""
        if record.status == "completed":
            return Callback(
                status="completed",
                agency_reference=record.agency_reference,
                output=record.output or {},
            )
        if record.status == "rejected":
            outcome = record.outcome or {}
            return Callback(
                status="rejected",
                agency_reference=record.agency_reference,
                code=str(outcome.get("code", "rejected")),
                reason=str(outcome.get("reason", "")),
            )
        return None

    async def deliver(self, agency: Agency, record: Record, payload: Callback) -> str:
        """POST the signed callback; retry 5xx, 408, 429 and connection errors with backoff.

        Returns the delivery's end: ``sent`` (2xx), ``refused`` (another 4xx: the engine will
        not take it, so retrying is pointless) or ``failed`` (every attempt used).
        """
        assert self._http is not None and record.callback_url is not None
        body = json.dumps(payload.model_dump(mode="json")).encode()
        secret = self._hosted.signing_secret(agency)
        bound = log.bind(
            agency=agency.id,
            operation=record.operation,
            reference=record.reference,
            agency_reference=record.agency_reference,
            outcome=payload.status,
        )
        wait = self.initial_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                REFERENCE_HEADER: record.reference,
                IDEMPOTENCY_HEADER: idempotency_key(
                    record.reference, record.step, record.item, "callback"
                ),
                **signed_headers(secret, body),  # a fresh timestamp on every attempt
            }
            try:
                response = await self._http.post(record.callback_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                bound.warning("agency.callback_failed", attempt=attempt, error=type(exc).__name__)
            else:
                if response.is_success:
                    bound.info(
                        "agency.callback_sent", attempt=attempt, status_code=response.status_code
                    )
                    return "sent"
                if response.status_code < 500 and response.status_code not in RETRYABLE_STATUS:
                    bound.error(
                        "agency.callback_refused", attempt=attempt, status_code=response.status_code
                    )
                    return "refused"
                bound.warning(
                    "agency.callback_failed", attempt=attempt, status_code=response.status_code
                )
            if attempt < self.max_attempts:
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)
        bound.error("agency.callback_gave_up", attempts=self.max_attempts)
        return "failed"
