"""Readable examples of the planner's semantics: diamonds, skips and their reasons, stop."""

from __future__ import annotations

import json

import pytest

from definitions.models import CallStep, DecisionStep, ServiceDefinition
from workflows.planner import Decision, Planner, PlannerError, PlanStep, Skip


def call(step_id: str, *needs: str, when: str | None = None, required: bool = True) -> CallStep:
    return CallStep(
        id=step_id, agency="a", operation="o", needs=needs, when=when, required=required
    )


def always(_: PlanStep) -> bool:
    return True


def diamond() -> list[CallStep]:
    return [call("a"), call("b", "a"), call("c", "a"), call("d", "b", "c")]


class TestDiamond:
    def test_runs_in_waves(self) -> None:
        """Steps whose needs complete in the same event are ready together; d waits for both."""
        planner = Planner(diamond(), always)
        assert planner.start() == Decision(ready=("a",), skipped=(), finished=False)
        assert planner.record("a", "completed") == Decision(("b", "c"), (), False)
        assert planner.states == {"a": "completed", "b": "running", "c": "running", "d": "pending"}
        assert planner.record("c", "completed") == Decision((), (), False)
        assert planner.record("b", "completed") == Decision(("d",), (), False)
        assert planner.record("d", "completed") == Decision((), (), True)
        assert planner.completed_in_order() == ("a", "c", "b", "d")
        assert planner.finished

    def test_failed_need_skips_transitively_with_reasons(self) -> None:
        """A failure skips its dependents, and theirs, each reason naming the need."""
        planner = Planner(diamond(), always)
        planner.start()
        decision = planner.record("a", "failed")
        assert decision == Decision(
            ready=(),
            skipped=(
                Skip("b", "needs 'a' which failed"),
                Skip("c", "needs 'a' which failed"),
                Skip("d", "needs 'b' which was skipped"),
            ),
            finished=True,
        )
        assert planner.failed_required == ("a",)

    def test_dependent_waits_for_every_need_before_skipping(self) -> None:
        """A step is decided only once all its needs are decided, even if one already failed."""
        planner = Planner(diamond(), always)
        planner.start()
        planner.record("a", "completed")
        assert planner.record("b", "failed") == Decision((), (), False)
        assert planner.state("d") == "pending"
        assert planner.record("c", "completed") == Decision(
            (), (Skip("d", "needs 'b' which failed"),), True
        )


class TestConditions:
    def test_false_condition_skips_and_propagates(self) -> None:
        """A false `when` skips the step; its dependents are skipped naming it."""
        steps = [call("a"), call("b", "a", when="false"), call("c", "b"), call("d", "a")]
        calls: list[str] = []

        def condition(step: PlanStep) -> bool:
            calls.append(step.id)
            return False

        planner = Planner(steps, condition)
        planner.start()
        assert calls == []
        decision = planner.record("a", "completed")
        assert decision.ready == ("d",)
        assert decision.skipped == (
            Skip("b", "condition is false"),
            Skip("c", "needs 'b' which was skipped"),
        )
        assert calls == ["b"]

    def test_condition_not_called_when_a_need_failed(self) -> None:
        """A step whose need failed is skipped without evaluating its condition."""
        calls: list[str] = []
        planner = Planner(
            [call("a"), call("b", "a", when="true")], lambda s: calls.append(s.id) is None
        )
        planner.start()
        planner.record("a", "failed")
        assert calls == []
        assert planner.state("b") == "skipped"

    def test_root_condition_decided_at_start(self) -> None:
        """A step without needs but with `when` is decided by start()."""
        planner = Planner([call("a", when="x"), call("b")], lambda _: False)
        assert planner.start() == Decision(("b",), (Skip("a", "condition is false"),), False)


class TestStopAndRequired:
    def test_required_failure_does_not_stop_by_itself(self) -> None:
        """Independent steps go on after a required failure until the workflow calls stop()."""
        planner = Planner([call("a"), call("b"), call("c", "b")], always)
        planner.start()
        assert planner.record("a", "failed").ready == ()
        assert planner.failed_required == ("a",)
        assert planner.record("b", "completed").ready == ("c",)

    def test_optional_failure_is_not_listed(self) -> None:
        """failed_required lists required steps only."""
        planner = Planner([call("a", required=False), call("b")], always)
        planner.start()
        planner.record("a", "failed")
        planner.record("b", "failed")
        assert planner.failed_required == ("b",)

    def test_stop_skips_pending_and_keeps_running(self) -> None:
        """stop() skips every pending step; running steps still finish; nothing new starts."""
        planner = Planner([call("a"), call("b"), call("c", "a"), call("d", "c")], always)
        planner.start()
        planner.record("a", "completed")
        decision = planner.stop()
        assert decision == Decision(
            ready=(), skipped=(Skip("d", "request is stopping"),), finished=False
        )
        assert planner.running == ("b", "c")
        assert planner.record("c", "completed") == Decision((), (), False)
        assert planner.record("b", "completed") == Decision((), (), True)
        assert planner.stop() == Decision((), (), True)


class TestInvariants:
    def test_record_of_a_step_that_is_not_running_raises(self) -> None:
        """Recording a pending, finished or unknown step is a bug and says so."""
        planner = Planner(diamond(), always)
        planner.start()
        with pytest.raises(ValueError, match=r"'b', 'completed'.*pending, not running"):
            planner.record("b", "completed")
        planner.record("a", "completed")
        with pytest.raises(PlannerError, match="completed, not running"):
            planner.record("a", "completed")
        with pytest.raises(PlannerError, match="no step 'zz'"):
            planner.record("zz", "completed")

    def test_start_twice_raises(self) -> None:
        planner = Planner(diamond(), always)
        planner.start()
        with pytest.raises(PlannerError, match="already"):
            planner.start()

    @pytest.mark.parametrize(
        ("steps", "message"),
        [
            ([call("a"), call("a")], "appears twice"),
            ([call("a", "ghost")], "needs 'ghost', which is not a step"),
            ([call("a", "a")], "needs itself"),
            (
                [call("a", "c"), call("b", "a"), call("c", "b"), call("d")],
                "cycle",
            ),
        ],
    )
    def test_impossible_plans_are_rejected(self, steps: list[CallStep], message: str) -> None:
        with pytest.raises(PlannerError, match=message):
            Planner(steps, always)


class TestServiceAndSnapshot:
    def test_from_service_plans_call_and_decision_steps(self) -> None:
        service = ServiceDefinition(
            service="demo",
            version=1,
            title="Demo",
            description="Demo",
            input={"fields": {}},
            steps=(
                call("register"),
                DecisionStep(id="review", kind="decision", role="caseworker", needs=("register",)),
            ),
        )
        planner = Planner.from_service(service, always)
        assert planner.start().ready == ("register",)
        assert planner.record("register", "completed").ready == ("review",)

    def test_snapshot_keeps_completion_order_through_json(self) -> None:
        """A JSON round trip of snapshot() restores states and the completion order."""
        steps = [call("a"), call("b"), call("c"), call("d", "a", "b", "c")]
        planner = Planner(steps, always)
        planner.start()
        planner.record("c", "completed")
        planner.record("a", "completed")
        restored = Planner.restore(steps, always, json.loads(json.dumps(planner.snapshot())))
        assert restored.states == planner.states
        assert restored.completed_in_order() == ("c", "a")
        assert restored.record("b", "completed") == Decision(("d",), (), False)

    def test_restore_rejects_mismatched_snapshots(self) -> None:
        steps = diamond()
        with pytest.raises(PlannerError, match="missing"):
            Planner.restore(steps, always, {"a": "running"})
        with pytest.raises(PlannerError, match="state 'done'"):
            Planner.restore(
                steps, always, {"a": "done", "b": "pending", "c": "pending", "d": "pending"}
            )
        with pytest.raises(PlannerError, match="inconsistent"):
            Planner.restore(
                steps, always, {"a": "pending", "b": "running", "c": "pending", "d": "pending"}
            )
