"""Representative runs whose histories feed the replay tests (tests/replay/).

One of them — a callback and a request for information, the protocol's two long waits — runs
in every suite: its fresh history must replay with today's code, directly and under the
sandbox, before any history of it could be committed. Recording all of them happens only
on purpose, after an intended (patched) workflow change::

    NWD_RECORD_HISTORIES=1 .venv/bin/pytest tests/e2e/test_record_histories.py

which replays each run and writes it to tests/replay/histories/, sealed with the replay
suite's fixed test key, to be committed. What the other scenarios show as they run is tested
where that behaviour lives (docs/testing.md lists where); that their histories keep replaying
is tests/replay's job.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from definitions.catalog import Catalog
from definitions.submission import validate_submission
from runtime.messages import RequestInput, RequestOptions
from runtime.temporal import data_converter
from tests.e2e.conftest import Engine, example
from tests.polling import progress_until
from tests.replay.test_replay import REPLAY_KEY
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow

HISTORY_DIR = Path(__file__).resolve().parents[1] / "replay" / "histories"
RECORDING = os.environ.get("NWD_RECORD_HISTORIES") == "1"


@pytest.fixture(scope="module")
def encryption_key() -> bytes:
    return REPLAY_KEY


async def until_waiting(engine: Engine, reference: str, step: str) -> None:
    """Within 30 s, the request's ``step`` waits (for a callback, information or a decision)."""
    await progress_until(engine.submissions.handle(reference), lambda p: any(
        s.step_id == step and s.status == "waiting" for s in p.steps), within_s=30)


async def completed_with_retries(engine: Engine, _licensed: Catalog) -> str:
    await engine.agencies.set_behaviour("tax-authority", {"error_every": 2})
    return await engine.submit("change-of-address", example("change-of-address"))


async def compensated(engine: Engine, _licensed: Catalog) -> str:
    await engine.agencies.set_behaviour("tax-authority", {
        "latency_ms": 800, "reject": {"code": "unknown_taxpayer", "reason": "unknown"}})
    return await engine.submit("change-of-address", example("change-of-address"))


async def callback_and_information(engine: Engine, _licensed: Catalog) -> str:
    await engine.agencies.set_behaviour(
        "electoral-registration", {"mode": "callback", "callback_delay_s": 0.5})
    await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
        "fields": {"proof_of_address": {"type": "text"}}, "message": {"en": "Proof, please"}}})
    reference = await engine.submit("change-of-address", example("change-of-address"))
    await until_waiting(engine, reference, "update_tax_address")
    response = await engine.intake.post(f"/requests/{reference}/information", json={
        "step_id": "update_tax_address", "answers": {"proof_of_address": "bill"}})
    assert response.status_code == 200, response.text
    return reference


async def cancelled(engine: Engine, _licensed: Catalog) -> str:
    await engine.agencies.set_behaviour(
        "benefits-agency", {"mode": "callback", "callback_delay_s": 30})
    reference = await engine.submit("change-of-address", example("change-of-address"))
    await until_waiting(engine, reference, "update_benefits")
    response = await engine.intake.post(f"/requests/{reference}/cancel", json={})
    assert response.status_code == 200, response.text
    return reference


async def decided_after_escalations(engine: Engine, licensed: Catalog) -> str:
    await engine.agencies.set_behaviour(
        "business-registry", {"mode": "callback", "callback_delay_s": 1.5})
    submissions = engine.submissions_for(licensed)
    submitted = await submissions.submit("licensed-business", example("register-a-business"),
                                         idempotency_key=str(uuid.uuid4()))
    await until_waiting(engine, submitted.reference, "approve_trading")
    await asyncio.sleep(2.2)  # the decision's 2 s due date passes: one escalation
    response = await engine.decide(submitted.reference, "approve_trading", approve=True,
                                   subject="sam", roles=["licensing-officer"])
    assert response.status_code == 200, response.text
    return submitted.reference


async def continued_as_new(engine: Engine, _licensed: Catalog) -> str:
    await engine.agencies.set_behaviour(
        "benefits-agency", {"mode": "callback", "callback_delay_s": 2})
    snapshot = engine.submissions.catalog.snapshot("change-of-address")
    reference = f"CAN-{uuid.uuid4().hex[:12].upper()}"
    await engine.client.start_workflow(
        CitizenRequestWorkflow.run,
        RequestInput(reference=reference, snapshot=snapshot,
                     submission=validate_submission(snapshot.service.input,
                                                    example("change-of-address")),
                     submitted_at=datetime.now(UTC), callback_base_url=engine.intake_url,
                     options=RequestOptions(continue_as_new_after_events=20)),
        id=reference, task_queue=engine.task_queue)
    engine.started.append(reference)
    return reference


SCENARIOS: dict[str, Callable[[Engine, Catalog], Awaitable[str]]] = {
    "decided_after_escalations": decided_after_escalations,
    "continued_as_new": continued_as_new,
    "completed_with_retries": completed_with_retries,
    "compensated_after_required_failure": compensated,
    "callback_and_information": callback_and_information,
    "cancelled_mid_fan_out": cancelled,
}


async def run_and_replay(engine: Engine, licensed: Catalog, scenario: str) -> WorkflowHistory:
    """Run ``scenario`` to its end; its history, replayed with today's code by both runners."""
    reference = await SCENARIOS[scenario](engine, licensed)
    handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    await asyncio.wait_for(handle.result(), 60)
    history = await handle.fetch_history()
    for sandboxed in (False, True):
        replayer = Replayer(workflows=[CitizenRequestWorkflow],
                            data_converter=data_converter(REPLAY_KEY),
                            workflow_runner=workflow_runner(sandboxed))
        # raises on any non-determinism: a history that does not replay is never written
        await replayer.replay_workflow(history, raise_on_replay_failure=True)
    return history


async def test_callback_and_information_run_replays_with_todays_code(
    engine: Engine, licensed_catalog: Catalog
) -> None:
    """A fresh run through a callback and an answered request for information completes, and
    its history replays directly and sandboxed (so it could be recorded as it is)."""
    history = await run_and_replay(engine, licensed_catalog, "callback_and_information")
    result = await engine.result(history.workflow_id)
    assert result.status == "completed"
    steps = {s.step_id: s for s in result.steps}
    assert steps["update_voter_registration"].status == "completed"
    assert steps["update_tax_address"].status == "completed"


if RECORDING:
    @pytest.mark.parametrize("scenario", sorted(SCENARIOS))
    async def test_record_history(engine: Engine, licensed_catalog: Catalog,
                                  scenario: str) -> None:
        """Run the scenario, check its history replays, and write it for tests/replay."""
        history = await run_and_replay(engine, licensed_catalog, scenario)
        HISTORY_DIR.mkdir(parents=True, exist_ok=True)
        (HISTORY_DIR / f"{scenario}.json").write_text(history.to_json())
