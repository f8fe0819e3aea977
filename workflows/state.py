"""The state of one request, and the only code that changes it.

This is what the ``progress`` query shows, what the result returns and what continue-as-new
carries: one :class:`StepOutcome` per step, with one :class:`ItemOutcome` per agency call (a
``for_each`` step has one per item), the outputs later steps read, why the request is stopping,
and what the saga undid. Every change is a named mutator below, so a reader finds every way an
item can end in one screen. An item moves like this::

    running ──▶ completed ──▶ compensated      (the saga undid it)
      ▲  │  └─▶ failed                           (rejected, unreachable, bad input, deadline)
      │  │  └─▶ cancelled                        (the agency withdrew it)
      │  ▼
    waiting ─▶ completed / failed / cancelled    (for a callback, or the citizen's answer)

and a step follows its items: *waiting* while any item waits (and the step still runs),
*running* otherwise, until the step's runner records how it ended.

Rules kept here, not by the callers:

- an item's ``agency_reference`` survives an answer that does not repeat it, except when
  the agency accepts a call (202), whose reference is always the agency's new one;
- ``attempts`` only grows when a call succeeds; a failed call records its own attempt count;
- a message that arrived by update (callback, answer) clears ``waiting_for`` at once, so a
  second answer is refused by the validator before the branch has taken the first;
- ``callback_digest`` names the last callback the item settled, so a copy sent again is
  recognised (:mod:`workflows.callbacks`).

Beside it, :class:`Inbox` holds what updates delivered (callbacks, answers, decisions) until
the branch takes it. A waiting branch takes its message in the same workflow task as the
handler that filed it; a callback that came *early* — while its call is still in flight or
being retried (:mod:`workflows.callbacks`) — is kept until the call's outcome is known. The
inbox is not carried across continue-as-new: that waits until every update handler has
finished, no activity is in flight and no callback is kept.

Cost: an item changes in place in its step's list — copying the list on every change made a
``for_each`` of N items cost O(N²) per request (N = 500 in the benchmark) — and is found
through an index of item keys, built once per step.

Deterministic: plain data, no clock (callers pass ``workflow.now()``), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from definitions.models import CallStep, ServiceDefinition
from runtime.messages import (
    AgencyCallback,
    CarriedState,
    CaseworkerDecision,
    CompensationOutcome,
    ItemOutcome,
    RequestInput,
    RequestResult,
    RequestStatus,
    StepOutcome,
    StepStatus,
)


class RequestState:
    """Steps, items, outputs and the stopping reason of one request (one run of it).

    Args:
        steps: Outcome of every step by id, in definition order (that order orders the
            result and the query).
        outputs: Outputs of completed steps by step id (a list for ``for_each`` steps): what
            CEL expressions of later steps read as ``steps.<id>.output``.
        halting: Why the request stopped launching steps, when it has.
    """

    def __init__(
        self, steps: dict[str, StepOutcome], outputs: dict[str, Any], halting: str | None
    ) -> None:
        self.steps = steps
        self.outputs = outputs
        self.halting = halting
        self.cancelled = False
        """The citizen cancelled (the request ends ``cancelled``, not ``failed``)."""
        self.status: RequestStatus = "running"
        self.deadline_failed: set[str] = set()
        """Steps whose ``on_miss: fail`` deadline passed: their waiting branches withdraw."""
        self.compensations: list[CompensationOutcome] = []
        self._item_index: dict[str, dict[str | None, int]] = {}

    @classmethod
    def new(cls, service: ServiceDefinition) -> RequestState:
        """Every step pending, nothing output, nothing stopping."""
        return cls(
            {
                step.id: StepOutcome(
                    step_id=step.id,
                    kind=step.kind,
                    agency=step.agency if isinstance(step, CallStep) else None,
                    operation=step.operation if isinstance(step, CallStep) else None,
                    required=step.required,
                )
                for step in service.steps
            },
            {},
            None,
        )

    @classmethod
    def restore(cls, carried: CarriedState) -> RequestState:
        """The state a previous run carried across continue-as-new."""
        return cls({s.step_id: s for s in carried.steps}, dict(carried.outputs), carried.halting)

    def carry(self, planner: Mapping[str, str]) -> CarriedState:
        """What the next run needs (the planner's snapshot also orders the saga)."""
        return CarriedState(
            steps=list(self.steps.values()),
            planner=dict(planner),
            outputs=self.outputs,
            halting=self.halting,
        )

    # ------------------------------------------------------------------ steps

    def step_started(self, step_id: str, at: datetime, deadline_at: datetime | None) -> None:
        self._set_step(step_id, {"status": "running", "started_at": at,
                                 "deadline_at": deadline_at})

    def step_skipped(self, step_id: str, reason: str) -> None:
        self._set_step(step_id, {"status": "skipped", "reason": reason})

    def step_waiting_for_decision(self, step_id: str) -> None:
        self._set_step(step_id, {"status": "waiting"})

    def step_completed(self, step_id: str) -> None:
        self._set_step(step_id, {"status": "completed"})

    def step_failed(self, step_id: str, reason: str | None) -> None:
        self._set_step(step_id, {"status": "failed", "reason": reason})

    def step_cancelled(self, step_id: str, reason: str) -> None:
        self._set_step(step_id, {"status": "cancelled", "reason": reason})

    def step_approved(self, step_id: str, decision: CaseworkerDecision) -> None:
        self.outputs[step_id] = {"decision": "approved", "reason": decision.reason,
                                 "decided_by": decision.decided_by}
        self._set_step(step_id, {"status": "completed", "decided_by": decision.decided_by,
                                 "reason": decision.reason})

    def step_rejected(self, step_id: str, decision: CaseworkerDecision) -> None:
        self._set_step(step_id, {"status": "failed", "decided_by": decision.decided_by,
                                 "reason": f"rejected by {decision.role}: {decision.reason}"})

    def step_escalated(self, step_id: str) -> None:
        self._set_step(step_id, {"escalated": True})

    def step_compensated(self, step_id: str) -> None:
        self._set_step(step_id, {"status": "compensated"})

    def step_output(self, step: CallStep, outputs: list[dict[str, Any]]) -> None:
        """A call step's outputs: the list for ``for_each``, else the one call's (if any)."""
        if step.for_each is not None:
            self.outputs[step.id] = outputs
        elif outputs:
            self.outputs[step.id] = outputs[0]

    # ------------------------------------------------------------------ items

    def items_planned(self, step_id: str, keys: Iterable[str | None]) -> None:
        """A call step's items, all running; after continue-as-new they exist already."""
        if not self.steps[step_id].items:
            self._set_step(step_id, {"items": [ItemOutcome(key=k, status="running")
                                               for k in keys]})

    def item_completed(
        self, step_id: str, index: int, agency_reference: str | None, output: dict[str, Any]
    ) -> None:
        before = self.steps[step_id].items[index]
        self._set_item(step_id, index, {
            "status": "completed", "waiting_for": None,
            "agency_reference": agency_reference or before.agency_reference, "output": output,
        })

    def item_completed_meanwhile(self, step_id: str, index: int) -> None:
        """A withdrawal came too late: the agency finished, so the effect is real (and undoable)."""
        self._set_item(step_id, index, {"status": "completed", "waiting_for": None})

    def item_failed(
        self, step_id: str, index: int, reason: str, *, attempts: int | None = None
    ) -> None:
        update: dict[str, Any] = {"status": "failed", "reason": reason, "waiting_for": None}
        if attempts is not None:
            update["attempts"] = attempts
        self._set_item(step_id, index, update)

    def item_cancelled(self, step_id: str, index: int, reason: str | None = None) -> None:
        update: dict[str, Any] = {"status": "cancelled", "waiting_for": None}
        if reason is not None:
            update["reason"] = reason
        self._set_item(step_id, index, update)

    def item_accepted(self, step_id: str, index: int, agency_reference: str | None) -> None:
        """The agency accepted the call (202) and its callback is here already: only the
        agency's new reference is kept, the item never waits."""
        self._set_item(step_id, index, {"agency_reference": agency_reference})

    def item_waiting_for_callback(
        self, step_id: str, index: int, agency_reference: str | None, since: datetime
    ) -> None:
        self._set_item(step_id, index, {
            "status": "waiting", "waiting_for": "callback",
            "agency_reference": agency_reference, "waiting_since": since,
        })

    def item_waiting_for_information(
        self, step_id: str, index: int, agency_reference: str | None,
        fields: dict[str, Any] | None, message: dict[str, str] | None, since: datetime,
    ) -> None:
        before = self.steps[step_id].items[index]
        self._set_item(step_id, index, {
            "status": "waiting", "waiting_for": "information",
            "agency_reference": agency_reference or before.agency_reference,
            "information_fields": fields or {}, "information_message": message,
            "waiting_since": since,
        })

    def item_answered(self, step_id: str, index: int) -> int:
        """The citizen answered: the item runs again while the answer goes to the agency.

        Returns the number of this round of information (1 for the first answer).
        """
        rounds = self.steps[step_id].items[index].information_rounds + 1
        self._set_item(step_id, index, {
            "status": "running", "information_rounds": rounds,
            "information_fields": None, "information_message": None,
        })
        return rounds

    def item_callback_settled(self, step_id: str, index: int, digest: str) -> None:
        """A callback for this item was applied, or dropped because the call answered first."""
        self._set_item(step_id, index, {"callback_digest": digest})

    def item_message_arrived(self, step_id: str, item_key: str | None) -> None:
        """A callback or an answer arrived for this item: it waits for nothing more."""
        index = self.index_of(step_id, item_key)
        if index is not None:
            self._set_item(step_id, index, {"waiting_for": None})

    def item_attempts(self, step_id: str, item_key: str | None, attempts: int) -> None:
        """A call succeeded after ``attempts`` attempts (the most any call of it needed)."""
        index = self.index_of(step_id, item_key)
        if index is not None:
            current = self.steps[step_id].items[index].attempts
            self._set_item(step_id, index, {"attempts": max(current, attempts)})

    def item_escalated(self, step_id: str, index: int) -> None:
        self._set_item(step_id, index, {"escalated": True})

    def item_compensated(self, step_id: str, index: int) -> None:
        self._set_item(step_id, index, {"status": "compensated"})

    def index_of(self, step_id: str, item_key: str | None) -> int | None:
        outcome = self.steps.get(step_id)
        if outcome is None or not outcome.items:
            return None
        index = self._item_index.get(step_id)
        if index is None or len(index) != len(outcome.items):
            index = self._item_index[step_id] = {i.key: n for n, i in enumerate(outcome.items)}
        return index.get(item_key)

    def find_item(self, step_id: str, item_key: str | None) -> ItemOutcome | None:
        index = self.index_of(step_id, item_key)
        return None if index is None else self.steps[step_id].items[index]

    # ------------------------------------------------------------------ stopping, saga

    def halt(self, reason: str, *, cancelled: bool) -> None:
        self.halting = reason
        self.cancelled = cancelled

    def deadline_missed(self, step_id: str) -> None:
        self.deadline_failed.add(step_id)

    def stopped(self, step_id: str) -> bool:
        """A branch of this step stops waiting: the request halts, or the step's deadline failed."""
        return self.halting is not None or step_id in self.deadline_failed

    def why_stopped(self, step_id: str) -> str:
        return "deadline passed" if step_id in self.deadline_failed else (self.halting or "")

    def compensation_undone(self, step_id: str, item_key: str | None, operation: str) -> None:
        self.compensations.append(CompensationOutcome(
            step_id=step_id, item_key=item_key, operation=operation, status="undone"))

    def compensation_failed(
        self, step_id: str, item_key: str | None, operation: str, reason: str
    ) -> None:
        self.compensations.append(CompensationOutcome(
            step_id=step_id, item_key=item_key, operation=operation, status="failed",
            reason=reason))

    # ------------------------------------------------------------------ the end

    def finish(self) -> RequestStatus:
        """Fix the final status: cancelled, failed (a required step, or halted), partially
        completed (an optional step failed) or completed."""
        failed = [s for s in self.steps.values() if s.status == "failed"]
        if self.cancelled:
            self.status = "cancelled"
        elif any(s.required for s in failed) or self.halting is not None:
            self.status = "failed"
        elif failed:
            self.status = "partially_completed"
        else:
            self.status = "completed"
        return self.status

    def agencies_contacted(self) -> int:
        """Agencies that gave at least one of this request's items a reference of theirs."""
        return len({
            s.agency for s in self.steps.values()
            if s.agency and any(i.agency_reference for i in s.items)
        })

    def result(self, request: RequestInput) -> RequestResult:
        service = request.snapshot.service
        return RequestResult(
            reference=request.reference,
            service=service.service,
            version=service.version,
            content_hash=request.snapshot.content_hash,
            status=self.status,
            steps=list(self.steps.values()),
            compensations=self.compensations,
            agencies_contacted=self.agencies_contacted(),
        )

    # ------------------------------------------------------------------ internals

    def _set_step(self, step_id: str, update: dict[str, Any]) -> None:
        self.steps[step_id] = self.steps[step_id].model_copy(update=update)

    def _set_item(self, step_id: str, index: int, update: dict[str, Any]) -> None:
        outcome = self.steps[step_id]
        before = outcome.items[index]
        after = before.model_copy(update=update)
        outcome.items[index] = after
        if before.status == after.status or "waiting" not in (before.status, after.status):
            return
        status: StepStatus = outcome.status
        if any(i.status == "waiting" for i in outcome.items) and status in ("running", "waiting"):
            status = "waiting"
        elif status == "waiting":
            status = "running"
        if status != outcome.status:
            self.steps[step_id] = outcome.model_copy(update={"status": status})


def _slot(step_id: str, item_key: str | None) -> tuple[str, str]:
    return step_id, item_key if item_key is not None else "-"


@dataclass
class Inbox:
    """Messages that arrived by update and wait for their branch to take them.

    An update handler only files the message; the branch waiting on that step (and item)
    wakes up, takes it, and acts. Taking removes it: each message is acted on once.
    """

    callbacks: dict[tuple[str, str], AgencyCallback] = field(default_factory=dict)
    answers: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    decisions: dict[str, CaseworkerDecision] = field(default_factory=dict)

    def put_callback(self, callback: AgencyCallback) -> None:
        self.callbacks[_slot(callback.step_id, callback.item_key)] = callback

    def has_callback(self, step_id: str, item_key: str | None) -> bool:
        return _slot(step_id, item_key) in self.callbacks

    def take_callback(self, step_id: str, item_key: str | None) -> AgencyCallback | None:
        return self.callbacks.pop(_slot(step_id, item_key), None)

    def kept_callback(self, step_id: str, item_key: str | None) -> AgencyCallback | None:
        """The callback filed for this item and not yet taken, if any (without taking it)."""
        return self.callbacks.get(_slot(step_id, item_key))

    @property
    def holds_callbacks(self) -> bool:
        """Some callback is kept for a branch that has not taken it yet."""
        return bool(self.callbacks)

    def put_answer(self, step_id: str, item_key: str | None, answers: dict[str, Any]) -> None:
        self.answers[_slot(step_id, item_key)] = answers

    def has_answer(self, step_id: str, item_key: str | None) -> bool:
        return _slot(step_id, item_key) in self.answers

    def take_answer(self, step_id: str, item_key: str | None) -> dict[str, Any] | None:
        return self.answers.pop(_slot(step_id, item_key), None)

    def put_decision(self, decision: CaseworkerDecision) -> None:
        self.decisions[decision.step_id] = decision
