"""The workflow's pure parts: idempotency keys, failure reading, state rules, query words."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ActivityError, ApplicationError

from agency_kit.contract import idempotency_key
from definitions.models import ServiceDefinition
from runtime.messages import AGENCY_REJECTED, AGENCY_UNAVAILABLE
from workflows.failures import read_failure
from workflows.state import RequestState
from workflows.visibility import waiting_descriptions

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def activity_error(cause: BaseException | None) -> ActivityError:
    err = ActivityError("activity failed", scheduled_event_id=5, started_event_id=6,
                        identity="w", activity_type="call_agency", activity_id="1",
                        retry_state=None)
    err.__cause__ = cause
    return err


class TestIdempotencyKeys:
    @pytest.mark.parametrize(("item", "suffix", "key"), [
        (None, (), "R-1:step:-"),
        ("AB1", (), "R-1:step:AB1"),
        (None, ("undo",), "R-1:step:-:undo"),
        ("AB1", ("cancel",), "R-1:step:AB1:cancel"),
        (None, ("info", "2"), "R-1:step:-:info:2"),
    ])
    def test_keys_are_the_ones_requests_in_flight_already_sent(
        self, item: str | None, suffix: tuple[str, ...], key: str
    ) -> None:
        """The contract's key is the engine's former key, string for string, so an agency
        deduplicates a retried call of a request started before the change."""
        assert idempotency_key("R-1", "step", item, *suffix) == key


class TestFailures:
    def test_too_late_is_read_from_the_type_and_code(self) -> None:
        too_late = read_failure(activity_error(ApplicationError(
            "record is already completed", {"status": 409, "code": "too_late", "attempt": 2},
            type=AGENCY_REJECTED)))
        assert too_late.too_late
        assert too_late.reason == "record is already completed [too_late]"
        assert too_late.attempts == 2

    @pytest.mark.parametrize("cause", [
        ApplicationError("too late to change", {"code": "locked"}, type=AGENCY_REJECTED),
        ApplicationError("too_late", {"code": "too_late"}, type=AGENCY_UNAVAILABLE),
        ApplicationError("too_late [too_late]", type=AGENCY_REJECTED),
    ])
    def test_message_text_never_decides(self, cause: ApplicationError) -> None:
        assert not read_failure(activity_error(cause)).too_late

    def test_a_cause_without_structure_gives_its_text(self) -> None:
        failure = read_failure(activity_error(TimeoutError("activity timed out")))
        assert (failure.reason, failure.type, failure.attempts) == ("activity timed out", None, 0)
        assert read_failure(activity_error(None)).reason == "activity failed"


def one_step_state(for_each: bool = True) -> RequestState:
    step = {"id": "s", "agency": "a", "operation": "o"}
    if for_each:
        step["for_each"] = "submission.xs"
    service = ServiceDefinition.model_validate({
        "service": "svc", "version": 1, "title": "T", "description": "T",
        "input": {"fields": {}}, "steps": [step],
    })
    state = RequestState.new(service)
    state.step_started("s", NOW, None)
    return state


class TestRequestState:
    def test_a_step_waits_while_any_item_waits(self) -> None:
        state = one_step_state()
        state.items_planned("s", ["0", "1"])
        state.item_waiting_for_callback("s", 0, "R0", NOW)
        assert state.steps["s"].status == "waiting"
        state.item_waiting_for_information("s", 1, None, {"f": {"type": "text"}}, None, NOW)
        state.item_completed("s", 0, None, {"x": 1})
        assert state.steps["s"].status == "waiting"
        state.item_answered("s", 1)
        assert state.steps["s"].status == "running"

    def test_agency_reference_survives_answers_that_do_not_repeat_it(self) -> None:
        state = one_step_state()
        state.items_planned("s", ["0"])
        state.item_waiting_for_information("s", 0, "R0", {}, None, NOW)
        state.item_answered("s", 0)
        state.item_completed("s", 0, None, {})
        assert state.steps["s"].items[0].agency_reference == "R0"

    def test_items_are_planned_once(self) -> None:
        """After continue-as-new a step's items exist already and keep their state."""
        state = one_step_state()
        state.items_planned("s", ["0"])
        state.item_failed("s", 0, "no", attempts=3)
        state.items_planned("s", ["0", "1"])
        assert [(i.key, i.status, i.attempts) for i in state.steps["s"].items] == [
            ("0", "failed", 3)]

    def test_a_message_that_arrived_clears_the_wait_at_once(self) -> None:
        state = one_step_state()
        state.items_planned("s", ["0"])
        state.item_waiting_for_callback("s", 0, "R0", NOW)
        state.item_message_arrived("s", "0")
        item = state.steps["s"].items[0]
        assert (item.status, item.waiting_for) == ("waiting", None)
        state.item_message_arrived("s", "no-such-item")  # ignored

    @pytest.mark.parametrize(("cancelled", "halting", "failed_required", "status"), [
        (True, "cancelled: x", False, "cancelled"),
        (False, "required step 's' failed", True, "failed"),
        (False, None, False, "completed"),
    ])
    def test_final_status(
        self, cancelled: bool, halting: str | None, failed_required: bool, status: str
    ) -> None:
        state = one_step_state(for_each=False)
        if failed_required:
            state.step_failed("s", "no")
        else:
            state.step_completed("s")
        if halting:
            state.halt(halting, cancelled=cancelled)
        assert state.finish() == status == state.status


def test_waiting_descriptions_say_what_each_live_item_waits_for() -> None:
    state = one_step_state()
    state.items_planned("s", ["0", "1"])
    state.item_waiting_for_callback("s", 0, "R0", NOW)
    assert waiting_descriptions(state.steps.values()) == [
        "s[0]: a: the agency's answer (callback)", "s[1]: a: the agency call"]
