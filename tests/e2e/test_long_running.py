"""Long-running interactions against real agencies: callbacks, information, cancel, sagas."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from runtime import callback_tokens as tokens
from runtime.messages import RequestOptions, RequestProgress, RequestResult
from tests.e2e.conftest import Engine, example
from tests.polling import eventually, progress_until
from workflows.request_workflow import CitizenRequestWorkflow


def step_of(progress: RequestProgress, step_id: str) -> Any:
    return next(s for s in progress.steps if s.step_id == step_id)


async def signed_post(engine: Engine, url: str, agency: str, body: dict[str, Any]) -> Any:
    raw = json.dumps(body).encode()
    return await engine.post_signed(agency, url, raw)


class TestCallbacks:
    async def test_callback_completes_branch_and_forged_or_replayed_ones_change_nothing(
        self, engine: Engine
    ) -> None:
        """A 202 branch waits; the agency's signed callback completes it; fakes are refused."""
        await engine.agencies.set_behaviour(
            "electoral-registration", {"mode": "callback", "callback_delay_s": 1.5}
        )
        reference = await engine.submit("change-of-address", example("change-of-address"))
        progress = await progress_until(engine.submissions.handle(reference), lambda p: step_of(
            p, "update_voter_registration").status == "waiting", within_s=20)
        voter = step_of(progress, "update_voter_registration")
        assert voter.items[0].waiting_for == "callback"
        assert step_of(progress, "update_tax_address").status in ("running", "completed")

        target = tokens.CallbackTarget(reference, "update_voter_registration", None,
                                       "electoral-registration")
        token = tokens.issue(engine.callback_key, target)
        forged = token[:-4] + ("0000" if not token.endswith("0000") else "1111")
        response = await signed_post(engine, f"/callbacks/{forged}", "electoral-registration",
                                     {"status": "completed", "output": {}})
        assert response.status_code == 401
        unsigned = await engine.intake.post(f"/callbacks/{token}", json={"status": "rejected",
                                                                          "reason": "x"})
        assert unsigned.status_code == 401

        result = await engine.result(reference)
        assert result.status == "completed"
        voter_done = next(s for s in result.steps if s.step_id == "update_voter_registration")
        assert voter_done.status == "completed" and voter_done.items[0].agency_reference

        replay = await signed_post(engine, f"/callbacks/{token}", "electoral-registration",
                                   {"status": "rejected", "reason": "late"})
        assert replay.status_code in (409, 410)
        again = await engine.result(reference)
        assert again.status == "completed"


class TestRequestsForInformation:
    async def test_information_pauses_one_branch_and_validator_checks_answers(
        self, engine: Engine
    ) -> None:
        """Only the asking agency's branch pauses; a bad answer is refused with field errors."""
        await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
            "fields": {"proof_of_address": {"type": "text", "min_length": 3},
                       "months_at_address": {"type": "integer"}},
            "message": {"en": "Send proof of your new address", "es": "Envíe un justificante"},
        }})
        reference = await engine.submit("change-of-address", example("change-of-address"))
        progress = await progress_until(engine.submissions.handle(reference), lambda p: step_of(
            p, "update_tax_address").status == "waiting" and step_of(
            p, "update_licence").status == "completed", within_s=20)
        tax = step_of(progress, "update_tax_address")
        assert tax.items[0].waiting_for == "information"
        assert set(tax.items[0].information_fields or {}) == {"proof_of_address",
                                                             "months_at_address"}

        bad = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": "update_tax_address", "answers": {"proof_of_address": 12}})
        assert bad.status_code == 422
        locs = {tuple(e["loc"]) for e in bad.json()["errors"]}
        assert ("proof_of_address",) in locs and ("months_at_address",) in locs
        wrong_step = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": "update_licence", "answers": {}})
        assert wrong_step.status_code == 409

        good = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": "update_tax_address",
            "answers": {"proof_of_address": "utility bill", "months_at_address": 1}})
        assert good.status_code == 200, good.text
        result = await engine.result(reference)
        assert result.status == "completed"
        events = await engine.pool.fetch(
            "SELECT step_id FROM request_events WHERE reference = $1"
            " AND kind LIKE 'agency_information%'", reference)
        assert {e["step_id"] for e in events} == {"update_tax_address"}


class TestCancellationAndCompensation:
    async def test_required_failure_undoes_completed_steps_in_reverse_order(
        self, engine: Engine
    ) -> None:
        """Tax rejects after licence and voter roll completed: both are undone, once each."""
        await engine.agencies.set_behaviour("tax-authority", {
            "latency_ms": 1200, "reject": {"code": "unknown_taxpayer", "reason": "unknown"}})
        await engine.agencies.set_behaviour("driver-licensing", {"latency_ms": 300})
        reference = await engine.submit("change-of-address", example("change-of-address"))
        result = await engine.result(reference)
        assert result.status == "failed"
        undone = [(c.step_id, c.status) for c in result.compensations]
        assert undone == [("update_licence", "undone"), ("update_voter_registration", "undone")]
        statuses = {s.step_id: s.status for s in result.steps}
        assert statuses["update_licence"] == "compensated"
        assert statuses["update_voter_registration"] == "compensated"
        reverts = [r for r in await engine.agencies.records("driver-licensing")
                   if r.get("reference") == reference and r.get("operation") == "revert-address"]
        assert len(reverts) == 1

    async def test_cancel_mid_fan_out_withdraws_waits_and_undoes(self, engine: Engine) -> None:
        """Cancel while benefits wait on callbacks: nothing new starts, all is accounted for."""
        await engine.agencies.set_behaviour(
            "benefits-agency", {"mode": "callback", "callback_delay_s": 30})
        reference = await engine.submit("change-of-address", example("change-of-address"))
        await progress_until(engine.submissions.handle(reference), lambda p: step_of(
            p, "update_benefits").status == "waiting" and step_of(
            p, "update_licence").status == "completed" and step_of(
            p, "update_voter_registration").status == "completed", within_s=20)
        response = await engine.intake.post(f"/requests/{reference}/cancel",
                                            json={"reason": "moved back"})
        assert response.status_code == 200, response.text
        result = await engine.result(reference)
        assert result.status == "cancelled"
        steps = {s.step_id: s for s in result.steps}
        assert {i.status for i in steps["update_benefits"].items} == {"cancelled"}
        assert steps["update_licence"].status == "compensated"
        # the two completed steps that declare an undo, each undone once (tax declares none)
        assert sorted((c.step_id, c.status) for c in result.compensations) == [
            ("update_licence", "undone"), ("update_voter_registration", "undone")]
        again = await engine.intake.post(f"/requests/{reference}/cancel", json={})
        assert again.status_code in (409, 410)


class TestContinueAsNew:
    async def test_state_and_queries_survive_continue_as_new(self, engine: Engine) -> None:
        """A request forced through continue-as-new keeps its steps and answers queries."""
        await engine.agencies.set_behaviour(
            "benefits-agency", {"mode": "callback", "callback_delay_s": 4})
        snapshot = engine.submissions.catalog.snapshot("change-of-address")
        from datetime import UTC, datetime

        from runtime.messages import RequestInput

        reference = f"CAN-TEST-{int(time.time() * 1000)}"
        from definitions.submission import validate_submission

        submission = validate_submission(snapshot.service.input, example("change-of-address"))
        handle = await engine.client.start_workflow(
            CitizenRequestWorkflow.run,
            RequestInput(reference=reference, snapshot=snapshot, submission=submission,
                         submitted_at=datetime.now(UTC), callback_base_url=engine.intake_url,
                         options=RequestOptions(continue_as_new_after_events=20)),
            id=reference, task_queue=engine.task_queue,
        )
        engine.started.append(reference)
        first_run = handle.result_run_id
        before = await progress_until(engine.submissions.handle(reference), lambda p: step_of(
            p, "update_benefits").status == "waiting" and step_of(
            p, "update_tax_address").status == "completed", within_s=20)
        assert step_of(before, "update_licence").status == "completed"
        latest = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)

        async def continued_as_new() -> None:
            assert (await latest.describe()).run_id != first_run, "it never continued as new"

        await eventually(continued_as_new, within_s=10)
        after = await latest.query(CitizenRequestWorkflow.progress)
        assert step_of(after, "update_licence").items[0].agency_reference == step_of(
            before, "update_licence").items[0].agency_reference
        result: RequestResult = await asyncio.wait_for(latest.result(), 60)
        assert result.status == "completed"
        assert {s.step_id: s.status for s in result.steps}["update_benefits"] == "completed"
