"""Deadlines are durable timers; a missed one escalates once, and may fail the step.

A step's deadline is its ``deadline.after`` (a decision step without one: its ``due``),
counted from when the step started; ``deadline_at`` is kept in the step's outcome, so a run
after continue-as-new waits only for what is left. When the timer fires while the step is
still running or waiting::

    timer ──▶ escalate: step marked escalated, Escalated search attribute,
              notify_operator(role) ──▶ on_miss: escalate  the step goes on waiting
                                    └─▶ on_miss: fail      its waiting branches withdraw
                                                           (call steps) or end (decisions)

Each step escalates at most once: a step already marked escalated (by a run before
continue-as-new) arms no timer again. A citizen's unanswered request for information
escalates the same way (``information_overdue``), from the call-step runner.

The timer is a ``wait_condition`` with a timeout, so a step that ends first cancels it and
leaves nothing behind; its summary names the step in the Event History.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from temporalio import workflow

from definitions.models import DecisionStep
from runtime.messages import OperatorNotice, RequestInput
from workflows.effects import Effects
from workflows.planner import PlanStep
from workflows.state import RequestState
from workflows.visibility import Visibility

EscalationKind = Literal["deadline_missed", "information_overdue", "decision_overdue"]
SHORTEST_WAIT = timedelta(milliseconds=1)
"""A deadline already past (after continue-as-new) still fires through a timer."""


@dataclass(frozen=True, slots=True)
class DeadlineAction:
    """What a missed deadline does."""

    on_miss: Literal["escalate", "fail"]
    notify: str | None
    """The operator role told; None: operators in general."""


def deadline_of(step: PlanStep) -> timedelta | None:
    """The time a step is given from its start, if any."""
    if step.deadline is not None:
        return step.deadline.after
    if isinstance(step, DecisionStep):
        return step.due
    return None


def deadline_action(step: PlanStep) -> DeadlineAction:
    if step.deadline is not None:
        return DeadlineAction(step.deadline.on_miss, step.deadline.notify)
    return DeadlineAction("escalate", step.role if isinstance(step, DecisionStep) else None)


class Deadlines:
    """Watches steps' deadlines and escalates to operators.

    Args:
        request: The request (its reference and service go into notices).
        state: Where escalations and failed deadlines are recorded.
        visibility: Sets the ``Escalated`` search attribute.
        effects: Starts ``notify_operator``.
    """

    def __init__(
        self, request: RequestInput, state: RequestState, visibility: Visibility,
        effects: Effects,
    ) -> None:
        self._request = request
        self._state = state
        self._visibility = visibility
        self._effects = effects

    async def watch(self, step: PlanStep) -> None:
        """Wait for the step's deadline; if it ends first, nothing happens."""
        outcome = self._state.steps[step.id]
        if outcome.escalated or outcome.deadline_at is None:
            return
        remaining = max(outcome.deadline_at - workflow.now(), timedelta(0))
        try:
            await workflow.wait_condition(
                lambda: self._state.steps[step.id].status not in ("running", "waiting"),
                timeout=remaining if remaining > timedelta(0) else SHORTEST_WAIT,
                timeout_summary=f"{step.id}: deadline",
            )
            return
        except TimeoutError:
            pass
        action = deadline_action(step)
        kind: EscalationKind = (
            "decision_overdue" if isinstance(step, DecisionStep) else "deadline_missed"
        )
        await self.escalate(step, kind, action.notify, f"{step.id} missed its deadline")
        if action.on_miss == "fail":
            self._state.deadline_missed(step.id)

    async def escalate(
        self, step: PlanStep, kind: EscalationKind, role: str | None, detail: str,
        index: int | None = None,
    ) -> None:
        """Mark the step (and item) escalated and tell the operator role."""
        self._state.step_escalated(step.id)
        if index is not None:
            self._state.item_escalated(step.id, index)
        self._visibility.escalated()
        await self._effects.notify_operator(OperatorNotice(
            reference=self._request.reference, service=self._request.snapshot.service.service,
            step_id=step.id, role=role, kind=kind, detail=detail,
        ))
