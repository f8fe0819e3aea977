"""A decision step: the request waits for a caseworker of the step's role to decide.

::

    waiting ──▶ decide(approve)            ──▶ completed; output {decision, reason, decided_by}
       │    └─▶ decide(reject, with reason) ──▶ failed ("rejected by <role>: <reason>")
       └──────▶ the request stops, or the deadline fails ──▶ cancelled

The decision arrives as the ``decide`` update, whose validator (in the workflow) refuses a
wrong role, a rejection without a reason, and a second decision, before anything enters
history. A missed ``due`` escalates to the role (:mod:`workflows.deadlines`) and the step
goes on waiting unless its deadline says ``on_miss: fail``. The waiting step is written to
the read model when it starts waiting (the caseworkers' task list reads it there), and the
decided step at once (``record_progress``), with who decided.
"""

from __future__ import annotations

from temporalio import workflow

from definitions.models import DecisionStep
from workflows.citizen_emails import CitizenEmails
from workflows.recording import ProgressRecorder
from workflows.state import Inbox, RequestState
from workflows.visibility import Visibility


async def run_decision_step(
    step: DecisionStep, state: RequestState, inbox: Inbox, visibility: Visibility,
    recorder: ProgressRecorder, emails: CitizenEmails,
) -> bool:
    """Wait for the decision; whether the step completed (approved)."""
    state.step_waiting_for_decision(step.id)
    visibility.publish_awaited(state.steps.values())
    await recorder.decision_awaited(step.id)
    await workflow.wait_condition(lambda: step.id in inbox.decisions or state.stopped(step.id))
    decision = inbox.decisions.get(step.id)
    if decision is None:
        state.step_cancelled(step.id, state.halting or "deadline passed")
        return False
    if decision.approve:
        state.step_approved(step.id, decision)
    else:
        state.step_rejected(step.id, decision)
    await recorder.step_changed(
        step.id, "decision_approved" if decision.approve else "decision_rejected")
    emails.decided(step, decision)
    return decision.approve
