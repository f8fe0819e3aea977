"""A message into a running request sent again is not applied twice: each update's id is
derived from the message, so the real dev server answers a resend with the first outcome.

The workflow is the real ``CitizenRequestWorkflow`` on the session's dev server, its agency
calls answered by stub activities registered by name (as in ``tests/workflows``); the messages
go through :func:`intake.interactions.send`, the path of the HTTP routes and of ``nwd``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from intake.interactions import send, update_id
from runtime.messages import (
    AgencyCallback,
    AgencyCallInput,
    AgencyCallResult,
    RequestInput,
    RequestOptions,
    RequestResult,
)
from runtime.temporal import data_converter
from tests.polling import eventually, progress_until
from tests.workflows.conftest import Stubs, service, waiting_for
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow


@pytest.fixture
def workflow_client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the session's dev server with the engine's data converter (and codec)."""
    config = temporal_env.client.config()
    config["data_converter"] = data_converter(os.urandom(32))
    return Client(**config)


CALLBACK_STEP = {"id": "register", "agency": "registry", "operation": "register",
                 "mode": "callback", "input": {"name": "submission.name"}}


async def accept(call: AgencyCallInput) -> AgencyCallResult:
    return AgencyCallResult(status="accepted", agency_reference="REG-1")


@asynccontextmanager
async def worker(client: Client, task_queue: str, stubs: Stubs) -> AsyncIterator[None]:
    async with Worker(client, task_queue=task_queue, workflows=[CitizenRequestWorkflow],
                      activities=stubs.activities(),
                      workflow_runner=workflow_runner(True)):
        yield


async def start(client: Client,
                task_queue: str) -> WorkflowHandle[CitizenRequestWorkflow, RequestResult]:
    reference = f"MSG-TEST-{uuid.uuid4().hex[:12].upper()}"
    await client.start_workflow(CitizenRequestWorkflow.run, RequestInput(
        reference=reference, snapshot=service(CALLBACK_STEP), submission={"name": "Ada"},
        submitted_at=datetime.now(UTC), callback_base_url="http://intake.invalid",
        options=RequestOptions(awaited="long_waits")), id=reference, task_queue=task_queue)
    return client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)


def callback(reference: str) -> AgencyCallback:
    return AgencyCallback(step_id="register", status="completed", agency_reference=reference,
                          output={"number": "N-1"})


class TestMessagesSentAgain:
    def test_the_update_id_is_the_message(self) -> None:
        """The same message gives the same id; another message, request or update another."""
        one = update_id("agency_callback", "REF-1", callback("REG-1"))
        assert one == update_id("agency_callback", "REF-1", callback("REG-1"))
        assert len({one, update_id("agency_callback", "REF-1", callback("REG-2")),
                    update_id("agency_callback", "REF-2", callback("REG-1")),
                    update_id("decide", "REF-1", callback("REG-1"))}) == 4

    async def test_a_callback_sent_twice_is_applied_once_and_answered_alike(
        self, workflow_client: Client, task_queue: str
    ) -> None:
        """The resend answers 200 accepted again (not 409): it is the same update; another
        callback for the same call is still refused."""
        stubs = Stubs(answer=accept)
        async with worker(workflow_client, task_queue, stubs):
            handle = await start(workflow_client, task_queue)
            await progress_until(handle, waiting_for("register", "callback"), within_s=10,
                                 every_s=0.05)
            first = await send(workflow_client, handle.id,
                               CitizenRequestWorkflow.agency_callback, callback("REG-1"))
            again = await send(workflow_client, handle.id,
                               CitizenRequestWorkflow.agency_callback, callback("REG-1"))
            other = await send(workflow_client, handle.id,
                               CitizenRequestWorkflow.agency_callback, callback("REG-9"))
            result = await handle.result()
        assert (first.status, first.code) == (200, "accepted")
        assert (again.status, again.code) == (200, "accepted")
        assert other.status in (409, 410)
        assert result.status == "completed"
        assert result.steps[0].items[0].output == {"number": "N-1"}
        assert len(stubs.calls) == 1

    async def test_a_message_no_worker_took_is_503_and_its_resend_applies_it_once(
        self, workflow_client: Client, task_queue: str
    ) -> None:
        """With every worker stopped the request cannot take the message: 503 after the
        timeout. Sent again once a worker runs, it is applied exactly once."""
        stubs = Stubs(answer=accept)
        async with worker(workflow_client, task_queue, stubs):
            handle = await start(workflow_client, task_queue)
            await progress_until(handle, waiting_for("register", "callback"), within_s=10,
                                 every_s=0.05)
        stranded = await send(workflow_client, handle.id, CitizenRequestWorkflow.agency_callback,
                              callback("REG-1"), wait=timedelta(seconds=1))
        assert (stranded.status, stranded.code) == (503, "temporarily_unavailable")
        async with worker(workflow_client, task_queue, stubs):
            resent = await send(workflow_client, handle.id,
                                CitizenRequestWorkflow.agency_callback, callback("REG-1"))
            result = await handle.result()
        assert (resent.status, resent.code) == (200, "accepted")
        assert result.status == "completed"
        history = await handle.fetch_history()
        accepted = [e for e in history.events
                    if e.HasField("workflow_execution_update_accepted_event_attributes")]
        assert len(accepted) == 1


@workflow.defn(name="CitizenRequest")
class FailsItsTasks(CitizenRequestWorkflow):
    """The request's code broken as a bad deploy breaks it: every workflow task fails (an
    error that is not a workflow failure), so the server holds the run and refuses updates
    with ``FAILED_PRECONDITION`` ("workflow not ready") although it is running."""

    @workflow.run
    async def run(self, request: RequestInput) -> RequestResult:
        raise RuntimeError("a deliberately broken deploy")


class TestRunningButNotReady:
    async def test_a_running_request_that_cannot_take_it_is_503_not_410(
        self, workflow_client: Client, task_queue: str
    ) -> None:
        """A callback for a running request whose workflow task fails is ``503`` (send it
        again), never ``410 request_finished`` — which would tell the agency's outbox to stop
        sending a callback the request still waits for. Once the code is fixed, the resend
        is applied exactly once and the request completes."""
        stubs = Stubs(answer=accept)
        async with worker(workflow_client, task_queue, stubs):
            handle = await start(workflow_client, task_queue)
            await progress_until(handle, waiting_for("register", "callback"), within_s=10,
                                 every_s=0.05)
        async with Worker(workflow_client, task_queue=task_queue, workflows=[FailsItsTasks],
                          activities=stubs.activities(), workflow_runner=workflow_runner(True),
                          max_cached_workflows=0):
            # the first waits while the server tries the failing task; once the task has
            # failed the server may refuse at once: FAILED_PRECONDITION, "workflow not ready"
            refused = [await send(workflow_client, handle.id,
                                  CitizenRequestWorkflow.agency_callback, callback("REG-1"),
                                  wait=timedelta(seconds=3)) for _ in range(3)]
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        # between the broken worker and the fixed one the task has failed: the server refuses
        # at once (FAILED_PRECONDITION, "workflow not ready"; 410 before the fix)
        refused += [await send(workflow_client, handle.id,
                               CitizenRequestWorkflow.agency_callback, callback("REG-1"),
                               wait=timedelta(seconds=2)) for _ in range(2)]
        assert {(r.status, r.code) for r in refused} == {(503, "temporarily_unavailable")}, \
            refused
        answers: list[tuple[int, str]] = []

        async def resent() -> None:
            # as an outbox does: the same message again after each 503 (until the server has
            # run a workflow task again, it may still say "not ready")
            outcome = await send(workflow_client, handle.id,
                                 CitizenRequestWorkflow.agency_callback, callback("REG-1"))
            answers.append((outcome.status, outcome.code))
            assert outcome.status != 503, "not taken yet"

        async with worker(workflow_client, task_queue, stubs):
            await eventually(resent, within_s=60, every_s=0.5)
            result = await handle.result()
        assert answers[-1] == (200, "accepted")
        assert set(answers[:-1]) <= {(503, "temporarily_unavailable")}, answers
        assert result.status == "completed"
        history = await handle.fetch_history()
        accepted = [e for e in history.events
                    if e.HasField("workflow_execution_update_accepted_event_attributes")]
        assert len(accepted) == 1

    async def test_a_finished_request_is_410(
        self, workflow_client: Client, task_queue: str
    ) -> None:
        """The other side of the same rule: a request that has ended answers ``410``."""
        stubs = Stubs(answer=accept)
        async with worker(workflow_client, task_queue, stubs):
            handle = await start(workflow_client, task_queue)
            await progress_until(handle, waiting_for("register", "callback"), within_s=10,
                                 every_s=0.05)
            await handle.terminate("the test ends it")
            late = await send(workflow_client, handle.id,
                              CitizenRequestWorkflow.agency_callback, callback("REG-1"))
        assert (late.status, late.code) == (410, "request_finished")
