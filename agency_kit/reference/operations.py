"""What a reference agency does with a call: perform it, complete it, take answers, cancel.

Each call that records a decision runs in one transaction with its idempotency key
(:meth:`Operations._idempotent`), so the effect and the remembered answer commit together and a
repeated key replays the first answer. Behaviour injected for tests (latency, 503s) is applied
before that transaction, so an injected failure has written nothing.

Undo operations are those whose id starts with ``revert-``, ``undo-``, ``withdraw-`` or
``rollback-``: completing one marks the record it reverts (see
:meth:`AgencyStore.undo_target`) with ``reverted_at`` and ``reverted_by``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog
from fastapi import Request, Response

from agency_kit.contract import (
    RETRY_AFTER_HEADER,
    Accepted,
    Cancelled,
    CancelRequest,
    Completed,
    InformationRequest,
    NeedsInformation,
    OperationRequest,
    Rejected,
    StepEnvelope,
)
from agency_kit.idempotency import IdempotencyKeyReusedError, request_hash
from agency_kit.reference.behaviour import BehaviourBook, Effective
from agency_kit.reference.hosted import HostedAgencies
from agency_kit.reference.outputs import generate_output
from agency_kit.reference.plumbing import (
    REPLAY_HEADER,
    CanonicalJSONResponse,
    Refusal,
    dump,
    envelope,
    prelude,
    required_key,
)
from agency_kit.reference.store import AgencyStore, Record
from agency_kit.validation import validate_input
from definitions.models import Agency, FieldSpec, Operation

log = structlog.get_logger("agency_kit.reference")
_E = TypeVar("_E", bound=StepEnvelope)

UNDO_PREFIXES = ("revert-", "undo-", "withdraw-", "rollback-")
"""An operation whose id starts with one of these undoes an earlier record."""


def is_undo(operation_id: str) -> bool:
    return operation_id.startswith(UNDO_PREFIXES)


def _bound(call: StepEnvelope) -> contextlib.AbstractContextManager[None]:
    """Every log line of the call names the engine's request, step and item."""
    return structlog.contextvars.bound_contextvars(
        reference=call.reference, step=call.step, item=call.item
    )


@dataclasses.dataclass
class Outcome:
    """The answer to one call, decided inside its transaction."""

    status_code: int
    body: dict[str, Any]


async def complete(
    conn: asyncpg.Connection, store: AgencyStore, agency: Agency, operation: Operation,
    record: Record,
) -> dict[str, Any]:
    """Carry out the effect: generate the output; an undo marks what it reverts."""
    if record.is_undo:
        target = await store.undo_target(conn, record)
        if target is None:
            log.info("agency.undo_nothing_to_revert", agency_reference=record.agency_reference)
        else:
            await store.update(
                conn,
                target.id,
                reverted_at=datetime.now(UTC),
                reverted_by=record.agency_reference,
            )
            log.info(
                "agency.undo",
                agency_reference=record.agency_reference,
                reverted=target.agency_reference,
            )
    output = generate_output(
        operation.output,
        agency_id=agency.id,
        number=record.number,
        input={**record.input, **(record.answers or {})},
    )
    await store.update(conn, record.id, status="completed", output=output)
    return output


class Operations:
    """The contract's three calls for every hosted agency.

    An accepted call's outcome is not scheduled in memory: the record is written with the
    time it falls due, in the call's transaction, and
    :class:`~agency_kit.reference.callbacks.DueOutcomes` finishes it then.

    Args:
        hosted: The agencies, their stores, keys and pool.
        book: The behaviour in force (latency, failures, modes, rejections).
    """

    def __init__(self, hosted: HostedAgencies, book: BehaviourBook) -> None:
        self._hosted = hosted
        self._book = book

    async def _received(
        self, agency_id: str, operation_id: str, request: Request, model: type[_E]
    ) -> tuple[Agency, Operation, dict[str, Any], _E]:
        """The prelude's checks, then the body read as the call's envelope (422 if it is not)."""
        agency, operation, data = await prelude(
            self._hosted.agencies, self._hosted.credentials, agency_id, operation_id, request
        )
        return agency, operation, data, envelope(model, data)

    async def _behave(self, agency: Agency, operation: Operation) -> Effective:
        """The behaviour in force: injected latency, then an injected 503 (before any write)."""
        behaviour = self._book.effective(agency.id, operation.id)
        latency_s = self._book.latency_s(agency.id, operation.id, behaviour)
        if latency_s:
            await asyncio.sleep(latency_s)
        unavailable = self._book.unavailable(agency.id, operation.id, behaviour)
        if unavailable is not None:
            reason, retry_after = unavailable
            headers = {RETRY_AFTER_HEADER: str(retry_after)} if retry_after else {}
            log.info("agency.injected_unavailable", reason=reason)
            raise Refusal(503, "unavailable", reason, headers=headers)
        return behaviour

    async def _idempotent(
        self,
        agency_id: str,
        key: str,
        data: dict[str, Any],
        work: Callable[[asyncpg.Connection], Awaitable[Outcome]],
        *,
        input_fields: list[str] | None = None,
    ) -> CanonicalJSONResponse:
        """Run ``work`` once per key: claim the key, do it, save the answer, one transaction."""
        store = self._hosted.stores[agency_id]
        started = time.perf_counter()
        async with self._hosted.pool.acquire() as conn, conn.transaction():
            try:
                stored = await store.idempotency.claim(conn, key, request_hash(data))
            except IdempotencyKeyReusedError as exc:
                raise Refusal(
                    422,
                    "idempotency_key_reused",
                    f"{exc}; a new effect needs a new key",
                ) from exc
            if stored is not None:
                log.info("agency.call", status_code=stored.status_code, replay=True)
                return CanonicalJSONResponse(
                    stored.body, status_code=stored.status_code, headers={REPLAY_HEADER: "true"}
                )
            outcome = await work(conn)
            await store.idempotency.save(conn, key, outcome.status_code, outcome.body)
        log.info(
            "agency.call",
            status_code=outcome.status_code,
            outcome=outcome.body.get("status"),
            agency_reference=outcome.body.get("agency_reference"),
            input_fields=input_fields,
            replay=False,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return CanonicalJSONResponse(outcome.body, status_code=outcome.status_code)

    async def perform(
        self, agency_id: str, operation_id: str, request: Request
    ) -> Response:
        """``POST /operations/{operation}``: validate the input, then do it once per key."""
        agency, operation, data, call = await self._received(
            agency_id, operation_id, request, OperationRequest
        )
        key = required_key(request)
        with _bound(call):
            errors = validate_input(operation.input, call.input)
            if errors:
                log.info(
                    "agency.invalid_input",
                    input_fields=sorted(call.input),
                    problems=[e.path for e in errors],
                )
                raise Refusal(
                    422,
                    "invalid_input",
                    f"the input does not match operation {operation.id!r}'s input schema",
                    errors=errors,
                )
            behaviour = await self._behave(agency, operation)
            answer = await self._idempotent(
                agency.id,
                key,
                data,
                lambda conn: self._perform(conn, agency, operation, call, behaviour),
                input_fields=sorted(call.input),
            )
            garbled = self._book.garble(agency.id, operation.id, behaviour, bytes(answer.body))
            if garbled is None:
                return answer
            log.info("agency.injected_malformed", kind=behaviour.malformed and
                     behaviour.malformed.body, status_code=answer.status_code)
            content, media_type = garbled
            return Response(content, status_code=answer.status_code, media_type=media_type)

    async def _perform(
        self,
        conn: asyncpg.Connection,
        agency: Agency,
        operation: Operation,
        call: OperationRequest,
        behaviour: Effective,
    ) -> Outcome:
        store = self._hosted.stores[agency.id]
        undo = is_undo(operation.id)
        callback = behaviour.mode == "callback" and call.callback_url is not None
        common: dict[str, Any] = {
            "operation": operation.id,
            "reference": call.reference,
            "step": call.step,
            "item": call.item,
            "input": call.input,
            "is_undo": undo,
            "language": call.language,
            "callback_url": call.callback_url,
        }
        if behaviour.reject is not None and not callback:
            reject = behaviour.reject
            return Outcome(reject.status, dump(Rejected(code=reject.code, reason=reject.reason)))
        if behaviour.needs_information is not None and not undo:
            asked = behaviour.needs_information
            fields = {
                name: spec.model_dump(mode="json", exclude_none=True)
                for name, spec in asked.fields.items()
            }
            record = await store.insert(
                conn, status="needs_information", requested_fields=fields, **common
            )
            reply = NeedsInformation(
                agency_reference=record.agency_reference, fields=fields, message=asked.message
            )
            return Outcome(200, dump(reply))
        if callback:
            outcome = None
            if behaviour.reject is not None:
                outcome = {
                    "status": "rejected",
                    "code": behaviour.reject.code,
                    "reason": behaviour.reject.reason,
                }
            record = await store.insert(
                conn, status="accepted", outcome=outcome, due_in_s=behaviour.callback_delay_s,
                **common,
            )
            return Outcome(202, dump(Accepted(agency_reference=record.agency_reference)))
        record = await store.insert(conn, status="accepted", **{**common, "callback_url": None})
        output = await complete(conn, store, agency, operation, record)
        done = Completed(agency_reference=record.agency_reference, output=output)
        return Outcome(200, dump(done))

    async def information(
        self, agency_id: str, operation_id: str, request: Request
    ) -> CanonicalJSONResponse:
        """``POST .../information``: the citizen's answers to a needs_information record."""
        agency, operation, data, answer = await self._received(
            agency_id, operation_id, request, InformationRequest
        )
        key = required_key(request)
        with _bound(answer):
            behaviour = await self._behave(agency, operation)
            return await self._idempotent(
                agency.id,
                key,
                data,
                lambda conn: self._information(conn, agency, operation, answer, behaviour),
                input_fields=sorted(answer.answers),
            )

    async def _record_for(
        self,
        conn: asyncpg.Connection,
        agency: Agency,
        operation: Operation,
        reference: str,
        agency_ref: str,
    ) -> Record:
        record = await self._hosted.stores[agency.id].get(conn, agency_ref, for_update=True)
        if record is None or record.operation != operation.id or record.reference != reference:
            raise Refusal(
                404,
                "unknown_agency_reference",
                f"no {operation.id!r} record {agency_ref!r} for request {reference!r}",
            )
        return record

    async def _information(
        self,
        conn: asyncpg.Connection,
        agency: Agency,
        operation: Operation,
        answer: InformationRequest,
        behaviour: Effective,
    ) -> Outcome:
        store = self._hosted.stores[agency.id]
        record = await self._record_for(
            conn, agency, operation, answer.reference, answer.agency_reference
        )
        ref = record.agency_reference
        if record.status == "completed":
            return Outcome(200, dump(Completed(agency_reference=ref, output=record.output or {})))
        if record.status == "accepted":
            return Outcome(202, dump(Accepted(agency_reference=ref)))
        if record.status != "needs_information":
            raise Refusal(
                409,
                "not_awaiting_information",
                f"record {ref!r} is {record.status}; it is not waiting for information",
            )
        asked = {
            name: FieldSpec.model_validate(spec)
            for name, spec in (record.requested_fields or {}).items()
        }
        errors = validate_input(asked, answer.answers, root="answers")
        if errors:
            raise Refusal(
                422, "invalid_answers", "the answers do not match the fields asked for",
                errors=errors,
            )
        await store.update(conn, record.id, answers=answer.answers)
        record = dataclasses.replace(record, answers=answer.answers)
        if behaviour.mode == "callback" and record.callback_url is not None:
            await store.schedule(conn, record.id, behaviour.callback_delay_s)
            return Outcome(202, dump(Accepted(agency_reference=ref)))
        output = await complete(conn, store, agency, operation, record)
        return Outcome(200, dump(Completed(agency_reference=ref, output=output)))

    async def cancel(
        self, agency_id: str, operation_id: str, request: Request
    ) -> CanonicalJSONResponse:
        """``POST .../cancel``: withdraw an accepted call; 409 when it is already decided."""
        agency, operation, _, cancel = await self._received(
            agency_id, operation_id, request, CancelRequest
        )
        with _bound(cancel):
            await self._behave(agency, operation)
            store = self._hosted.stores[agency.id]
            async with self._hosted.pool.acquire() as conn, conn.transaction():
                record = await self._record_for(
                    conn, agency, operation, cancel.reference, cancel.agency_reference
                )
                ref = record.agency_reference
                if record.status in ("completed", "rejected"):
                    log.info("agency.cancel", agency_reference=ref, result="too_late")
                    raise Refusal(
                        409, "too_late", f"record {ref!r} is already {record.status}"
                    )
                if record.status == "accepted" and not operation.cancellable:
                    raise Refusal(
                        409,
                        "not_cancellable",
                        f"operation {operation.id!r} cannot be withdrawn once accepted",
                    )
                if record.status != "cancelled":
                    # the pending outcome and any callback owed go with it, in this transaction
                    await store.update(conn, record.id, status="cancelled", due_at=None)
                    await store.outbox.void(conn, subject=ref)
            log.info("agency.cancel", agency_reference=ref, result="cancelled")
            return CanonicalJSONResponse(dump(Cancelled(agency_reference=ref)))
