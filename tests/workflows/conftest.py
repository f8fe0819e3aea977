"""`CitizenRequestWorkflow` on the real dev server, with stub activities registered by name.

The workflow refers to its activities by name only (``call_agency``, ``notify_operator``,
``record_request``, ``record_progress``), so a test registers stand-ins under those names — as
samples-python's ``tests/hello/hello_activity_test.py`` does — and scripts each agency answer
in a few lines: no HTTP agency, no PostgreSQL, seconds per branch of the call-step protocol.
Everything else is real: the session's dev server, the pydantic data converter with the
encrypting codec, and the workflow sandbox (``workflow_runner(True)``), each test on its own
task queue.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from definitions.models import Agency, ServiceDefinition, ServiceSnapshot
from runtime.messages import (
    AGENCY_REJECTED,
    AgencyCallInput,
    AgencyCallResult,
    OperatorNotice,
    RecordProgressInput,
    RecordRequestInput,
    RequestInput,
    RequestOptions,
    RequestProgress,
    RequestResult,
)
from runtime.temporal import data_converter
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow

AGENCY = Agency.model_validate({
    "id": "registry",
    "name": {"en": "The Registry"},
    "http": {"base_url_env": "NWD_TEST_REGISTRY_URL"},
    "operations": [
        {"id": "register", "title": "Register", "cancellable": True},
        {"id": "unregister", "title": "Undo a registration"},
        {"id": "stamp", "title": "Stamp (cannot be withdrawn)"},
    ],
})
"""One agency with a withdrawable operation, its undo, and one that cannot be withdrawn."""

Answer = Callable[[AgencyCallInput], Awaitable[AgencyCallResult]]


def service(*steps: dict[str, Any]) -> ServiceSnapshot:
    """A one-agency service of these steps (dicts as in a definition's YAML)."""
    definition = ServiceDefinition.model_validate({
        "service": "test-service", "version": 1, "title": "Test", "description": "Test",
        "input": {"fields": {
            "name": {"type": "text"},
            "plates": {"type": "list", "required": False,
                       "items": {"type": "object", "fields": {"plate": {"type": "text"}}}},
        }},
        "steps": list(steps),
    })
    return ServiceSnapshot(content_hash="0" * 64, service=definition, agencies=(AGENCY,))


def completed(call: AgencyCallInput, **output: Any) -> AgencyCallResult:
    return AgencyCallResult(status="completed", agency_reference=f"ref-{call.item_key or '1'}",
                            output=output)


def rejected(code: str, message: str = "refused", status: int = 422) -> ApplicationError:
    """What ``call_agency`` raises for a final 4xx answer (activities/agency_calls.py);
    call it inside the stub activity (it reads the attempt)."""
    details = {"status": status, "code": code, "reason": message,
               "attempt": activity.info().attempt}
    return ApplicationError(message, details, type=AGENCY_REJECTED, non_retryable=True)


@dataclass
class Stubs:
    """Stand-ins for the engine's activities; they record what the workflow asked of them."""

    answer: Answer | None = None
    """How the agency answers each call (default: completed)."""
    notice_delay: float = 0.0
    calls: list[AgencyCallInput] = field(default_factory=list)
    notices: list[OperatorNotice] = field(default_factory=list)
    records: list[RecordRequestInput] = field(default_factory=list)
    progress: list[RecordProgressInput] = field(default_factory=list)

    @activity.defn(name="call_agency")
    async def call_agency(self, call: AgencyCallInput) -> AgencyCallResult:
        self.calls.append(call)
        if self.answer is None:
            return completed(call)
        return await self.answer(call)

    @activity.defn(name="notify_operator")
    async def notify_operator(self, notice: OperatorNotice) -> None:
        await asyncio.sleep(self.notice_delay)
        self.notices.append(notice)

    @activity.defn(name="record_request")
    async def record_request(self, record: RecordRequestInput) -> None:
        self.records.append(record)

    @activity.defn(name="record_progress")
    async def record_progress(self, record: RecordProgressInput) -> None:
        self.progress.append(record)

    def activities(self) -> list[Callable[..., Awaitable[AgencyCallResult | None]]]:
        """Every activity the workflow calls by name, as a worker registers them."""
        return [self.call_agency, self.notify_operator, self.record_request,
                self.record_progress]

    def calls_of(self, action: str) -> list[AgencyCallInput]:
        return [c for c in self.calls if c.action == action]


@dataclass
class Harness:
    """A worker on its own task queue, and the means to start and follow requests on it."""

    client: Client
    task_queue: str
    stubs: Stubs
    started: list[str] = field(default_factory=list)
    first_runs: dict[str, str] = field(default_factory=dict)

    async def start(
        self, snapshot: ServiceSnapshot, submission: dict[str, Any] | None = None,
        options: RequestOptions | None = None,
    ) -> WorkflowHandle[CitizenRequestWorkflow, RequestResult]:
        reference = f"WF-TEST-{uuid.uuid4().hex[:12].upper()}"
        request = RequestInput(
            reference=reference, snapshot=snapshot,
            submission=submission if submission is not None else {"name": "Ada"},
            submitted_at=datetime.now(UTC), callback_base_url="http://intake.invalid",
            options=options or RequestOptions(awaited="long_waits"),
        )
        first = await self.client.start_workflow(
            CitizenRequestWorkflow.run, request, id=reference, task_queue=self.task_queue)
        self.started.append(reference)
        self.first_runs[reference] = first.result_run_id or ""
        # not pinned to the first run: queries and updates follow continue-as-new
        return self.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)

    async def runs(self, handle: WorkflowHandle[CitizenRequestWorkflow, RequestResult]) -> int:
        """How many runs the request has had (1 + its continue-as-new count)."""
        count = 0
        run_id: str | None = self.first_runs[handle.id]
        while run_id:
            count += 1
            run = self.client.get_workflow_handle(handle.id, run_id=run_id)
            history = await run.fetch_history()
            last = history.events[-1]
            run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                      if last.HasField("workflow_execution_continued_as_new_event_attributes")
                      else None)
        return count

    @staticmethod
    async def result(
        handle: WorkflowHandle[CitizenRequestWorkflow, RequestResult], wait_s: float = 15
    ) -> RequestResult:
        return await asyncio.wait_for(handle.result(), wait_s)


def waiting_for(step_id: str, what: str, key: str | None = None) -> Callable[[RequestProgress],
                                                                             bool]:
    """The step's item (``key``) waits for ``what`` (callback, information)."""
    def check(progress: RequestProgress) -> bool:
        step = next(s for s in progress.steps if s.step_id == step_id)
        return any(i.key == key and i.waiting_for == what for i in step.items)
    return check


@pytest.fixture(scope="session")
def workflow_client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the session's dev server with the engine's data converter (and codec)."""
    config = temporal_env.client.config()
    config["data_converter"] = data_converter(os.urandom(32))
    return Client(**config)


@pytest_asyncio.fixture
async def harness(workflow_client: Client, task_queue: str) -> AsyncIterator[Harness]:
    stubs = Stubs()
    async with Worker(
        workflow_client, task_queue=task_queue, workflows=[CitizenRequestWorkflow],
        activities=stubs.activities(),
        workflow_runner=workflow_runner(True),
    ):
        running = Harness(workflow_client, task_queue, stubs)
        yield running
        # leave nothing running on the shared server (a test that failed may have)
        for reference in running.started:
            handle = workflow_client.get_workflow_handle(reference)
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test finished")
