"""Deadlines escalate once as declared; caseworkers decide through validated updates.

The service used here (tests/e2e/catalog/services/licensed-business.yaml) exists only for
these tests: a developer's own definition, served by the engine like any catalog service.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from definitions.catalog import Catalog
from runtime.messages import RequestProgress, RequestResult
from tests.e2e.conftest import Engine, example
from tests.polling import progress_until
from workflows import search_attributes as sa
from workflows.request_workflow import CitizenRequestWorkflow

SERVICE = "licensed-business"


async def start(engine: Engine, catalog: Catalog) -> str:
    submissions = engine.submissions_for(catalog)
    submitted = await submissions.submit(SERVICE, example("register-a-business"),
                                         idempotency_key=str(uuid.uuid4()))
    engine.started.append(submitted.reference)
    return submitted.reference


def decision_waiting(progress: RequestProgress) -> bool:
    """The caseworker's decision on trading is awaited."""
    return next(s.status for s in progress.steps if s.step_id == "approve_trading") == "waiting"


async def decide(engine: Engine, reference: str, *, approve: bool, decided_by: str,
                 role: str, reason: str | None = None) -> Any:
    """A decision by ``decided_by`` signed in with the one role ``role`` (a real token)."""
    return await engine.decide(reference, "approve_trading", approve=approve, reason=reason,
                               subject=decided_by, roles=[role])


class TestDeadlinesAndDecisions:
    async def test_missed_deadline_escalates_once_then_decision_approves(
        self, engine: Engine, licensed_catalog: Catalog
    ) -> None:
        """The registry answers after its 1 s deadline: one escalation; then a caseworker
        approves (wrong role refused), the decision is overdue once, and the request completes."""
        await engine.agencies.set_behaviour(
            "business-registry", {"mode": "callback", "callback_delay_s": 2.5})
        reference = await start(engine, licensed_catalog)
        await progress_until(engine.submissions.handle(reference), decision_waiting, within_s=20)

        wrong_role = await decide(engine, reference, approve=True, decided_by="sam",
                                  role="tax-officer")
        assert wrong_role.status_code == 403, wrong_role.text
        await asyncio.sleep(2.5)  # let the decision's 2 s due date pass: it escalates, waits on
        approved = await decide(engine, reference, approve=True, decided_by="sam",
                                role="licensing-officer", reason="premises inspected")
        assert approved.status_code == 200, approved.text
        twice = await decide(engine, reference, approve=True, decided_by="kim",
                             role="licensing-officer")
        assert twice.status_code in (409, 410)

        handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
        result: RequestResult = await asyncio.wait_for(handle.result(), 30)
        assert result.status == "completed"
        steps = {s.step_id: s for s in result.steps}
        assert steps["register_company"].escalated
        assert steps["approve_trading"].decided_by == "sam"
        escalations = await engine.pool.fetch(
            "SELECT step_id, detail FROM request_events WHERE reference = $1"
            " AND kind = 'escalated' ORDER BY id", reference)
        assert [e["step_id"] for e in escalations] == ["register_company", "approve_trading"]
        assert json.loads(escalations[0]["detail"])["role"] == "registry-liaison"
        described = await handle.describe()
        assert described.typed_search_attributes.get(sa.ESCALATED) is True

    async def test_rejection_fails_the_request_and_undoes_the_registration(
        self, engine: Engine, licensed_catalog: Catalog
    ) -> None:
        """A caseworker's rejection (with a reason) fails the request; the saga undoes step 1."""
        reference = await start(engine, licensed_catalog)
        await progress_until(engine.submissions.handle(reference), decision_waiting, within_s=20)
        no_reason = await decide(engine, reference, approve=False, decided_by="sam",
                                 role="licensing-officer")
        assert no_reason.status_code == 422
        rejected = await decide(engine, reference, approve=False, decided_by="sam",
                                role="licensing-officer", reason="no premises licence")
        assert rejected.status_code == 200
        handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
        result: RequestResult = await asyncio.wait_for(handle.result(), 30)
        assert result.status == "failed"
        steps = {s.step_id: s for s in result.steps}
        assert "no premises licence" in (steps["approve_trading"].reason or "")
        assert steps["register_for_tax"].status == "skipped"
        assert [(c.step_id, c.status) for c in result.compensations] == [
            ("register_company", "undone")]
        undo = [r for r in await engine.agencies.records("business-registry")
                if r.get("reference") == reference and r.get("operation") ==
                "withdraw-registration"]
        assert len(undo) == 1

    async def test_unanswered_request_for_information_fails_the_step_as_declared(
        self, engine: Engine, licensed_catalog: Catalog
    ) -> None:
        """The citizen has 1 s to answer the tax office; no answer fails the step and the saga
        undoes the registration."""
        await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
            "fields": {"trading_name_proof": {"type": "text"}},
            "message": {"en": "Proof of trading name"}}})
        reference = await start(engine, licensed_catalog)
        await progress_until(engine.submissions.handle(reference), decision_waiting, within_s=20)
        approved = await decide(engine, reference, approve=True, decided_by="sam",
                                role="licensing-officer")
        assert approved.status_code == 200
        handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
        result: RequestResult = await asyncio.wait_for(handle.result(), 30)
        steps = {s.step_id: s for s in result.steps}
        assert result.status == "failed"
        assert steps["register_for_tax"].status == "failed"
        assert "did not answer" in (steps["register_for_tax"].reason or "")
        assert [(c.step_id, c.status) for c in result.compensations] == [
            ("register_company", "undone")]
