"""Each branch of the call-step protocol, with a scripted agency (stub activities)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from runtime.messages import (
    AGENCY_UNAVAILABLE,
    ALREADY_RECEIVED,
    INVALID_ANSWER,
    NOT_EXPECTED,
    AgencyCallback,
    AgencyCallInput,
    AgencyCallResult,
    CancelRequest,
    InformationAnswer,
)
from tests.polling import progress_until
from tests.workflows.conftest import Harness, completed, rejected, service, waiting_for
from workflows.request_workflow import CitizenRequestWorkflow

PLATES = {"name": "Ada", "plates": [{"plate": "AB1"}, {"plate": "CD2"}]}


def refusal(error: BaseException) -> ApplicationError:
    """The validator's ApplicationError behind a refused update."""
    assert isinstance(error, WorkflowUpdateFailedError)
    assert isinstance(error.cause, ApplicationError)
    return error.cause


class TestAcceptedThenCallback:
    async def test_each_item_waits_for_its_callback_a_copy_is_received_another_refused(
        self, harness: Harness
    ) -> None:
        """202 per item: each item completes with its own callback's output; the same
        callback again is answered ``already_received``, a different one for the item that
        ended is refused by the validator, and neither changes anything."""
        async def accept(call: AgencyCallInput) -> AgencyCallResult:
            return AgencyCallResult(status="accepted", agency_reference=f"REG-{call.item_key}")

        harness.stubs.answer = accept
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
            "for_each": "submission.plates", "item_key": "item.plate",
            "input": {"plate": "item.plate", "name": "submission.name"},
        }), PLATES)
        await progress_until(handle, waiting_for("register", "callback", "CD2"),
                             within_s=10, every_s=0.05)

        first = AgencyCallback(step_id="register", item_key="AB1", status="completed",
                               output={"number": "N-1"})
        assert await handle.execute_update(CitizenRequestWorkflow.agency_callback,
                                           first) == "accepted"
        assert await handle.execute_update(CitizenRequestWorkflow.agency_callback,
                                           first) == ALREADY_RECEIVED
        with pytest.raises(WorkflowUpdateFailedError) as another:
            await handle.execute_update(CitizenRequestWorkflow.agency_callback, first.model_copy(
                update={"output": {"number": "N-9"}}))
        assert refusal(another.value).type == NOT_EXPECTED
        await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
            step_id="register", item_key="CD2", status="completed", output={"number": "N-2"}))

        result = await harness.result(handle)
        assert result.status == "completed"
        items = {i.key: i for i in result.steps[0].items}
        assert {k: (i.status, i.agency_reference, i.output) for k, i in items.items()} == {
            "AB1": ("completed", "REG-AB1", {"number": "N-1"}),
            "CD2": ("completed", "REG-CD2", {"number": "N-2"}),
        }
        calls = harness.stubs.calls
        assert sorted(c.idempotency_key for c in calls) == [
            f"{handle.id}:register:AB1", f"{handle.id}:register:CD2"]
        assert {c.item_key: c.payload for c in calls} == {
            "AB1": {"plate": "AB1", "name": "Ada"}, "CD2": {"plate": "CD2", "name": "Ada"}}
        assert {c.callback_url for c in calls} == {"http://intake.invalid"}

    async def test_a_rejecting_callback_fails_the_item_with_its_reason(
        self, harness: Harness
    ) -> None:
        """A callback saying "rejected" (with the reason the validator requires) fails it."""
        async def accept(call: AgencyCallInput) -> AgencyCallResult:
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = accept
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
        }))
        await progress_until(handle, waiting_for("register", "callback"), within_s=10, every_s=0.05)
        with pytest.raises(WorkflowUpdateFailedError) as no_reason:
            await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
                step_id="register", status="rejected"))
        assert refusal(no_reason.value).type == INVALID_ANSWER
        await handle.execute_update(CitizenRequestWorkflow.agency_callback, AgencyCallback(
            step_id="register", status="rejected", reason="unknown person"))
        result = await harness.result(handle)
        assert result.status == "failed"
        assert result.steps[0].items[0].reason == "registry rejected register: unknown person"


class TestNeedsInformation:
    async def test_the_citizens_answer_goes_to_the_agency_and_completes_the_item(
        self, harness: Harness
    ) -> None:
        """needs_information → the validator checks the answer against the agency's fields →
        an ``information`` call under the ``info:1`` key → completed, reference kept."""
        async def ask_then_finish(call: AgencyCallInput) -> AgencyCallResult:
            if call.action == "operation":
                return AgencyCallResult(
                    status="needs_information", agency_reference="REG-2",
                    fields={"proof": {"type": "text", "min_length": 3}},
                    message={"en": "Send proof of address"})
            return AgencyCallResult(status="completed", output={"seen": call.payload["answers"]})

        harness.stubs.answer = ask_then_finish
        handle = await harness.start(service({
            "id": "register", "agency": "registry", "operation": "register",
        }))
        progress = await progress_until(handle, waiting_for("register", "information"),
                                        within_s=10, every_s=0.05)
        assert progress.steps[0].items[0].information_message == {"en": "Send proof of address"}
        assert progress.waiting == [
            "register: registry: the citizen's answer to a request for information"]

        with pytest.raises(WorkflowUpdateFailedError) as bad:
            await handle.execute_update(CitizenRequestWorkflow.answer_information,
                                        InformationAnswer(step_id="register",
                                                          answers={"proof": 12}))
        cause = refusal(bad.value)
        assert cause.type == INVALID_ANSWER
        assert [e["loc"] for e in cause.details[0]["errors"]] == [["proof"]]
        assert await handle.execute_update(
            CitizenRequestWorkflow.answer_information,
            InformationAnswer(step_id="register", answers={"proof": "utility bill"}),
        ) == "accepted"

        result = await harness.result(handle)
        assert result.status == "completed"
        item = result.steps[0].items[0]
        assert (item.agency_reference, item.information_rounds, item.output) == (
            "REG-2", 1, {"seen": {"proof": "utility bill"}})
        information = harness.stubs.calls_of("information")
        assert [c.idempotency_key for c in information] == [f"{handle.id}:register:-:info:1"]
        assert information[0].payload == {"agency_reference": "REG-2",
                                          "answers": {"proof": "utility bill"}}


class TestFailures:
    async def test_a_4xx_rejection_is_final_and_skips_what_needs_the_step(
        self, harness: Harness
    ) -> None:
        """AgencyRejected is not retried (despite 5 attempts allowed); the reason carries the
        agency's code, and a step that needs this one is skipped."""
        async def refuse(call: AgencyCallInput) -> AgencyCallResult:
            raise rejected("invalid_input", "the name is not allowed")

        harness.stubs.answer = refuse
        handle = await harness.start(service(
            {"id": "register", "agency": "registry", "operation": "register",
             "retry": {"max_attempts": 5, "initial_interval": "10ms"}},
            {"id": "stamp", "agency": "registry", "operation": "stamp", "needs": ["register"]},
        ))
        result = await harness.result(handle)
        assert result.status == "failed"
        register, stamp = result.steps
        assert register.status == "failed"
        assert register.reason == "the name is not allowed [invalid_input]"
        assert register.items[0].attempts == 1
        assert (stamp.status, stamp.reason) == ("skipped", "needs 'register' which failed")
        assert len(harness.stubs.calls) == 1

    async def test_an_unavailable_agency_is_retried_under_the_steps_policy(
        self, harness: Harness
    ) -> None:
        """AgencyUnavailable is retried; the item records how many attempts it took."""
        async def flaky(call: AgencyCallInput) -> AgencyCallResult:
            attempt = activity.info().attempt
            if attempt < 3:
                raise ApplicationError("HTTP 503", {"status": 503}, type=AGENCY_UNAVAILABLE)
            return AgencyCallResult(status="completed", agency_reference="REG-3",
                                    attempts=attempt)

        harness.stubs.answer = flaky
        handle = await harness.start(service(
            {"id": "register", "agency": "registry", "operation": "register",
             "retry": {"max_attempts": 3, "initial_interval": "10ms", "backoff": 1.0}},
        ))
        result = await harness.result(handle)
        assert result.status == "completed"
        assert result.steps[0].items[0].attempts == 3
        assert len(harness.stubs.calls) == 3


WITHDRAWABLE = {
    "id": "register", "agency": "registry", "operation": "register", "mode": "callback",
    "compensation": {"operation": "unregister", "input": {"reference": "request.reference"}},
}
FAILING = {"id": "stamp", "agency": "registry", "operation": "stamp"}


class TestWithdraw:
    async def test_too_late_to_withdraw_means_done_and_the_saga_undoes_it(
        self, harness: Harness
    ) -> None:
        """The request stops while an item waits; the cancel answers 409 ``too_late`` (by
        code, whatever the text): the item counts as completed and is compensated."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.operation == "stamp":
                raise rejected("unknown_person", "no such person")
            if call.action == "cancel":
                raise rejected("too_late", "record REG-1 is already completed", 409)
            if call.operation == "unregister":
                return completed(call)
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = answer
        handle = await harness.start(service(WITHDRAWABLE, FAILING))
        result = await harness.result(handle)
        assert result.status == "failed"
        register = result.steps[0]
        assert (register.status, register.items[0].status) == ("compensated", "compensated")
        assert [(c.step_id, c.status) for c in result.compensations] == [("register", "undone")]
        assert [c.idempotency_key for c in harness.stubs.calls_of("cancel")] == [
            f"{handle.id}:register:-:cancel"]
        assert harness.stubs.calls_of("cancel")[0].payload == {"agency_reference": "REG-1"}
        undo = [c for c in harness.stubs.calls if c.operation == "unregister"]
        assert [(c.idempotency_key, c.payload) for c in undo] == [
            (f"{handle.id}:register:-:undo", {"reference": handle.id})]

    async def test_a_refused_withdrawal_whose_text_says_too_late_is_still_a_failure(
        self, harness: Harness
    ) -> None:
        """Only the code decides: a 409 ``locked`` whose message says "too late" fails the
        item with both reasons, and nothing is compensated."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.operation == "stamp":
                raise rejected("unknown_person", "no such person")
            if call.action == "cancel":
                raise rejected("locked", "too late to change this record", 409)
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = answer
        handle = await harness.start(service(WITHDRAWABLE, FAILING))
        result = await harness.result(handle)
        assert result.status == "failed"
        item = result.steps[0].items[0]
        assert item.status == "failed"
        assert item.reason == ("required step 'stamp' failed; withdrawing failed: "
                               "too late to change this record [locked]")
        assert result.compensations == []

    async def test_cancel_withdraws_a_waiting_call_and_a_second_cancel_is_refused(
        self, harness: Harness
    ) -> None:
        """The citizen cancels while the agency works: the call is withdrawn, the request
        ends cancelled; cancelling again is refused."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.action == "cancel":
                await asyncio.sleep(0.5)  # the request is still open for the second cancel
                return AgencyCallResult(status="cancelled")
            return AgencyCallResult(status="accepted", agency_reference="REG-1")

        harness.stubs.answer = answer
        handle = await harness.start(service(WITHDRAWABLE, {
            "id": "later", "agency": "registry", "operation": "stamp", "mode": "callback",
            "needs": ["register"]}))
        await progress_until(handle, waiting_for("register", "callback"), within_s=10, every_s=0.05)
        assert await handle.execute_update(CitizenRequestWorkflow.cancel,
                                           CancelRequest(reason="moved back")) == "cancelling"
        with pytest.raises(WorkflowUpdateFailedError) as again:
            await handle.execute_update(CitizenRequestWorkflow.cancel, CancelRequest())
        assert refusal(again.value).type == NOT_EXPECTED
        result = await harness.result(handle)
        assert result.status == "cancelled"
        register, later = result.steps
        assert register.items[0].status == "cancelled"
        assert register.items[0].reason == "withdrawn (cancelled: moved back)"
        assert (later.status, later.reason) == ("skipped", "request is stopping")
