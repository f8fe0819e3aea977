"""The ``call_agency`` activity: one HTTP call to an agency, under the agency contract.

Outcomes map onto Temporal's retry contract by exception *type name*:
- 2xx: completed / accepted (callback later) / needs_information;
- 4xx (but 408, 429): ``AgencyRejected``, non-retryable, carrying the agency's code and reason;
- 5xx, 408, 429, timeouts, connection errors: ``AgencyUnavailable``, retried under the
  step's policy (``Retry-After`` honoured);
- a malformed answer: ``AgencyProtocolError``, non-retryable (retrying will not fix it).
Every call carries an ``Idempotency-Key``, so a retry never makes a second effect.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import metrics
from activities.agency_directory import AgencyDirectory, AgencyMisconfigured
from activities.signing import signature
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
"""Agency answers go into workflow history (2 MiB payload limit): refuse bigger ones early."""

REJECTED = AGENCY_REJECTED
UNAVAILABLE = AGENCY_UNAVAILABLE
PROTOCOL = AGENCY_PROTOCOL_ERROR
MISCONFIGURED = AGENCY_MISCONFIGURED

_PATHS = {"operation": "", "information": "/information", "cancel": "/cancel"}


@dataclass(frozen=True)
class AgencyResponse:
    """What the activity keeps of an agency's HTTP answer."""

    status: int
    content: bytes
    retry_after: str


class AgencyCalls:
    """Agency-call activities; one shared, pooled HTTP client (owned by the composition root)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        directory: AgencyDirectory,
        read_model: ReadModel | None = None,
        callback_key: bytes | None = None,
    ) -> None:
        self._http = http
        self._directory = directory
        # calls finishing together share one progress statement (group commit)
        self._progress = ProgressWriter(read_model) if read_model is not None else None
        self._callback_key = callback_key

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
            # metrics (operations): outcome, latency, retry, wait on the agency
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
        # metrics (operations): outcome, latency, retry, wait on the agency
        metrics.agency_call(
            agency=call.endpoint.agency_id, operation=call.operation, action=call.action,
            outcome=result.status, attempt=attempt, latency_s=duration_ms / 1000, final=True,
            first_scheduled=activity.info().scheduled_time,
        )
        return result

    async def _call(self, call: AgencyCallInput, attempt: int) -> AgencyCallResult:
        try:
            base_url = self._directory.base_url(call.endpoint)
            secret = self._directory.secret(call.endpoint)
        except AgencyMisconfigured as exc:
            raise ApplicationError(str(exc), type=MISCONFIGURED, non_retryable=True) from exc
        url = f"{base_url}/operations/{call.operation}{_PATHS[call.action]}"
        body = json.dumps(self._body(call), separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": call.idempotency_key,
            "X-NWD-Reference": call.reference,
            "X-NWD-Timestamp": str(timestamp),
        }
        if secret is not None:
            headers["X-NWD-Signature"] = signature(secret, timestamp, body)
        try:
            async with self._http.post(
                url, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=call.timeout_seconds),
            ) as answer:
                response = AgencyResponse(
                    answer.status, await answer.read(), answer.headers.get("Retry-After", "")
                )
        except TimeoutError as exc:
            raise ApplicationError(
                f"{call.endpoint.agency_id} did not answer {call.operation} within "
                f"{call.timeout_seconds:g}s ({url})",
                type=UNAVAILABLE,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ApplicationError(
                f"{call.endpoint.agency_id} is unreachable at {url}: {exc.__class__.__name__}",
                type=UNAVAILABLE,
            ) from exc
        return self._interpret(call, url, response, attempt)

    def _callback_url(self, call: AgencyCallInput) -> str | None:
        """The single-use callback URL for this call (stable across retries of the call)."""
        if call.callback_url is None or self._callback_key is None:
            return None
        token = tokens.issue(self._callback_key, tokens.CallbackTarget(
            call.reference, call.step_id, call.item_key, call.endpoint.agency_id))
        return f"{call.callback_url.rstrip('/')}/callbacks/{token}"

    def _body(self, call: AgencyCallInput) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reference": call.reference, "step": call.step_id, "item": call.item_key,
            "language": call.language,
        }
        if call.action == "operation":
            body["input"] = call.payload
            body["callback_url"] = self._callback_url(call)
        else:
            body.update(call.payload)
        return body

    def _interpret(
        self, call: AgencyCallInput, url: str, response: AgencyResponse, attempt: int
    ) -> AgencyCallResult:
        agency = call.endpoint.agency_id
        code = response.status
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ApplicationError(
                f"{agency} answered {call.operation} with {len(response.content)} bytes "
                f"(limit {MAX_RESPONSE_BYTES})",
                type=PROTOCOL, non_retryable=True,
            )
        if code >= 500 or code in (408, 429):
            retry_after = response.retry_after
            raise ApplicationError(
                f"{agency} answered HTTP {code} to {call.operation} ({url}); will retry",
                {"status": code},
                type=UNAVAILABLE,
                next_retry_delay=_seconds(retry_after),
            )
        try:
            data = json.loads(response.content)
        except ValueError as exc:
            raise ApplicationError(
                f"{agency} answered HTTP {code} to {call.operation} with a body that is not JSON",
                type=PROTOCOL, non_retryable=True,
            ) from exc
        if not isinstance(data, dict):
            raise ApplicationError(
                f"{agency} answered {call.operation} with JSON that is not an object",
                type=PROTOCOL, non_retryable=True,
            )
        if code >= 400:
            reason = str(data.get("reason") or data.get("detail") or f"HTTP {code}")
            raise ApplicationError(
                f"{agency} rejected {call.operation}: {reason}",
                {"status": code, "code": data.get("code"), "reason": reason,
                 "errors": data.get("errors")},
                type=REJECTED, non_retryable=True,
            )
        status = data.get("status")
        if code == 202 or status == "accepted":
            status = "accepted"
        if status not in ("completed", "accepted", "needs_information", "cancelled"):
            raise ApplicationError(
                f"{agency} answered {call.operation} with unknown status {status!r}",
                type=PROTOCOL, non_retryable=True,
            )
        output = data.get("output") or {}
        return AgencyCallResult(
            status=status,
            agency_reference=data.get("agency_reference"),
            output=output if isinstance(output, dict) else {},
            fields=data.get("fields"),
            message=data.get("message"),
            attempts=attempt,
        )

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


def _seconds(value: str) -> timedelta | None:
    try:
        return timedelta(seconds=float(value)) if value else None
    except ValueError:
        return None
