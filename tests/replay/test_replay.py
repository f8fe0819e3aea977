"""Committed histories of real runs replay against today's workflow code.

Any change to `CitizenRequestWorkflow` that would make an in-flight request non-deterministic
fails here. The histories are recorded by the scenarios of tests/e2e/test_record_histories.py;
regenerate them (only for an intended, patched change) with
``NWD_RECORD_HISTORIES=1 .venv/bin/pytest tests/e2e/test_record_histories.py``, which writes
them to tests/replay/histories/ sealed with :data:`REPLAY_KEY`, then commit them.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from runtime.temporal import data_converter
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
REPLAY_KEY = base64.b64decode("bndkLXJlcGxheS10ZXN0LWtleS0zMi1ieXRlcy0hISE=")
"""The key the committed histories were sealed with; it protects no real data."""


def replayer(sandboxed: bool) -> Replayer:
    return Replayer(
        workflows=[CitizenRequestWorkflow],
        data_converter=data_converter(REPLAY_KEY),
        workflow_runner=workflow_runner(sandboxed),
    )


def test_histories_were_recorded() -> None:
    """The replay suite has histories to check (a missing folder must not pass silently)."""
    assert len(HISTORIES) >= 3


@pytest.mark.parametrize("sandboxed", [False, True], ids=["direct", "sandboxed"])
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_deterministically(path: Path, sandboxed: bool) -> None:
    """Replaying a recorded run with the current code raises no non-determinism error,
    both as production runs it (directly) and under the sandbox's guard."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == "CitizenRequest"  # a history of this workflow
    # raises on any non-determinism (raise_on_replay_failure is the default); the test below
    # shows that it does
    await replayer(sandboxed).replay_workflow(history)


async def test_a_history_the_code_would_not_make_fails_to_replay() -> None:
    """The replay check can fail: a history whose first agency call was another activity
    (what renaming an activity would do to every request in flight) is refused."""
    path = next(p for p in HISTORIES if p.stem == "completed_with_retries")
    recorded = json.loads(path.read_text())
    scheduled = next(e for e in recorded["events"]
                     if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
    assert scheduled["activityTaskScheduledEventAttributes"]["activityType"] == {
        "name": "call_agency"}
    scheduled["activityTaskScheduledEventAttributes"]["activityType"] = {"name": "call_agency2"}
    changed = WorkflowHistory.from_json(path.stem, json.dumps(recorded))
    with pytest.raises(NondeterminismError):
        await replayer(False).replay_workflow(changed)
