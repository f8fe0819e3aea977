"""`CitizenRequestWorkflow`: one generic workflow that interprets any service definition.

It never reads the catalog: the definition snapshot (with its content hash) is part of the
input, so editing a YAML never changes a request in flight. The pure planner says which steps
are ready; each ready step runs as its own asyncio task (deterministic under Temporal), so
independent steps run concurrently and for_each items fan out together.

Deterministic by construction: no I/O, clocks or randomness here; time is `workflow.now()`,
side effects are activities referred to by name (this module never imports `activities`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from definitions import expressions
    from definitions.models import CallStep, DecisionStep, ServiceDefinition
    from definitions.requests import (
        NON_RETRYABLE_ERRORS,
        AgencyCallInput,
        AgencyCallResult,
        AgencyEndpoint,
        ItemOutcome,
        RecordRequestInput,
        RequestInput,
        RequestProgress,
        RequestResult,
        RequestStatus,
        StepOutcome,
        idempotency_key,
    )
    from workflows import search_attributes as sa
    from workflows.planner import Decision, Planner

Step = CallStep | DecisionStep

RECORD_TIMEOUT = timedelta(seconds=30)
RECORD_GIVE_UP = timedelta(minutes=2)


@workflow.defn(name="CitizenRequest")
class CitizenRequestWorkflow:
    @workflow.init
    def __init__(self, request: RequestInput) -> None:
        self._request = request
        self._service: ServiceDefinition = request.snapshot.service
        self._steps: dict[str, StepOutcome] = {
            step.id: StepOutcome(
                step_id=step.id,
                kind=step.kind,
                agency=step.agency if isinstance(step, CallStep) else None,
                operation=step.operation if isinstance(step, CallStep) else None,
                required=step.required,
            )
            for step in self._service.steps
        }
        self._outputs: dict[str, Any] = {}
        self._status: RequestStatus = "running"
        self._stopping = False
        self._finished = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._planner: Planner | None = None
        self._awaited: tuple[str, ...] = ()

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        await self._record(finished=False)
        self._planner = Planner.from_service(self._service, self._condition)
        self._apply(self._planner.start())
        await workflow.wait_condition(lambda: self._finished)
        self._status = self._final_status()
        workflow.upsert_search_attributes(
            [sa.REQUEST_STATUS.value_set(self._status), sa.AGENCIES_AWAITED.value_set([])]
        )
        workflow.set_current_details(f"Finished: {self._status.replace('_', ' ')}.")
        await self._record(finished=True)
        return RequestResult(
            reference=request.reference,
            service=self._service.service,
            version=self._service.version,
            content_hash=request.snapshot.content_hash,
            status=self._status,
            steps=list(self._steps.values()),
            agencies_contacted=self._agencies_contacted(),
        )

    @workflow.query(name="progress")
    def progress(self) -> RequestProgress:
        return RequestProgress(
            reference=self._request.reference,
            service=self._service.service,
            content_hash=self._request.snapshot.content_hash,
            status=self._status,
            steps=list(self._steps.values()),
            waiting=self._waiting_descriptions(),
        )

    # ------------------------------------------------------------------ planning

    def _apply(self, decision: Decision) -> None:
        for skip in decision.skipped:
            self._set_step(skip.step_id, status="skipped", reason=skip.reason)
        for step_id in decision.ready:
            step = self._service.step(step_id)
            assert step is not None
            self._set_step(step_id, status="running")
            task = asyncio.create_task(self._run_step(step))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if decision.finished:
            self._finished = True
        self._publish_awaited()

    async def _run_step(self, step: Step) -> None:
        assert self._planner is not None
        if isinstance(step, CallStep):
            ok = await self._run_call_step(step)
        else:
            ok = await self._run_decision_step(step)
        decision = self._planner.record(step.id, "completed" if ok else "failed")
        if not ok and step.required and not self._stopping:
            self._stopping = True
            self._apply(decision)
            decision = self._planner.stop()
        self._apply(decision)

    def _condition(self, step: Step) -> bool:
        assert step.when is not None
        try:
            value = expressions.evaluate(step.when, self._activation())
        except expressions.ExpressionError as exc:
            # A value the condition reads is absent (an optional field): the step does not apply.
            workflow.logger.info("condition of %s not evaluable: %s", step.id, exc.reason)
            return False
        return value is True

    def _activation(self, item: Any = None, with_item: bool = False) -> dict[str, Any]:
        activation: dict[str, Any] = {
            "submission": self._request.submission,
            "steps": {sid: {"output": out} for sid, out in self._outputs.items()},
            "request": {
                "reference": self._request.reference,
                "language": self._request.language,
            },
        }
        if with_item:
            activation["item"] = item
        return activation

    # ------------------------------------------------------------------ call steps

    async def _run_call_step(self, step: CallStep) -> bool:
        try:
            items, keys = self._items_of(step)
        except expressions.ExpressionError as exc:
            self._set_step(step.id, status="failed", reason=f"for_each: {exc.reason}")
            return False
        outcome = self._steps[step.id]
        self._steps[step.id] = outcome.model_copy(
            update={"items": [ItemOutcome(key=k, status="running") for k in keys]}
        )
        results = await asyncio.gather(
            *(
                self._run_item(step, index, item, key)
                for index, (item, key) in enumerate(zip(items, keys, strict=True))
            )
        )
        failures = [r for r in results if r is None]
        outputs = [r for r in results if r is not None]
        if step.for_each is not None:
            self._outputs[step.id] = outputs
        elif outputs:
            self._outputs[step.id] = outputs[0]
        if failures or (not results and step.for_each is None):
            first = next((i.reason for i in self._steps[step.id].items if i.reason), None)
            self._set_step(step.id, status="failed", reason=first)
            return False
        self._set_step(step.id, status="completed")
        return True

    def _items_of(self, step: CallStep) -> tuple[list[Any], list[str | None]]:
        if step.for_each is None:
            return [None], [None]
        value = expressions.evaluate(step.for_each, self._activation())
        if not isinstance(value, list):
            raise expressions.ExpressionError(step.for_each, "for_each did not give a list")
        keys: list[str | None] = []
        for index, item in enumerate(value):
            if step.item_key is None:
                keys.append(str(index))
            else:
                keys.append(str(expressions.evaluate(step.item_key, self._activation(item, True))))
        return value, keys

    def _payload(self, step: CallStep, item: Any) -> dict[str, Any]:
        activation = self._activation(item, with_item=step.for_each is not None)
        payload: dict[str, Any] = {}
        for field, expression in step.input.items():
            try:
                payload[field] = expressions.evaluate(expression, activation)
            except expressions.MissingValue:
                continue  # an optional value the citizen left out is simply not sent
        return payload

    async def _run_item(
        self, step: CallStep, index: int, item: Any, key: str | None
    ) -> dict[str, Any] | None:
        """Run one agency call to its end; the output, or None when it failed."""
        agency = self._request.snapshot.agency(step.agency)
        try:
            payload = self._payload(step, item)
        except expressions.ExpressionError as exc:
            self._set_item(step.id, index, status="failed", reason=f"input: {exc.reason}")
            return None
        call = AgencyCallInput(
            reference=self._request.reference,
            step_id=step.id,
            item_key=key,
            service=self._service.service,
            endpoint=AgencyEndpoint(
                agency_id=agency.id,
                base_url_env=agency.http.base_url_env if agency.http else None,
                default_base_url=agency.http.default_base_url if agency.http else None,
                auth_secret=agency.auth_secret,
            ),
            operation=step.operation,
            payload=payload,
            idempotency_key=idempotency_key(self._request.reference, step.id, key),
            callback_url=None,
            language=self._request.language,
            timeout_seconds=step.timeout.total_seconds(),
        )
        try:
            result = await self._call_agency(step, call, key)
        except ActivityError as err:
            reason, attempts = _failure_reason(err)
            self._set_item(step.id, index, status="failed", reason=reason, attempts=attempts)
            return None
        self._set_item(
            step.id, index, status="completed", agency_reference=result.agency_reference,
            attempts=result.attempts, output=result.output,
        )
        return result.output

    async def _call_agency(
        self, step: CallStep, call: AgencyCallInput, key: str | None
    ) -> AgencyCallResult:
        agency_name = self._request.snapshot.agency(step.agency).name.get("en", step.agency)
        item = f" · item {key}" if key is not None else ""
        result: AgencyCallResult = await workflow.execute_activity(
            "call_agency",
            call,
            result_type=AgencyCallResult,
            start_to_close_timeout=step.timeout + timedelta(seconds=5),
            retry_policy=RetryPolicy(
                initial_interval=step.retry.initial_interval,
                backoff_coefficient=step.retry.backoff,
                maximum_interval=step.retry.max_interval,
                maximum_attempts=step.retry.max_attempts,
                non_retryable_error_types=list(NON_RETRYABLE_ERRORS),
            ),
            summary=f"{step.id}: {agency_name} · {call.operation} ({call.action}){item}",
        )
        return result

    # ------------------------------------------------------------------ decision steps

    async def _run_decision_step(self, step: DecisionStep) -> bool:
        self._set_step(step.id, status="failed", reason="decision steps are not supported yet")
        return False

    # ------------------------------------------------------------------ state helpers

    def _set_step(self, step_id: str, **update: Any) -> None:
        self._steps[step_id] = self._steps[step_id].model_copy(update=update)

    def _set_item(self, step_id: str, index: int, **update: Any) -> None:
        outcome = self._steps[step_id]
        items = list(outcome.items)
        items[index] = items[index].model_copy(update=update)
        self._steps[step_id] = outcome.model_copy(update={"items": items})

    def _final_status(self) -> RequestStatus:
        failed = [s for s in self._steps.values() if s.status == "failed"]
        if any(s.required for s in failed):
            return "failed"
        if failed:
            return "partially_completed"
        return "completed"

    def _agencies_contacted(self) -> int:
        return len({
            s.agency for s in self._steps.values()
            if s.agency and any(i.agency_reference for i in s.items)
        })

    def _publish_awaited(self) -> None:
        awaited = tuple(sorted({
            s.agency for s in self._steps.values()
            if s.agency and s.status in ("running", "waiting")
        }))
        if awaited != self._awaited:
            self._awaited = awaited
            workflow.upsert_search_attributes([sa.AGENCIES_AWAITED.value_set(list(awaited))])
            workflow.set_current_details(
                "Waiting on: " + ", ".join(awaited) + "." if awaited else "Deciding next steps."
            )

    def _waiting_descriptions(self) -> list[str]:
        return [
            f"{s.step_id}: {s.agency or 'caseworker'} ({s.status})"
            for s in self._steps.values() if s.status in ("running", "waiting")
        ]

    async def _record(self, *, finished: bool) -> None:
        snapshot = self._request.snapshot
        record = RecordRequestInput(
            reference=self._request.reference,
            service=self._service.service,
            version=self._service.version,
            content_hash=snapshot.content_hash,
            language=self._request.language,
            submitted_at=self._request.submitted_at,
            status=self._status,
            agencies=sorted({a.id for a in snapshot.agencies}),
            steps=list(self._steps.values()) if finished else [],
            finished=finished,
            agencies_contacted=self._agencies_contacted(),
        )
        try:
            await workflow.execute_local_activity(
                "record_request",
                record,
                start_to_close_timeout=RECORD_TIMEOUT,
                schedule_to_close_timeout=RECORD_GIVE_UP,
                summary=f"record request ({'finished' if finished else 'started'})",
            )
        except ActivityError:
            # The read model is a view of this history; the request itself goes on.
            workflow.logger.warning("read model not updated for %s", self._request.reference)


def _failure_reason(err: ActivityError) -> tuple[str, int]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        attempts = int(details.get("attempt", 0) or 0)
        return cause.message, attempts
    if cause is not None:
        return str(cause), 0
    return str(err), 0
