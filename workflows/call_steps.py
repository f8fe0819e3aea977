"""The call-step runner: one agency operation per item, driven to its end.

A call step has one item (or, with ``for_each``, one per value of the list, all at once).
Each item follows the agency contract (docs/agency-contract.md)::

    call ─▶ completed ───────────────────────────────────────────▶ item completed
       │ ─▶ cancelled ───────────────────────────────────────────▶ item cancelled
       │ ─▶ accepted (202) ─▶ wait for the agency's callback ─┐
       │ ─▶ needs_information ─▶ wait for the citizen's answer ─▶ call (information)
       │                         (answer_within; then fail or escalate)   │
       └─▶ failed for good (4xx, retries spent) ─▶ item failed            ▼
                                      the callback or the answer's call: again as above
    while waiting, the request stops or the step's deadline fails ─▶ withdraw:
       cancellable operation ─▶ call (cancel) ─▶ item cancelled
                                             └─▶ 409 too_late: the work was done ─▶ completed
       otherwise ─▶ item failed ("the agency cannot withdraw ...")

Every call carries the contract's idempotency key — request reference, step, item, and a
suffix per kind of call (``cancel``, ``info`` + the round, ``undo`` for the saga) — so a retry,
a replay or a second run after continue-as-new never makes a second effect. Failures are read
by their structured type and code (:mod:`workflows.failures`), never by message text.

The step completes when every item completed; its output is the list of item outputs
(``for_each``) or the one call's output. A step resumed after continue-as-new takes up each
item where it was: done items keep their output, waiting ones go on waiting, ended ones are
not called again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

from agency_kit.contract import idempotency_key
from definitions import expressions
from definitions.models import CallStep, DataSchema, FieldSpec
from runtime.messages import AgencyCallInput, AgencyCallResult, AgencyEndpoint, RequestInput
from runtime.metric_names import AGENCY_WAIT
from workflows import activity_options
from workflows.bindings import Bindings
from workflows.deadlines import Deadlines
from workflows.effects import Effects
from workflows.failures import read_failure
from workflows.state import Inbox, RequestState
from workflows.visibility import Visibility

CallAction = Literal["operation", "information", "cancel"]
ENDED = ("failed", "cancelled", "compensated")
"""Item states no branch acts on again."""


def information_schema(fields: dict[str, Any]) -> DataSchema:
    """The form an agency's request for information asks the citizen to fill in."""
    return DataSchema(
        fields={name: FieldSpec.model_validate(spec) for name, spec in fields.items()}
    )


class CallSteps:
    """Runs call steps of one request.

    Args:
        request: The request (snapshot of agencies, reference, callback URL, language).
        state: Where every item's progress is recorded.
        inbox: Callbacks and answers delivered by updates.
        bindings: Evaluates ``for_each``, ``item_key`` and ``input``.
        effects: Starts ``call_agency``.
        visibility: Told when an item starts waiting.
        deadlines: Escalates an unanswered request for information.
    """

    def __init__(
        self, request: RequestInput, state: RequestState, inbox: Inbox, bindings: Bindings,
        effects: Effects, visibility: Visibility, deadlines: Deadlines,
    ) -> None:
        self._request = request
        self._state = state
        self._inbox = inbox
        self._bindings = bindings
        self._effects = effects
        self._visibility = visibility
        self._deadlines = deadlines

    async def run(self, step: CallStep) -> bool:
        """Run (or resume) every item of the step; whether the step completed."""
        try:
            values, keys = self._bindings.items_of(step)
        except expressions.ExpressionError as exc:
            self._state.step_failed(step.id, f"for_each: {exc.reason}")
            return False
        self._state.items_planned(step.id, keys)
        results = await asyncio.gather(*(
            self._run_item(step, index, value, key)
            for index, (value, key) in enumerate(zip(values, keys, strict=True))
        ))
        self._state.step_output(step, [r for r in results if r is not None])
        final = self._state.steps[step.id]
        if any(i.status != "completed" for i in final.items) or (
                not final.items and step.for_each is None):
            first = next((i.reason for i in final.items if i.reason), None)
            self._state.step_failed(step.id, first)
            return False
        self._state.step_completed(step.id)
        return True

    def call_input(
        self, step: CallStep, key: str | None, *, operation: str, action: CallAction,
        payload: dict[str, Any], suffix: Sequence[str] = (),
    ) -> AgencyCallInput:
        """One call of the step's agency, under the idempotency key of its kind."""
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
            idempotency_key=idempotency_key(self._request.reference, step.id, key, *suffix),
            callback_url=self._request.callback_base_url if step.mode == "callback" else None,
            language=self._request.language,
            timeout_seconds=step.timeout.total_seconds(),
        )

    async def execute(self, step: CallStep, call: AgencyCallInput) -> AgencyCallResult:
        """Run ``call_agency`` and note its attempts on the item.

        Raises:
            ActivityError: the call failed for good.
        """
        agency_name = self._request.snapshot.agency(step.agency).name.get("en", step.agency)
        result = await self._effects.call_agency(
            call, activity_options.call_agency(step, call, agency_name)
        )
        self._state.item_attempts(call.step_id, call.item_key, result.attempts)
        return result

    # ------------------------------------------------------------------ one item

    async def _run_item(
        self, step: CallStep, index: int, value: Any, key: str | None
    ) -> dict[str, Any] | None:
        """Drive one agency call to its end; the output, or None when it did not complete."""
        item = self._state.steps[step.id].items[index]
        if item.status == "completed":
            return item.output or {}
        if item.status in ENDED:
            return None  # it ended before continue-as-new: never call the agency again
        result: AgencyCallResult | None = None
        if item.waiting_for is None:
            try:
                activation = (self._bindings.with_item(value) if step.for_each is not None
                              else self._bindings.activation())
                payload = Bindings.payload(step.input, activation)
            except expressions.ExpressionError as exc:
                self._state.item_failed(step.id, index, f"input: {exc.reason}")
                return None
            result = await self._call(step, index, self.call_input(
                step, key, operation=step.operation, action="operation", payload=payload))
            if result is None:
                return None
        while True:
            if result is not None:
                if result.status == "completed":
                    self._state.item_completed(step.id, index, result.agency_reference,
                                               result.output)
                    return result.output
                if result.status == "cancelled":
                    self._state.item_cancelled(step.id, index)
                    return None
                if result.status == "accepted":
                    self._state.item_waiting_for_callback(
                        step.id, index, result.agency_reference, workflow.now())
                else:
                    self._state.item_waiting_for_information(
                        step.id, index, result.agency_reference, result.fields, result.message,
                        workflow.now())
                self._visibility.publish_awaited(self._state.steps.values())
            if self._state.steps[step.id].items[index].waiting_for == "callback":
                result = await self._await_callback(step, index, key)
            else:
                result = await self._await_information(step, index, key)
            if result is None:
                return None

    async def _call(
        self, step: CallStep, index: int, call: AgencyCallInput
    ) -> AgencyCallResult | None:
        """Run the call; None (and the item failed, with the reason) when it did not succeed."""
        try:
            return await self.execute(step, call)
        except ActivityError as err:
            failure = read_failure(err)
            self._state.item_failed(step.id, index, failure.reason, attempts=failure.attempts)
            return None

    async def _await_callback(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        await workflow.wait_condition(
            lambda: self._inbox.has_callback(step.id, key) or self._state.stopped(step.id))
        callback = self._inbox.take_callback(step.id, key)
        if callback is None:
            return await self._withdraw(step, index, key)
        self._record_wait(step, index, "callback")
        if callback.status == "rejected":
            self._state.item_failed(
                step.id, index, f"{step.agency} rejected {step.operation}: {callback.reason}")
            return None
        return AgencyCallResult(
            status=callback.status, agency_reference=callback.agency_reference,
            output=callback.output, fields=callback.fields, message=callback.message,
            attempts=self._state.steps[step.id].items[index].attempts,
        )

    async def _await_information(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        policy = step.information
        try:
            await workflow.wait_condition(
                lambda: self._inbox.has_answer(step.id, key) or self._state.stopped(step.id),
                timeout=policy.answer_within,
                timeout_summary=f"{step.id}: citizen's answer due",
            )
        except TimeoutError:
            if policy.on_miss == "fail":
                self._state.item_failed(
                    step.id, index, "the citizen did not answer the request for information "
                    f"within {policy.answer_within}")
                return None
            await self._deadlines.escalate(step, "information_overdue", policy.notify,
                                           "request for information unanswered", index)
            await workflow.wait_condition(
                lambda: self._inbox.has_answer(step.id, key) or self._state.stopped(step.id))
        answers = self._inbox.take_answer(step.id, key)
        if answers is None:
            return await self._withdraw(step, index, key)
        self._record_wait(step, index, "information")
        agency_reference = self._state.steps[step.id].items[index].agency_reference
        rounds = self._state.item_answered(step.id, index)
        return await self._call(step, index, self.call_input(
            step, key, operation=step.operation, action="information",
            payload={"agency_reference": agency_reference, "answers": answers},
            suffix=("info", str(rounds)),
        ))

    async def _withdraw(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        """The request stopped (or the deadline failed) while this branch waited on an agency."""
        item = self._state.steps[step.id].items[index]
        operation = self._request.snapshot.agency(step.agency).operation(step.operation)
        why = self._state.why_stopped(step.id)
        if operation is None or not operation.cancellable or not item.agency_reference:
            self._state.item_failed(
                step.id, index, f"{why}; the agency cannot withdraw {step.operation}")
            return None
        try:
            result = await self.execute(step, self.call_input(
                step, key, operation=step.operation, action="cancel",
                payload={"agency_reference": item.agency_reference}, suffix=("cancel",),
            ))
        except ActivityError as err:
            failure = read_failure(err)
            if failure.too_late:
                self._state.item_completed_meanwhile(step.id, index)
                return None
            self._state.item_failed(
                step.id, index, f"{why}; withdrawing failed: {failure.reason}")
            return None
        self._state.item_cancelled(step.id, index, f"withdrawn ({why})")
        return result if result.status == "completed" else None

    def _record_wait(self, step: CallStep, index: int, waited_for: str) -> None:
        """Time this branch waited (on the agency's callback, or the citizen's answer).

        A workflow metric: not a command, and the SDK does not record it again on replay.
        """
        since = self._state.steps[step.id].items[index].waiting_since
        if since is None:
            return
        workflow.metric_meter().create_histogram_float(
            AGENCY_WAIT, "Time a request waited on an agency", "s"
        ).record((workflow.now() - since).total_seconds(), {
            "agency": step.agency, "operation": step.operation, "outcome": waited_for})
