"""Continue-as-new at a quiet moment carries the request's state into the next run.

``RequestOptions.continue_as_new_after_events`` forces it early. The limits below are chosen
against the run's own history: a run resumed after continue-as-new has 3 events when it first
checks (so it does not continue again at once), and more than 5 once anything happened.
"""

from __future__ import annotations

from runtime.messages import AgencyCallback, AgencyCallInput, AgencyCallResult, RequestOptions
from tests.polling import eventually, progress_until
from tests.workflows.conftest import Harness, rejected, service, waiting_for
from workflows.request_workflow import CitizenRequestWorkflow


class TestContinueAsNew:
    async def test_items_done_waiting_and_failed_carry_over_and_none_is_called_again(
        self, harness: Harness
    ) -> None:
        """A for_each item failed and another waits on a callback: the next run shows both
        as they were, calls neither agency again, and completes with the callback."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.item_key == "AB1":
                raise rejected("unknown_plate", "no such plate")
            return AgencyCallResult(status="accepted", agency_reference="REG-CD2")

        harness.stubs.answer = answer
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
            "for_each": "submission.plates", "item_key": "item.plate", "required": False,
        }), {"name": "Ada", "plates": [{"plate": "AB1"}, {"plate": "CD2"}]},
            RequestOptions(awaited="long_waits", continue_as_new_after_events=10))
        await progress_until(handle, waiting_for("register", "callback", "CD2"),
                             within_s=10, every_s=0.05)

        async def continued_as_new() -> None:
            assert await harness.runs(handle) == 2

        await eventually(continued_as_new, within_s=5, every_s=0.05)

        progress = await handle.query(CitizenRequestWorkflow.progress)
        items = {i.key: i for i in progress.steps[0].items}
        assert (items["AB1"].status, items["AB1"].reason) == (
            "failed", "no such plate [unknown_plate]")
        assert (items["CD2"].status, items["CD2"].agency_reference) == ("waiting", "REG-CD2")
        await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
            step_id="register", item_key="CD2", status="completed", output={"n": 2}))

        result = await harness.result(handle)
        assert result.status == "partially_completed"
        assert [(i.key, i.status) for i in result.steps[0].items] == [
            ("AB1", "failed"), ("CD2", "completed")]
        assert sorted(c.item_key or "" for c in harness.stubs.calls) == ["AB1", "CD2"]
        assert await harness.runs(handle) == 2

    async def test_no_continue_as_new_while_an_escalation_is_notified(
        self, harness: Harness
    ) -> None:
        """The deadline (on_miss: fail) passes in the second run while notify_operator takes
        a second: the run waits for it rather than continuing as new, so the deadline's
        failure is applied and the request ends (it waited for ever before)."""
        async def accept(call: AgencyCallInput) -> AgencyCallResult:
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = accept
        harness.stubs.notice_delay = 1.0
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "stamp", "mode": "callback",
            "deadline": {"after": "1s", "on_miss": "fail", "notify": "liaison"},
        }), options=RequestOptions(awaited="long_waits", recorded_at_submit=True,
                                   continue_as_new_after_events=5))
        result = await harness.result(handle, wait_s=10)
        assert result.status == "failed"
        register = result.steps[0]
        assert register.escalated
        assert register.items[0].reason == "deadline passed; the agency cannot withdraw stamp"
        assert [(n.kind, n.role) for n in harness.stubs.notices] == [("deadline_missed",
                                                                     "liaison")]
        assert await harness.runs(handle) == 2  # one continue-as-new, after the accepted call
