"""The read model compared with Temporal: what the tests, the soak and an operator check.

The history in Temporal is the truth; the PostgreSQL read model (what ``GET /requests/{ref}``,
``nwd status`` and ``nwd report`` show) is a view written by several writers that can land
late or out of order. :func:`differences` lists where a request's row disagrees with
Temporal's view (:func:`temporal_view`) on everything the read model claims to know:

- the request's status (and, once the workflow has closed, that the row is finished);
- for every step: one row per item (a step without items: one row for the step), with the
  item's status and agency reference; for a decision step, who decided;
- no row Temporal does not know.

Temporal's view is the workflow's result once it has completed, its ``progress`` query while
it runs. While it runs, three things are allowed, because the engine writes them only later:

- no row yet for a step that is pending, skipped or a waiting decision, or for an item whose
  call has not answered its first attempt (running);
- ``retrying`` (the row of a call between attempts) for what Temporal calls running.

Attempts, reasons and escalations are not compared: the read model counts attempts over
every call of an item (its undo and withdrawal included) and words reasons its own way.
The tests' assertion that polls until they agree is ``tests/consistency.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.client import Client, WorkflowExecutionStatus

from readmodel.store import RequestRow, StepRow
from runtime.messages import RequestStatus, StepOutcome
from workflows.request_workflow import CitizenRequestWorkflow

MISSING_WHILE_RUNNING = ("pending", "running", "skipped")
"""Step or item states the engine may not have written yet while the request runs."""


@dataclass(frozen=True)
class TemporalView:
    """What Temporal says of a request: its status, whether it closed, and its steps."""

    status: RequestStatus
    closed: bool
    steps: list[StepOutcome]


async def temporal_view(client: Client, reference: str) -> TemporalView:
    """The request's result if its workflow completed, else its live ``progress``.

    Raises:
        AssertionError: the workflow ended without a result (failed, terminated, timed out),
            so there is no view the read model could equal.
    """
    handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    described = await handle.describe()
    if described.status == WorkflowExecutionStatus.COMPLETED:
        result = await handle.result()
        return TemporalView(result.status, True, result.steps)
    if described.status == WorkflowExecutionStatus.RUNNING:
        progress = await handle.query(CitizenRequestWorkflow.progress)
        return TemporalView(progress.status, False, progress.steps)
    status = described.status.name if described.status else "unknown"
    raise AssertionError(f"request {reference}'s workflow ended {status}, without a result")


def differences(row: RequestRow, view: TemporalView) -> list[str]:
    """Every way the read model's row differs from Temporal's view (empty: they agree)."""
    problems: list[str] = []
    if row.status != view.status:
        problems.append(f"request status: read model {row.status!r}, Temporal {view.status!r}")
    if view.closed and row.finished_at is None:
        problems.append("the workflow has closed but the read model's row is not finished")
    rows: dict[tuple[str, str | None], StepRow] = {(s.step_id, s.item_key): s for s in row.steps}
    for step in view.steps:
        expected: list[tuple[str | None, str, str | None]] = (
            [(i.key, i.status, i.agency_reference) for i in step.items] if step.items
            else [(None, step.status, None)])
        for key, status, reference in expected:
            label = step.step_id + (f"[{key}]" if key is not None else "")
            got = rows.pop((step.step_id, key), None)
            if got is None:
                if not view.closed and (status in MISSING_WHILE_RUNNING or (
                        step.kind == "decision" and status == "waiting")):
                    continue
                problems.append(f"{label}: no row in the read model; Temporal says {status!r}")
                continue
            seen = "running" if got.status == "retrying" and not view.closed else got.status
            if seen != status:
                problems.append(f"{label}: status: read model {got.status!r}, Temporal {status!r}")
            if got.agency_reference != reference:
                problems.append(f"{label}: agency reference: read model "
                                f"{got.agency_reference!r}, Temporal {reference!r}")
            if step.kind == "decision" and got.decided_by != step.decided_by:
                problems.append(f"{label}: decided by: read model {got.decided_by!r}, "
                                f"Temporal {step.decided_by!r}")
    problems += [f"{step_id}{f'[{key}]' if key is not None else ''}: a row ({got.status!r}) "
                 "for a step or item Temporal does not have"
                 for (step_id, key), got in rows.items()]
    return problems

