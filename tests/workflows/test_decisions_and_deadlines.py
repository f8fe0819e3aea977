"""Caseworkers' decisions through validated updates; deadlines that escalate or fail."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from runtime.messages import (
    INVALID_ANSWER,
    NOT_EXPECTED,
    AgencyCallback,
    AgencyCallInput,
    AgencyCallResult,
    CaseworkerDecision,
    RequestProgress,
)
from tests.polling import eventually, progress_until
from tests.workflows.conftest import Harness, completed, service, waiting_for
from workflows import search_attributes as sa
from workflows.request_workflow import CitizenRequestWorkflow

REGISTER = {
    "id": "register", "agency": "registry", "operation": "register",
    "compensation": {"operation": "unregister", "input": {"reference": "request.reference"}},
}
LATER = {"id": "later", "agency": "registry", "operation": "stamp", "mode": "callback",
         "needs": ["approve"]}


def approval(due: str = "10d") -> dict[str, object]:
    return {"id": "approve", "kind": "decision", "needs": ["register"], "role": "officer",
            "due": due}


def decision(approve: bool, *, role: str = "officer", reason: str | None = None,
             by: str = "sam") -> CaseworkerDecision:
    return CaseworkerDecision(step_id="approve", approve=approve, reason=reason,
                              decided_by=by, role=role)


def decision_waiting(progress: RequestProgress) -> bool:
    return any(s.step_id == "approve" and s.status == "waiting" for s in progress.steps)


async def refused(update: Awaitable[str]) -> ApplicationError:
    """The validator's error behind a refused update."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await update
    assert isinstance(failed.value.cause, ApplicationError)
    return failed.value.cause


async def until_notified(harness: Harness, count: int) -> None:
    """Within 10 s, ``notify_operator`` has been called ``count`` times (or more)."""
    async def notified() -> None:
        assert len(harness.stubs.notices) >= count, harness.stubs.notices

    await eventually(notified, within_s=10, every_s=0.05)


class TestDecisions:
    async def test_overdue_decision_escalates_to_the_role_then_the_right_role_approves(
        self, harness: Harness
    ) -> None:
        """Past ``due`` the role is told once; a wrong role is refused; the officer's approval
        completes the step, and a second decision is refused."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.operation == "stamp":
                return AgencyCallResult(status="accepted", agency_reference="S-1")
            return completed(call)

        harness.stubs.answer = answer
        handle = await harness.start(service(REGISTER, approval(due="1s"), LATER))
        waiting = await progress_until(handle, decision_waiting, within_s=10, every_s=0.05)
        assert waiting.waiting == ["approve: a caseworker's decision"]
        await until_notified(harness, 1)
        assert [(n.kind, n.role) for n in harness.stubs.notices] == [
            ("decision_overdue", "officer")]

        wrong = await refused(handle.execute_update(CitizenRequestWorkflow.decide,
                                                    decision(True, role="clerk")))
        assert wrong.type == INVALID_ANSWER
        assert await handle.execute_update(
            CitizenRequestWorkflow.decide, decision(True, reason="all in order")) == "recorded"
        twice = await refused(handle.execute_update(CitizenRequestWorkflow.decide,
                                                    decision(True, by="kim")))
        assert twice.type == NOT_EXPECTED
        await progress_until(handle, waiting_for("later", "callback"), within_s=10, every_s=0.05)
        await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
            step_id="later", status="completed"))

        result = await harness.result(handle)
        assert result.status == "completed"
        approve = result.steps[1]
        assert (approve.status, approve.decided_by, approve.reason, approve.escalated) == (
            "completed", "sam", "all in order", True)
        assert len(harness.stubs.notices) == 1

    async def test_rejection_needs_a_reason_fails_the_request_and_undoes_the_first_step(
        self, harness: Harness
    ) -> None:
        """A rejection without a reason is refused; with one, the request fails, the step
        after it is skipped and the saga undoes the completed registration."""
        handle = await harness.start(service(REGISTER, approval(), LATER))
        await progress_until(handle, decision_waiting, within_s=10, every_s=0.05)
        no_reason = await refused(handle.execute_update(CitizenRequestWorkflow.decide,
                                                        decision(False)))
        assert no_reason.type == INVALID_ANSWER
        await handle.execute_update(CitizenRequestWorkflow.decide,
                                    decision(False, reason="no premises licence"))
        result = await harness.result(handle)
        assert result.status == "failed"
        register, approve, later = result.steps
        assert (approve.status, approve.reason) == (
            "failed", "rejected by officer: no premises licence")
        assert later.status == "skipped"
        assert register.status == "compensated"
        assert [(c.step_id, c.status) for c in result.compensations] == [("register", "undone")]


class TestDeadlines:
    async def test_a_missed_deadline_escalates_once_and_the_step_goes_on(
        self, harness: Harness
    ) -> None:
        """on_miss: escalate — the named role is told once, Escalated is set, and the late
        callback still completes the request."""
        async def accept(call: AgencyCallInput) -> AgencyCallResult:
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = accept
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
            "deadline": {"after": "1s", "on_miss": "escalate", "notify": "liaison"},
        }))
        await until_notified(harness, 1)
        progress = await progress_until(handle, lambda p: p.steps[0].escalated,
                                        within_s=10, every_s=0.05)
        assert progress.steps[0].status == "waiting"
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.ESCALATED) is True
        await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
            step_id="register", status="completed"))
        result = await harness.result(handle)
        assert result.status == "completed"
        assert [(n.kind, n.role, n.detail) for n in harness.stubs.notices] == [
            ("deadline_missed", "liaison", "register missed its deadline")]

    async def test_a_call_carries_its_steps_deadline_for_its_callback_url(
        self, harness: Harness
    ) -> None:
        """The call of a step with a deadline names it (its callback URL expires a grace period
        after it); a step without one names none."""
        async def accept(call: AgencyCallInput) -> AgencyCallResult:
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = accept
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
            "deadline": {"after": "3d", "on_miss": "escalate"},
        }, {"id": "stamp", "agency": "registry", "operation": "stamp", "mode": "callback"}))
        await progress_until(handle, lambda p: all(
            s.items and s.items[0].waiting_for == "callback" for s in p.steps),
            within_s=10, every_s=0.05)
        progress = await handle.query(CitizenRequestWorkflow.progress)
        register = next(s for s in progress.steps if s.step_id == "register")
        calls = {c.step_id: c for c in harness.stubs.calls_of("operation")}
        assert register.deadline_at is not None
        assert calls["register"].deadline_at == register.deadline_at
        assert calls["stamp"].deadline_at is None
        # both steps wait for days: the harness terminates the run (a cancel here raced its
        # teardown, which found it running and then completed)

    async def test_a_failing_deadline_withdraws_the_waiting_call(self, harness: Harness) -> None:
        """on_miss: fail — after the escalation the waiting call is withdrawn under its
        ``cancel`` key, and the request fails."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.action == "cancel":
                return AgencyCallResult(status="cancelled")
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = answer
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
            "deadline": {"after": "1s", "on_miss": "fail"},
        }))
        result = await harness.result(handle)
        assert result.status == "failed"
        item = result.steps[0].items[0]
        assert (item.status, item.reason) == ("cancelled", "withdrawn (deadline passed)")
        assert [(c.idempotency_key, c.payload) for c in harness.stubs.calls_of("cancel")] == [
            (f"{handle.id}:register:-:cancel", {"agency_reference": "REG-1"})]
        assert [(n.kind, n.role) for n in harness.stubs.notices] == [("deadline_missed", None)]
