"""A request survives a restart of the Temporal server: its database file persists."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from definitions.catalog import Catalog
from nwd.stack import Stack
from runtime.messages import RequestResult
from runtime.temporal import data_converter
from tests.conftest import quiet_stack
from tests.e2e.conftest import Agencies, example, running_engine
from tests.polling import progress_until
from workflows.request_workflow import CitizenRequestWorkflow


@pytest.fixture
def own_temporal(tmp_path: Path) -> Iterator[Stack]:
    """A file-backed dev server of our own, so this test may stop and start it."""
    stack = quiet_stack(tmp_path / "state", start_timeout=60)
    try:
        stack.up(["temporal"])
        yield stack
    finally:
        stack.down()


class TestServerRestart:
    async def test_request_waiting_on_an_agency_completes_after_server_restart(
        self, own_temporal: Stack, postgres_server: str, agencies: Agencies, catalog: Catalog,
        encryption_key: bytes, task_queue: str,
    ) -> None:
        """Stop and start the dev server mid-request: the same run completes afterwards."""
        client = await Client.connect(own_temporal.temporal_address,
                                      data_converter=data_converter(encryption_key))
        await agencies.set_behaviour(
            "electoral-registration", {"mode": "callback", "callback_delay_s": 6})
        async with running_engine(
            client, postgres_server=postgres_server, agencies=agencies, catalog=catalog,
            encryption_key=encryption_key, task_queue=task_queue,
        ) as engine:
            reference = await engine.submit("change-of-address", example("change-of-address"))
            handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
            await progress_until(handle, lambda p: any(
                s.step_id == "update_voter_registration" and s.status == "waiting"
                for s in p.steps), within_s=20)
            run_id = (await handle.describe()).run_id
            await asyncio.to_thread(own_temporal.down, ["temporal"])
            await asyncio.sleep(1)
            await asyncio.to_thread(own_temporal.up, ["temporal"])
            result: RequestResult = await asyncio.wait_for(handle.result(), 90)
            assert result.status == "completed"
            assert (await handle.describe()).run_id == run_id
            voter = next(s for s in result.steps if s.step_id == "update_voter_registration")
            assert voter.status == "completed"
