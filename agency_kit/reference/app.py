"""The reference agency systems: one FastAPI app hosting every agency of a registry.

Agency ``dmv`` lives under ``/agencies/dmv`` (so its base URL is
``http://127.0.0.1:8090/agencies/dmv``) and speaks the contract of ``docs/agency-contract.md``:

- ``POST /agencies/{agency}/operations/{operation}`` — do an operation (once per key);
- ``POST /agencies/{agency}/operations/{operation}/information`` — answers to needs_information;
- ``POST /agencies/{agency}/operations/{operation}/cancel`` — withdraw an accepted call;
- ``GET /agencies/{agency}/health``.

Each agency keeps its own PostgreSQL schema (:mod:`agency_kit.reference.store`). Behaviour
(latency, errors, outages, callback mode, needs-information, rejections) is injected per
agency and operation (:mod:`agency_kit.reference.behaviour`) at start-up and through an admin
API that is *not* part of the contract:

- ``PUT /_admin/agencies/{agency}/behaviour`` (``*`` for every agency) — replace behaviour;
- ``GET /_admin/agencies/{agency}/behaviour``;
- ``GET /_admin/agencies/{agency}/records[?reference=&operation=]`` — rows as JSON;
- ``POST /_admin/reset`` — empty every table, restore start-up behaviour.

Undo operations are those whose id starts with ``revert-``, ``undo-``, ``withdraw-`` or
``rollback-``: completing one marks the record it reverts (see
:meth:`AgencyStore.undo_target`) with ``reverted_at`` and ``reverted_by``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from agency_kit.contract import (
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    REFERENCE_HEADER,
    RETRY_AFTER_HEADER,
    Accepted,
    Callback,
    Cancelled,
    CancelRequest,
    Completed,
    FieldError,
    InformationRequest,
    NeedsInformation,
    OperationRequest,
    Rejected,
    Reply,
    idempotency_key,
)
from agency_kit.idempotency import IdempotencyKeyReusedError, request_hash
from agency_kit.reference.behaviour import (
    AgencyBehaviour,
    BehaviourBook,
    Effective,
    parse_behaviours,
)
from agency_kit.reference.outputs import generate_output
from agency_kit.reference.store import AgencyStore, Record, schema_name
from agency_kit.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    signed_headers,
    verify,
)
from agency_kit.validation import validate_input
from definitions.models import Agency, AgencyRegistry, FieldSpec, Operation

log = structlog.get_logger("agency_kit.reference")
_M = TypeVar("_M", bound=BaseModel)

UNDO_PREFIXES = ("revert-", "undo-", "withdraw-", "rollback-")
"""An operation whose id starts with one of these undoes an earlier record."""
REPLAY_HEADER = "X-NWD-Idempotent-Replay"


def is_undo(operation_id: str) -> bool:
    return operation_id.startswith(UNDO_PREFIXES)


class Refusal(Exception):  # noqa: N818 - an answer, not a failure
    """A contract error answer: ``{"status": "rejected", "code", "reason"[, "errors"]}``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        reason: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.body = Rejected(code=code, reason=reason, errors=errors)
        self.headers = dict(headers or {})

    def response(self) -> CanonicalJSONResponse:
        return CanonicalJSONResponse(
            self.body.model_dump(mode="json", exclude_none=True),
            status_code=self.status_code,
            headers=self.headers,
        )


class CanonicalJSONResponse(JSONResponse):
    """Sorted keys, no spaces: a replayed response is byte-for-byte the first one."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def _dump(reply: Reply) -> dict[str, Any]:
    return reply.model_dump(mode="json", exclude_none=isinstance(reply, Rejected))


@dataclasses.dataclass
class _Outcome:
    status_code: int
    body: dict[str, Any]
    callback: tuple[str, float] | None = None
    """(agency reference, delay in seconds) of a callback to schedule after commit."""


class ReferenceAgencies:
    """State and behaviour of the hosted agencies; the FastAPI routes call into it.

    Args:
        registry: The agencies to host.
        database_url: PostgreSQL DSN; each agency gets its own schema in that database.
        secrets: Agency id -> signing secret.
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour.
        callback_max_attempts: Attempts to deliver one callback (5xx/connection errors retry).
        callback_initial_backoff_s: First wait between attempts; it doubles, up to 30 s.
    """

    def __init__(
        self,
        registry: AgencyRegistry,
        database_url: str,
        secrets: Mapping[str, str],
        behaviour: Mapping[str, AgencyBehaviour] | None = None,
        *,
        callback_max_attempts: int = 8,
        callback_initial_backoff_s: float = 0.2,
    ) -> None:
        self.agencies = {agency.id: agency for agency in registry.agencies}
        schemas: dict[str, str] = {}
        for agency_id in self.agencies:
            schema = schema_name(agency_id)
            if schema in schemas:
                raise ValueError(
                    f"agencies {schemas[schema]!r} and {agency_id!r} map to the same "
                    f"database schema {schema!r}; rename one"
                )
            schemas[schema] = agency_id
        self.stores = {agency_id: AgencyStore(agency_id) for agency_id in self.agencies}
        self.database_url = database_url
        self.secrets = dict(secrets)
        for agency_id in dict(behaviour or {}):
            if agency_id != "*" and agency_id not in self.agencies:
                raise ValueError(f"behaviour names unknown agency {agency_id!r}")
        self.book = BehaviourBook(dict(behaviour or {}))
        self.callback_max_attempts = callback_max_attempts
        self.callback_initial_backoff_s = callback_initial_backoff_s
        self._pool: asyncpg.Pool | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life cycle

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the reference agencies are not started")
        return self._pool

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=10)
        self._http = httpx.AsyncClient(timeout=10.0)
        async with self.pool.acquire() as conn:
            async with conn.transaction():  # one round trip for every agency's tables
                await conn.execute(";\n".join(store.ddl() for store in self.stores.values()))
            pending = [
                (agency_id, record)
                for agency_id, store in self.stores.items()
                for record in await store.pending_callbacks(conn)
            ]
        for agency in self.agencies.values():
            if agency.auth_secret and not self.secrets.get(agency.id):
                log.error(
                    "agency.secret_missing",
                    agency=agency.id,
                    env=agency.auth_secret,
                    effect="every call to this agency is refused with 401",
                )
        for agency_id, record in pending:
            self._schedule_callback(agency_id, record.agency_reference, 0.0)
        log.info("agencies.started", agencies=sorted(self.agencies), resumed_callbacks=len(pending))

    async def stop(self) -> None:
        await self._cancel_tasks()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        await self._cancel_tasks()
        async with self.pool.acquire() as conn, conn.transaction():
            for store in self.stores.values():
                await store.reset(conn)
        self.book.reset()
        log.info("agencies.reset")

    # ------------------------------------------------------------------ request prelude

    def agency(self, agency_id: str) -> Agency:
        agency = self.agencies.get(agency_id)
        if agency is None:
            raise Refusal(
                404,
                "unknown_agency",
                f"no agency {agency_id!r} here; known: {', '.join(sorted(self.agencies))}",
            )
        return agency

    @staticmethod
    async def _read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_large = Refusal(
            413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"
        )
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise too_large
        return bytes(body)

    def _check_signature(self, agency: Agency, body: bytes, request: Request) -> None:
        if agency.auth_secret is None:
            return
        secret = self.secrets.get(agency.id)
        if not secret:
            log.error(
                "agency.secret_missing",
                agency=agency.id,
                env=agency.auth_secret,
                effect="request refused with 401",
            )
            raise Refusal(
                401,
                "bad_signature",
                "the agency cannot verify signatures: its secret is not configured",
            )
        try:
            verify(
                secret,
                body,
                timestamp=request.headers.get(TIMESTAMP_HEADER),
                signature=request.headers.get(SIGNATURE_HEADER),
            )
        except SignatureError as exc:
            log.warning("agency.bad_signature", agency=agency.id, reason=exc.reason)
            raise Refusal(401, "bad_signature", exc.reason) from exc

    async def prelude(
        self, agency_id: str, operation_id: str, request: Request
    ) -> tuple[Agency, Operation, dict[str, Any]]:
        """404 agency, 413 size, 401 signature, 404 operation, 400 JSON — in that order."""
        agency = self.agency(agency_id)
        body = await self._read_body(request)
        self._check_signature(agency, body, request)
        operation = agency.operation(operation_id)
        if operation is None:
            known = ", ".join(op.id for op in agency.operations)
            raise Refusal(
                404,
                "unknown_operation",
                f"agency {agency.id!r} has no operation {operation_id!r}; known: {known}",
            )
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refusal(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise Refusal(400, "malformed_json", "the body must be a JSON object")
        return agency, operation, data

    @staticmethod
    def envelope(model: type[_M], data: dict[str, Any]) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [
                FieldError(
                    path=".".join(str(part) for part in err["loc"]) or "body", message=err["msg"]
                )
                for err in exc.errors()
            ]
            raise Refusal(
                422, "invalid_request", "the request body does not follow the contract",
                errors=errors,
            ) from exc

    @staticmethod
    def key(request: Request) -> str:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if not key:
            raise Refusal(
                400,
                "missing_idempotency_key",
                f"the {IDEMPOTENCY_HEADER} header is required:"
                " {reference}:{step}:{item or -}",
            )
        return key

    async def inject(self, agency_id: str, operation_id: str, behaviour: Effective) -> None:
        """Injected latency, then an injected 503 (decided before anything is written)."""
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        unavailable = self.book.unavailable(agency_id, operation_id, behaviour)
        if unavailable is not None:
            reason, retry_after = unavailable
            headers = {RETRY_AFTER_HEADER: str(retry_after)} if retry_after else {}
            log.info("agency.injected_unavailable", reason=reason)
            raise Refusal(503, "unavailable", reason, headers=headers)

    # ------------------------------------------------------------------ operations

    async def call_operation(
        self, agency_id: str, operation_id: str, request: Request
    ) -> CanonicalJSONResponse:
        agency, operation, data = await self.prelude(agency_id, operation_id, request)
        call = self.envelope(OperationRequest, data)
        key = self.key(request)
        with structlog.contextvars.bound_contextvars(
            reference=call.reference, step=call.step, item=call.item
        ):
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
            behaviour = self.book.effective(agency.id, operation.id)
            await self.inject(agency.id, operation.id, behaviour)
            return await self._idempotent(
                agency.id,
                key,
                data,
                lambda conn: self._perform(conn, agency, operation, call, behaviour),
                input_fields=sorted(call.input),
            )

    async def _idempotent(
        self,
        agency_id: str,
        key: str,
        data: dict[str, Any],
        work: Any,
        *,
        input_fields: list[str] | None = None,
    ) -> CanonicalJSONResponse:
        store = self.stores[agency_id]
        started = time.perf_counter()
        async with self.pool.acquire() as conn, conn.transaction():
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
            outcome: _Outcome = await work(conn)
            await store.idempotency.save(conn, key, outcome.status_code, outcome.body)
        if outcome.callback is not None:
            self._schedule_callback(agency_id, *outcome.callback)
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

    async def _perform(
        self,
        conn: asyncpg.Connection,
        agency: Agency,
        operation: Operation,
        call: OperationRequest,
        behaviour: Effective,
    ) -> _Outcome:
        store = self.stores[agency.id]
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
            return _Outcome(reject.status, _dump(Rejected(code=reject.code, reason=reject.reason)))
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
            return _Outcome(200, _dump(reply))
        if callback:
            outcome = None
            if behaviour.reject is not None:
                outcome = {
                    "status": "rejected",
                    "code": behaviour.reject.code,
                    "reason": behaviour.reject.reason,
                }
            record = await store.insert(
                conn, status="accepted", callback_state="pending", outcome=outcome, **common
            )
            return _Outcome(
                202,
                _dump(Accepted(agency_reference=record.agency_reference)),
                callback=(record.agency_reference, behaviour.callback_delay_s),
            )
        record = await store.insert(conn, status="accepted", **{**common, "callback_url": None})
        output = await self._complete(conn, agency, operation, record)
        done = Completed(agency_reference=record.agency_reference, output=output)
        return _Outcome(200, _dump(done))

    async def _complete(
        self, conn: asyncpg.Connection, agency: Agency, operation: Operation, record: Record
    ) -> dict[str, Any]:
        """Carry out the effect: generate the output; an undo marks what it reverts."""
        store = self.stores[agency.id]
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

    # ------------------------------------------------------------------ information

    async def answer_information(
        self, agency_id: str, operation_id: str, request: Request
    ) -> CanonicalJSONResponse:
        agency, operation, data = await self.prelude(agency_id, operation_id, request)
        answer = self.envelope(InformationRequest, data)
        key = self.key(request)
        with structlog.contextvars.bound_contextvars(
            reference=answer.reference, step=answer.step, item=answer.item
        ):
            behaviour = self.book.effective(agency.id, operation.id)
            await self.inject(agency.id, operation.id, behaviour)
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
        record = await self.stores[agency.id].get(conn, agency_ref, for_update=True)
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
    ) -> _Outcome:
        store = self.stores[agency.id]
        record = await self._record_for(
            conn, agency, operation, answer.reference, answer.agency_reference
        )
        ref = record.agency_reference
        if record.status == "completed":
            return _Outcome(200, _dump(Completed(agency_reference=ref, output=record.output or {})))
        if record.status == "accepted":
            return _Outcome(202, _dump(Accepted(agency_reference=ref)))
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
            await store.update(conn, record.id, status="accepted", callback_state="pending")
            return _Outcome(
                202,
                _dump(Accepted(agency_reference=ref)),
                callback=(ref, behaviour.callback_delay_s),
            )
        output = await self._complete(conn, agency, operation, record)
        return _Outcome(200, _dump(Completed(agency_reference=ref, output=output)))

    # ------------------------------------------------------------------ cancel

    async def cancel(
        self, agency_id: str, operation_id: str, request: Request
    ) -> CanonicalJSONResponse:
        agency, operation, data = await self.prelude(agency_id, operation_id, request)
        cancel = self.envelope(CancelRequest, data)
        with structlog.contextvars.bound_contextvars(
            reference=cancel.reference, step=cancel.step, item=cancel.item
        ):
            behaviour = self.book.effective(agency.id, operation.id)
            await self.inject(agency.id, operation.id, behaviour)
            store = self.stores[agency.id]
            async with self.pool.acquire() as conn, conn.transaction():
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
                    await store.update(
                        conn,
                        record.id,
                        status="cancelled",
                        callback_state=None if record.callback_state == "pending"
                        else record.callback_state,
                    )
            log.info("agency.cancel", agency_reference=ref, result="cancelled")
            return CanonicalJSONResponse(_dump(Cancelled(agency_reference=ref)))

    # ------------------------------------------------------------------ callbacks

    def _schedule_callback(self, agency_id: str, agency_ref: str, delay_s: float) -> None:
        task = asyncio.create_task(self._callback(agency_id, agency_ref, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _callback(self, agency_id: str, agency_ref: str, delay_s: float) -> None:
        agency = self.agencies[agency_id]
        store = self.stores[agency_id]
        await asyncio.sleep(delay_s)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                record = await store.get(conn, agency_ref, for_update=True)
                if record is None or record.callback_state != "pending":
                    return
                operation = agency.operation(record.operation)
                if record.status == "accepted" and record.outcome is not None:
                    await store.update(conn, record.id, status="rejected")
                    record = dataclasses.replace(record, status="rejected")
                elif record.status == "accepted" and operation is not None:
                    output = await self._complete(conn, agency, operation, record)
                    record = dataclasses.replace(record, status="completed", output=output)
            payload = self._callback_payload(record)
            if payload is None:
                return
            state = await self._deliver(agency, record, payload)
            async with self.pool.acquire() as conn:
                await store.update(conn, record.id, callback_state=state)
        except Exception:
            log.exception("agency.callback_crashed", agency=agency_id, agency_reference=agency_ref)
            raise

    @staticmethod
    def _callback_payload(record: Record) -> Callback | None:
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

    async def _deliver(self, agency: Agency, record: Record, payload: Callback) -> str:
        """POST the signed callback; retry 5xx, 408, 429 and connection errors with backoff."""
        assert self._http is not None and record.callback_url is not None
        body = json.dumps(payload.model_dump(mode="json")).encode()
        secret = self.secrets.get(agency.id) if agency.auth_secret else None
        bound = log.bind(
            agency=agency.id,
            operation=record.operation,
            reference=record.reference,
            agency_reference=record.agency_reference,
            outcome=payload.status,
        )
        wait = self.callback_initial_backoff_s
        for attempt in range(1, self.callback_max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                REFERENCE_HEADER: record.reference,
                IDEMPOTENCY_HEADER: idempotency_key(
                    record.reference, record.step, record.item, "callback"
                ),
                **signed_headers(secret, body),
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
                if response.status_code < 500 and response.status_code not in (408, 429):
                    bound.error(
                        "agency.callback_refused", attempt=attempt, status_code=response.status_code
                    )
                    return "refused"
                bound.warning(
                    "agency.callback_failed", attempt=attempt, status_code=response.status_code
                )
            if attempt < self.callback_max_attempts:
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30.0)
        bound.error("agency.callback_gave_up", attempts=self.callback_max_attempts)
        return "failed"


def create_app(
    registry: AgencyRegistry,
    database_url: str,
    secrets: Mapping[str, str],
    behaviour: Mapping[str, AgencyBehaviour | Mapping[str, Any]] | None = None,
    *,
    callback_max_attempts: int = 8,
    callback_initial_backoff_s: float = 0.2,
) -> FastAPI:
    """The reference agencies as one ASGI app (it owns its pool and HTTP client via lifespan).

    Args:
        registry: Every agency to host, each under ``/agencies/{id}``.
        database_url: PostgreSQL DSN; schemas ``agency_<id>`` are created on start-up.
        secrets: Agency id -> signing secret. An agency that declares ``auth_secret`` but has
            no secret here refuses every call with 401 (and logs why).
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour (models or JSON).
        callback_max_attempts: Attempts to deliver one callback.
        callback_initial_backoff_s: First wait between callback attempts (doubles, max 30 s).
    """
    parsed = parse_behaviours(
        {
            k: v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else dict(v)
            for k, v in (behaviour or {}).items()
        }
    )
    agencies = ReferenceAgencies(
        registry,
        database_url,
        secrets,
        parsed,
        callback_max_attempts=callback_max_attempts,
        callback_initial_backoff_s=callback_initial_backoff_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await agencies.start()
        try:
            yield
        finally:
            await agencies.stop()

    app = FastAPI(
        title="No Wrong Door reference agencies",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.agencies = agencies

    @app.exception_handler(Refusal)
    async def _refusal(_: Request, exc: Refusal) -> Response:
        return exc.response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "agencies": sorted(agencies.agencies)}

    @app.get("/agencies/{agency_id}/health")
    async def agency_health(agency_id: str) -> dict[str, Any]:
        agency = agencies.agency(agency_id)
        return {"status": "ok", "agency": agency.id}

    @app.post("/agencies/{agency_id}/operations/{operation_id}")
    async def operation(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await agencies.call_operation(agency_id, operation_id, request)

    @app.post("/agencies/{agency_id}/operations/{operation_id}/information")
    async def information(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await agencies.answer_information(agency_id, operation_id, request)

    @app.post("/agencies/{agency_id}/operations/{operation_id}/cancel")
    async def cancel(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await agencies.cancel(agency_id, operation_id, request)

    # -------------------------------------------------------------- admin (not the contract)

    @app.put("/_admin/agencies/{agency_id}/behaviour")
    async def put_behaviour(agency_id: str, request: Request) -> dict[str, Any]:
        if agency_id != "*":
            agencies.agency(agency_id)
        try:
            data = await request.json()
            behaviour = AgencyBehaviour.model_validate(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Refusal(400, "malformed_json", f"the body is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            raise Refusal(
                422,
                "invalid_behaviour",
                "the behaviour is not valid",
                errors=[
                    FieldError(path=".".join(str(p) for p in e["loc"]) or "body", message=e["msg"])
                    for e in exc.errors()
                ],
            ) from exc
        stored = agencies.book.set(agency_id, behaviour)
        keys = sorted(data) if isinstance(data, dict) else []
        log.info("agency.behaviour_set", agency=agency_id, keys=keys)
        return stored.model_dump(mode="json", exclude_none=True)

    @app.get("/_admin/agencies/{agency_id}/behaviour")
    async def get_behaviour(agency_id: str) -> dict[str, Any]:
        if agency_id != "*":
            agencies.agency(agency_id)
        return agencies.book.get(agency_id).model_dump(mode="json", exclude_none=True)

    @app.get("/_admin/agencies/{agency_id}/records")
    async def records(
        agency_id: str, reference: str | None = None, operation: str | None = None
    ) -> list[dict[str, Any]]:
        agencies.agency(agency_id)
        async with agencies.pool.acquire() as conn:
            rows = await agencies.stores[agency_id].list_records(
                conn, reference=reference, operation=operation
            )
        return [row.as_json() for row in rows]

    @app.post("/_admin/reset")
    async def reset() -> dict[str, str]:
        await agencies.reset()
        return {"status": "reset"}

    return app
