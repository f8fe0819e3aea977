"""Requests survive a killed worker and keep the definition they started with."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest_asyncio
from temporalio.client import Client

from definitions.catalog import Catalog
from definitions.loader import load_catalog
from definitions.models import CallStep
from intake.submissions import Submissions, build_submissions
from runtime.messages import RequestResult
from runtime.settings import DEFAULT_CATALOG_DIR, PROJECT_ROOT, Settings
from tests.e2e.conftest import REFERENCE_KEY, Agencies, Engine, example, new_database
from tests.keys import engine_env
from tests.polling import eventually
from workflows.request_workflow import CitizenRequestWorkflow


def start_worker_process(
    *, temporal_address: str, task_queue: str, database_url: str, key: bytes,
    agencies: Agencies, state_dir: Path, log_path: Path,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **agencies.env,
        **engine_env(),  # the engine's private key: the worker signs every agency call
        "TEMPORAL_ADDRESS": temporal_address,
        "NWD_TASK_QUEUE": task_queue,
        "DATABASE_URL": database_url,
        "NWD_ENCRYPTION_KEY": base64.b64encode(key).decode(),
        "NWD_STATE_DIR": str(state_dir),
        "NWD_WORKER_METRICS_ADDRESS": "off",
        "NWD_LOG_FORMAT": "json",
    }
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "worker.py")], env=env, stdout=log, stderr=log,
        cwd=PROJECT_ROOT,
    )


@dataclass
class KillableWorkers:
    """Engine workers run as real processes, so a test can SIGKILL one mid-request."""

    options: dict[str, Any]
    submissions: Submissions
    database_url: str
    log_path: Path

    async def submit(self, service: str) -> str:
        submitted = await self.submissions.submit(
            service, example(service), idempotency_key=str(uuid.uuid4()))
        return submitted.reference

    async def kill_then_finish(
        self, reference: str, ready_to_kill: Callable[[], Awaitable[None]]
    ) -> RequestResult:
        """Start a worker, SIGKILL it once the probe ``ready_to_kill`` holds (within 15 s),
        start another, await the result."""
        first = start_worker_process(**self.options)
        try:
            await eventually(ready_to_kill, within_s=15, every_s=0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            second = start_worker_process(**self.options)
            try:
                return await asyncio.wait_for(self.submissions.handle(reference).result(), 90)
            finally:
                second.send_signal(signal.SIGTERM)
                second.wait(20)
        finally:
            if first.poll() is None:
                first.kill()


@pytest_asyncio.fixture
async def workers(
    temporal_address: str, postgres_server: str, agencies: Agencies, encryption_key: bytes,
    engine_client_for_key: Client, task_queue: str, tmp_path: Path,
) -> KillableWorkers:
    database_url = await new_database(postgres_server, "engine")
    log_path = tmp_path / "worker.log"
    options = {"temporal_address": temporal_address, "task_queue": task_queue,
               "database_url": database_url, "key": encryption_key, "agencies": agencies,
               "state_dir": tmp_path, "log_path": log_path}
    submissions = build_submissions(Settings(task_queue=task_queue), engine_client_for_key,
                                    with_call_timeout(load_catalog(DEFAULT_CATALOG_DIR)),
                                    reference_key=REFERENCE_KEY)
    return KillableWorkers(options, submissions, database_url, log_path)


KILLED_CALL_TIMEOUT = timedelta(seconds=6)
"""A call whose worker was SIGKILLed is retried once its start-to-close timeout has passed:
the shipped 30 s would make each kill test wait half a minute for nothing. 6 s is still
well over the slowest agency latency these tests set (2.5 s)."""


def with_call_timeout(catalog: Catalog) -> Catalog:
    """``catalog`` with every call step's (and undo's) timeout at :data:`KILLED_CALL_TIMEOUT`."""
    def shorter(step: Any) -> Any:
        if not isinstance(step, CallStep):
            return step
        return step.model_copy(update={"timeout": KILLED_CALL_TIMEOUT})

    services = {name: service.model_copy(
                    update={"steps": tuple(shorter(st) for st in service.steps)})
                for name, service in catalog.services.items()}
    return dataclasses.replace(catalog, services=services)


class TestWorkerKilled:
    async def test_sigkill_mid_fan_out_then_new_worker_completes_each_effect_once(
        self, workers: KillableWorkers, agencies: Agencies
    ) -> None:
        """A worker killed with SIGKILL mid fan-out loses nothing; effects still happen once."""
        for agency in ("tax-authority", "benefits-agency", "driver-licensing"):
            await agencies.set_behaviour(agency, {"latency_ms": 1500})
        reference = await workers.submit("change-of-address")

        async def slow_calls_in_flight() -> None:
            # The fast agency has answered: the slow ones have their calls, unanswered.
            assert await agencies.records("electoral-registration", reference=reference)

        result = await workers.kill_then_finish(reference, slow_calls_in_flight)
        assert result.status == "completed", workers.log_path.read_text()[-3000:]
        assert len(await agencies.records("tax-authority", reference=reference)) == 1
        assert len(await agencies.records("driver-licensing", reference=reference)) == 1
        assert len(await agencies.records("benefits-agency", reference=reference)) == 2
        conn = await asyncpg.connect(workers.database_url)
        try:
            status = await conn.fetchval(
                "SELECT status FROM requests WHERE reference = $1", reference)
        finally:
            await conn.close()
        assert status == "completed"


class TestPinnedDefinition:
    async def test_editing_yaml_never_changes_a_request_in_flight(
        self, engine: Engine, tmp_path: Path
    ) -> None:
        """A request keeps its snapshot while the YAML changes; new requests get the new one."""
        catalog_dir = tmp_path / "definitions"
        shutil.copytree(DEFAULT_CATALOG_DIR, catalog_dir,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        before = load_catalog(catalog_dir)
        submissions = engine.submissions_for(before)
        await engine.agencies.set_behaviour("tax-authority", {"latency_ms": 2000})
        old = await submissions.submit("register-a-business", example("register-a-business"),
                                       idempotency_key=str(uuid.uuid4()))
        engine.started.append(old.reference)

        service_file = catalog_dir / "services" / "register-a-business.yaml"
        text = service_file.read_text()
        edited = text.replace("when: submission.will_employ_staff", 'when: "false"')
        assert edited != text
        service_file.write_text(edited)
        after = load_catalog(catalog_dir)
        assert after.content_hash("register-a-business") != before.content_hash(
            "register-a-business")

        result = await engine.result(old.reference)
        assert result.content_hash == before.content_hash("register-a-business")
        steps = {s.step_id: s.status for s in result.steps}
        assert steps["register_employer"] == "completed"  # the old definition still ran it

        fresh = engine.submissions_for(after)
        new = await fresh.submit("register-a-business", example("register-a-business"),
                                 idempotency_key=str(uuid.uuid4()))
        engine.started.append(new.reference)
        new_result = await engine.result(new.reference)
        assert new_result.content_hash == after.content_hash("register-a-business")
        assert {s.step_id: s.status for s in new_result.steps}["register_employer"] == "skipped"


class TestCompensationSurvivesKill:
    async def test_worker_killed_during_compensation_still_undoes_each_step_once(
        self, workers: KillableWorkers, agencies: Agencies
    ) -> None:
        """SIGKILL while an undo call is in flight: a new worker finishes the saga, once each."""
        # the saga undoes in reverse order of completion: the voter roll's callback (which
        # now includes the intake's first fetch of that agency's keys) comes well before the
        # licence's slow answer, and both before the tax step's refusal
        await agencies.set_behaviour("tax-authority", {
            "latency_ms": 1600, "reject": {"code": "unknown_taxpayer", "reason": "unknown"}})
        await agencies.set_behaviour("driver-licensing", {
            "latency_ms": 800, "operations": {"revert-address": {"latency_ms": 2500}}})
        reference = await workers.submit("change-of-address")
        handle = workers.submissions.handle(reference)
        failed_at: list[float] = []

        async def undo_in_flight() -> None:
            # 0.8 s after the tax step failed, the slow revert-address call is in flight.
            if not failed_at:
                progress = await handle.query(CitizenRequestWorkflow.progress)
                assert any(s.step_id == "update_tax_address" and s.status == "failed"
                           for s in progress.steps), progress
                failed_at.append(time.monotonic())
            assert time.monotonic() - failed_at[0] > 0.8

        result = await workers.kill_then_finish(reference, undo_in_flight)
        assert result.status == "failed"
        assert [(c.step_id, c.status) for c in result.compensations] == [
            ("update_licence", "undone"), ("update_voter_registration", "undone")]
        reverts = [r for r in await agencies.records("driver-licensing", reference=reference)
                   if r["operation"] == "revert-address"]
        voter = await agencies.records("electoral-registration", reference=reference)
        voter_reverts = [r for r in voter if r["operation"] == "revert-registration"]
        assert len(reverts) == 1
        assert len(voter_reverts) == 1
