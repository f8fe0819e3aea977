"""The compensation saga, and a for_each step's compensation reading its ``item``."""

from __future__ import annotations

from runtime.messages import AgencyCallInput, AgencyCallResult
from tests.workflows.conftest import Harness, completed, rejected, service

PLATES = {"name": "Ada", "plates": [{"plate": "AB1"}, {"plate": "CD2"}]}


def for_each_step(compensation_input: dict[str, str]) -> dict[str, object]:
    return {
        "id": "register", "agency": "registry", "operation": "register",
        "for_each": "submission.plates", "item_key": "item.plate",
        "input": {"plate": "item.plate"},
        "compensation": {"operation": "unregister", "input": compensation_input},
    }


FAILS_AFTER = {"id": "stamp", "agency": "registry", "operation": "stamp",
               "needs": ["register"]}


async def register_then_refuse_stamp(call: AgencyCallInput) -> AgencyCallResult:
    if call.operation == "stamp":
        raise rejected("unknown_person", "no such person")
    if call.operation == "register":
        return completed(call, number=f"N-{call.payload['plate']}")
    return completed(call)


class TestCompensation:
    async def test_each_for_each_item_is_undone_with_its_own_item_and_output(
        self, harness: Harness
    ) -> None:
        """A required failure undoes every item of the for_each step, each compensation
        input reading that item's value (``item.plate``) and output (``output.number``)."""
        harness.stubs.answer = register_then_refuse_stamp
        handle = await harness.start(service(
            for_each_step({"plate": "item.plate", "number": "output.number"}), FAILS_AFTER,
        ), PLATES)
        result = await harness.result(handle)
        assert result.status == "failed"
        register = result.steps[0]
        assert register.status == "compensated"
        assert {i.status for i in register.items} == {"compensated"}
        assert [(c.item_key, c.status) for c in result.compensations] == [
            ("AB1", "undone"), ("CD2", "undone")]
        undo = [c for c in harness.stubs.calls if c.operation == "unregister"]
        assert [(c.idempotency_key, c.payload) for c in undo] == [
            (f"{handle.id}:register:AB1:undo", {"plate": "AB1", "number": "N-AB1"}),
            (f"{handle.id}:register:CD2:undo", {"plate": "CD2", "number": "N-CD2"}),
        ]

    async def test_a_compensation_input_that_cannot_be_built_is_a_failed_compensation(
        self, harness: Harness
    ) -> None:
        """``item.plate.number`` reads a member of a text: each compensation fails with the
        reason, no undo call is made, and the request still ends (the task never fails)."""
        harness.stubs.answer = register_then_refuse_stamp
        handle = await harness.start(service(
            for_each_step({"plate": "item.plate.number"}), FAILS_AFTER), PLATES)
        result = await harness.result(handle)
        assert result.status == "failed"
        assert result.steps[0].status == "completed"  # not undone
        assert [(c.item_key, c.status, c.reason) for c in result.compensations] == [
            ("AB1", "failed", "input: item.plate is not an object"),
            ("CD2", "failed", "input: item.plate is not an object"),
        ]
        assert [c for c in harness.stubs.calls if c.operation == "unregister"] == []

    async def test_a_refused_undo_is_recorded_with_the_agencys_reason(
        self, harness: Harness
    ) -> None:
        """The undo call itself fails: the compensation says why; the step is not compensated."""
        async def answer(call: AgencyCallInput) -> AgencyCallResult:
            if call.operation == "unregister":
                raise rejected("already_closed", "the file is closed")
            return await register_then_refuse_stamp(call)

        harness.stubs.answer = answer
        handle = await harness.start(service(
            {"id": "register", "agency": "registry", "operation": "register",
             "input": {"plate": "submission.name"},
             "compensation": {"operation": "unregister", "input": {}}},
            FAILS_AFTER,
        ))
        result = await harness.result(handle)
        assert result.status == "failed"
        assert result.steps[0].status == "completed"
        assert [(c.status, c.reason) for c in result.compensations] == [
            ("failed", "the file is closed [already_closed]")]
