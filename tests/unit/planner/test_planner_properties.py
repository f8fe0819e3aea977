"""Properties of the planner over random DAGs, outcomes and completion orders (hypothesis).

A scenario is a random acyclic service (1..40 steps; each step needs only lower-numbered
steps, listed in a shuffled definition order), a truth value for every `when`, and an
outcome for every step should it run. A :class:`Driver` plays the workflow: it starts the
planner, then repeatedly records a randomly chosen running step, checking every Decision.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from definitions.models import CallStep
from workflows.planner import Decision, Outcome, Planner, PlanStep

SETTINGS = settings(max_examples=200, deadline=None)
DECIDED = {"completed", "failed", "skipped"}


@dataclass(frozen=True)
class Scenario:
    steps: tuple[CallStep, ...]
    truth: dict[str, bool]  # the value of each step's `when` (ignored without one)
    outcomes: dict[str, Outcome]  # what each step ends with, should it run

    @property
    def ids(self) -> set[str]:
        return {step.id for step in self.steps}

    def needs(self, step_id: str) -> tuple[str, ...]:
        return next(step.needs for step in self.steps if step.id == step_id)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """One integer per step packs its shape, so a scenario costs few draws; 0 is simplest.

    Bits 0-9: `when` (bit 0), a false `when` (bits 1-2 == 3), optional (bit 3), fails
    (bits 4-5 == 3), keep the nearest or the farthest needs (bit 6), at most how many
    needs (bits 7-9, capped at 5). Bits 10-49: which lower-numbered steps it needs.
    """
    n = draw(st.integers(1, 40))
    shapes = draw(st.lists(st.integers(0, 2**50 - 1), min_size=n, max_size=n))
    steps: list[CallStep] = []
    truth: dict[str, bool] = {}
    outcomes: dict[str, Outcome] = {}
    for i, shape in enumerate(shapes):
        step_id = f"s{i}"
        mask = (shape >> 10) & ((1 << i) - 1)
        needs = [j for j in range(i) if mask >> j & 1]
        if shape >> 6 & 1:
            needs.reverse()
        needs = needs[: min(shape >> 7 & 7, 5)]
        steps.append(
            CallStep(
                id=step_id,
                agency="a",
                operation="o",
                needs=tuple(f"s{j}" for j in needs),
                when="true" if shape & 1 else None,
                required=not shape >> 3 & 1,
            )
        )
        truth[step_id] = shape >> 1 & 3 != 3
        outcomes[step_id] = "failed" if shape >> 4 & 3 == 3 else "completed"
    order = draw(st.permutations(range(n)))  # definition order need not be topological
    return Scenario(tuple(steps[i] for i in order), truth, outcomes)


seeds = st.integers(0, 2**32 - 1)


@dataclass
class Driver:
    """Plays the workflow against a planner and checks each Decision as it comes."""

    scenario: Scenario
    planner: Planner = field(init=False)
    decisions: list[Decision] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    decided_at: dict[str, int] = field(default_factory=dict)  # event that decided the step
    recorded_at: dict[str, int] = field(default_factory=dict)  # event that recorded its outcome
    recorded: list[tuple[str, Outcome]] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # in the order they became ready
    stopped_at: int | None = None

    def __post_init__(self) -> None:
        self.planner = Planner(self.scenario.steps, self.condition)

    def condition(self, step: PlanStep) -> bool:
        assert step.when is not None, f"condition called for {step.id} which has no `when`"
        assert self.stopped_at is None, "condition called after stop()"
        for need in step.needs:
            assert self.planner.state(need) == "completed", f"{step.id}: {need} not completed"
        self.calls.append(step.id)
        return self.scenario.truth[step.id]

    def observe(self, decision: Decision) -> None:
        event = len(self.decisions)
        self.decisions.append(decision)
        assert list(decision.ready) == sorted(decision.ready, key=self.definition_position)
        for step_id in decision.ready:
            assert step_id not in self.decided_at, f"{step_id} decided twice"
            self.decided_at[step_id] = event
            assert self.planner.state(step_id) == "running"
            for need in self.scenario.needs(step_id):
                assert self.planner.state(need) == "completed", f"{step_id} ready before {need}"
            self.running.append(step_id)
        for skip in decision.skipped:
            assert skip.step_id not in self.decided_at, f"{skip.step_id} decided twice"
            self.decided_at[skip.step_id] = event
            assert self.planner.state(skip.step_id) == "skipped"
        states = self.planner.states
        everything_done = not self.running and all(s in DECIDED for s in states.values())
        assert decision.finished == everything_done == self.planner.finished

    def definition_position(self, step_id: str) -> int:
        return [step.id for step in self.scenario.steps].index(step_id)

    def start(self) -> None:
        self.observe(self.planner.start())

    def advance(self, rng: random.Random) -> None:
        step_id = self.running.pop(rng.randrange(len(self.running)))
        outcome = self.scenario.outcomes[step_id]
        self.recorded_at[step_id] = len(self.decisions)
        self.recorded.append((step_id, outcome))
        self.observe(self.planner.record(step_id, outcome))

    def run_to_end(self, rng: random.Random) -> None:
        while self.running:
            self.advance(rng)

    def stop(self) -> Decision:
        self.stopped_at = len(self.decisions)
        decision = self.planner.stop()
        self.observe(decision)
        return decision

    def fork_by_restore(self) -> Driver:
        """A driver whose planner is restored from this one's snapshot, through JSON."""
        snapshot = json.loads(json.dumps(self.planner.snapshot()))
        fork = Driver(self.scenario)
        fork.planner = Planner.restore(self.scenario.steps, fork.condition, snapshot)
        fork.decisions = list(self.decisions)
        fork.calls = list(self.calls)
        fork.decided_at = dict(self.decided_at)
        fork.recorded_at = dict(self.recorded_at)
        fork.recorded = list(self.recorded)
        fork.running = list(self.running)
        fork.stopped_at = self.stopped_at
        return fork

    def skip_reasons(self) -> dict[str, str]:
        return {s.step_id: s.reason for d in self.decisions for s in d.skipped}


def full_run(scenario: Scenario, seed: int) -> Driver:
    driver = Driver(scenario)
    driver.start()
    driver.run_to_end(random.Random(seed))
    return driver


class TestWholeRun:
    @SETTINGS
    @given(scenarios(), seeds)
    def test_every_step_is_decided_exactly_once(self, scenario: Scenario, seed: int) -> None:
        """Each step appears in exactly one ready or skipped, and ends decided."""
        driver = full_run(scenario, seed)
        appearances = [s for d in driver.decisions for s in d.ready] + [
            s.step_id for d in driver.decisions for s in d.skipped
        ]
        assert sorted(appearances) == sorted(scenario.ids)
        states = driver.planner.states
        assert set(states) == scenario.ids
        for step_id, state in states.items():
            if step_id in driver.recorded_at:
                assert state == scenario.outcomes[step_id]
            else:
                assert state == "skipped"

    @SETTINGS
    @given(scenarios(), seeds)
    def test_steps_are_decided_in_the_event_their_last_need_is_decided(
        self, scenario: Scenario, seed: int
    ) -> None:
        """Never earlier (checked per decision) and never later: so steps whose needs are all
        met by the same event are ready together, in that event's Decision."""
        driver = full_run(scenario, seed)
        resolved_at = {**driver.decided_at, **driver.recorded_at}
        for step_id in scenario.ids:
            needs = scenario.needs(step_id)
            assert driver.decided_at[step_id] == max((resolved_at[n] for n in needs), default=0)

    @SETTINGS
    @given(scenarios(), seeds, seeds)
    def test_final_states_do_not_depend_on_completion_order(
        self, scenario: Scenario, seed_a: int, seed_b: int
    ) -> None:
        """Two completion orders: same states, skip reasons and condition calls."""
        a, b = full_run(scenario, seed_a), full_run(scenario, seed_b)
        assert dict(a.planner.states) == dict(b.planner.states)
        assert a.skip_reasons() == b.skip_reasons()
        assert sorted(a.calls) == sorted(b.calls)
        assert set(a.planner.failed_required) == set(b.planner.failed_required)

    @SETTINGS
    @given(scenarios(), seeds)
    def test_finished_only_at_the_end(self, scenario: Scenario, seed: int) -> None:
        driver = full_run(scenario, seed)
        assert [d.finished for d in driver.decisions] == [False] * (len(driver.decisions) - 1) + [
            True
        ]

    @SETTINGS
    @given(scenarios(), seeds)
    def test_condition_called_once_for_each_when_step_whose_needs_completed(
        self, scenario: Scenario, seed: int
    ) -> None:
        driver = full_run(scenario, seed)
        states = driver.planner.states
        expected = {
            step.id
            for step in scenario.steps
            if step.when is not None and all(states[n] == "completed" for n in step.needs)
        }
        assert len(driver.calls) == len(set(driver.calls))
        assert set(driver.calls) == expected

    @SETTINGS
    @given(scenarios(), seeds)
    def test_completion_history(self, scenario: Scenario, seed: int) -> None:
        """completed_in_order and failed_required follow the recording order."""
        driver = full_run(scenario, seed)
        required = {step.id for step in scenario.steps if step.required}
        assert driver.planner.completed_in_order() == tuple(
            s for s, outcome in driver.recorded if outcome == "completed"
        )
        assert driver.planner.failed_required == tuple(
            s for s, outcome in driver.recorded if outcome == "failed" and s in required
        )


class TestStopAndRestore:
    @SETTINGS
    @given(scenarios(), seeds, st.integers(0, 40))
    def test_stop_skips_every_pending_step(self, scenario: Scenario, seed: int, after: int) -> None:
        """stop() skips all pending steps; running ones finish; nothing else is decided."""
        rng = random.Random(seed)
        driver = Driver(scenario)
        driver.start()
        for _ in range(after):
            if driver.running:
                driver.advance(rng)
        pending = {s for s, state in driver.planner.states.items() if state == "pending"}
        decision = driver.stop()
        assert decision.ready == ()
        assert {s.step_id for s in decision.skipped} == pending
        assert {s.reason for s in decision.skipped} <= {"request is stopping"}
        driver.run_to_end(rng)
        assert driver.stopped_at is not None
        after_stop = driver.decisions[driver.stopped_at + 1 :]
        assert all(d.ready == () and d.skipped == () for d in after_stop)
        assert set(driver.planner.states.values()) <= DECIDED
        assert driver.decisions[-1].finished

    @SETTINGS
    @given(scenarios(), seeds, st.integers(0, 40))
    def test_snapshot_restore_continues_identically(
        self, scenario: Scenario, seed: int, after: int
    ) -> None:
        """A planner restored from a JSON snapshot makes the same decisions as the original,
        and never re-evaluates a condition already evaluated."""
        rng = random.Random(seed)
        original = Driver(scenario)
        original.start()
        for _ in range(after):
            if original.running:
                original.advance(rng)
        restored = original.fork_by_restore()
        assert dict(restored.planner.states) == dict(original.planner.states)
        assert restored.planner.finished == original.planner.finished
        calls_before = list(original.calls)
        state = rng.getstate()
        original.run_to_end(rng)
        rng.setstate(state)
        restored.run_to_end(rng)
        assert restored.decisions == original.decisions
        assert restored.calls == original.calls
        assert len(set(restored.calls)) == len(restored.calls)
        assert restored.calls[: len(calls_before)] == calls_before
        assert restored.planner.completed_in_order() == original.planner.completed_in_order()
        assert restored.planner.failed_required == original.planner.failed_required
        assert restored.planner.snapshot() == original.planner.snapshot()
