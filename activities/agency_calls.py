"""The ``call_agency`` activity: one HTTP call to an agency, under the agency contract.

Outcomes map onto Temporal's retry contract by exception *type name*:
- 2xx: completed / accepted (callback later) / needs_information;
- 4xx (but 408, 429): ``AgencyRejected``, non-retryable, carrying the agency's code and reason;
- 5xx, 408, 429, timeouts, connection errors: ``AgencyUnavailable``, retried under the
  step's policy (``Retry-After`` honoured);
- a malformed answer: ``AgencyProtocolError``, non-retryable (retrying will not fix it).
Every call carries an ``Idempotency-Key``, so a retry never makes a second effect.

The contract itself (headers, envelopes, reply models, retryable statuses, signing) is the
agency kit's (:mod:`agency_kit.contract`, :mod:`agency_kit.signing`), the one copy both sides
import; this module only decides what each answer means for the workflow.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from pydantic import TypeAdapter, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.agency_directory import AgencyDirectory, AgencyMisconfigured
from agency_kit.contract import (
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    REFERENCE_HEADER,
    RETRY_AFTER_HEADER,
    RETRYABLE_STATUS,
    Answer,
    CancelRequest,
    Completed,
    InformationRequest,
    NeedsInformation,
    OperationRequest,
    Rejected,
    StepEnvelope,
)
from agency_kit.keys import KeysUnavailable, PublicKeys, verify_answer
from agency_kit.signing import SignatureError
from readmodel.progress import ProgressWriter
from readmodel.store import ItemProgress, ReadModel
from runtime import callback_tokens as tokens
from runtime.messages import (
    AGENCY_MISCONFIGURED,
    AGENCY_PROTOCOL_ERROR,
    AGENCY_REJECTED,
    AGENCY_UNAVAILABLE,
    AgencyCallInput,
    AgencyCallResult,
)

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES = 256 * 1024
"""Agency answers go into workflow history (2 MiB payload limit): refuse bigger ones early.

Not the contract's ``MAX_BODY_BYTES`` (what an agency accepts): this one is the engine's own."""

_PATHS = {"operation": "", "information": "/information", "cancel": "/cancel"}
_ANSWER: TypeAdapter[Answer] = TypeAdapter(Answer)


@dataclass(frozen=True)
class AgencyResponse:
    """What the activity keeps of an agency's HTTP answer."""

    status: int
    content: bytes
    retry_after: str
    headers: dict[str, str] = field(default_factory=dict)


class AgencyCalls:
    """Agency-call activities; one shared, pooled HTTP client (owned by the composition root)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        directory: AgencyDirectory,
        read_model: ReadModel | None = None,
        callback_key: bytes | None = None,
        callback_ttl_s: int = 30 * 86400,
    ) -> None:
        self._http = http
        self._directory = directory
        # calls finishing together share one progress statement (group commit)
        self._progress = ProgressWriter(read_model) if read_model is not None else None
        self._callback_key = callback_key
        self._callback_ttl_s = callback_ttl_s

    @activity.defn(name="call_agency")
    async def call_agency(self, call: AgencyCallInput) -> AgencyCallResult:
        attempt = activity.info().attempt
        bound = log.bind(
            reference=call.reference, step=call.step_id, item=call.item_key,
            agency=call.endpoint.agency_id, operation=call.operation, action=call.action,
            attempt=attempt,
        )
        started = time.perf_counter()
        try:
            result = await self._call(call, attempt)
        except ApplicationError as exc:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            final = exc.non_retryable
            bound.warning("agency_call", outcome=exc.type, final=final, duration_ms=duration_ms,
                          error=exc.message)
            await self._record(call, "failed" if final else "retrying", None, attempt,
                               exc.message if final else None)
            # outcome, latency, retry and wait on the agency, by agency and operation
            metrics.agency_call(
                agency=call.endpoint.agency_id, operation=call.operation, action=call.action,
                outcome=exc.type or "error", attempt=attempt,
                latency_s=duration_ms / 1000, final=final,
                first_scheduled=activity.info().scheduled_time,
            )
            details = exc.details[0] if exc.details and isinstance(exc.details[0], dict) else {}
            raise ApplicationError(
                exc.message, {**details, "attempt": attempt}, type=exc.type,
                non_retryable=exc.non_retryable, next_retry_delay=exc.next_retry_delay,
            ) from exc
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        bound.info("agency_call", outcome=result.status, duration_ms=duration_ms,
                   agency_reference=result.agency_reference)
        status = {"completed": "completed", "accepted": "waiting",
                  "needs_information": "waiting", "cancelled": "cancelled"}[result.status]
        await self._record(call, status, result.agency_reference, attempt, None)
        # outcome, latency, retry and wait on the agency, by agency and operation
        metrics.agency_call(
            agency=call.endpoint.agency_id, operation=call.operation, action=call.action,
            outcome=result.status, attempt=attempt, latency_s=duration_ms / 1000, final=True,
            first_scheduled=activity.info().scheduled_time,
        )
        return result


    async def _call(self, call: AgencyCallInput, attempt: int) -> AgencyCallResult:
        try:
            base_url = self._directory.base_url(call.endpoint)
            answer_keys = self._directory.public_keys(call.endpoint)
        except AgencyMisconfigured as exc:
            raise ApplicationError(str(exc), type=AGENCY_MISCONFIGURED, non_retryable=True) from exc
        url = f"{base_url}/operations/{call.operation}{_PATHS[call.action]}"
        body = request_body(call, self._callback_url(call))
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: call.idempotency_key,
            REFERENCE_HEADER: call.reference,
        }
        signer = self._directory.signer
        if signer is not None:  # a fresh created, expires and nonce on every attempt
            headers = signer.request_headers("POST", url, body, headers)
        try:
            async with self._http.post(
                url, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=call.timeout_seconds),
            ) as answer:
                response = AgencyResponse(
                    answer.status, await answer.read(), answer.headers.get(RETRY_AFTER_HEADER, ""),
                    {k: v for k, v in answer.headers.items()},
                )
        except TimeoutError as exc:
            raise ApplicationError(
                f"{call.endpoint.agency_id} did not answer {call.operation} within "
                f"{call.timeout_seconds:g}s ({url})",
                type=AGENCY_UNAVAILABLE,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ApplicationError(
                f"{call.endpoint.agency_id} is unreachable at {url}: {exc.__class__.__name__}",
                type=AGENCY_UNAVAILABLE,
            ) from exc
        if answer_keys is not None and not _retryable(response.status):
            await _check_answer(call, url, headers, response, answer_keys)
        return interpret(call, url, response, attempt)

    def _callback_url(self, call: AgencyCallInput) -> str | None:
        """The single-use callback URL for this call (stable across retries of the call: it
        expires a TTL after the call was first scheduled)."""
        if call.callback_url is None or self._callback_key is None:
            return None
        expires = int(activity.info().scheduled_time.timestamp()) + self._callback_ttl_s
        token = tokens.issue(self._callback_key, tokens.CallbackTarget(
            call.reference, call.step_id, call.item_key, call.endpoint.agency_id, expires))
        return f"{call.callback_url.rstrip('/')}/callbacks/{token}"

    async def _record(
        self, call: AgencyCallInput, status: str, agency_reference: str | None, attempt: int,
        reason: str | None,
    ) -> None:
        if self._progress is None:
            return
        try:
            await self._progress.record(ItemProgress(
                reference=call.reference, step_id=call.step_id, item_key=call.item_key,
                agency=call.endpoint.agency_id, operation=call.operation, status=status,
                agency_reference=agency_reference, attempts=attempt, reason=reason,
                event=f"agency_{call.action}_{status}",
            ))
        except Exception as exc:  # the read model is a view: it must not fail the agency call
            log.warning("read_model_write_failed", reference=call.reference,
                        step=call.step_id, error=exc.__class__.__name__)


def _retryable(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUS


async def _check_answer(
    call: AgencyCallInput, url: str, sent: dict[str, str], response: AgencyResponse,
    keys: PublicKeys,
) -> None:
    """Act on no answer the agency did not sign, for this very request (RFC 9421, ``;req``).

    Only answers the engine acts on are checked (2xx, and 4xx other than 408/429): a 5xx or
    a timeout is retried whoever said it. A bad signature is final: the answer may be forged.
    """
    try:
        await verify_answer(keys, response.status, response.content, response.headers,
                            request_method="POST", request_url=url, request_headers=sent)
    except SignatureError as exc:
        raise ApplicationError(
            f"{call.endpoint.agency_id} answered {call.operation} (HTTP {response.status}) "
            f"without a valid signature: {exc.reason}; the answer was not acted on",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        ) from None
    except KeysUnavailable as exc:  # the call is idempotent: asking again is safe
        raise ApplicationError(
            f"{call.endpoint.agency_id}'s answer to {call.operation} cannot be verified: {exc}; "
            "will retry", type=AGENCY_UNAVAILABLE,
        ) from None


def request_body(call: AgencyCallInput, callback_url: str | None) -> bytes:
    """The exact bytes sent (and signed): the contract's envelope for the call's action.

    Raises ``AgencyRejected`` for a body over the contract's size limit, without sending it
    (every agency answers such a body 413, final), and ``AgencyProtocolError`` for a payload
    the envelope cannot hold (an answer or a cancel without an agency reference). Both are
    non-retryable: a retry would build the same body.
    """
    common: dict[str, Any] = {
        "reference": call.reference, "step": call.step_id, "item": call.item_key,
        "language": call.language,
    }
    envelope: StepEnvelope
    try:
        if call.action == "operation":
            envelope = OperationRequest(**common, input=call.payload, callback_url=callback_url)
        elif call.action == "information":
            envelope = InformationRequest.model_validate({**common, **call.payload})
        else:
            envelope = CancelRequest.model_validate({**common, **call.payload})
    except ValidationError as exc:
        raise ApplicationError(
            f"cannot send {call.action} {call.operation} to {call.endpoint.agency_id}: "
            f"the body would not follow the contract ({_problems(exc)})",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        ) from exc
    body = envelope.model_dump_json().encode()
    if len(body) > MAX_BODY_BYTES:
        reason = (f"the request body is {len(body)} bytes, over the contract's limit of "
                  f"{MAX_BODY_BYTES}; nothing was sent")
        raise ApplicationError(
            f"{call.endpoint.agency_id} would refuse {call.operation}: {reason}",
            {"status": 413, "code": "too_large", "reason": reason, "errors": None},
            type=AGENCY_REJECTED, non_retryable=True,
        )
    return body


def interpret(
    call: AgencyCallInput, url: str, response: AgencyResponse, attempt: int
) -> AgencyCallResult:
    """An agency's HTTP answer as the call's result, or the error Temporal's retry acts on.

    The engine is a tolerant reader: keys an answer holds beyond the contract's are ignored
    (validated with ``extra="ignore"``), so an agency adding a key, or a later contract
    version, breaks no call. Keys the contract requires must be there, or the answer is a
    protocol error. The kit's reply models stay strict for the agencies that build them.
    """
    agency = call.endpoint.agency_id
    code = response.status
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise ApplicationError(
            f"{agency} answered {call.operation} with {len(response.content)} bytes "
            f"(limit {MAX_RESPONSE_BYTES})",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        )
    if _retryable(code):
        raise ApplicationError(
            f"{agency} answered HTTP {code} to {call.operation} ({url}); will retry",
            {"status": code},
            type=AGENCY_UNAVAILABLE,
            next_retry_delay=_seconds(response.retry_after),
        )
    try:
        data = json.loads(response.content)
    except ValueError as exc:
        raise ApplicationError(
            f"{agency} answered HTTP {code} to {call.operation} with a body that is not JSON",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        ) from exc
    if not isinstance(data, dict):
        raise ApplicationError(
            f"{agency} answered {call.operation} with JSON that is not an object",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        )
    if code >= 400:
        rejection, reason, errors = _rejection(data, code)
        raise ApplicationError(
            f"{agency} rejected {call.operation}: {reason}",
            {"status": code, "code": rejection, "reason": reason, "errors": errors},
            type=AGENCY_REJECTED, non_retryable=True,
        )
    if code == 202:  # accepted, whatever the body's status says
        data = {**data, "status": "accepted"}
    try:
        answer = _ANSWER.validate_python(data, extra="ignore")
    except ValidationError as exc:
        status = data.get("status")
        unknown = any(e["type"].startswith("union_tag_") for e in exc.errors())
        raise ApplicationError(
            f"{agency} answered {call.operation} with unknown status {status!r}" if unknown
            else f"{agency} answered {call.operation} with a {status} reply that does not "
            f"follow the contract ({_problems(exc)})",
            type=AGENCY_PROTOCOL_ERROR, non_retryable=True,
        ) from exc
    information = answer if isinstance(answer, NeedsInformation) else None
    return AgencyCallResult(
        status=answer.status,
        agency_reference=answer.agency_reference,
        output=answer.output if isinstance(answer, Completed) else {},
        fields=information.fields if information is not None else None,
        message=information.message if information is not None else None,
        attempts=attempt,
    )


def _rejection(data: dict[str, Any], status: int) -> tuple[str | None, str, Any]:
    """The code, reason and field errors of a 4xx answer.

    A body in the contract's :class:`Rejected` shape is read as one. Any other 4xx body (a
    proxy's, or a web framework's ``{"detail": "Not Found"}``) fails the call all the same, a
    4xx being final, with whatever code and reason it gives.
    """
    try:
        rejected = Rejected.model_validate(data, extra="ignore")
    except ValidationError:
        code = data.get("code")
        reason = str(data.get("reason") or data.get("detail") or f"HTTP {status}")
        return (None if code is None else str(code)), reason, None
    errors = None if rejected.errors is None else [e.model_dump() for e in rejected.errors]
    return rejected.code, rejected.reason or f"HTTP {status}", errors


def _problems(exc: ValidationError) -> str:
    """Where and what is wrong, never the values (a body may carry personal data)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )


def _seconds(value: str) -> timedelta | None:
    try:
        return timedelta(seconds=float(value)) if value else None
    except ValueError:
        return None
