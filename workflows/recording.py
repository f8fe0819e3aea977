"""What the workflow tells the read model: the request's row, what messages changed, its end.

Three kinds of local activity write it (a local activity runs inside the worker's workflow
task: no extra round trip to the server):

- ``record_request`` at the start, unless the front door wrote the row already
  (``RequestOptions.recorded_at_submit``: one marker fewer);
- ``record_progress`` after a message landed — an agency's callback, a citizen's answer, a
  caseworker's decision — with the one step (and for a call, the one item) it changed.
  Agency calls write their own progress inside the activity (group-committed), so only what
  arrives by update would otherwise reach the read model at the end. One local activity per
  message, not per item; the branch waits for it before going on, so the next agency call's
  own write cannot be overtaken by it;
- ``record_progress`` when a decision step starts waiting (``decision_awaited``), so the
  caseworkers' task list, read from the read model, lists it while it waits;
- ``record_request`` at the end, with every step's outcome.

Each write carries ``as_of`` (``workflow.now()``): the read model keeps a step's row from
going back to an older state written late (readmodel/store.py). Agency outputs and callback
digests are left out: the read model keeps neither, and they would only weigh down the
history's markers.

``record_progress`` is new for requests in flight, so it is behind the patch
:data:`READ_MODEL_FOLLOWS_MESSAGES`: a run that handled a message before the change replays
without it (and goes on without it; its read model catches up at the end), and a request
that never receives a message pays for no marker at all — the patch is asked only when a
message is recorded.
"""

from __future__ import annotations

from temporalio import workflow

from runtime.messages import (
    ItemOutcome,
    RecordProgressInput,
    RecordRequestInput,
    RequestInput,
    StepOutcome,
)
from workflows.effects import Effects
from workflows.state import RequestState

READ_MODEL_FOLLOWS_MESSAGES = "read-model-follows-messages"
"""The patch id guarding ``record_progress`` (part of every history that has it: never rename)."""
READ_MODEL_LISTS_WAITING_DECISIONS = "read-model-lists-waiting-decisions"
"""The patch id guarding the ``decision_awaited`` write: a decision step's row is written when
it starts waiting, so the caseworkers' task list (read from the read model) shows it. A run
that started waiting before the change replays without it (its row appears when decided)."""


def request_record(
    request: RequestInput, state: RequestState, *, finished: bool
) -> RecordRequestInput:
    snapshot = request.snapshot
    return RecordRequestInput(
        reference=request.reference,
        service=snapshot.service.service,
        version=snapshot.service.version,
        content_hash=snapshot.content_hash,
        language=request.language,
        submitted_at=request.submitted_at,
        status=state.status,
        agencies=sorted({a.id for a in snapshot.agencies}),
        steps=[for_read_model(s) for s in state.steps.values()] if finished else [],
        finished=finished,
        agencies_contacted=state.agencies_contacted(),
        as_of=workflow.now(),
    )


def for_read_model(step: StepOutcome) -> StepOutcome:
    """The step as the read model stores it: without agency outputs and callback digests."""
    if not any(i.output or i.callback_digest for i in step.items):
        return step
    return step.model_copy(update={"items": [_item(i) for i in step.items]})


def _item(item: ItemOutcome) -> ItemOutcome:
    if not (item.output or item.callback_digest):
        return item
    return item.model_copy(update={"output": None, "callback_digest": None})


class ProgressRecorder:
    """Writes what a message changed to the read model (``record_progress``).

    Args:
        request: The request (its reference).
        state: Where the changed step is read.
        effects: Starts the local activity (counted, so continue-as-new waits for it).
    """

    def __init__(self, request: RequestInput, state: RequestState, effects: Effects) -> None:
        self._reference = request.reference
        self._state = state
        self._effects = effects

    async def item_changed(self, step_id: str, index: int, event: str) -> None:
        """A call step's item changed (callback applied, answer sent): its row only."""
        step = self._state.steps[step_id]
        await self._write(step.model_copy(update={"items": [step.items[index]]}), event)

    async def step_changed(self, step_id: str, event: str) -> None:
        """A step without items changed (a decision): its row."""
        await self._write(self._state.steps[step_id], event)

    async def decision_awaited(self, step_id: str) -> None:
        """A decision step started waiting for a caseworker: its row (kind ``decision``,
        status ``waiting``, ``deadline_at``), so the task list can show it."""
        if not workflow.patched(READ_MODEL_LISTS_WAITING_DECISIONS):
            return
        await self._write(self._state.steps[step_id], "decision_awaited")

    async def _write(self, step: StepOutcome, event: str) -> None:
        if not workflow.patched(READ_MODEL_FOLLOWS_MESSAGES):
            return
        await self._effects.record_progress(RecordProgressInput(
            reference=self._reference, step=for_read_model(step), event=event,
            as_of=workflow.now(),
        ))
