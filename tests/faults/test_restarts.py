"""The Temporal dev server, then PostgreSQL, stopped and started again mid-flight.

Both run in a stack of this module's own (``quiet_stack``: free ports, a state folder of its
own), started once for the module: the dev server on its database file, PostgreSQL on its
data folder, so a restart keeps what they held. PostgreSQL holds both the engine's read model
and the agencies' tables. The worker runs in this process and reconnects by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from temporalio.client import Client

from definitions.catalog import Catalog
from nwd.stack import Stack
from runtime.temporal import data_converter
from tests.conftest import new_database, quiet_stack
from tests.e2e.conftest import running_agencies
from tests.faults.conftest import (
    TAX,
    TAX_STEP,
    VOTER,
    Agencies,
    Engine,
    assert_settled,
    attempts,
    running_engine,
    submit_drill,
    wait_for_records,
)

OUTAGE_S = 3.0
"""How long each server stays down: longer than the drill's first retries."""
TEMPORAL_OUTAGE_S = 12.0
"""Longer than the intake waits for an unreachable server (~10 s): the callbacks get 503."""


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A dev server (file-backed) and a PostgreSQL of this module's own, to stop and start."""
    stack = quiet_stack(tmp_path_factory.mktemp("restart-stack"), start_timeout=60)
    try:
        stack.up(["postgres", "temporal"])
        yield stack
    finally:
        stack.down()


@pytest_asyncio.fixture
async def own_agencies(own_stack: Stack, drill_catalog: Catalog) -> AsyncIterator[Agencies]:
    database_url = await new_database(own_stack.postgres_dsn, "agencies")
    # a callback attempt outlasts the intake's own wait (~10 s of the SDK's retries, then 503)
    async with running_agencies(database_url, drill_catalog, callback_timeout_s=20) as agencies:
        yield agencies


@pytest_asyncio.fixture
async def restart_engine(
    own_stack: Stack, own_agencies: Agencies, drill_catalog: Catalog, encryption_key: bytes,
    task_queue: str,
) -> AsyncIterator[Engine]:
    client = await Client.connect(own_stack.temporal_address,
                                  data_converter=data_converter(encryption_key))
    async with running_engine(
        client, postgres_server=own_stack.postgres_dsn, agencies=own_agencies,
        catalog=drill_catalog, encryption_key=encryption_key, task_queue=task_queue,
    ) as engine:
        yield engine


async def restart(stack: Stack, component: str,
                  while_down: Callable[[], Awaitable[None]] | None = None,
                  outage_s: float = OUTAGE_S) -> None:
    """Stop ``component``, run ``while_down``, leave it down for ``outage_s``, start it
    again."""
    await asyncio.to_thread(stack.down, [component])
    if while_down is not None:
        await while_down()
    await asyncio.sleep(outage_s)  # the outage itself: time passing is the point
    await asyncio.to_thread(stack.up, [component])


def owed(agencies: Agencies, references: list[str]) -> Callable[[], Awaitable[None]]:
    """A probe: the voter roll has delivered none of ``references``' callbacks yet."""
    async def probe() -> None:
        delivered = {r["reference"] for r in await agencies.outbox(VOTER)
                     if r["state"] == "delivered"}
        assert not delivered & set(references), "a callback was delivered before the outage"

    return probe


class TestRestarts:
    async def test_temporal_restarted_while_callbacks_are_owed(
        self, restart_engine: Engine, own_agencies: Agencies, own_stack: Stack
    ) -> None:
        """Three requests wait for the voter roll's callbacks, which fall due while the dev
        server is down (12 s): the intake answers 503, the agency's outbox sends them again
        after; the same runs complete, one record per agency each, the read model equals
        Temporal, nothing owed."""
        engine = restart_engine
        await own_agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 2.0})
        references = await submit_drill(engine, 3)
        await wait_for_records(own_agencies, VOTER, references)
        await wait_for_records(own_agencies, TAX, references)
        runs = [(await engine.client.get_workflow_handle(r).describe()).run_id
                for r in references]
        # every callback falls due during the outage (2 s after its call; down for 3 s)
        await restart(own_stack, "temporal", while_down=owed(own_agencies, references),
                      outage_s=TEMPORAL_OUTAGE_S)
        await assert_settled(engine, references, within_s=90)
        # each callback was answered 503 during the outage (its attempt's timeout is 20 s),
        # and the outbox sent it again
        rows = await own_agencies.outbox(VOTER)
        assert {r["reference"]: r["attempts"] >= 2 for r in rows} == {
            r: True for r in references}, rows
        assert runs == [(await engine.client.get_workflow_handle(r).describe()).run_id
                        for r in references]

    async def test_postgres_restarted_mid_flight(
        self, restart_engine: Engine, own_agencies: Agencies, own_stack: Stack
    ) -> None:
        """PostgreSQL (the read model's and the agencies') stops while tax calls are being
        retried and the voter roll's outcomes fall due: the agencies answer 503, the engine
        retries, the read-model writes wait; once it is back the due outcomes are carried
        out and their callbacks delivered, every request completes, one record per agency
        each, the read model equals Temporal, nothing owed."""
        engine = restart_engine
        await own_agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 1.5})
        await own_agencies.set_behaviour(TAX, {"outage": {"duration_s": 1.0}})
        references = await submit_drill(engine, 3)
        await wait_for_records(own_agencies, VOTER, references)
        stopped_at = datetime.now(UTC)
        await restart(own_stack, "postgres")
        results = await assert_settled(engine, references, within_s=90)
        # the voter roll's outcomes fell due during the outage and were carried out after it
        finished = [datetime.fromisoformat(r["updated_at"])
                    for r in await own_agencies.records(VOTER)]
        assert len(finished) == 3 and min(finished) > stopped_at + timedelta(seconds=OUTAGE_S)
        assert any(attempts(r.steps, TAX_STEP) >= 2 for r in results)  # 503s were retried
