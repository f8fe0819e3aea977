"""The pure, deterministic planner that ``CitizenRequestWorkflow`` consults on every event.

The workflow owns time, activities and signals; the planner owns only *which step may run
next*. It knows a service's steps (their ``needs``, ``when`` and ``required``) and the state of
each one::

    pending ──▶ running ──▶ completed
       │                └─▶ failed
       └─────▶ skipped   (a need failed or was skipped, ``when`` was false, or stop())

A step is *decidable* once every one of its needs is decided (completed, failed or skipped).
When it becomes decidable it is decided at once, in the same event:

- a need failed or was skipped → the step is skipped, and the reason names the first such
  need in the order of its ``needs`` ("needs 'x' which failed" / "needs 'x' which was
  skipped"); skips propagate transitively within the event;
- otherwise, if it has a ``when``, ``condition(step)`` is called exactly once: false skips it
  ("condition is false");
- otherwise it is returned as ready and becomes running.

A ``for_each`` step is one step here: the workflow fans its items out and records the step's
aggregate outcome. A required step's failure does not stop the planner by itself; the
workflow decides and calls :meth:`Planner.stop`.

Cost: construction is O(steps + needs). :meth:`Planner.record` touches only the recorded
step's dependents (plus whatever a skip cascade decides), through precomputed dependents and
counters of undecided needs; no event scans every step, except :meth:`Planner.stop` (once).

This module runs inside Temporal's workflow sandbox: no I/O, clocks, randomness, threads or
logging; it imports only the standard library and :mod:`definitions.models`.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, get_args

from definitions.models import CallStep, DecisionStep, ServiceDefinition

StepState = Literal["pending", "running", "completed", "failed", "skipped"]
Outcome = Literal["completed", "failed"]
PlanStep = CallStep | DecisionStep
Condition = Callable[[PlanStep], bool]
"""Evaluates a step's ``when``; called once per step with a ``when`` whose needs all completed."""

STEP_STATES: Final[tuple[StepState, ...]] = get_args(StepState)
_STATE_NAMED: Final[dict[str, StepState]] = {state: state for state in STEP_STATES}
REASON_CONDITION_FALSE: Final = "condition is false"
REASON_STOPPING: Final = "request is stopping"


class PlannerError(ValueError):
    """The planner was misused (an invariant broke) or given an impossible plan or snapshot.

    Inside a workflow this is a bug, not a business outcome: letting it escape fails the
    workflow task, which Temporal retries after the code is fixed.
    """


@dataclass(frozen=True, slots=True)
class Skip:
    """A step decided as skipped, and why."""

    step_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What one event (start, a step's outcome, stop) decided."""

    ready: tuple[str, ...]
    """Steps to start now, in definition order; they are already marked running."""
    skipped: tuple[Skip, ...]
    """Steps this event decided as skipped (transitively), in definition order."""
    finished: bool
    """Every step is decided and none is running."""


class Planner:
    """Decides, event by event, which steps of one request run, and which are skipped.

    Args:
        steps: The service's steps, in definition order (that order orders every output).
        condition: Evaluates a step's ``when``; it must be pure (the workflow evaluates the
            CEL expression against the submission and upstream outputs) and should not raise:
            an exception propagates unchanged and leaves this planner unusable (inside a
            workflow the task fails and is replayed from the start).

    Raises:
        PlannerError: Duplicate step ids, a need that is not a step, or a cycle of needs.
    """

    __slots__ = (
        "_by_id",
        "_completed",
        "_condition",
        "_dependents",
        "_failed_required",
        "_finished_order",
        "_ids",
        "_index",
        "_needs",
        "_pending",
        "_running",
        "_started",
        "_states",
        "_steps",
        "_undecided_needs",
    )

    def __init__(self, steps: Sequence[PlanStep], condition: Condition) -> None:
        self._steps: tuple[PlanStep, ...] = tuple(steps)
        self._condition = condition
        self._ids: tuple[str, ...] = tuple(step.id for step in self._steps)
        self._index: dict[str, int] = {}
        for position, step_id in enumerate(self._ids):
            if step_id in self._index:
                raise PlannerError(
                    f"step id {step_id!r} appears twice (steps #{self._index[step_id] + 1} and "
                    f"#{position + 1}); step ids must be unique within a service"
                )
            self._index[step_id] = position

        needs: list[tuple[int, ...]] = []
        dependents: list[list[int]] = [[] for _ in self._steps]
        for position, step in enumerate(self._steps):
            unique: dict[int, None] = {}  # ordered set: a need listed twice counts once
            for need in step.needs:
                need_position = self._index.get(need)
                if need_position is None:
                    raise PlannerError(
                        f"step {step.id!r} needs {need!r}, which is not a step of this service; "
                        f"steps are: {', '.join(self._ids)}"
                    )
                if need_position == position:
                    raise PlannerError(f"step {step.id!r} needs itself; remove it from 'needs'")
                unique[need_position] = None
            needs.append(tuple(unique))
            for need_position in unique:
                dependents[need_position].append(position)
        self._needs: tuple[tuple[int, ...], ...] = tuple(needs)
        self._dependents: tuple[tuple[int, ...], ...] = tuple(tuple(d) for d in dependents)
        self._check_acyclic()

        self._states: list[StepState] = ["pending"] * len(self._steps)
        self._by_id: dict[str, StepState] = dict.fromkeys(self._ids, "pending")
        self._undecided_needs: list[int] = [len(n) for n in self._needs]
        self._pending = len(self._steps)
        self._running = 0
        self._finished_order: list[int] = []  # completed or failed steps, in recording order
        self._completed: list[str] = []
        self._failed_required: list[str] = []
        self._started = False

    @classmethod
    def from_service(cls, service: ServiceDefinition, condition: Condition) -> Planner:
        """Plan a service definition's steps."""
        return cls(service.steps, condition)

    # ----------------------------------------------------------------------- events

    def start(self) -> Decision:
        """Decide the steps without needs (and whatever their skips decide); call once."""
        if self._started:
            raise PlannerError("start() was already called; a planner starts once")
        self._started = True
        frontier = [
            position
            for position, count in enumerate(self._undecided_needs)
            if count == 0 and self._states[position] == "pending"
        ]
        return self._decide(frontier)

    def record(self, step_id: str, outcome: Outcome) -> Decision:
        """Record that a running step finished, and decide what that makes decidable.

        Raises:
            PlannerError: The step is unknown, not running, or the outcome is not
                ``"completed"`` or ``"failed"``.
        """
        position = self._position(step_id)
        if outcome != "completed" and outcome != "failed":
            raise PlannerError(
                f"record({step_id!r}, {outcome!r}): outcome must be 'completed' or 'failed'"
            )
        current = self._states[position]
        if current != "running":
            raise PlannerError(
                f"record({step_id!r}, {outcome!r}): the step is {current}, not running; only a "
                "step returned as ready and not yet recorded can finish"
            )
        self._set(position, outcome)
        self._running -= 1
        self._finished_order.append(position)
        if outcome == "completed":
            self._completed.append(step_id)
        elif self._steps[position].required:
            self._failed_required.append(step_id)
        return self._decide(self._release(position, []))

    def stop(self) -> Decision:
        """Stop launching: every pending step is skipped ("request is stopping").

        Running steps stay running and must still be recorded; nothing becomes ready
        afterwards. Calling it again decides nothing.
        """
        skipped: list[Skip] = []
        for position, state in enumerate(self._states):
            if state == "pending":
                self._set(position, "skipped")
                skipped.append(Skip(self._ids[position], REASON_STOPPING))
        self._pending = 0
        return Decision(ready=(), skipped=tuple(skipped), finished=self._running == 0)

    # ----------------------------------------------------------------------- queries

    def state(self, step_id: str) -> StepState:
        """The step's current state."""
        return self._states[self._position(step_id)]

    @property
    def states(self) -> Mapping[str, StepState]:
        """Every step's state by id, in definition order (a live, read-only view)."""
        return MappingProxyType(self._by_id)

    @property
    def running(self) -> tuple[str, ...]:
        """Steps running now, in definition order (scans every step)."""
        return tuple(self._ids[p] for p, s in enumerate(self._states) if s == "running")

    @property
    def failed_required(self) -> tuple[str, ...]:
        """Required steps that failed, in the order their failures were recorded."""
        return tuple(self._failed_required)

    @property
    def finished(self) -> bool:
        """Every step is decided and none is running."""
        return self._pending == 0 and self._running == 0

    def completed_in_order(self) -> tuple[str, ...]:
        """Completed steps in the order they completed (compensate in reverse)."""
        return tuple(self._completed)

    # ----------------------------------------------------------------------- continue-as-new

    def snapshot(self) -> dict[str, StepState]:
        """Every step's state, JSON-safe, for continue-as-new.

        The key order carries history: completed and failed steps first, in the order they
        were recorded, then the others in definition order. JSON keeps key order, so
        :meth:`restore` recovers :meth:`completed_in_order` and :attr:`failed_required`.
        """
        snapshot: dict[str, StepState] = {
            self._ids[p]: self._states[p] for p in self._finished_order
        }
        for position, state in enumerate(self._states):
            if state not in ("completed", "failed"):
                snapshot[self._ids[position]] = state
        return snapshot

    @classmethod
    def restore(
        cls, steps: Sequence[PlanStep], condition: Condition, snapshot: Mapping[str, str]
    ) -> Planner:
        """Rebuild a planner from :meth:`snapshot`; ``condition`` is called only for steps
        decided from now on, never again for steps already decided.

        Raises:
            PlannerError: The snapshot does not name exactly these steps, holds an unknown
                state, or could not have come from a run of these steps.
        """
        planner = cls(steps, condition)
        missing = [step_id for step_id in planner._ids if step_id not in snapshot]
        unknown = [step_id for step_id in snapshot if step_id not in planner._index]
        if missing or unknown:
            raise PlannerError(
                "snapshot does not match the steps: "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        for step_id, name in snapshot.items():
            state = _STATE_NAMED.get(name)
            if state is None:
                raise PlannerError(
                    f"snapshot gives step {step_id!r} the state {name!r}; "
                    f"states are: {', '.join(STEP_STATES)}"
                )
            position = planner._index[step_id]
            planner._set(position, state)
            if state in ("completed", "failed"):
                planner._finished_order.append(position)
                if state == "completed":
                    planner._completed.append(step_id)
                elif planner._steps[position].required:
                    planner._failed_required.append(step_id)
        planner._rebuild_counters()
        return planner

    # ----------------------------------------------------------------------- internals

    def _position(self, step_id: str) -> int:
        position = self._index.get(step_id)
        if position is None:
            raise PlannerError(
                f"no step {step_id!r} in this plan; steps are: {', '.join(self._ids)}"
            )
        return position

    def _set(self, position: int, state: StepState) -> None:
        self._states[position] = state
        self._by_id[self._ids[position]] = state

    def _release(self, position: int, frontier: list[int]) -> list[int]:
        """A step was decided: count it off its dependents; collect those now decidable."""
        undecided = self._undecided_needs
        states = self._states
        for dependent in self._dependents[position]:
            undecided[dependent] -= 1
            if undecided[dependent] == 0 and states[dependent] == "pending":
                frontier.append(dependent)
        return frontier

    def _decide(self, frontier: list[int]) -> Decision:
        """Decide every decidable step in ``frontier``, and transitively what skips free.

        The hot path of every event: attributes are bound to locals on purpose.
        """
        ids, steps, needs_of = self._ids, self._steps, self._needs
        states, by_id = self._states, self._by_id
        undecided, dependents = self._undecided_needs, self._dependents
        heappop, heappush = heapq.heappop, heapq.heappush
        ready: list[int] = []
        skipped: list[tuple[int, str]] = []
        heapq.heapify(frontier)  # definition order, so condition calls are in a fixed order
        while frontier:
            position = heappop(frontier)
            reason: str | None = None
            for need in needs_of[position]:
                need_state = states[need]
                if need_state == "failed":
                    reason = f"needs {ids[need]!r} which failed"
                    break
                if need_state == "skipped":
                    reason = f"needs {ids[need]!r} which was skipped"
                    break
            step = steps[position]
            if reason is None and step.when is not None and not self._condition(step):
                reason = REASON_CONDITION_FALSE
            if reason is None:
                states[position] = by_id[ids[position]] = "running"
                ready.append(position)
                continue
            states[position] = by_id[ids[position]] = "skipped"
            skipped.append((position, reason))
            for dependent in dependents[position]:
                undecided[dependent] -= 1
                if undecided[dependent] == 0 and states[dependent] == "pending":
                    heappush(frontier, dependent)
        self._pending -= len(ready) + len(skipped)
        self._running += len(ready)
        ready.sort()
        skipped.sort()
        return Decision(
            ready=tuple([ids[p] for p in ready]),
            skipped=tuple([Skip(ids[p], reason) for p, reason in skipped]),
            finished=self._pending == 0 and self._running == 0,
        )

    def _check_acyclic(self) -> None:
        """Kahn's algorithm; on a cycle, name one cycle's steps in order."""
        remaining = [len(n) for n in self._needs]
        queue = [p for p, count in enumerate(remaining) if count == 0]
        done = 0
        while queue:
            position = queue.pop()
            done += 1
            for dependent in self._dependents[position]:
                remaining[dependent] -= 1
                if remaining[dependent] == 0:
                    queue.append(dependent)
        if done == len(self._steps):
            return
        # Walk needs that are themselves stuck until a step repeats: that walk closes a cycle.
        position = next(p for p, count in enumerate(remaining) if count > 0)
        path: list[int] = []
        seen: dict[int, int] = {}
        while position not in seen:
            seen[position] = len(path)
            path.append(position)
            position = next(n for n in self._needs[position] if remaining[n] > 0)
        cycle = [self._ids[p] for p in path[seen[position] :]]
        cycle.append(cycle[0])
        raise PlannerError(
            f"the steps' needs form a cycle ({' -> needs '.join(cycle)}); no step in it "
            "could ever start"
        )

    def _rebuild_counters(self) -> None:
        """After restore: recount undecided needs, pending and running; check consistency."""
        states = self._states
        self._pending = 0
        self._running = 0
        self._started = any(state != "pending" for state in states)
        for position, state in enumerate(states):
            needs = self._needs[position]
            self._undecided_needs[position] = sum(
                1 for n in needs if states[n] in ("pending", "running")
            )
            if state == "pending":
                self._pending += 1
                if self._started and self._undecided_needs[position] == 0:
                    raise PlannerError(
                        f"snapshot is inconsistent: step {self._ids[position]!r} is pending "
                        "although all its needs are decided"
                    )
            elif state != "skipped":
                if state == "running":
                    self._running += 1
                for need in needs:
                    if states[need] != "completed":
                        raise PlannerError(
                            f"snapshot is inconsistent: step {self._ids[position]!r} is {state} "
                            f"although its need {self._ids[need]!r} is {states[need]}"
                        )
