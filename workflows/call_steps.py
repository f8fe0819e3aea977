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

A callback can come **early**: the agency accepted an attempt whose answer never reached the
workflow, and called back while the call is still being retried. The workflow keeps it
(:mod:`workflows.callbacks`, in the :class:`~workflows.state.Inbox`) and applies it here
exactly once, when the call's own answer is known::

    call answers accepted (202)            ─▶ the kept callback is applied at once (no wait)
    call answers completed / needs_information / cancelled,
      fails for good, or is withdrawn       ─▶ the kept callback is dropped, with a log line
                                               (the call's own answer is the outcome)
    withdrawal answers too_late             ─▶ a kept "completed" callback gives the output

While the branch waits for the citizen's answer, a callback (the agency settled it without the
answer) is applied instead. The same loop carries the information rounds: the answer's call
may itself be accepted, and its callback may come early too.

Each applied message — a callback, the citizen's answer — is written to the read model (one
``record_progress`` local activity, :class:`~workflows.recording.ProgressRecorder`) before
the branch goes on, so the read model follows the request as it runs.

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
from datetime import datetime
from typing import Any, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

from agency_kit.contract import idempotency_key
from definitions import expressions
from definitions.models import CallStep, DataSchema, FieldSpec
from runtime.messages import (
    AgencyCallback,
    AgencyCallInput,
    AgencyCallResult,
    AgencyEndpoint,
    RequestInput,
)
from runtime.metric_names import AGENCY_WAIT
from workflows import activity_options
from workflows.bindings import Bindings
from workflows.citizen_emails import CitizenEmails
from workflows.deadlines import Deadlines
from workflows.effects import Effects
from workflows.failures import read_failure
from workflows.recording import ProgressRecorder
from workflows.state import Inbox, RequestState
from workflows.visibility import Visibility

CallAction = Literal["operation", "information", "cancel"]
ENDED = ("failed", "cancelled", "compensated")
"""Item states no branch acts on again."""
KEPT_CALLBACK_COMPLETES_WITHDRAWAL = "kept-callback-completes-withdrawal"
"""Patch id: a kept "completed" callback gives a too-late withdrawal its output (never rename)."""
CALLBACK_URL_EXPIRES_AFTER_DEADLINE = "callback-url-expires-after-deadline"
"""Patch id: a call of a step with a deadline names it, so its callback URL expires a grace
period after the deadline (never rename)."""


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
        recorder: Writes an item's change to the read model after a message landed.
        emails: Tells the citizen an agency asks for information.
    """

    def __init__(
        self, request: RequestInput, state: RequestState, inbox: Inbox, bindings: Bindings,
        effects: Effects, visibility: Visibility, deadlines: Deadlines,
        recorder: ProgressRecorder, emails: CitizenEmails,
    ) -> None:
        self._request = request
        self._state = state
        self._inbox = inbox
        self._bindings = bindings
        self._effects = effects
        self._visibility = visibility
        self._deadlines = deadlines
        self._recorder = recorder
        self._emails = emails

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
                keys=agency.keys,
            ),
            operation=operation,
            action=action,
            payload=payload,
            idempotency_key=idempotency_key(self._request.reference, step.id, key, *suffix),
            callback_url=self._request.callback_base_url if step.mode == "callback" else None,
            language=self._request.language,
            timeout_seconds=step.timeout.total_seconds(),
            deadline_at=self._deadline_for_callback(step),
        )

    def _deadline_for_callback(self, step: CallStep) -> datetime | None:
        """The step's deadline, named on its calls since the patch (histories before it
        scheduled the same calls without one)."""
        deadline = self._state.steps[step.id].deadline_at
        if deadline is None or not workflow.patched(CALLBACK_URL_EXPIRES_AFTER_DEADLINE):
            return None
        return deadline

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
        message: str | None = None  # the audit kind of the message `result` came from, if any
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
            if result is not None or message is not None:  # else: resumed, still waiting
                if result is not None and message is None:  # a call's answer
                    result, message = self._overtaken(step, index, key, result)
                waits = result is not None and self._take(step, index, result)
                if message is not None:
                    await self._recorder.item_changed(step.id, index, message)
                    message = None
                if not waits:
                    ended = self._state.steps[step.id].items[index]
                    return ended.output if ended.status == "completed" else None
            if self._state.steps[step.id].items[index].waiting_for == "callback":
                result, message = await self._await_callback(step, index, key)
            else:
                result, message = await self._await_information(step, index, key)
            if result is None and message is None:
                return None

    def _take(self, step: CallStep, index: int, result: AgencyCallResult) -> bool:
        """Record a call's (or a callback's) answer on the item; whether it now waits."""
        if result.status == "completed":
            self._state.item_completed(step.id, index, result.agency_reference, result.output)
            return False
        if result.status == "cancelled":
            self._state.item_cancelled(step.id, index)
            return False
        if result.status == "accepted":
            self._state.item_waiting_for_callback(
                step.id, index, result.agency_reference, workflow.now())
        else:
            self._state.item_waiting_for_information(
                step.id, index, result.agency_reference, result.fields, result.message,
                workflow.now())
            self._emails.information_requested(step, index)
        self._visibility.publish_awaited(self._state.steps.values())
        return True

    def _overtaken(
        self, step: CallStep, index: int, key: str | None, result: AgencyCallResult
    ) -> tuple[AgencyCallResult | None, str | None]:
        """A call's answer — or, when the agency's callback overtook its own 202 (the call was
        retried after the agency had accepted it), that callback, applied at once.

        Any other answer makes a kept callback moot: the call's own answer is the outcome.
        """
        if result.status != "accepted":
            self._drop_kept(step, index, key, f"the call answered {result.status}")
            return result, None
        early = self._inbox.take_callback(step.id, key)
        if early is None:
            return result, None
        self._state.item_accepted(step.id, index, result.agency_reference)
        return self._from_callback(step, index, early)

    def _from_callback(
        self, step: CallStep, index: int, callback: AgencyCallback
    ) -> tuple[AgencyCallResult | None, str]:
        """Apply a callback: its result (None for a rejection: the item failed) and the
        message's audit kind. The item remembers it, so a copy is recognised later."""
        item = self._state.steps[step.id].items[index]
        self._state.item_callback_settled(
            step.id, index, callback.digest(item.information_rounds))
        kind = f"callback_{callback.status}"
        if callback.status == "rejected":
            self._state.item_failed(
                step.id, index, f"{step.agency} rejected {step.operation}: {callback.reason}")
            return None, kind
        return AgencyCallResult(
            status=callback.status, agency_reference=callback.agency_reference,
            output=callback.output, fields=callback.fields, message=callback.message,
            attempts=item.attempts,
        ), kind

    def _drop_kept(self, step: CallStep, index: int, key: str | None, why: str) -> None:
        """Drop a kept callback whose call's outcome is known otherwise (answered, failed,
        withdrawn); the item remembers it, so its copies are answered as received."""
        kept = self._inbox.take_callback(step.id, key)
        if kept is None:
            return
        item = self._state.steps[step.id].items[index]
        self._state.item_callback_settled(step.id, index, kept.digest(item.information_rounds))
        workflow.logger.info(
            "%s: a %s callback (item %d) dropped: %s", step.id, kept.status, index, why)

    async def _call(
        self, step: CallStep, index: int, call: AgencyCallInput
    ) -> AgencyCallResult | None:
        """Run the call; None (and the item failed, with the reason) when it did not succeed."""
        try:
            return await self.execute(step, call)
        except ActivityError as err:
            failure = read_failure(err)
            self._state.item_failed(step.id, index, failure.reason, attempts=failure.attempts)
            self._drop_kept(step, index, call.item_key, "the call failed")
            return None

    async def _await_callback(
        self, step: CallStep, index: int, key: str | None
    ) -> tuple[AgencyCallResult | None, str | None]:
        await workflow.wait_condition(
            lambda: self._inbox.has_callback(step.id, key) or self._state.stopped(step.id))
        callback = self._inbox.take_callback(step.id, key)
        if callback is None:
            return await self._withdraw(step, index, key), None
        self._record_wait(step, index, "callback")
        return self._from_callback(step, index, callback)

    async def _await_information(
        self, step: CallStep, index: int, key: str | None
    ) -> tuple[AgencyCallResult | None, str | None]:
        """Wait for the citizen's answer and send it; a callback meanwhile (the agency
        settled it without the answer) is applied instead."""
        policy = step.information

        def arrived() -> bool:
            return (self._inbox.has_answer(step.id, key) or self._inbox.has_callback(step.id, key)
                    or self._state.stopped(step.id))

        try:
            await workflow.wait_condition(
                arrived, timeout=policy.answer_within,
                timeout_summary=f"{step.id}: citizen's answer due",
            )
        except TimeoutError:
            if policy.on_miss == "fail":
                self._state.item_failed(
                    step.id, index, "the citizen did not answer the request for information "
                    f"within {policy.answer_within}")
                return None, None
            await self._deadlines.escalate(step, "information_overdue", policy.notify,
                                           "request for information unanswered", index)
            await workflow.wait_condition(arrived)
        answers = self._inbox.take_answer(step.id, key)
        if answers is None:
            callback = self._inbox.take_callback(step.id, key)
            if callback is not None:
                return self._from_callback(step, index, callback)
            return await self._withdraw(step, index, key), None
        self._record_wait(step, index, "information")
        agency_reference = self._state.steps[step.id].items[index].agency_reference
        rounds = self._state.item_answered(step.id, index)
        await self._recorder.item_changed(step.id, index, "information_answered")
        return await self._call(step, index, self.call_input(
            step, key, operation=step.operation, action="information",
            payload={"agency_reference": agency_reference, "answers": answers},
            suffix=("info", str(rounds)),
        )), None

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
            self._drop_kept(step, index, key, "the branch stopped")
            return None
        try:
            result = await self.execute(step, self.call_input(
                step, key, operation=step.operation, action="cancel",
                payload={"agency_reference": item.agency_reference}, suffix=("cancel",),
            ))
        except ActivityError as err:
            failure = read_failure(err)
            if failure.too_late:
                return self._completed_meanwhile(step, index, key)
            self._state.item_failed(
                step.id, index, f"{why}; withdrawing failed: {failure.reason}")
            self._drop_kept(step, index, key, "withdrawing failed")
            return None
        self._state.item_cancelled(step.id, index, f"withdrawn ({why})")
        self._drop_kept(step, index, key, "the call was withdrawn")
        return result if result.status == "completed" else None

    def _completed_meanwhile(
        self, step: CallStep, index: int, key: str | None
    ) -> AgencyCallResult | None:
        """Too late to withdraw: the agency finished. Its callback, if it arrived during the
        withdrawal and is kept, says with what output (which the saga's undo may need)."""
        kept = self._inbox.kept_callback(step.id, key)
        # Runs before this rule could hold such a callback too (accepted while withdrawing),
        # and its output may decide a later step's `when`: replay them as they ran.
        if kept is not None and kept.status == "completed" \
                and workflow.patched(KEPT_CALLBACK_COMPLETES_WITHDRAWAL):
            self._inbox.take_callback(step.id, key)
            completed, _ = self._from_callback(step, index, kept)
            return completed
        self._drop_kept(step, index, key, "the agency had finished")
        self._state.item_completed_meanwhile(step.id, index)
        return None

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
