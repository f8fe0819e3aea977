"""Committed histories of real runs replay against today's workflow code.

Any change to `CitizenRequestWorkflow` that would make an in-flight request non-deterministic
fails here. Regenerate (only for an intended, patched change) with:
``.venv/bin/pytest tests/e2e/test_record_histories.py --record-histories``.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from runtime.temporal import data_converter
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
REPLAY_KEY = base64.b64decode("bndkLXJlcGxheS10ZXN0LWtleS0zMi1ieXRlcy0hISE=")
"""The key the committed histories were sealed with; it protects no real data."""


def test_histories_were_recorded() -> None:
    """The replay suite has histories to check (a missing folder must not pass silently)."""
    assert len(HISTORIES) >= 3


@pytest.mark.parametrize("sandboxed", [False, True], ids=["direct", "sandboxed"])
@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_deterministically(path: Path, sandboxed: bool) -> None:
    """Replaying a recorded run with the current code raises no non-determinism error,
    both as production runs it (directly) and under the sandbox's guard."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[CitizenRequestWorkflow],
        data_converter=data_converter(REPLAY_KEY),
        workflow_runner=workflow_runner(sandboxed),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
