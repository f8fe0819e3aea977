"""`CitizenRequestWorkflow`: one generic workflow that interprets any service definition.

It never reads the catalog: the definition snapshot (with its content hash) is part of the
input, so editing a YAML never changes a request in flight. The pure planner says which steps
are ready; each ready step runs as its own asyncio task (deterministic under Temporal), so
independent steps run concurrently and for_each items fan out together.

Long-running interactions are carried by Temporal's own mechanisms:
- agency callbacks, citizens' answers, caseworkers' decisions and cancellation arrive as
  **updates with validators**: a late, duplicate or malformed message is refused before it
  enters history, and the caller gets a clear, synchronous error;
- deadlines are **durable timers** (no polling);
- compensation is a saga of ordinary, idempotent agency-call activities in reverse order;
- long waits **continue as new** at a quiet moment (no activity or handler in flight),
  carrying the full state.

Deterministic by construction: no I/O, clocks or randomness here; time is `workflow.now()`,
side effects are activities referred to by name (this module never imports `activities`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from definitions import expressions
    from definitions.models import (
        CallStep,
        DataSchema,
        DecisionStep,
        FieldSpec,
        ServiceDefinition,
    )
    from definitions.submission import SubmissionInvalid, validate_submission
    from runtime.messages import (
        INVALID_ANSWER,
        NON_RETRYABLE_ERRORS,
        NOT_EXPECTED,
        AgencyCallback,
        AgencyCallInput,
        AgencyCallResult,
        AgencyEndpoint,
        CancelRequest,
        CarriedState,
        CaseworkerDecision,
        CompensationOutcome,
        InformationAnswer,
        ItemOutcome,
        OperatorNotice,
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

AGENCY_WAIT_METRIC = "nwd_agency_wait_seconds"
"""The same series the activities feed (runtime.telemetry.AGENCY_WAIT); a test keeps them equal."""
RECORD_TIMEOUT = timedelta(seconds=30)
RECORD_GIVE_UP = timedelta(minutes=2)
NOTICE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5))


def _key(step_id: str, item_key: str | None) -> tuple[str, str]:
    return step_id, item_key if item_key is not None else "-"


@workflow.defn(name="CitizenRequest")
class CitizenRequestWorkflow:
    @workflow.init
    def __init__(self, request: RequestInput) -> None:
        self._request = request
        self._service: ServiceDefinition = request.snapshot.service
        carried = request.carried
        if carried is not None:
            self._steps = {s.step_id: s for s in carried.steps}
            self._outputs: dict[str, Any] = dict(carried.outputs)
            self._halting: str | None = carried.halting
        else:
            self._steps = {
                step.id: StepOutcome(
                    step_id=step.id,
                    kind=step.kind,
                    agency=step.agency if isinstance(step, CallStep) else None,
                    operation=step.operation if isinstance(step, CallStep) else None,
                    required=step.required,
                )
                for step in self._service.steps
            }
            self._outputs = {}
            self._halting = None
        self._status: RequestStatus = "running"
        self._finished = False
        self._planner: Planner | None = None
        self._step_tasks: dict[str, asyncio.Task[None]] = {}
        self._callbacks: dict[tuple[str, str], AgencyCallback] = {}
        self._answers: dict[tuple[str, str], dict[str, Any]] = {}
        self._decisions: dict[str, CaseworkerDecision] = {}
        self._deadline_failed: set[str] = set()
        self._activities_in_flight = 0
        self._awaited: tuple[str, ...] = ()
        self._busy: tuple[str, ...] = ()
        self._item_index: dict[str, dict[str | None, int]] = {}
        self._compensations: list[CompensationOutcome] = []
        self._cancelled = False
        self._watchers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        if request.carried is None:
            if not request.options.recorded_at_submit:
                await self._record(finished=False)
            self._planner = Planner.from_service(self._service, self._condition)
            self._apply(self._planner.start())
        else:
            self._planner = Planner.restore(
                self._service.steps, self._condition, request.carried.planner
            )
            self._resume()
        while True:
            await workflow.wait_condition(
                lambda: self._finished or self._should_continue_as_new()
            )
            if self._finished:
                break
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._should_continue_as_new():
                workflow.continue_as_new(self._carry())
        if self._halting is not None:
            await self._compensate()
        self._status = self._final_status()
        # AgenciesAwaited is already empty here unless a wait was cut short: writing [] again
        # into a KeywordList cost a full-text index update per request in the dev server.
        finished: list[SearchAttributeUpdate[Any]] = [sa.REQUEST_STATUS.value_set(self._status)]
        if self._awaited:
            finished.append(sa.AGENCIES_AWAITED.value_set([]))
        self._upsert(*finished)
        workflow.set_current_details(f"Finished: {self._status.replace('_', ' ')}.")
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._record(finished=True)
        return RequestResult(
            reference=request.reference,
            service=self._service.service,
            version=self._service.version,
            content_hash=request.snapshot.content_hash,
            status=self._status,
            steps=list(self._steps.values()),
            compensations=self._compensations,
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

    # ------------------------------------------------------------------ messages in

    @workflow.update(name="agency_callback")
    async def agency_callback(self, callback: AgencyCallback) -> str:
        self._callbacks[_key(callback.step_id, callback.item_key)] = callback
        self._set_waiting(callback.step_id, callback.item_key, None)
        return "accepted"

    @agency_callback.validator
    def _check_callback(self, callback: AgencyCallback) -> None:
        item = self._find_item(callback.step_id, callback.item_key)
        if item is None or item.waiting_for != "callback":
            raise ApplicationError(
                f"no callback is expected for step {callback.step_id!r}"
                f"{f' item {callback.item_key!r}' if callback.item_key else ''}: "
                "it was already answered, has ended, or never waited for one",
                type=NOT_EXPECTED,
            )
        if callback.status == "rejected" and not callback.reason:
            raise ApplicationError("a rejection needs a reason", type=INVALID_ANSWER)

    @workflow.update(name="answer_information")
    async def answer_information(self, answer: InformationAnswer) -> str:
        item = self._find_item(answer.step_id, answer.item_key)
        assert item is not None and item.information_fields is not None
        self._answers[_key(answer.step_id, answer.item_key)] = validate_submission(
            _information_schema(item.information_fields), answer.answers
        )
        self._set_waiting(answer.step_id, answer.item_key, None)
        return "accepted"

    @answer_information.validator
    def _check_answer(self, answer: InformationAnswer) -> None:
        item = self._find_item(answer.step_id, answer.item_key)
        if item is None or item.waiting_for != "information" or not item.information_fields:
            raise ApplicationError(
                f"step {answer.step_id!r} is not waiting for information", type=NOT_EXPECTED
            )
        try:
            validate_submission(_information_schema(item.information_fields), answer.answers)
        except SubmissionInvalid as exc:
            raise ApplicationError(
                "the answer does not match the requested fields",
                {"errors": [{"loc": list(e.loc), "msg": e.message} for e in exc.errors]},
                type=INVALID_ANSWER,
            ) from exc

    @workflow.update(name="decide")
    async def decide(self, decision: CaseworkerDecision) -> str:
        self._decisions[decision.step_id] = decision
        return "recorded"

    @decide.validator
    def _check_decision(self, decision: CaseworkerDecision) -> None:
        step = self._service.step(decision.step_id)
        outcome = self._steps.get(decision.step_id)
        if not isinstance(step, DecisionStep) or outcome is None or outcome.status != "waiting" \
                or decision.step_id in self._decisions:
            raise ApplicationError(
                f"step {decision.step_id!r} is not waiting for a decision", type=NOT_EXPECTED
            )
        if decision.role != step.role:
            raise ApplicationError(
                f"only the role {step.role!r} may decide {step.id!r}", type=INVALID_ANSWER
            )
        if not decision.approve and not decision.reason:
            raise ApplicationError("a rejection needs a reason", type=INVALID_ANSWER)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> str:
        self._halt(f"cancelled: {request.reason}", cancelled=True)
        return "cancelling"

    @cancel.validator
    def _check_cancel(self, request: CancelRequest) -> None:
        if self._halting is not None or self._finished:
            raise ApplicationError("the request is already finishing", type=NOT_EXPECTED)

    # ------------------------------------------------------------------ planning

    def _apply(self, decision: Decision) -> None:
        for skip in decision.skipped:
            self._set_step(skip.step_id, status="skipped", reason=skip.reason)
        for step_id in decision.ready:
            step = self._service.step(step_id)
            assert step is not None
            started = workflow.now()
            deadline = _deadline_of(step)
            self._set_step(
                step_id, status="running", started_at=started,
                deadline_at=started + deadline if deadline is not None else None,
            )
            self._launch(step)
        if decision.finished:
            self._finished = True
        self._publish_awaited()

    def _launch(self, step: Step) -> None:
        self._step_tasks[step.id] = asyncio.create_task(self._run_step(step))
        if self._steps[step.id].deadline_at is not None:
            self._watchers.add(asyncio.create_task(self._watch_deadline(step)))

    def _resume(self) -> None:
        """After continue-as-new: re-arm every step that was running or waiting."""
        for outcome in self._steps.values():
            if outcome.status in ("running", "waiting"):
                step = self._service.step(outcome.step_id)
                assert step is not None
                self._launch(step)
        self._publish_awaited()

    async def _run_step(self, step: Step) -> None:
        assert self._planner is not None
        if isinstance(step, CallStep):
            ok = await self._run_call_step(step)
        else:
            ok = await self._run_decision_step(step)
        decision = self._planner.record(step.id, "completed" if ok else "failed")
        self._apply(decision)
        if not ok and step.required and self._halting is None:
            self._halt(f"required step {step.id!r} failed")

    def _halt(self, reason: str, *, cancelled: bool = False) -> None:
        """Launch nothing more; waiting branches withdraw; completed work is undone later."""
        assert self._planner is not None
        self._halting = reason
        self._cancelled = cancelled
        self._apply(self._planner.stop())
        workflow.set_current_details(f"Stopping ({reason}); undoing completed steps.")

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
        if not self._steps[step.id].items:
            self._set_step(step.id, items=[ItemOutcome(key=k, status="running") for k in keys])
        results = await asyncio.gather(
            *(
                self._run_item(step, index, item, key)
                for index, (item, key) in enumerate(zip(items, keys, strict=True))
            )
        )
        outputs = [r for r in results if r is not None]
        if step.for_each is not None:
            self._outputs[step.id] = outputs
        elif outputs:
            self._outputs[step.id] = outputs[0]
        final = self._steps[step.id]
        if any(i.status != "completed" for i in final.items) or (not final.items and \
                step.for_each is None):
            first = next((i.reason for i in final.items if i.reason), None)
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

    def _mapping(self, mapping: dict[str, str], activation: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {}
        for field, expression in mapping.items():
            try:
                payload[field] = expressions.evaluate(expression, activation)
            except expressions.MissingValue:
                continue  # an optional value the citizen left out is simply not sent
        return payload

    def _call_input(
        self, step: CallStep, key: str | None, *, operation: str, action: str,
        payload: dict[str, Any], suffix: str = "",
    ) -> AgencyCallInput:
        agency = self._request.snapshot.agency(step.agency)
        return AgencyCallInput(
            reference=self._request.reference,
            step_id=step.id,
            item_key=key,
            endpoint=AgencyEndpoint(
                agency_id=agency.id,
                base_url_env=agency.http.base_url_env if agency.http else None,
                default_base_url=agency.http.default_base_url if agency.http else None,
                auth_secret=agency.auth_secret,
            ),
            operation=operation,
            action=action,
            payload=payload,
            idempotency_key=idempotency_key(self._request.reference, step.id, key, suffix),
            callback_url=self._request.callback_base_url if step.mode == "callback" else None,
            language=self._request.language,
            timeout_seconds=step.timeout.total_seconds(),
        )

    async def _run_item(
        self, step: CallStep, index: int, item: Any, key: str | None
    ) -> dict[str, Any] | None:
        """Drive one agency call to its end; the output, or None when it did not complete."""
        state = self._steps[step.id].items[index]
        if state.status == "completed":
            return state.output or {}
        result: AgencyCallResult | None = None
        if state.waiting_for is None:
            try:
                activation = self._activation(item, step.for_each is not None)
                payload = self._mapping(step.input, activation)
            except expressions.ExpressionError as exc:
                self._set_item(step.id, index, status="failed", reason=f"input: {exc.reason}")
                return None
            result = await self._call(step, index, self._call_input(
                step, key, operation=step.operation, action="operation", payload=payload))
            if result is None:
                return None
        while True:
            if result is not None:
                if result.status == "completed":
                    self._set_item(step.id, index, status="completed", waiting_for=None,
                                   agency_reference=result.agency_reference or
                                   self._steps[step.id].items[index].agency_reference,
                                   output=result.output)
                    return result.output
                if result.status == "cancelled":
                    self._set_item(step.id, index, status="cancelled", waiting_for=None)
                    return None
                if result.status == "accepted":
                    self._set_item(step.id, index, status="waiting", waiting_for="callback",
                                   agency_reference=result.agency_reference,
                                   waiting_since=workflow.now())
                else:
                    self._set_item(step.id, index, status="waiting", waiting_for="information",
                                   agency_reference=result.agency_reference or
                                   self._steps[step.id].items[index].agency_reference,
                                   information_fields=result.fields or {},
                                   information_message=result.message,
                                   waiting_since=workflow.now())
                self._publish_awaited()
            waiting = self._steps[step.id].items[index].waiting_for
            if waiting == "callback":
                result = await self._await_callback(step, index, key)
            else:
                result = await self._await_information(step, index, key)
            if result is None:
                return None

    async def _call(
        self, step: CallStep, index: int, call: AgencyCallInput, *, retry: bool = True
    ) -> AgencyCallResult | None:
        """Run the call_agency activity; None (and the item failed) when it did not succeed."""
        try:
            return await self._execute(step, call)
        except ActivityError as err:
            reason, attempts = _failure_reason(err)
            self._set_item(step.id, index, status="failed", reason=reason, attempts=attempts,
                           waiting_for=None)
            return None

    async def _execute(self, step: CallStep, call: AgencyCallInput) -> AgencyCallResult:
        agency_name = self._request.snapshot.agency(step.agency).name.get("en", step.agency)
        item = f" · item {call.item_key}" if call.item_key is not None else ""
        self._activities_in_flight += 1
        try:
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
        finally:
            self._activities_in_flight -= 1
        self._set_item_attempts(call.step_id, call.item_key, result.attempts)
        return result

    async def _await_callback(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        slot = _key(step.id, key)
        await workflow.wait_condition(lambda: slot in self._callbacks or self._stopped(step.id))
        if slot not in self._callbacks:
            return await self._withdraw(step, index, key)
        callback = self._callbacks.pop(slot)
        self._record_wait(step, index, "callback")
        if callback.status == "rejected":
            self._set_item(step.id, index, status="failed", waiting_for=None,
                           reason=f"{step.agency} rejected {step.operation}: {callback.reason}")
            return None
        return AgencyCallResult(
            status=callback.status, agency_reference=callback.agency_reference,
            output=callback.output, fields=callback.fields, message=callback.message,
            attempts=self._steps[step.id].items[index].attempts,
        )

    async def _await_information(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        slot = _key(step.id, key)
        policy = step.information
        try:
            await workflow.wait_condition(
                lambda: slot in self._answers or self._stopped(step.id),
                timeout=policy.answer_within,
                timeout_summary=f"{step.id}: citizen's answer due",
            )
        except TimeoutError:
            if policy.on_miss == "fail":
                self._set_item(step.id, index, status="failed", waiting_for=None,
                               reason="the citizen did not answer the request for information "
                                      f"within {policy.answer_within}")
                return None
            await self._escalate(step, "information_overdue", policy.notify,
                                 "request for information unanswered", index)
            await workflow.wait_condition(lambda: slot in self._answers or self._stopped(step.id))
        if slot not in self._answers:
            return await self._withdraw(step, index, key)
        answers = self._answers.pop(slot)
        self._record_wait(step, index, "information")
        item = self._steps[step.id].items[index]
        rounds = item.information_rounds + 1
        self._set_item(step.id, index, status="running", information_rounds=rounds,
                       information_fields=None, information_message=None)
        return await self._call(step, index, self._call_input(
            step, key, operation=step.operation, action="information",
            payload={"agency_reference": item.agency_reference, "answers": answers},
            suffix=f"info:{rounds}",
        ))

    async def _withdraw(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        """The request stopped (or the deadline failed) while this branch waited on an agency."""
        item = self._steps[step.id].items[index]
        operation = self._request.snapshot.agency(step.agency).operation(step.operation)
        why = "deadline passed" if step.id in self._deadline_failed else (self._halting or "")
        if operation is not None and operation.cancellable and item.agency_reference:
            try:
                result = await self._execute(step, self._call_input(
                    step, key, operation=step.operation, action="cancel",
                    payload={"agency_reference": item.agency_reference}, suffix="cancel",
                ))
            except ActivityError as err:
                reason, _ = _failure_reason(err)
                if "too_late" in reason or "too late" in reason:
                    # It completed meanwhile: the result is real, and can be undone.
                    self._set_item(step.id, index, status="completed", waiting_for=None)
                    return None
                self._set_item(step.id, index, status="failed", waiting_for=None,
                               reason=f"{why}; withdrawing failed: {reason}")
                return None
            self._set_item(step.id, index, status="cancelled", waiting_for=None,
                           reason=f"withdrawn ({why})")
            return None if result.status != "completed" else result
        self._set_item(step.id, index, status="failed", waiting_for=None,
                       reason=f"{why}; the agency cannot withdraw {step.operation}")
        return None

    def _record_wait(self, step: CallStep, index: int, waited_for: str) -> None:
        """Time this branch waited (on the agency's callback, or the citizen's answer).

        A workflow metric: not a command, and the SDK does not record it again on replay.
        """
        since = self._steps[step.id].items[index].waiting_since
        if since is None:
            return
        workflow.metric_meter().create_histogram_float(
            AGENCY_WAIT_METRIC, "Time a request waited on an agency", "s"
        ).record((workflow.now() - since).total_seconds(), {
            "agency": step.agency, "operation": step.operation, "outcome": waited_for})

    def _stopped(self, step_id: str) -> bool:
        return self._halting is not None or step_id in self._deadline_failed

    # ------------------------------------------------------------------ decision steps

    async def _run_decision_step(self, step: DecisionStep) -> bool:
        self._set_step(step.id, status="waiting")
        self._publish_awaited()
        await workflow.wait_condition(
            lambda: step.id in self._decisions or self._stopped(step.id)
        )
        decision = self._decisions.get(step.id)
        if decision is None:
            self._set_step(step.id, status="cancelled", reason=self._halting or "deadline passed")
            return False
        if decision.approve:
            self._outputs[step.id] = {"decision": "approved", "reason": decision.reason,
                                      "decided_by": decision.decided_by}
            self._set_step(step.id, status="completed", decided_by=decision.decided_by,
                           reason=decision.reason)
            return True
        self._set_step(step.id, status="failed", decided_by=decision.decided_by,
                       reason=f"rejected by {decision.role}: {decision.reason}")
        return False

    # ------------------------------------------------------------------ deadlines

    async def _watch_deadline(self, step: Step) -> None:
        outcome = self._steps[step.id]
        if outcome.escalated or outcome.deadline_at is None:
            return
        remaining = max(outcome.deadline_at - workflow.now(), timedelta(0))
        try:
            await workflow.wait_condition(
                lambda: self._steps[step.id].status not in ("running", "waiting"),
                timeout=remaining if remaining > timedelta(0) else timedelta(milliseconds=1),
                timeout_summary=f"{step.id}: deadline",
            )
            return
        except TimeoutError:
            pass
        on_miss, notify = _deadline_action(step)
        kind = "decision_overdue" if isinstance(step, DecisionStep) else "deadline_missed"
        await self._escalate(step, kind, notify, f"{step.id} missed its deadline")
        if on_miss == "fail":
            self._deadline_failed.add(step.id)

    async def _escalate(
        self, step: Step, kind: str, role: str | None, detail: str, index: int | None = None
    ) -> None:
        self._set_step(step.id, escalated=True)
        if index is not None:
            self._set_item(step.id, index, escalated=True)
        self._upsert(sa.ESCALATED.value_set(True))
        await workflow.execute_activity(
            "notify_operator",
            OperatorNotice(
                reference=self._request.reference, service=self._service.service,
                step_id=step.id, role=role, kind=kind,
                detail=detail,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=NOTICE_RETRY,
            summary=f"escalate {step.id} to {role or 'operators'}",
        )

    # ------------------------------------------------------------------ compensation

    async def _compensate(self) -> None:
        """Undo completed steps that declare how, in reverse order of completion."""
        assert self._planner is not None
        await workflow.wait_condition(lambda: all(t.done() for t in self._step_tasks.values()))
        for step_id in reversed(self._planner.completed_in_order()):
            step = self._service.step(step_id)
            if not isinstance(step, CallStep) or step.compensation is None:
                continue
            outcome = self._steps[step_id]
            undone = True
            for index, item in enumerate(outcome.items):
                if item.status != "completed":
                    continue
                undone = await self._undo_item(step, index, item) and undone
            if undone:
                self._set_step(step_id, status="compensated")

    async def _undo_item(self, step: CallStep, index: int, item: ItemOutcome) -> bool:
        assert step.compensation is not None
        activation = self._activation(None, False)
        activation["output"] = item.output or {}
        if step.for_each is not None:
            activation["item"] = None
        payload = self._mapping(step.compensation.input, activation)
        call = self._call_input(step, item.key, operation=step.compensation.operation,
                                action="operation", payload=payload, suffix="undo")
        try:
            await self._execute(step, call)
        except ActivityError as err:
            reason, _ = _failure_reason(err)
            self._compensations.append(CompensationOutcome(
                step_id=step.id, item_key=item.key, operation=step.compensation.operation,
                status="failed", reason=reason))
            return False
        self._set_item(step.id, index, status="compensated")
        self._compensations.append(CompensationOutcome(
            step_id=step.id, item_key=item.key, operation=step.compensation.operation,
            status="undone"))
        return True

    # ------------------------------------------------------------------ continue-as-new

    def _should_continue_as_new(self) -> bool:
        if self._activities_in_flight or self._finished or self._halting is not None:
            return False
        info = workflow.info()
        limit = self._request.options.continue_as_new_after_events
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()

    def _carry(self) -> RequestInput:
        assert self._planner is not None
        return self._request.model_copy(update={
            "carried": CarriedState(
                steps=list(self._steps.values()),
                planner=dict(self._planner.snapshot()),
                outputs=self._outputs,
                halting=self._halting,
            ),
        })

    # ------------------------------------------------------------------ state helpers

    def _upsert(self, *updates: SearchAttributeUpdate[Any]) -> None:
        if self._request.options.search_attributes:
            workflow.upsert_search_attributes(list(updates))

    def _set_step(self, step_id: str, **update: Any) -> None:
        self._steps[step_id] = self._steps[step_id].model_copy(update=update)

    def _set_item(self, step_id: str, index: int, **update: Any) -> None:
        # The items list is updated in place: copying it on every change made a for_each of
        # N items cost O(N^2) per request (N = 500 in the benchmark).
        outcome = self._steps[step_id]
        before = outcome.items[index]
        after = before.model_copy(update=update)
        outcome.items[index] = after
        if before.status == after.status or "waiting" not in (before.status, after.status):
            return
        status = outcome.status
        if any(i.status == "waiting" for i in outcome.items) and status in ("running", "waiting"):
            status = "waiting"
        elif status == "waiting":
            status = "running"
        if status != outcome.status:
            self._steps[step_id] = outcome.model_copy(update={"status": status})

    def _set_item_attempts(self, step_id: str, item_key: str | None, attempts: int) -> None:
        index = self._index_of(step_id, item_key)
        if index is not None:
            current = self._steps[step_id].items[index].attempts
            self._set_item(step_id, index, attempts=max(current, attempts))

    def _set_waiting(self, step_id: str, item_key: str | None, waiting: Any) -> None:
        index = self._index_of(step_id, item_key)
        if index is not None:
            self._set_item(step_id, index, waiting_for=waiting)

    def _index_of(self, step_id: str, item_key: str | None) -> int | None:
        outcome = self._steps.get(step_id)
        if outcome is None or not outcome.items:
            return None
        index = self._item_index.get(step_id)
        if index is None or len(index) != len(outcome.items):
            index = self._item_index[step_id] = {i.key: n for n, i in enumerate(outcome.items)}
        return index.get(item_key)

    def _find_item(self, step_id: str, item_key: str | None) -> ItemOutcome | None:
        index = self._index_of(step_id, item_key)
        return None if index is None else self._steps[step_id].items[index]

    def _final_status(self) -> RequestStatus:
        if self._cancelled:
            return "cancelled"
        failed = [s for s in self._steps.values() if s.status == "failed"]
        if any(s.required for s in failed) or self._halting is not None:
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
        """Say what the request waits on: in the current details always, in the
        AgenciesAwaited search attribute only for waits beyond a prompt call.

        An agency is *awaited* while a branch waits on it for a callback or on the citizen's
        answer to it (or a caseworker's decision): the long waits operators search for. Prompt
        calls are not listed: doing so cost a visibility write each time one returned, the
        engine's largest extra server cost in the benchmark (docs/benchmarks.md). Requests
        started before this change carry ``awaited="busy"`` and keep the old meaning, so
        their histories replay unchanged.
        """
        busy = tuple(sorted({
            s.agency or "caseworker" for s in self._steps.values()
            if s.status in ("running", "waiting")
        }))
        if busy != self._busy:
            self._busy = busy
            workflow.set_current_details(
                "Waiting on: " + ", ".join(busy) + "." if busy else "Deciding next steps."
            )
        if self._request.options.awaited == "long_waits":
            awaited = tuple(sorted({
                s.agency or "caseworker" for s in self._steps.values() if s.status == "waiting"
            }))
        else:
            awaited = busy
        if awaited != self._awaited:
            self._awaited = awaited
            self._upsert(sa.AGENCIES_AWAITED.value_set(list(awaited)))

    def _waiting_descriptions(self) -> list[str]:
        described = []
        for s in self._steps.values():
            if s.status not in ("running", "waiting"):
                continue
            if s.kind == "decision":
                described.append(f"{s.step_id}: a caseworker's decision")
                continue
            for item in s.items:
                what = {"callback": "the agency's answer (callback)",
                        "information": "the citizen's answer to a request for information",
                        None: "the agency call"}.get(item.waiting_for, "the agency")
                label = f"{s.step_id}" + (f"[{item.key}]" if item.key is not None else "")
                described.append(f"{label}: {s.agency}: {what}")
        return described

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
            # The read model keeps no agency outputs: leave them out of the marker payload.
            steps=[_without_outputs(s) for s in self._steps.values()] if finished else [],
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


def _without_outputs(step: StepOutcome) -> StepOutcome:
    if not any(i.output for i in step.items):
        return step
    return step.model_copy(update={"items": [i.model_copy(update={"output": None})
                                             for i in step.items]})


def _deadline_of(step: Step) -> timedelta | None:
    if step.deadline is not None:
        return step.deadline.after
    if isinstance(step, DecisionStep):
        return step.due
    return None


def _deadline_action(step: Step) -> tuple[str, str | None]:
    if step.deadline is not None:
        return step.deadline.on_miss, step.deadline.notify
    return "escalate", step.role if isinstance(step, DecisionStep) else None


def _information_schema(fields: dict[str, Any]) -> DataSchema:
    return DataSchema(
        fields={name: FieldSpec.model_validate(spec) for name, spec in fields.items()}
    )


def _failure_reason(err: ActivityError) -> tuple[str, int]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
        attempts = int(details.get("attempt", 0) or 0)
        code = details.get("code")
        message = cause.message if not code else f"{cause.message} [{code}]"
        return message, attempts
    if cause is not None:
        return str(cause), 0
    return str(err), 0

