"""The determinism guard, proven: deliberate non-deterministic changes to the workflow code fail
the replay of the committed histories, wherever the change would touch a request in flight.

Each change is a subclass of :class:`CitizenRequestWorkflow` registered under the same type
name, ``CitizenRequest`` — what a careless edit of the workflow would ship:

- :class:`ExtraTimer` waits a second before anything else: a command no history holds;
- :class:`SkipsFinalRecord` no longer writes the read model's row at the end (a local
  activity); it matters to every history that ran to its end;
- :class:`CompensatesOldestFirst` reorders the saga's undo calls — two activities of one type.

The SDK's replay check compares commands with the history's events by kind, activity type and
activity ID; the engine's activity IDs are the SDK's sequence numbers, so reordering two calls
of ``call_agency`` passes it — and a request in flight would then be handed one agency's
answer as another's. :func:`replay` therefore also compares each activity the code schedules
with the input the history recorded for it (decoded into the code's own type, so a new
optional field is no difference) and raises :class:`InputNondeterminismError`, a
non-determinism error of its own, when they differ. The unchanged workflow passes both
checks on every history.

Only the direct runner is used here (the sandbox would re-import this module);
``test_replay.py`` replays every history under both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)
from temporalio.workflow import ActivityHandle, NondeterminismError

from runtime.messages import AgencyCallInput, RecordRequestInput, RequestInput, RequestResult
from runtime.temporal import data_converter
from tests.replay.test_replay import HISTORIES, REPLAY_KEY
from worker import workflow_runner
from workflows.effects import Effects
from workflows.request_workflow import CitizenRequestWorkflow
from workflows.saga import Saga

CONVERTER = data_converter(REPLAY_KEY)


# ---------------------------------------------------------------------------- the changes


@workflow.defn(name="CitizenRequest")
class ExtraTimer(CitizenRequestWorkflow):
    """Waits a second before the request starts."""

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        await workflow.sleep(timedelta(seconds=1))
        return await super().run(request)


class _NoFinalRecord(Effects):
    async def record_request(self, record: RecordRequestInput) -> None:
        if not record.finished:
            await super().record_request(record)


@workflow.defn(name="CitizenRequest")
class SkipsFinalRecord(CitizenRequestWorkflow):
    """Writes no read-model row at the end."""

    @workflow.init
    def __init__(self, request: RequestInput) -> None:
        super().__init__(request)
        # the one Effects object every concern shares, given the changed behaviour in place
        self._effects.__class__ = _NoFinalRecord

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        return await super().run(request)


class _OldestFirst(Saga):
    async def compensate(self, completed_in_order: Sequence[str]) -> None:
        await super().compensate(list(reversed(completed_in_order)))


@workflow.defn(name="CitizenRequest")
class CompensatesOldestFirst(CitizenRequestWorkflow):
    """Undoes completed steps oldest first instead of newest first."""

    @workflow.init
    def __init__(self, request: RequestInput) -> None:
        super().__init__(request)
        self._saga = _OldestFirst(request, self._state, self._bindings, self._calls)

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        return await super().run(request)


# ---------------------------------------------------------------------------- replaying


class InputNondeterminismError(NondeterminismError):
    """The code scheduled an activity with another input than the history recorded for it."""


class _Scheduled(Interceptor):
    """Notes every (non-local) activity the workflow code schedules, with its arguments."""

    def __init__(self) -> None:
        self.activities: list[tuple[str, list[Any]]] = []

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        noted = self.activities

        class Outbound(WorkflowOutboundInterceptor):
            def start_activity(self, input: StartActivityInput) -> ActivityHandle[Any]:
                noted.append((input.activity, list(input.args)))
                return super().start_activity(input)

        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                super().init(Outbound(outbound))

        return Inbound


def history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def scheduled_events(events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    return [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]


async def recorded_calls(path: Path) -> list[AgencyCallInput]:
    """The agency calls the history recorded, decoded."""
    calls: list[AgencyCallInput] = []
    for event in scheduled_events(history(path).events):
        attributes = event.activity_task_scheduled_event_attributes
        if attributes.activity_type.name == "call_agency":
            [call] = await CONVERTER.decode(list(attributes.input.payloads), [AgencyCallInput])
            calls.append(call)
    return calls


async def replay(workflow_class: type, path: Path, *, check_inputs: bool = True) -> None:
    """Replay the history at ``path`` with ``workflow_class``.

    Raises:
        NondeterminismError: the SDK's check failed, or (``check_inputs``) an activity was
            scheduled with another input than recorded (:class:`InputNondeterminismError`).
    """
    recorded = history(path)
    scheduled = _Scheduled()
    await Replayer(
        workflows=[workflow_class], data_converter=CONVERTER,
        workflow_runner=workflow_runner(False), interceptors=[scheduled],
    ).replay_workflow(recorded)
    if not check_inputs:
        return
    events = scheduled_events(recorded.events)
    assert len(scheduled.activities) == len(events)  # else the SDK's check had failed
    for (activity, args), event in zip(scheduled.activities, events, strict=True):
        attributes = event.activity_task_scheduled_event_attributes
        expected = await CONVERTER.decode(list(attributes.input.payloads),
                                          [type(arg) for arg in args])
        if activity != attributes.activity_type.name or expected != args:
            was = getattr(expected[0], "step_id", "?") if expected else "?"
            now = getattr(args[0], "step_id", "?") if args else "?"
            raise InputNondeterminismError(
                f"{path.stem}: activity {attributes.activity_id} ({activity}) was scheduled "
                f"for step {now!r} where the history recorded step {was!r}"
            )


# ---------------------------------------------------------------------------- where each applies


async def _everywhere(_path: Path) -> bool:
    return True


async def _ran_to_its_end(path: Path) -> bool:
    """The run completed, so it recorded the request at its end."""
    last = history(path).events[-1]
    return last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED


async def _undid_two_steps(path: Path) -> bool:
    """Compensation undid at least two steps, so their order shows."""
    undone = {c.step_id for c in await recorded_calls(path) if c.idempotency_key.endswith(":undo")}
    return len(undone) >= 2


CHANGES: dict[type, Callable[[Path], Any]] = {
    ExtraTimer: _everywhere,
    SkipsFinalRecord: _ran_to_its_end,
    CompensatesOldestFirst: _undid_two_steps,
}
"""Each deliberate change, and which histories it touches."""


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_the_unchanged_workflow_replays_with_the_recorded_inputs(path: Path) -> None:
    """Today's code replays every history and schedules exactly the inputs it recorded."""
    await replay(CitizenRequestWorkflow, path)


@pytest.mark.parametrize("change", list(CHANGES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_a_non_deterministic_change_fails_where_it_applies(path: Path, change: type) -> None:
    """Where the change touches the history the replay fails with a non-determinism error;
    where it does not, the history replays (the change itself is sound code)."""
    if await CHANGES[change](path):
        with pytest.raises(NondeterminismError):
            await replay(change, path)
    else:
        await replay(change, path)


@pytest.mark.parametrize("change", list(CHANGES), ids=lambda c: c.__name__)
async def test_each_change_applies_to_committed_histories(change: type) -> None:
    """No change passes for want of a history it touches (the table above is not vacuous)."""
    touched = [p.stem for p in HISTORIES if await CHANGES[change](p)]
    assert len(touched) >= 2, touched


async def test_reordered_calls_of_one_activity_type_pass_the_sdks_check_alone() -> None:
    """Why :func:`replay` compares inputs: with the saga's undo calls reordered, every history
    that undid two steps replays without an SDK error (one activity type, sequence-number
    IDs), and the input check names the swap."""
    touched = [p for p in HISTORIES if await _undid_two_steps(p)]
    assert touched
    for path in touched:
        await replay(CompensatesOldestFirst, path, check_inputs=False)
        swapped = r"was scheduled for step '\w+' where the history recorded step '\w+'"
        with pytest.raises(InputNondeterminismError, match=swapped):
            await replay(CompensatesOldestFirst, path)
