"""Worker processes SIGKILLed mid-flight: repeatedly during a burst, and one of two.

The workers are real ``worker.py`` processes (``start_worker_process`` of
tests/e2e/test_resilience.py, which kills one mid fan-out and mid compensation); the intake,
the read model and the agencies run in this process. A killed worker's activities are retried
on another once their start-to-close timeout has passed (the step's timeout + 5 s), its
workflow tasks once the sticky queue's timeout has; callbacks that arrive while no worker runs
wait, are answered 503 and sent again by the agency.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from tests.e2e.test_resilience import start_worker_process
from tests.faults.conftest import (
    TAX,
    VOTER,
    Agencies,
    Engine,
    assert_settled,
    engine_client,
    records_by_reference,
    running_engine,
    submit_drill,
)
from tests.polling import eventually


@pytest_asyncio.fixture
async def no_worker(
    temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    drill_catalog: Catalog, encryption_key: bytes, task_queue: str,
) -> AsyncIterator[Engine]:
    """The drill engine without a worker: the test runs worker processes of its own."""
    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=drill_catalog, encryption_key=encryption_key,
        task_queue=task_queue, in_process_worker=False,
    ) as engine:
        yield engine


@contextmanager
def worker_processes(
    engine: Engine, temporal_address: str, key: bytes, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A starter of worker processes for ``engine``; every one still running is stopped."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = start_worker_process(
            temporal_address=temporal_address, task_queue=engine.task_queue,
            database_url=engine.database_url, key=key, agencies=engine.agencies,
            state_dir=tmp_path, log_path=tmp_path / "worker.log")
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


async def until(agencies: Agencies, agency: str, check: Callable[[list[dict[str, object]]], bool],
                what: str, within_s: float = 30) -> None:
    async def probe() -> None:
        rows = [r for rs in (await records_by_reference(agencies, agency)).values() for r in rs]
        assert check(rows), f"{agency}: not yet {what}"

    await eventually(probe, within_s=within_s, every_s=0.05)


class TestWorkerKilled:
    async def test_sigkill_three_times_during_a_burst(
        self, no_worker: Engine, agencies: Agencies, temporal_address: str,
        encryption_key: bytes, tmp_path: Path,
    ) -> None:
        """Six requests; the worker is SIGKILLed when the first calls are in flight, when
        half the tax calls are done, and when a first callback has fallen due; a fourth
        worker finishes: each request completed, one record per agency each."""
        engine = no_worker
        await agencies.set_behaviour(TAX, {"latency_ms": 400})
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 1.0})
        references = await submit_drill(engine, 6)
        with worker_processes(engine, temporal_address, encryption_key, tmp_path) as start:
            kill_points = [
                (VOTER, lambda rows: len(rows) >= 1, "a first call in flight"),
                (TAX, lambda rows: len(rows) >= 3, "half the tax calls done"),
                (VOTER, lambda rows: any(r["status"] == "completed" for r in rows),
                 "a first callback due"),
            ]
            for agency, check, what in kill_points:
                worker = start()
                await until(agencies, agency, check, what)
                kill(worker)
            start()
            await assert_settled(engine, references, within_s=90)

    async def test_two_workers_on_one_queue_one_killed(
        self, no_worker: Engine, agencies: Agencies, temporal_address: str,
        encryption_key: bytes, tmp_path: Path,
    ) -> None:
        """Two workers share the task queue; one is SIGKILLed with calls in flight and never
        comes back: the other finishes every request, one record per agency each."""
        engine = no_worker
        await agencies.set_behaviour(TAX, {"latency_ms": 600})
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 1.0})
        with worker_processes(engine, temporal_address, encryption_key, tmp_path) as start:
            doomed, survivor = start(), start()
            references = await submit_drill(engine, 6)
            await until(agencies, TAX, lambda rows: len(rows) >= 2, "two tax calls done")
            kill(doomed)
            await assert_settled(engine, references, within_s=90)
            assert survivor.poll() is None
