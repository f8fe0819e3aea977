"""An agency that fails: down (503s, or its process stopped), slow, or answering garbage.

The faults are the reference agencies' injectable behaviour (``outage``, ``latency_ms`` with
``latency_calls``, ``malformed``; agency_kit/reference/behaviour.py) and, for a real outage,
the agencies' server stopped and served again on the same port and database. The drill
service's calls time out after 1 s (tax) and 2 s (voter roll) and are retried every ~0.3-2 s.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import (
    TAX,
    TAX_STEP,
    VOTER,
    VOTER_STEP,
    Agencies,
    Engine,
    assert_settled,
    attempts,
    retried,
    submit_drill,
    wait_for_records,
)


class TestAgencyDown:
    async def test_outage_longer_than_the_first_retries_then_back(
        self, drill: Engine, agencies: Agencies
    ) -> None:
        """Both agencies answer 503 (with Retry-After) for 2.5 s: the calls are retried past
        it; both requests complete, one record per agency each."""
        for agency in (TAX, VOTER):
            await agencies.set_behaviour(agency, {"outage": {"duration_s": 2.5}})
        references = await submit_drill(drill, 2)
        results = await assert_settled(drill, references)
        for result in results:
            assert attempts(result.steps, TAX_STEP) >= 2
            assert attempts(result.steps, VOTER_STEP) >= 2

    async def test_agency_process_stopped_mid_flight_then_served_again(
        self, drill: Engine, agencies: Agencies
    ) -> None:
        """The agencies' server stops while two callbacks are owed and a third request's
        calls are refused (connection refused, retried); served again, the owed callbacks
        are sent and every request completes with one record per agency."""
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 1.5})
        owed = await submit_drill(drill, 2)
        await wait_for_records(agencies, VOTER, owed)
        await wait_for_records(agencies, TAX, owed)
        await agencies.stop()
        [refused] = await submit_drill(drill, 1)
        # down for longer than the first retries: the tax call has failed three times
        await retried(drill, refused, times=3)
        await agencies.start()
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0.2})
        await assert_settled(drill, [*owed, refused])


class TestAgencySlow:
    async def test_slower_than_the_timeout_then_not(
        self, drill: Engine, agencies: Agencies
    ) -> None:
        """The first two tax calls take 1.5 s (timeout 1 s) and the first voter call 2.5 s
        (timeout 2 s), the agency doing the work after the engine gave up; its callback
        comes at once, while the engine still retries. The retries get the stored answers:
        one record per agency each."""
        await agencies.set_behaviour(TAX, {"latency_ms": 1500, "latency_calls": 2})
        await agencies.set_behaviour(VOTER, {"latency_ms": 2500, "latency_calls": 1,
                                             "mode": "callback", "callback_delay_s": 0})
        references = await submit_drill(drill, 2)
        results = await assert_settled(drill, references)
        assert sum(attempts(r.steps, TAX_STEP) for r in results) >= 4
        assert sum(attempts(r.steps, VOTER_STEP) for r in results) >= 3


class TestAgencyMalformed:
    async def test_a_wrong_content_type_on_a_good_body_is_read(
        self, drill: Engine, agencies: Agencies
    ) -> None:
        """The true answer as ``text/html`` (sync) or ``text/plain`` (202): the engine is a
        tolerant reader of the body; both complete at the first attempt."""
        await agencies.set_behaviour(TAX, {"malformed": {"body": "as_is",
                                                         "content_type": "text/html"}})
        await agencies.set_behaviour(VOTER, {"malformed": {"body": "as_is"}})
        [reference] = await submit_drill(drill, 1)
        [result] = await assert_settled(drill, [reference])
        assert attempts(result.steps, TAX_STEP) == 1
        assert attempts(result.steps, VOTER_STEP) == 1

    @pytest.mark.parametrize("kind", ["not_json", "html", "not_an_object", "missing_fields",
                                      "truncated_json"])
    async def test_a_malformed_answer_fails_the_step_and_undoes_the_rest(
        self, drill: Engine, agencies: Agencies, kind: str
    ) -> None:
        """A 200 whose body breaks the contract is a protocol error, final (retrying would
        read the same answer): the required tax step fails, the request fails and the
        completed voter registration is undone once. The tax authority did its work once
        (the documented limit: the engine cannot know what a garbled answer said)."""
        await agencies.set_behaviour(TAX, {"malformed": {"body": kind}, "latency_ms": 300})
        await agencies.set_behaviour(VOTER, {"mode": "sync"})
        [reference] = await submit_drill(drill, 1)
        [result] = await assert_settled(drill, [reference], status="failed",
                                        undone={VOTER: 1})
        tax = next(s for s in result.steps if s.step_id == TAX_STEP)
        assert (tax.status, tax.items[0].attempts) == ("failed", 1), tax
        assert [(c.step_id, c.status) for c in result.compensations] == [
            (VOTER_STEP, "undone")]
