"""Callbacks that race their own call, and a read model that follows the running request.

Real worker, dev server, PostgreSQL and reference agencies over HTTP. The race is the one seen
with the worker killed under load: the agency accepted a call whose answer the engine never
got, and sent its callback at once, while the engine was still retrying the call. Here the
agency is slower (1.5 s) than the step's timeout (1 s) for the first call only — the engine
gives up on that attempt, the agency goes on, records the registration and calls back with no
delay; the retry, 3 s later, gets the agency's stored 202.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from agency_kit.contract import Callback
from definitions.catalog import Catalog
from definitions.loader import load_catalog
from runtime import callback_tokens as tokens
from runtime.messages import RequestProgress, RequestResult
from runtime.settings import DEFAULT_CATALOG_DIR
from runtime.temporal import data_converter
from tests.consistency import assert_read_model_equals_temporal
from tests.e2e.conftest import Agencies, Engine, engine_client, example, running_engine
from tests.polling import eventually, progress_until
from tests.replay.test_replay import REPLAY_KEY
from worker import workflow_runner
from workflows.call_steps import CALLBACK_URL_EXPIRES_AFTER_DEADLINE
from workflows.recording import READ_MODEL_FOLLOWS_MESSAGES
from workflows.request_workflow import CitizenRequestWorkflow

HISTORY = Path(__file__).resolve().parents[1] / "replay" / "histories" / \
    "early_callback_after_retry.json"
VOTER = "electoral-registration"
VOTER_STEP = "update_voter_registration"
TAX_STEP = "update_tax_address"
RACE_SERVICE = f"""\
service: callback-race
version: 1
title: {{en: Callback race}}
description: {{en: The voter roll answers by callback; its first call times out.}}
input:
  fields:
    full_name: {{type: text, personal: true}}
    date_of_birth: {{type: date, personal: true}}
    new_address: {{type: address, personal: true}}
    previous_address: {{type: address, personal: true}}
    tax_id: {{type: text, personal: true}}
    moved_on: {{type: date}}
steps:
  - id: {VOTER_STEP}
    agency: {VOTER}
    operation: update-registration
    mode: callback
    timeout: 1s
    retry: {{initial_interval: 3s, backoff: 1.0, max_attempts: 5}}
    input:
      full_name: submission.full_name
      date_of_birth: submission.date_of_birth
      new_address: submission.new_address
      previous_address: submission.previous_address
  - id: {TAX_STEP}
    agency: tax-authority
    operation: update-address
    input:
      tax_id: submission.tax_id
      new_address: submission.new_address
      moved_on: submission.moved_on
"""
ASK_PROOF = {"needs_information": {"fields": {"proof_of_address": {"type": "text"}},
                                   "message": {"en": "Proof, please"}}}
"""Keeps the request open (the tax branch waits for the citizen) while the test looks."""


@pytest.fixture(scope="module")
def encryption_key() -> bytes:
    """The replay suite's test key, so a fresh history here can be committed as it is."""
    return REPLAY_KEY


@pytest.fixture(scope="module")
def race_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    folder = tmp_path_factory.mktemp("race-catalog")
    shutil.copy(DEFAULT_CATALOG_DIR / "agencies.yaml", folder / "agencies.yaml")
    (folder / "services").mkdir()
    (folder / "services" / "callback-race.yaml").write_text(RACE_SERVICE)
    return load_catalog(folder)


@pytest_asyncio.fixture
async def race_engine(
    temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    race_catalog: Catalog, encryption_key: bytes, task_queue: str,
) -> AsyncIterator[Engine]:
    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=race_catalog, encryption_key=encryption_key,
        task_queue=task_queue,
    ) as engine:
        yield engine


def step_of(progress: RequestProgress | RequestResult, step_id: str) -> Any:
    return next(s for s in progress.steps if s.step_id == step_id)


async def signed_callback(engine: Engine, reference: str, step: str, agency: str,
                          body: Callback) -> httpx.Response:
    """POST ``body`` to the step's callback URL, signed as the agency signs it."""
    token = tokens.issue(engine.callback_key, tokens.CallbackTarget(reference, step, None, agency))
    raw = json.dumps(body.model_dump(mode="json")).encode()
    return await engine.post_signed(agency, f"/callbacks/{token}", raw)


async def record_of(engine: Engine, reference: str) -> dict[str, Any]:
    """``GET /requests/{ref}``'s ``record`` (the read model), steps by ``step_id[item]``."""
    response = await engine.intake.get(f"/requests/{reference}")
    response.raise_for_status()
    record: dict[str, Any] = response.json()["record"]
    record["by_step"] = {s["step_id"] + (f"[{s['item_key']}]" if s["item_key"] else ""): s
                         for s in record["steps"]}
    return record


async def until_row(engine: Engine, reference: str, step: str, status: str,
                    within_s: float = 20) -> dict[str, Any]:
    async def row() -> dict[str, Any]:
        record = await record_of(engine, reference)
        got = record["by_step"].get(step, {}).get("status")
        assert got == status, f"{step}: {got!r}, waiting for {status!r}"
        return record

    return await eventually(row, within_s=within_s, every_s=0.05)


async def replays(history: WorkflowHistory) -> None:
    """Today's code replays the run, directly and sandboxed (raises otherwise)."""
    for sandboxed in (False, True):
        await Replayer(workflows=[CitizenRequestWorkflow],
                       data_converter=data_converter(REPLAY_KEY),
                       workflow_runner=workflow_runner(sandboxed)).replay_workflow(history)


def markers(history: WorkflowHistory) -> dict[str, int]:
    """Marker events by kind: each local activity by its type, and patches by id; and the
    search-attribute upserts of ``TemporalChangeVersion`` (the SDK's, with a patch)."""
    counts: dict[str, int] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes \
                .search_attributes.indexed_fields
            if "TemporalChangeVersion" in fields:
                counts["TemporalChangeVersion"] = counts.get("TemporalChangeVersion", 0) + 1
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        attributes = event.marker_recorded_event_attributes
        kind = attributes.marker_name
        if kind == "core_local_activity":
            data = json.loads(attributes.details["data"].payloads[0].data)
            kind = data["activity_type"]
        elif kind == "core_patch":  # {"id": ..., "deprecated": ...} in one of its details
            [patch] = [json.loads(p.data) for d in attributes.details.values()
                       for p in d.payloads if p.data.startswith(b"{")]
            kind = "patch " + patch["id"]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


class TestCallbackOvertakesItsCall:
    async def test_the_early_callback_is_kept_applied_once_and_a_copy_is_received(
        self, race_engine: Engine, agencies: Agencies
    ) -> None:
        """The agency's callback reaches the engine while its call is being retried: it is
        kept, applied once when the retry gets the 202, and the request completes; one
        registration at the agency, its callback delivered (not refused); a copy of it is
        answered 200 ``already_received``, a different one 409; the read model equals
        Temporal; the run replays."""
        engine = race_engine
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0,
                                             "latency_ms": 1500})
        await agencies.set_behaviour("tax-authority", ASK_PROOF)
        submission = {k: v for k, v in example("change-of-address").items() if k in (
            "full_name", "date_of_birth", "new_address", "previous_address", "tax_id",
            "moved_on")}
        reference = await engine.submit("callback-race", submission)
        handle = engine.submissions.handle(reference)

        async def accepted_by_the_agency() -> None:
            rows = await agencies.records(VOTER, reference=reference)
            assert rows, "the agency has not taken the first attempt's call yet"

        # the engine gave up on the first attempt at 1 s; the agency records it at 1.5 s
        await eventually(accepted_by_the_agency, within_s=10, every_s=0.05)
        await agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0})
        await progress_until(handle, lambda p: step_of(p, VOTER_STEP).status == "completed",
                             within_s=20, every_s=0.05)

        [registration] = await agencies.records(VOTER, reference=reference)
        assert registration["status"] == "completed"

        async def delivered() -> None:
            rows = await agencies.outbox(VOTER, reference=reference)
            assert [row["state"] for row in rows] == ["delivered"], rows  # not refused

        await eventually(delivered, within_s=10)
        sent = Callback(status="completed", agency_reference=registration["agency_reference"],
                        output=registration["output"])
        again = await signed_callback(engine, reference, VOTER_STEP, VOTER, sent)
        # the same message is the same update (its id is derived from it): Temporal answers
        # with the first outcome; a copy the run no longer remembers by id is answered
        # "already_received" from the item's digest (tests/workflows/test_early_callbacks.py)
        assert (again.status_code, again.json()["code"]) == (200, "accepted")
        other = await signed_callback(engine, reference, VOTER_STEP, VOTER, sent.model_copy(
            update={"output": {"reference": "ANOTHER"}}))
        assert (other.status_code, other.json()["code"]) == (409, "not_expected")

        answered = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": TAX_STEP, "answers": {"proof_of_address": "bill"}})
        assert answered.status_code == 200, answered.text
        result = await engine.result(reference)
        assert result.status == "completed"
        voter = step_of(result, VOTER_STEP).items[0]
        assert (voter.agency_reference, voter.output) == (
            registration["agency_reference"], registration["output"])
        assert voter.attempts >= 2  # 2 unless the machine is too slow for the 3 s retry
        assert len(await agencies.records("tax-authority", reference=reference)) == 1
        await assert_read_model_equals_temporal(engine.read_model, engine.client, reference)

        history = await handle.fetch_history()
        events = list(history.events)
        retried = next(e for e in events
                       if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                       and e.activity_task_started_event_attributes.attempt >= 2)
        completed = next(e for e in events
                         if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                         and e.activity_task_completed_event_attributes.started_event_id
                         == retried.event_id)
        callbacks = [e for e in events
                     if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
                     and e.workflow_execution_update_accepted_event_attributes
                     .accepted_request.input.name == "agency_callback"]
        # the callback once: its copy, the same update id, was answered by the server from
        # the first update and never entered the history
        assert len(callbacks) == 1
        assert callbacks[0].event_id < completed.event_id  # it came before the call's 202
        await replays(history)
        if os.environ.get("NWD_RECORD_HISTORIES") == "1":
            HISTORY.write_text(history.to_json())


class TestReadModelFollowsTheRequest:
    async def test_callback_and_answer_show_in_the_record_before_the_request_ends(
        self, engine: Engine
    ) -> None:
        """While the tax branch waits for the citizen, the voter roll's callback shows as
        completed in ``GET /requests/{ref}``'s record; the answer shows the tax step running
        (its call takes 2 s), then completed; one local activity per message."""
        await engine.agencies.set_behaviour(VOTER, {"mode": "callback", "callback_delay_s": 0.3})
        await engine.agencies.set_behaviour("tax-authority", ASK_PROOF)
        reference = await engine.submit("change-of-address", example("change-of-address"))
        handle = engine.submissions.handle(reference)

        record = await until_row(engine, reference, VOTER_STEP, "completed")
        assert record["status"] == "running"
        assert record["by_step"][TAX_STEP]["status"] == "waiting"
        live = await handle.query(CitizenRequestWorkflow.progress)
        assert step_of(live, TAX_STEP).status == "waiting"

        await engine.agencies.set_behaviour("tax-authority", {"latency_ms": 2000})
        answered = await engine.intake.post(f"/requests/{reference}/information", json={
            "step_id": TAX_STEP, "answers": {"proof_of_address": "bill"}})
        assert answered.status_code == 200, answered.text
        record = await until_row(engine, reference, TAX_STEP, "running", within_s=2)
        assert record["status"] == "running"
        await until_row(engine, reference, TAX_STEP, "completed")
        result = await engine.result(reference)
        assert result.status == "completed"
        await assert_read_model_equals_temporal(engine.read_model, engine.client, reference)

        events = await engine.pool.fetch(
            "SELECT step_id, kind FROM request_events WHERE reference = $1 AND kind IN"
            " ('callback_completed', 'information_answered') ORDER BY id", reference)
        assert [(e["step_id"], e["kind"]) for e in events] == [
            (VOTER_STEP, "callback_completed"), (TAX_STEP, "information_answered")]
        # the cost in history: one marker per message; one marker and one search-attribute
        # upsert for each patch, once per run (the end's record was there before); the voter
        # step has a deadline, so its call names it (its callback URL's expiry); the citizen
        # is emailed (information requested, finished) behind the patch citizen-emails
        counts = markers(await handle.fetch_history())
        assert counts == {"record_progress": 2, f"patch {READ_MODEL_FOLLOWS_MESSAGES}": 1,
                          f"patch {CALLBACK_URL_EXPIRES_AFTER_DEADLINE}": 1,
                          "patch citizen-emails": 1,
                          "TemporalChangeVersion": 3, "record_request": 1}, counts

    async def test_a_decision_shows_with_who_decided_while_the_request_runs(
        self, engine: Engine, licensed_catalog: Catalog
    ) -> None:
        """An approval shows as completed, decided by the caseworker, while the next step's
        call (2 s) is still open; a rejection as failed, with who rejected."""
        await engine.agencies.set_behaviour(
            "business-registry", {"mode": "callback", "callback_delay_s": 0.2})
        await engine.agencies.set_behaviour("tax-authority", {"latency_ms": 2000})
        submissions = engine.submissions_for(licensed_catalog, recorded_at_submit=True)
        for approve, who, status in ((True, "sam", "completed"), (False, "kim", "failed")):
            submitted = await submissions.submit(
                "licensed-business", example("register-a-business"),
                idempotency_key=str(uuid.uuid4()))
            reference = submitted.reference
            engine.started.append(reference)
            handle = engine.client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
            await progress_until(handle, lambda p: (
                step_of(p, "approve_trading").status == "waiting"), within_s=20)
            decided = await engine.decide(reference, "approve_trading", approve=approve,
                                          reason="seen" if approve else "no premises",
                                          subject=who, roles=["licensing-officer"])
            assert decided.status_code == 200, decided.text
            record = await until_row(engine, reference, "approve_trading", status,
                                     within_s=2)
            assert record["by_step"]["approve_trading"]["decided_by"] == who
            if approve:
                assert record["status"] == "running"  # the tax registration's call is open
            result = await asyncio.wait_for(handle.result(), 30)
            assert result.status == status
            await assert_read_model_equals_temporal(engine.read_model, engine.client, reference)
