"""What the workflow tells the read model: the request's row when it starts, and its end.

Two ``record_request`` local activities at most per request: one at the start, unless the
front door wrote the row already (``RequestOptions.recorded_at_submit``: one marker fewer),
and one when it finished, with every step's outcome. Progress in between is written by the
agency-call activities themselves (group-committed), not from here. Agency outputs are left
out of the finished record: the read model keeps none, and they would only weigh down the
history's marker.
"""

from __future__ import annotations

from runtime.messages import RecordRequestInput, RequestInput, StepOutcome
from workflows.state import RequestState


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
        steps=[_without_outputs(s) for s in state.steps.values()] if finished else [],
        finished=finished,
        agencies_contacted=state.agencies_contacted(),
    )


def _without_outputs(step: StepOutcome) -> StepOutcome:
    if not any(i.output for i in step.items):
        return step
    return step.model_copy(update={"items": [i.model_copy(update={"output": None})
                                             for i in step.items]})
