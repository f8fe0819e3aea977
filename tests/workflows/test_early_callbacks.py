"""A callback that overtakes its call's answer is kept and applied exactly once.

The stub agency holds its answer until the test has delivered the callback (an
:class:`asyncio.Event` the test sets), which is the race seen on the real stack: the agency
accepted an attempt, called back at once, and the workflow learnt of the 202 only later (the
call was being retried). Copies are answered ``already_received``; a different callback for an
ended branch is refused. Each applied message is written to the read model once
(``record_progress``), and the runs' histories replay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer

from runtime.messages import (
    AGENCY_UNAVAILABLE,
    ALREADY_RECEIVED,
    NOT_EXPECTED,
    AgencyCallback,
    AgencyCallInput,
    AgencyCallResult,
    CaseworkerDecision,
    InformationAnswer,
    RequestOptions,
    RequestResult,
)
from tests.polling import eventually, progress_until
from tests.workflows.conftest import Harness, rejected, service, waiting_for
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow

Handle = WorkflowHandle[CitizenRequestWorkflow, RequestResult]

REGISTER = {"id": "register", "agency": "registry", "operation": "register", "mode": "callback"}
HOLD = {"id": "hold", "agency": "registry", "operation": "stamp", "mode": "callback"}
"""A second branch that waits on its own callback, so the request stays open meanwhile."""

DONE = AgencyCallback(step_id="register", status="completed", agency_reference="REG-1",
                      output={"number": "N-1"})
HELD = AgencyCallback(step_id="hold", status="completed", output={"stamped": True})


async def callback(handle: Handle, message: AgencyCallback) -> str:
    return await handle.execute_update(CitizenRequestWorkflow.agency_callback, message)


async def refused(handle: Handle, message: AgencyCallback) -> str:
    """The type of the validator's refusal of ``message``."""
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await callback(handle, message)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return str(cause.type)


async def until_called(harness: Harness, count: int) -> None:
    """``call_agency`` has been started ``count`` times (the call is in flight)."""
    async def called() -> None:
        assert len(harness.stubs.calls) >= count, harness.stubs.calls

    await eventually(called, within_s=10, every_s=0.02)


async def assert_replays(harness: Harness, handle: Handle) -> None:
    """The run's history replays with today's code, directly and sandboxed."""
    history = await handle.fetch_history()
    for sandboxed in (False, True):
        await Replayer(workflows=[CitizenRequestWorkflow],
                       data_converter=harness.client.data_converter,
                       workflow_runner=workflow_runner(sandboxed)).replay_workflow(history)


def item_of(result: RequestResult, step_id: str) -> Any:
    return next(s for s in result.steps if s.step_id == step_id).items[0]


class TestEarlyCallback:
    async def test_a_callback_before_the_accepted_answer_is_kept_and_applied_once(
        self, harness: Harness
    ) -> None:
        """The callback arrives while the call is in flight: accepted and kept; once the
        call answers 202 it completes the item at once (no wait); its copy is answered
        ``already_received`` and a different one is refused; one read-model write."""
        delivered = asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.step_id == "register":
                await delivered.wait()
            return AgencyCallResult(status="accepted", agency_reference=f"REF-{call.step_id}")

        harness.stubs.answer = answer
        handle = await harness.start(service(REGISTER, HOLD))
        await until_called(harness, 2)
        assert await callback(handle, DONE) == "accepted"
        progress = await handle.query(CitizenRequestWorkflow.progress)
        kept = next(s for s in progress.steps if s.step_id == "register").items[0]
        assert (kept.status, kept.waiting_for) == ("running", None)  # the call is in flight
        delivered.set()
        await progress_until(handle, lambda p: p.steps[0].status == "completed",
                             within_s=10, every_s=0.05)

        assert await callback(handle, DONE) == ALREADY_RECEIVED
        assert await refused(handle, DONE.model_copy(update={"output": {"number": "N-2"}})) \
            == NOT_EXPECTED
        await callback(handle, HELD)
        result = await harness.result(handle)
        assert result.status == "completed"
        item = item_of(result, "register")
        assert (item.status, item.agency_reference, item.output) == (
            "completed", "REG-1", {"number": "N-1"})
        assert item.waiting_since is None  # it never waited
        assert [c.step_id for c in harness.stubs.calls].count("register") == 1
        recorded = [(r.step.step_id, r.event, [i.status for i in r.step.items])
                    for r in harness.stubs.progress]
        assert recorded == [("register", "callback_completed", ["completed"]),
                            ("hold", "callback_completed", ["completed"])]
        assert all(i.output is None and i.callback_digest is None
                   for r in harness.stubs.progress for i in r.step.items)
        await assert_replays(harness, handle)

    async def test_a_callback_while_the_call_is_retried_is_kept_until_the_retry_answers(
        self, harness: Harness
    ) -> None:
        """The first attempt fails (503) after the agency accepted it; the callback comes
        during the retry; the retry's 202 (the agency's stored answer) applies it."""
        first_failed, delivered = asyncio.Event(), asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.step_id == "hold":
                return AgencyCallResult(status="accepted", agency_reference="REF-hold")
            if activity.info().attempt == 1:
                first_failed.set()
                raise ApplicationError("HTTP 503", {"status": 503}, type=AGENCY_UNAVAILABLE)
            await delivered.wait()
            return AgencyCallResult(status="accepted", agency_reference="REG-1",
                                    attempts=activity.info().attempt)

        harness.stubs.answer = answer
        handle = await harness.start(service(
            {**REGISTER, "retry": {"initial_interval": "200ms", "backoff": 1.0}}, HOLD))
        await asyncio.wait_for(first_failed.wait(), 10)
        assert await callback(handle, DONE) == "accepted"
        delivered.set()
        await progress_until(handle, lambda p: p.steps[0].status == "completed",
                             within_s=10, every_s=0.05)
        await callback(handle, HELD)
        result = await harness.result(handle)
        item = item_of(result, "register")
        assert (item.status, item.output, item.attempts) == ("completed", {"number": "N-1"}, 2)
        register_calls = [c for c in harness.stubs.calls if c.step_id == "register"]
        assert [c.idempotency_key for c in register_calls] == [
            f"{handle.id}:register:-", f"{handle.id}:register:-"]
        assert [r.event for r in harness.stubs.progress if r.step.step_id == "register"] == [
            "callback_completed"]

    @pytest.mark.parametrize("outcome", ["completed", "failed"])
    async def test_a_kept_callback_is_dropped_when_the_call_answers_for_itself(
        self, harness: Harness, outcome: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The call completes synchronously (or fails for good, 4xx) after the callback was
        kept: the call's answer is the outcome, the callback is dropped with a log line, and
        a copy of it is still answered ``already_received``."""
        delivered = asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.step_id == "hold":
                return AgencyCallResult(status="accepted", agency_reference="REF-hold")
            await delivered.wait()
            if outcome == "failed":
                raise rejected("unknown_person", "no such person")
            return AgencyCallResult(status="completed", agency_reference="REG-SYNC",
                                    output={"number": "SYNC"})

        caplog.set_level(logging.INFO, logger="temporalio.workflow")
        harness.stubs.answer = answer
        # optional, so that a failure leaves the request open for the copy
        handle = await harness.start(service({**REGISTER, "required": False}, HOLD))
        await until_called(harness, 2)
        assert await callback(handle, DONE) == "accepted"
        delivered.set()
        await progress_until(handle, lambda p: p.steps[0].status == outcome,
                             within_s=10, every_s=0.05)
        assert await callback(handle, DONE) == ALREADY_RECEIVED
        await callback(handle, HELD)
        result = await harness.result(handle)
        item = item_of(result, "register")
        if outcome == "completed":
            assert (item.status, item.agency_reference, item.output) == (
                "completed", "REG-SYNC", {"number": "SYNC"})
        else:
            assert (item.status, item.reason) == ("failed", "no such person [unknown_person]")
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1, dropped
        assert f"the call {'answered completed' if outcome == 'completed' else 'failed'}" \
            in dropped[0]
        assert [r.step.step_id for r in harness.stubs.progress] == ["hold"]

    async def test_an_early_needs_information_callback_runs_the_information_loop(
        self, harness: Harness
    ) -> None:
        """Round 1's callback (needs information) overtakes the 202, so does round 2's
        (completed) overtake the answer's 202: each is applied once, in its round; a copy of
        round 1's is recognised while the citizen is asked; three read-model writes."""
        first, second = asyncio.Event(), asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            await (first if call.action == "operation" else second).wait()
            return AgencyCallResult(status="accepted", agency_reference="REG-7")

        harness.stubs.answer = answer
        handle = await harness.start(service(REGISTER))
        await until_called(harness, 1)
        asks = AgencyCallback(step_id="register", status="needs_information",
                              agency_reference="REG-7", fields={"proof": {"type": "text"}},
                              message={"en": "Send proof"})
        assert await callback(handle, asks) == "accepted"
        first.set()
        progress = await progress_until(handle, waiting_for("register", "information"),
                                        within_s=10, every_s=0.05)
        assert progress.steps[0].items[0].information_message == {"en": "Send proof"}
        assert await callback(handle, asks) == ALREADY_RECEIVED

        assert await handle.execute_update(CitizenRequestWorkflow.answer_information,
                                           InformationAnswer(step_id="register",
                                                             answers={"proof": "bill"})) \
            == "accepted"
        await until_called(harness, 2)
        assert await callback(handle, DONE) == "accepted"  # while the answer's call is open
        second.set()

        result = await harness.result(handle)
        assert result.status == "completed"
        item = result.steps[0].items[0]
        assert (item.status, item.information_rounds, item.output) == (
            "completed", 1, {"number": "N-1"})
        assert [(c.action, c.idempotency_key) for c in harness.stubs.calls] == [
            ("operation", f"{handle.id}:register:-"),
            ("information", f"{handle.id}:register:-:info:1")]
        assert [(r.event, r.step.items[0].status) for r in harness.stubs.progress] == [
            ("callback_needs_information", "waiting"), ("information_answered", "running"),
            ("callback_completed", "completed")]
        await assert_replays(harness, handle)

    async def test_no_continue_as_new_while_a_callback_is_kept_and_its_copy_is_known_after(
        self, harness: Harness
    ) -> None:
        """Past the history limit, the run does not continue as new while the early callback
        is kept (its call is in flight); it does once the callback was applied, and the next
        run still recognises a copy of it."""
        delivered = asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.step_id == "register":
                await delivered.wait()
            return AgencyCallResult(status="accepted", agency_reference=f"REF-{call.step_id}")

        harness.stubs.answer = answer
        handle = await harness.start(service(REGISTER, HOLD), options=RequestOptions(
            awaited="long_waits", recorded_at_submit=True, continue_as_new_after_events=5))
        await until_called(harness, 2)
        assert await callback(handle, DONE) == "accepted"
        assert await harness.runs(handle) == 1
        delivered.set()

        async def continued() -> None:
            assert await harness.runs(handle) == 2

        await eventually(continued, within_s=10, every_s=0.05)
        assert await callback(handle, DONE) == ALREADY_RECEIVED
        await callback(handle, HELD)
        result = await harness.result(handle)
        assert result.status == "completed"
        assert item_of(result, "register").output == {"number": "N-1"}
        assert len(harness.stubs.calls) == 2  # one call per step, across both runs


class TestCallbackDuringWithdrawal:
    async def test_a_completed_callback_kept_while_withdrawing_too_late_gives_the_undo_its_output(
        self, harness: Harness
    ) -> None:
        """The request stops; while the withdrawal is open the agency's completion callback
        arrives (kept); the withdrawal answers too_late: the item completes with the
        callback's output, which the saga's undo reads."""
        cancelling, delivered = asyncio.Event(), asyncio.Event()

        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.operation == "stamp":
                raise rejected("unknown_person", "no such person")
            if call.action == "cancel":
                cancelling.set()
                await delivered.wait()
                raise rejected("too_late", "record REG-1 is already completed", 409)
            if call.operation == "unregister":
                return AgencyCallResult(status="completed", agency_reference="UNDO-1")
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = answer
        handle = await harness.start(service(
            {**REGISTER, "compensation": {"operation": "unregister",
                                          "input": {"number": "output.number"}}},
            {"id": "stamp", "agency": "registry", "operation": "stamp"}))
        await asyncio.wait_for(cancelling.wait(), 10)
        assert await callback(handle, DONE) == "accepted"
        delivered.set()
        result = await harness.result(handle)
        assert result.status == "failed"
        assert item_of(result, "register").status == "compensated"
        assert [(c.step_id, c.status) for c in result.compensations] == [("register", "undone")]
        undo = [c for c in harness.stubs.calls if c.operation == "unregister"]
        assert [c.payload for c in undo] == [{"number": "N-1"}]
        await assert_replays(harness, handle)


class TestMessagesRecorded:
    async def test_a_decision_is_written_with_who_decided(self, harness: Harness) -> None:
        """A caseworker's decision writes the decision step's row at once (one write)."""
        handle = await harness.start(service(
            {"id": "register", "agency": "registry", "operation": "register"},
            {"id": "approve", "kind": "decision", "needs": ["register"], "role": "officer"}))
        await progress_until(handle, lambda p: p.steps[1].status == "waiting",
                             within_s=10, every_s=0.05)
        await handle.execute_update(CitizenRequestWorkflow.decide, CaseworkerDecision(
            step_id="approve", approve=False, reason="no premises", decided_by="sam",
            role="officer"))
        result = await harness.result(handle)
        assert result.status == "failed"
        # the waiting step is written when it starts waiting (the task list reads it), then
        # the decision
        awaited, record = harness.stubs.progress
        assert (awaited.event, awaited.step.step_id, awaited.step.status) == (
            "decision_awaited", "approve", "waiting")
        assert (record.event, record.step.step_id, record.step.status,
                record.step.decided_by) == ("decision_rejected", "approve", "failed", "sam")
        assert harness.stubs.records[-1].as_of is not None
        assert record.as_of <= harness.stubs.records[-1].as_of  # the end record is newest
