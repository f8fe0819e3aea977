"""Callbacks twice, late and out of order, from the real agencies over a faulty network.

The callbacks go from the reference agencies to the intake through a
:class:`~tests.faults.proxy.FaultProxy` (the requests' callback base URL is the proxy's), so
the network can lose the intake's answer (the agency sends again: the callback twice), refuse
the connection (the agency sends again later) or hold one callback while later ones overtake
it. Early callbacks — one that reaches the engine before its call's own answer — are the
slow-agency and answer-lost cases (test_agencies.py, test_network.py) and, step by step,
tests/e2e/test_callback_races.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.api.enums.v1 import EventType

from agency_kit.contract import Callback
from definitions.catalog import Catalog
from intake.submissions import build_submissions
from tests.e2e.test_callback_races import signed_callback
from tests.faults.conftest import (
    TAX,
    VOTER,
    VOTER_STEP,
    Agencies,
    Engine,
    assert_settled,
    example,
    submit_drill,
)
from tests.faults.proxy import FaultProxy, Rule

CALLBACK = "POST /callbacks/"
BENEFITS = "benefits-agency"


@dataclasses.dataclass
class CallbacksProxied:
    engine: Engine
    proxy: FaultProxy


@pytest_asyncio.fixture
async def via_proxy(drill: Engine, drill_catalog: Catalog) -> AsyncIterator[CallbacksProxied]:
    """The drill engine whose requests give the agencies the proxy as callback base URL."""
    proxy = await FaultProxy.start(drill.intake_url)
    drill.submissions = build_submissions(
        drill.settings(intake_url=proxy.url), drill.client, drill_catalog, drill.read_model,
        reference_key=drill.reference_key, access=drill.access)
    try:
        yield CallbacksProxied(drill, proxy)
    finally:
        await proxy.stop()


async def accepted_callbacks(engine: Engine, reference: str) -> int:
    """The ``agency_callback`` updates the request's history accepted."""
    history = await engine.client.get_workflow_handle(reference).fetch_history()
    return sum(1 for e in history.events
               if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
               and e.workflow_execution_update_accepted_event_attributes
               .accepted_request.input.name == "agency_callback")


class TestCallbacksOverAFaultyNetwork:
    async def test_answer_lost_so_the_agency_sends_it_twice(
        self, via_proxy: CallbacksProxied, agencies: Agencies
    ) -> None:
        """The intake took each callback but its answer was reset: the agency sends it
        again; the copy is the same update (one accepted in each history), the agency marks
        it sent, each request completes once."""
        engine, proxy = via_proxy.engine, via_proxy.proxy
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0.2})
        proxy.add(Rule(CALLBACK, "reset", times=2))
        references = await submit_drill(engine, 2)
        await assert_settled(engine, references)
        assert proxy.applied("reset", CALLBACK) == 2
        assert proxy.applied("pass", CALLBACK) == 2  # the copies
        for reference in references:
            assert await accepted_callbacks(engine, reference) == 1

    async def test_intake_unreachable_then_delivered(
        self, via_proxy: CallbacksProxied, agencies: Agencies
    ) -> None:
        """The first three deliveries are reset before they reach the intake: the agency
        backs off and sends again; delivered once, each request completes."""
        engine, proxy = via_proxy.engine, via_proxy.proxy
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0.2})
        proxy.add(Rule(CALLBACK, "reset", times=3, forward=False))
        references = await submit_drill(engine, 2)
        await assert_settled(engine, references)
        assert proxy.applied("reset", CALLBACK) == 3
        for reference in references:
            assert await accepted_callbacks(engine, reference) == 1

    async def test_out_of_order_callbacks_of_one_request(
        self, via_proxy: CallbacksProxied, agencies: Agencies
    ) -> None:
        """Change of address: the voter roll and two benefit claims answer by callback; the
        first callback sent is held 2 s, so the later ones overtake it. Every item completes
        with its own agency reference, one record each."""
        engine, proxy = via_proxy.engine, via_proxy.proxy
        for agency in (VOTER, BENEFITS):
            await agencies.set_behaviour(agency, {"mode": "callback", "callback_delay_s": 0.3})
        proxy.add(Rule(CALLBACK, "delay", times=1, delay_s=2.0))
        reference = await engine.submit("change-of-address", example("change-of-address"))
        [result] = await assert_settled(engine, [reference], effects={
            "driver-licensing": 1, VOTER: 1, TAX: 1, BENEFITS: 2})
        assert proxy.applied("delay", CALLBACK) == 1
        assert proxy.applied("pass", CALLBACK) == 2
        benefits = {r["item"]: r["agency_reference"]
                    for r in await agencies.records(BENEFITS, reference=reference)}
        step = next(s for s in result.steps if s.step_id == "update_benefits")
        assert {i.key: i.agency_reference for i in step.items} == benefits
        assert await accepted_callbacks(engine, reference) == 3


class TestLateCallbacks:
    async def test_after_the_request_ended_a_callback_changes_nothing(
        self, drill: Engine, agencies: Agencies
    ) -> None:
        """The agency's callback sent again after the request completed is answered as the
        first delivery was (200, the same update); a different one 410 ``request_finished``;
        the history, the result and the read model are unchanged."""
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0.2})
        [reference] = await submit_drill(drill, 1)
        await assert_settled(drill, [reference])
        handle = drill.client.get_workflow_handle(reference)
        events = len((await handle.fetch_history()).events)
        before = await drill.read_model.get_request(reference)
        [registration] = await agencies.records(VOTER, reference=reference)
        sent = Callback(status="completed", agency_reference=registration["agency_reference"],
                        output=registration["output"])
        other = sent.model_copy(update={"output": {"reference": "ANOTHER"}})
        copy = await signed_callback(drill, reference, VOTER_STEP, VOTER, sent)
        # the same update id: the server answers with the first delivery's outcome
        assert (copy.status_code, copy.json()["code"]) == (200, "accepted")
        late = await signed_callback(drill, reference, VOTER_STEP, VOTER, other)
        assert (late.status_code, late.json()["code"]) == (410, "request_finished")
        assert len((await handle.fetch_history()).events) == events
        assert await drill.read_model.get_request(reference) == before
        await assert_settled(drill, [reference])
