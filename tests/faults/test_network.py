"""Network faults between the worker and the agencies, through the fault-injecting proxy.

The worker's agency base URLs point at :class:`~tests.faults.proxy.FaultProxy`; the
agencies' callbacks go straight to the intake. Each case injects its faults into the first
calls of two drill requests (the tax authority's synchronous call, the voter roll's call
answered by callback) and then asserts the four promises (``assert_settled``). A fault after
the agency has done the work (the answer reset, truncated, dropped or late) is the hard one:
the retry must get the agency's stored answer for the same idempotency key, never a second
effect — and the voter roll's callback may reach the engine before the retry does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from tests.faults.conftest import (
    TAX,
    TAX_STEP,
    VOTER,
    Agencies,
    Engine,
    assert_settled,
    attempts,
    engine_client,
    running_engine,
    submit_drill,
)
from tests.faults.proxy import FaultProxy, Rule

TAX_CALL = f"POST /agencies/{TAX}/operations/update-address "
VOTER_CALL = f"POST /agencies/{VOTER}/operations/update-registration "


@dataclasses.dataclass
class Proxied:
    engine: Engine
    proxy: FaultProxy


@pytest_asyncio.fixture
async def proxied(
    temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    drill_catalog: Catalog, encryption_key: bytes, task_queue: str,
) -> AsyncIterator[Proxied]:
    """The drill engine with every agency call going through a fault proxy."""
    proxy = await FaultProxy.start(agencies.url)
    behind = dataclasses.replace(agencies, env=proxy.rewrite(agencies.env))
    assert behind.env != agencies.env
    try:
        async with running_engine(
            engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
            agencies=behind, catalog=drill_catalog, encryption_key=encryption_key,
            task_queue=task_queue,
        ) as engine:
            engine.agencies = agencies  # the tests count records at the agencies themselves
            yield Proxied(engine, proxy)
    finally:
        await proxy.stop()


CASES = {
    # the agency did the work; the answer's connection is reset before a byte came back
    "reset_after_the_effect": [Rule(TAX_CALL, "reset", times=2),
                               Rule(VOTER_CALL, "reset", times=2)],
    # reset mid-answer (inside the headers / the body)
    "reset_mid_answer": [Rule(TAX_CALL, "reset", times=2, after_bytes=40),
                         Rule(VOTER_CALL, "reset", times=2, after_bytes=170)],
    # the answer cut short, the connection closed cleanly (FIN)
    "truncated_answer": [Rule(TAX_CALL, "truncate", times=2, after_bytes=60),
                         Rule(VOTER_CALL, "truncate", times=2, after_bytes=170)],
    # reset before the request reached the agency: no effect on that attempt
    "reset_before_the_agency": [Rule(TAX_CALL, "reset", times=2, forward=False),
                                Rule(VOTER_CALL, "reset", times=2, forward=False)],
    # the answer lost: the agency did the work, the worker hears nothing until its timeout
    "answer_dropped": [Rule(TAX_CALL, "drop", times=2), Rule(VOTER_CALL, "drop", times=2)],
    # latency: under the step's timeout (0.4 s of 1 s), then over it (1.5 s) on the tax call
    "latency": [Rule(TAX_CALL, "delay", times=2, delay_s=1.5),
                Rule(VOTER_CALL, "delay", times=2, delay_s=0.4)],
}


class TestNetworkFaults:
    @pytest.mark.parametrize("case", list(CASES))
    async def test_each_request_completes_with_each_effect_once(
        self, proxied: Proxied, case: str
    ) -> None:
        """Two requests, each with a faulty first call at both agencies: both complete,
        one record per agency each, the read model equals Temporal, nothing owed."""
        for rule in CASES[case]:
            proxied.proxy.add(dataclasses.replace(rule))
        references = await submit_drill(proxied.engine, 2)
        results = await assert_settled(proxied.engine, references)
        for rule in CASES[case]:
            assert proxied.proxy.applied(rule.action, rule.match) == 2, proxied.proxy.seen
        # every tax fault above costs an attempt (which request's, the order of calls decides)
        tax = sum(attempts(r.steps, TAX_STEP) for r in results)
        faulty = sum(1 for line, done in proxied.proxy.seen if TAX_CALL in line and done != "pass")
        assert faulty == 2 and tax >= len(references) + faulty, proxied.proxy.seen
