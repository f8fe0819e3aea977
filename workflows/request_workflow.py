"""`CitizenRequestWorkflow`: one generic workflow that interprets any service definition.

This module is the wiring only — entry points, the query, the updates with their validators
and the continue-as-new loop; each concern has a module of its own::

    planner           which step may run next (pure)
    call_steps        an agency call per item: callback, information, withdraw
    callbacks         which callbacks are taken, kept (early), recognised again, refused
    decision_steps    a caseworker's decision
    deadlines         durable timers and escalation
    saga              compensation, newest first
    state             steps, items, outputs, stopping reason (typed mutators)
    bindings          what CEL expressions see; input mappings
    effects           every activity, counted for the quiet-moment check
    activity_options  timeouts, retry policies, summaries
    failures          reading an activity's failure by type and code
    visibility        search attributes, current details, the query's words
    recording         the read model's row at start and end, and what messages changed
    citizen_emails    emails to the citizen: information requested, decided, finished

It never reads the catalog: the definition snapshot (with its content hash) is part of the
input, so editing a YAML never changes a request in flight. The planner says which steps are
ready; each ready step runs as its own asyncio task (deterministic under Temporal), so
independent steps run concurrently and for_each items fan out together.

Long-running interactions are carried by Temporal's own mechanisms:
- agency callbacks, citizens' answers, caseworkers' decisions and cancellation arrive as
  **updates with validators**: a late, unexpected or malformed message is refused before it
  enters history, and the caller gets a clear, synchronous error; a callback that comes
  before its call's answer is kept, and a copy of one already received is answered
  ``already_received``;
- deadlines are **durable timers** (no polling);
- compensation is a saga of ordinary, idempotent agency-call activities in reverse order;
- long waits **continue as new** at a quiet moment (no activity or handler in flight, no
  callback kept), carrying the full state.

Deterministic by construction: no I/O, clocks or randomness here; time is `workflow.now()`,
side effects are activities referred to by name (this room never imports `activities`).
The registered names (``CitizenRequest``, ``progress``, ``agency_callback``,
``answer_information``, ``decide``, ``cancel``) are part of every history: never rename them.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from definitions import expressions
    from definitions.models import CallStep, DecisionStep
    from definitions.submission import SubmissionInvalid, validate_submission
    from runtime.messages import (
        ALREADY_RECEIVED,
        INVALID_ANSWER,
        NOT_EXPECTED,
        AgencyCallback,
        CancelRequest,
        CaseworkerDecision,
        DecisionView,
        InformationAnswer,
        RequestInput,
        RequestProgress,
        RequestResult,
    )
    from workflows import callbacks
    from workflows.bindings import Bindings
    from workflows.call_steps import CallSteps, information_schema
    from workflows.citizen_emails import CitizenEmails
    from workflows.deadlines import Deadlines, deadline_of
    from workflows.decision_steps import run_decision_step
    from workflows.effects import Effects
    from workflows.planner import Decision, Planner, PlanStep
    from workflows.recording import ProgressRecorder, request_record
    from workflows.saga import Saga
    from workflows.state import Inbox, RequestState
    from workflows.visibility import Visibility, waiting_descriptions


@workflow.defn(name="CitizenRequest")
class CitizenRequestWorkflow:
    @workflow.init
    def __init__(self, request: RequestInput) -> None:
        self._request = request
        self._service = request.snapshot.service
        carried = request.carried
        self._state = (RequestState.new(self._service) if carried is None
                       else RequestState.restore(carried))
        self._inbox = Inbox()
        self._effects = Effects()
        self._visibility = Visibility(request.options)
        self._bindings = Bindings(request, self._state)
        self._deadlines = Deadlines(request, self._state, self._visibility, self._effects)
        self._recorder = ProgressRecorder(request, self._state, self._effects)
        self._emails = CitizenEmails(request, self._state, self._bindings, self._effects)
        self._calls = CallSteps(request, self._state, self._inbox, self._bindings,
                                self._effects, self._visibility, self._deadlines,
                                self._recorder, self._emails)
        self._saga = Saga(request, self._state, self._bindings, self._calls)
        self._planner: Planner | None = None
        self._finished = False
        self._step_tasks: dict[str, asyncio.Task[None]] = {}
        # asyncio keeps only weak references to tasks: hold the deadline watchers here.
        self._watchers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        if request.carried is None:
            if not request.options.recorded_at_submit:
                await self._effects.record_request(
                    request_record(request, self._state, finished=False))
            self._planner = Planner.from_service(self._service, self._bindings.condition)
            self._apply(self._planner.start())
        else:
            self._planner = Planner.restore(
                self._service.steps, self._bindings.condition, request.carried.planner
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
                workflow.continue_as_new(self._request.model_copy(
                    update={"carried": self._state.carry(self._planner.snapshot())}))
        if self._state.halting is not None:
            await workflow.wait_condition(
                lambda: all(t.done() for t in self._step_tasks.values()))
            await self._saga.compensate(self._planner.completed_in_order())
        self._visibility.finished(self._state.finish())
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self._effects.record_request(request_record(request, self._state, finished=True))
        await self._emails.finished()
        return self._state.result(request)

    @workflow.query(name="progress")
    def progress(self) -> RequestProgress:
        return RequestProgress(
            reference=self._request.reference,
            service=self._service.service,
            content_hash=self._request.snapshot.content_hash,
            status=self._state.status,
            steps=list(self._state.steps.values()),
            waiting=waiting_descriptions(self._state.steps.values()),
        )

    @workflow.query(name="decision_role")
    def decision_role(self, step_id: str) -> str | None:
        """The role that may decide ``step_id`` in the definition this request runs; None when
        it is no decision step of it. The front door checks a caseworker's token against it
        before it sends the decision (a query: nothing enters history)."""
        for step in self._service.steps:
            if step.id == step_id and isinstance(step, DecisionStep):
                return step.role
        return None

    @workflow.query(name="decision_view")
    def decision_view(self, step_id: str) -> DecisionView | None:
        """What the caseworker deciding ``step_id`` is shown: its ``show`` expressions over
        the request as it is now; None when it is no decision step of this request's
        definition. Personal data: the front door asks only for a caseworker holding the
        step's role (a query: nothing enters history)."""
        step = self._service.step(step_id)
        outcome = self._state.steps.get(step_id)
        if not isinstance(step, DecisionStep) or outcome is None:
            return None
        activation = self._bindings.activation()
        shown: dict[str, object] = {}
        unavailable: dict[str, str] = {}
        for name, expression in step.show.items():
            try:
                shown.update(Bindings.payload({name: expression}, activation))
            except expressions.ExpressionError as exc:
                unavailable[name] = exc.reason
        return DecisionView(service=self._service.service, step_id=step_id, role=step.role,
                            status=outcome.status,
                            show=shown, unavailable=unavailable)

    # ------------------------------------------------------------------ messages in
    # Updates are registered under their method names, which every history holds: never
    # rename them. (``name=`` would say so, but the SDK then types the result as a coroutine,
    # and typed handles — ``execute_update(CitizenRequestWorkflow.decide, ...)`` — need it.)

    @workflow.update
    async def agency_callback(self, callback: AgencyCallback) -> str:
        item = self._state.find_item(callback.step_id, callback.item_key)
        assert item is not None  # the validator refuses a callback for no call
        if callbacks.is_copy(item, self._inbox, callback):
            return ALREADY_RECEIVED
        self._inbox.put_callback(callback)
        self._state.item_message_arrived(callback.step_id, callback.item_key)
        return "accepted"

    @agency_callback.validator
    def _check_callback(self, callback: AgencyCallback) -> None:
        callbacks.admit(self._state, self._inbox, callback)

    @workflow.update
    async def answer_information(self, answer: InformationAnswer) -> str:
        item = self._state.find_item(answer.step_id, answer.item_key)
        assert item is not None and item.information_fields is not None
        self._inbox.put_answer(answer.step_id, answer.item_key, validate_submission(
            information_schema(item.information_fields), answer.answers))
        self._state.item_message_arrived(answer.step_id, answer.item_key)
        return "accepted"

    @answer_information.validator
    def _check_answer(self, answer: InformationAnswer) -> None:
        item = self._state.find_item(answer.step_id, answer.item_key)
        if item is None or item.waiting_for != "information" or not item.information_fields:
            raise ApplicationError(
                f"step {answer.step_id!r} is not waiting for information", type=NOT_EXPECTED
            )
        try:
            validate_submission(information_schema(item.information_fields), answer.answers)
        except SubmissionInvalid as exc:
            raise ApplicationError(
                "the answer does not match the requested fields",
                {"errors": [{"loc": list(e.loc), "msg": e.message} for e in exc.errors]},
                type=INVALID_ANSWER,
            ) from exc

    @workflow.update
    async def decide(self, decision: CaseworkerDecision) -> str:
        self._inbox.put_decision(decision)
        return "recorded"

    @decide.validator
    def _check_decision(self, decision: CaseworkerDecision) -> None:
        step = self._service.step(decision.step_id)
        outcome = self._state.steps.get(decision.step_id)
        if not isinstance(step, DecisionStep) or outcome is None or outcome.status != "waiting" \
                or decision.step_id in self._inbox.decisions:
            raise ApplicationError(
                f"step {decision.step_id!r} is not waiting for a decision", type=NOT_EXPECTED
            )
        if decision.role != step.role:
            raise ApplicationError(
                f"only the role {step.role!r} may decide {step.id!r}", type=INVALID_ANSWER
            )
        if not decision.approve and not decision.reason:
            raise ApplicationError("a rejection needs a reason", type=INVALID_ANSWER)

    @workflow.update
    async def cancel(self, request: CancelRequest) -> str:
        self._halt(f"cancelled: {request.reason}", cancelled=True)
        return "cancelling"

    @cancel.validator
    def _check_cancel(self, request: CancelRequest) -> None:
        if self._state.halting is not None or self._finished:
            raise ApplicationError("the request is already finishing", type=NOT_EXPECTED)

    # ------------------------------------------------------------------ interpreting

    def _apply(self, decision: Decision) -> None:
        """Record what the planner decided and start the ready steps."""
        for skip in decision.skipped:
            self._state.step_skipped(skip.step_id, skip.reason)
        for step_id in decision.ready:
            step = self._service.step(step_id)
            assert step is not None
            started = workflow.now()
            deadline = deadline_of(step)
            self._state.step_started(
                step_id, started, started + deadline if deadline is not None else None)
            self._launch(step)
        if decision.finished:
            self._finished = True
        self._visibility.publish_awaited(self._state.steps.values())

    def _launch(self, step: PlanStep) -> None:
        self._step_tasks[step.id] = asyncio.create_task(self._run_step(step))
        if self._state.steps[step.id].deadline_at is not None:
            self._watchers.add(asyncio.create_task(self._deadlines.watch(step)))

    def _resume(self) -> None:
        """After continue-as-new: re-arm every step that was running or waiting."""
        for outcome in self._state.steps.values():
            if outcome.status in ("running", "waiting"):
                step = self._service.step(outcome.step_id)
                assert step is not None
                self._launch(step)
        self._visibility.publish_awaited(self._state.steps.values())

    async def _run_step(self, step: PlanStep) -> None:
        assert self._planner is not None
        if isinstance(step, CallStep):
            ok = await self._calls.run(step)
        else:
            ok = await run_decision_step(step, self._state, self._inbox, self._visibility,
                                         self._recorder, self._emails)
        self._apply(self._planner.record(step.id, "completed" if ok else "failed"))
        if not ok and step.required and self._state.halting is None:
            self._halt(f"required step {step.id!r} failed")

    def _halt(self, reason: str, *, cancelled: bool = False) -> None:
        """Launch nothing more; waiting branches withdraw; completed work is undone later."""
        assert self._planner is not None
        self._state.halt(reason, cancelled=cancelled)
        self._apply(self._planner.stop())
        self._visibility.stopping(reason)

    def _should_continue_as_new(self) -> bool:
        """A quiet moment past the history limit: no activity in flight, no callback kept for
        a call whose answer is not known yet (the inbox is not carried), nothing stopping."""
        if self._effects.in_flight or self._inbox.holds_callbacks or self._finished \
                or self._state.halting is not None:
            return False
        info = workflow.info()
        limit = self._request.options.continue_as_new_after_events
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()
