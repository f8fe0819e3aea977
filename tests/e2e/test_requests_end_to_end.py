"""One submission fans out to real reference agencies and completes, exactly once each."""

from __future__ import annotations

import copy
import uuid

import pytest
from temporalio.client import WorkflowExecutionStatus

from definitions.errors import UnknownService
from definitions.submission import SubmissionInvalid
from tests.e2e.conftest import Engine, example
from tests.polling import progress_until

SERVICES = ["change-of-address", "report-a-death", "register-a-business"]


class TestCatalogServices:
    @pytest.mark.parametrize("service", SERVICES)
    async def test_service_completes_and_read_model_matches(
        self, engine: Engine, service: str
    ) -> None:
        """Every catalog service completes; PostgreSQL's read model equals the workflow result."""
        reference = await engine.submit(service, example(service))
        result = await engine.result(reference)
        assert result.status == "completed", result
        assert result.content_hash == engine.submissions.catalog.content_hash(service)

        row = await engine.read_model.get_request(reference)
        assert row is not None
        assert row.status == result.status
        assert row.finished_at is not None
        recorded = {(s.step_id, s.item_key): s for s in row.steps}
        for step in result.steps:
            items = step.items or []
            if not items:
                assert recorded[(step.step_id, None)].status == step.status
            for item in items:
                stored = recorded[(step.step_id, item.key)]
                assert stored.status == item.status
                assert stored.agency_reference == item.agency_reference

        for step in result.steps:
            for item in step.items:
                if item.status == "completed":
                    assert item.agency_reference
                    rows = await engine.agencies.records(step.agency or "", reference=reference)
                    assert item.agency_reference in {r["agency_reference"] for r in rows}


class TestFailuresAndRetries:
    async def test_agency_failing_half_its_calls_still_writes_each_record_once(
        self, engine: Engine
    ) -> None:
        """Every 2nd call answers 503; retries complete the request with one row per effect."""
        for agency in ("tax-authority", "benefits-agency", "driver-licensing"):
            await engine.agencies.set_behaviour(agency, {"error_every": 2})
        data = example("change-of-address")
        reference = await engine.submit("change-of-address", data)
        result = await engine.result(reference, wait_s=90)
        assert result.status == "completed"
        tax = await engine.agencies.records("tax-authority", reference=reference)
        benefits = await engine.agencies.records("benefits-agency", reference=reference)
        licence = await engine.agencies.records("driver-licensing", reference=reference)
        assert len(tax) == 1
        assert len(licence) == 1
        assert len(benefits) == len(data["benefits"])
        # the reference agencies count calls per operation: only the benefits agency, called
        # once per item, is called a 2nd time — that item's call was retried, the rest not
        attempts = {s.step_id: sorted(i.attempts for i in s.items) for s in result.steps}
        assert attempts["update_benefits"] == [1, 2]
        assert attempts["update_tax_address"] == attempts["update_licence"] == [1]

    async def test_required_step_rejected_fails_request_with_agency_reason(
        self, engine: Engine
    ) -> None:
        """A 4xx from a required step is final: the request fails and says why."""
        await engine.agencies.set_behaviour(
            "tax-authority",
            {"reject": {"code": "unknown_taxpayer", "reason": "No taxpayer with that id",
                        "status": 409}},
        )
        reference = await engine.submit("change-of-address", example("change-of-address"))
        result = await engine.result(reference)
        assert result.status == "failed"
        tax = next(s for s in result.steps if s.step_id == "update_tax_address")
        assert tax.status == "failed"
        assert "No taxpayer with that id" in (tax.reason or "")
        assert tax.items[0].attempts == 1  # a rejection is never retried

    async def test_optional_step_rejected_does_not_fail_request(self, engine: Engine) -> None:
        """The benefits step is optional: its rejection leaves the request partially completed."""
        await engine.agencies.set_behaviour(
            "benefits-agency", {"reject": {"code": "closed", "reason": "Case closed"}}
        )
        reference = await engine.submit("change-of-address", example("change-of-address"))
        result = await engine.result(reference)
        assert result.status == "partially_completed"
        statuses = {s.step_id: s.status for s in result.steps}
        assert statuses["update_benefits"] == "failed"
        assert statuses["update_tax_address"] == "completed"

    async def test_false_condition_skips_and_for_each_calls_once_per_item(
        self, engine: Engine
    ) -> None:
        """No licence: that step is skipped, no call made; three benefits: exactly three calls."""
        data = example("change-of-address")
        data["has_driving_licence"] = False
        data.pop("licence_number")
        data["benefits"].append({"programme": "jobseeker", "case_number": "JS-0042"})
        reference = await engine.submit("change-of-address", data)
        result = await engine.result(reference)
        steps = {s.step_id: s for s in result.steps}
        assert steps["update_licence"].status == "skipped"
        assert steps["update_licence"].reason
        assert await engine.agencies.records("driver-licensing", reference=reference) == []
        benefits = await engine.agencies.records("benefits-agency", reference=reference)
        assert len(benefits) == 3
        assert sorted(i.key or "" for i in steps["update_benefits"].items) == sorted(
            b["programme"] for b in data["benefits"]
        )


class TestIdempotentStart:
    async def test_same_key_twice_is_one_request_with_one_set_of_effects(
        self, engine: Engine
    ) -> None:
        """One idempotency key, submitted while the request runs and after it finished: one
        workflow run, `created` only the first time, one read-model row, agencies told once."""
        key = str(uuid.uuid4())
        data = example("register-a-business")
        await engine.agencies.set_behaviour("*", {"latency_ms": 1000})  # still running below
        first = await engine.submissions.submit("register-a-business", data, idempotency_key=key)
        engine.started.append(first.reference)
        handle = engine.client.get_workflow_handle(first.reference)
        run_id = (await handle.describe()).run_id
        second = await engine.submissions.submit("register-a-business", data, idempotency_key=key)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert first.reference == second.reference
        assert first.created and not second.created
        await engine.result(first.reference)
        third = await engine.submissions.submit("register-a-business", data, idempotency_key=key)
        assert third.reference == first.reference and not third.created
        described = await handle.describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED
        assert described.run_id == run_id  # no second run was started after it closed
        rows = await engine.pool.fetchval(
            "SELECT count(*) FROM requests WHERE reference = $1", first.reference)
        started = await engine.pool.fetchval(
            "SELECT count(*) FROM request_events WHERE reference = $1"
            " AND kind = 'request_started'", first.reference)
        assert (rows, started) == (1, 1)
        told = await engine.agencies.records("business-registry", reference=first.reference)
        assert len(told) == 1


class TestInvalidSubmissions:
    async def test_missing_field_and_wrong_type_name_the_field_and_start_nothing(
        self, engine: Engine
    ) -> None:
        """Validation errors carry field paths; no workflow starts and no row is written."""
        data = copy.deepcopy(example("change-of-address"))
        del data["tax_id"]
        data["moved_on"] = 20261101
        data["benefits"][0]["case_number"] = 7
        key = str(uuid.uuid4())
        with pytest.raises(SubmissionInvalid) as caught:
            await engine.submissions.submit("change-of-address", data, idempotency_key=key)
        paths = {tuple(e.loc) for e in caught.value.errors}
        assert ("tax_id",) in paths
        assert ("moved_on",) in paths
        assert ("benefits", 0, "case_number") in paths
        reference = engine.submissions.reference("change-of-address", key)
        with pytest.raises(Exception):  # noqa: B017 - any "not found" from the server will do
            await engine.client.get_workflow_handle(reference).describe()
        assert await engine.read_model.get_request(reference) is None
        count = await engine.pool.fetchval("SELECT count(*) FROM requests")
        assert count == 0

    async def test_unknown_service_is_refused(self, engine: Engine) -> None:
        """An unknown service id names the services that exist."""
        with pytest.raises(UnknownService) as caught:
            await engine.submissions.submit("change-of-adress", {}, idempotency_key="k")
        assert "change-of-address" in str(caught.value)


class TestLiveProgress:
    async def test_progress_query_shows_steps_while_agencies_work(self, engine: Engine) -> None:
        """While a slow agency works, the query shows its step running and others done."""
        await engine.agencies.set_behaviour("tax-authority", {"latency_ms": 1500})
        reference = await engine.submit("change-of-address", example("change-of-address"))
        handle = engine.submissions.handle(reference)
        await progress_until(handle, lambda p: any(
            s.step_id == "update_tax_address" and s.status == "running" for s in p.steps),
            within_s=10)
        result = await engine.result(reference)
        assert result.status == "completed"
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
