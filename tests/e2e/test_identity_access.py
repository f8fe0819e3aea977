"""Who may follow, answer, cancel and decide a request — each attack tried on the real stack.

The engine here (real dev server, worker, PostgreSQL, reference agencies, intake on uvicorn)
trusts a real OIDC provider over HTTP (:mod:`nwd.stack.oidc`) whose tokens live
:data:`TOKEN_LIFETIME_S` seconds: every token is signed in for just before it is used, and one
is left to expire. Each refusal is checked to change nothing: the workflow's status and
history length in Temporal, the read model's rows, and the access rows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from intake.access import FAILURE_LIMIT
from runtime.messages import RequestProgress
from tests.conftest import CASEWORKER_ROLES
from tests.e2e.conftest import (
    REFERENCE_KEY,
    Agencies,
    Engine,
    engine_client,
    example,
    reference_for,
    running_engine,
)
from tests.identity import Issuer, running_issuer
from tests.polling import eventually, progress_until
from workflows.request_workflow import CitizenRequestWorkflow

TOKEN_LIFETIME_S = 4
SERVICE = "change-of-address"
LICENSED = "licensed-business"
NWD = str(Path(sys.executable).parent / "nwd")


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issuer]:
    with running_issuer(tmp_path_factory.mktemp("oidc-access"),
                        token_lifetime_s=TOKEN_LIFETIME_S,
                        client_roles=CASEWORKER_ROLES) as running:
        yield running


@pytest_asyncio.fixture
async def engine(temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
                 catalog: Catalog, encryption_key: bytes, task_queue: str,
                 issuer: Issuer) -> AsyncIterator[Engine]:
    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=catalog, encryption_key=encryption_key,
        task_queue=task_queue, issuer=issuer,
    ) as running:
        yield running


@dataclass(frozen=True)
class Snapshot:
    """What a refused attempt must leave as it was."""

    status: WorkflowExecutionStatus | None
    history_length: int
    request_rows: list[dict[str, Any]]
    step_rows: list[dict[str, Any]]
    events: int
    access_rows: int


async def snapshot(engine: Engine, reference: str) -> Snapshot:
    handle = engine.client.get_workflow_handle(reference)
    described = await handle.describe()
    history = await handle.fetch_history()
    pool = engine.pool
    return Snapshot(
        status=described.status,
        history_length=len(history.events),
        request_rows=[dict(r) for r in await pool.fetch(
            "SELECT reference, status, finished_at FROM requests WHERE reference = $1",
            reference)],
        step_rows=[dict(r) for r in await pool.fetch(
            "SELECT step_id, item_key, status, decided_by FROM request_steps"
            " WHERE reference = $1 ORDER BY step_id, item_key", reference)],
        events=int(await pool.fetchval(
            "SELECT count(*) FROM request_events WHERE reference = $1", reference)),
        access_rows=int(await pool.fetchval("SELECT count(*) FROM request_access")),
    )


def waiting_for_information(progress: RequestProgress) -> bool:
    return any(s.step_id == "update_tax_address" and s.status == "waiting"
               for s in progress.steps)


async def waiting_request(engine: Engine) -> str:
    """A change of address whose tax step waits for the citizen's answer (it stays open)."""
    await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
        "fields": {"proof_of_address": {"type": "text"}},
        "message": {"en": "Send proof of your new address"}}})
    reference = await engine.submit(SERVICE, example(SERVICE))
    await progress_until(engine.submissions.handle(reference), waiting_for_information,
                         within_s=20)
    return reference


async def settled(engine: Engine, reference: str) -> Snapshot:
    """The snapshot once the workflow has no task in flight: unchanged for a whole second
    (the email telling the citizen an agency asks for more is sent beside the wait)."""
    previous = await snapshot(engine, reference)
    steady = 0
    for _ in range(60):
        await asyncio.sleep(0.2)
        current = await snapshot(engine, reference)
        steady = steady + 1 if current == previous else 0
        if steady >= 5:
            return current
        previous = current
    return previous


def _altered(code: str) -> str:
    """``code`` with its last character changed (to another one: a code may end in "x")."""
    return code[:-1] + ("y" if code.endswith("x") else "x")


ANSWER = {"step_id": "update_tax_address", "answers": {"proof_of_address": "utility bill"}}


class TestStrangers:
    async def test_a_stranger_gets_the_unknown_requests_404_and_changes_nothing(
            self, engine: Engine) -> None:
        """No credential, a wrong code, another citizen's token: reading, answering and
        cancelling all get the body a reference that does not exist gets; the request, its
        history and its rows are as they were."""
        reference = await waiting_request(engine)
        before = await settled(engine, reference)
        other = await engine.issuer.sign_in("citizen-mallory")  # type: ignore[union-attr]
        credentials: list[dict[str, str]] = [
            {}, {"X-Access-Code": "not-the-code"},
            {"X-Access-Code": _altered(engine.access_code(reference))},
            {"Authorization": f"Bearer {other}"},
        ]
        nowhere = reference_for(SERVICE, f"never-submitted-{uuid.uuid4()}")
        async with engine.stranger() as stranger:
            for headers in credentials:
                # each credential starts below the rate limit (that is TestRateLimit's)
                await engine.pool.execute("DELETE FROM access_failures")
                for method, path, body in (("GET", "", None), ("POST", "/information", ANSWER),
                                           ("POST", "/cancel", {})):
                    theirs = await stranger.request(method, f"/requests/{reference}{path}",
                                                    json=body, headers=headers)
                    missing = await stranger.request(method, f"/requests/{nowhere}{path}",
                                                     json=body, headers=headers)
                    assert theirs.status_code == 404, (headers, path, theirs.text)
                    assert theirs.json() == {"code": "unknown_request",
                                             "message": f"no request {reference!r}"}
                    assert missing.status_code == 404
                    assert missing.json() == {"code": "unknown_request",
                                              "message": f"no request {nowhere!r}"}
                    assert set(theirs.headers) - {"date"} == set(missing.headers) - {"date"}
        after = await snapshot(engine, reference)
        assert after == before
        assert after.status == WorkflowExecutionStatus.RUNNING

    async def test_a_forged_or_expired_token_is_401_and_changes_nothing(
            self, engine: Engine) -> None:
        """A token that does not verify is refused as such (401 ``invalid_token`` with
        ``WWW-Authenticate: Bearer``), not taken as no token."""
        reference = await waiting_request(engine)
        assert engine.issuer is not None
        token = await engine.issuer.sign_in("citizen")
        before = await settled(engine, reference)
        await asyncio.sleep(TOKEN_LIFETIME_S + 1)
        async with engine.stranger() as stranger:
            # a header naming a non-ASCII or quoted algorithm must not echo into
            # WWW-Authenticate (a 500 before)
            crafted = [base64.urlsafe_b64encode(json.dumps(header).encode()).decode()
                       .rstrip("=") + ".e30.c2ln" for header in (
                           {"alg": "€", "kid": "k"}, {"alg": 'RS256"\\', "kid": "k"})]
            for bad in (token, token[:-4] + "AAAA", "not.a.jwt", *crafted):
                response = await stranger.post(
                    f"/requests/{reference}/cancel", json={},
                    headers={"Authorization": f"Bearer {bad}",
                             "X-Access-Code": engine.access_code(reference)})
                assert response.status_code == 401, response.text
                assert response.json()["code"] == "invalid_token"
                assert response.headers["www-authenticate"].startswith("Bearer")
        assert await snapshot(engine, reference) == before


class TestOwners:
    async def test_the_access_code_follows_answers_and_cancels(self, engine: Engine) -> None:
        """Submitted without an account, the 202 carries a code (shown once: the same key
        again answers 200 without it); with it the citizen reads, answers and cancels."""
        await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
            "fields": {"proof_of_address": {"type": "text"}},
            "message": {"en": "Send proof of your new address"}}})
        key = str(uuid.uuid4())
        body = {"service": SERVICE, "submission": example(SERVICE)}
        async with engine.stranger() as citizen:
            first = await citizen.post("/requests", json=body, headers={"Idempotency-Key": key})
            assert first.status_code == 202, first.text
            reference, code = first.json()["reference"], first.json()["access_code"]
            engine.started.append(reference)
            assert len(code) >= 32  # 192 bits, base64url
            assert first.headers["cache-control"] == "no-store"
            again = await citizen.post("/requests", json=body, headers={"Idempotency-Key": key})
            assert again.status_code == 200 and "access_code" not in again.json()
            stored = await engine.pool.fetchrow(
                "SELECT owner_hash, code_hash FROM request_access WHERE reference = $1",
                reference)
            assert stored["owner_hash"] is None and code.encode() not in stored["code_hash"]
            await progress_until(engine.submissions.handle(reference), waiting_for_information,
                                 within_s=20)
            headers = {"X-Access-Code": code}
            status = await citizen.get(f"/requests/{reference}", headers=headers)
            assert status.status_code == 200 and status.json()["reference"] == reference
            answered = await citizen.post(f"/requests/{reference}/information", json=ANSWER,
                                          headers=headers)
            assert answered.status_code == 200, answered.text
            result = await engine.result(reference)
            assert result.status == "completed"

    async def test_a_signed_in_citizen_owns_the_request_and_another_does_not(
            self, engine: Engine) -> None:
        """With a bearer token the request belongs to its subject: no code is given; that
        citizen's later token reads and cancels it; another citizen's gets the 404."""
        assert engine.issuer is not None
        await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
            "fields": {"proof_of_address": {"type": "text"}},
            "message": {"en": "Send proof"}}})
        async with engine.stranger() as browser:
            ada = {"Authorization": f"Bearer {await engine.issuer.sign_in('citizen-ada')}"}
            submitted = await browser.post("/requests", json={
                "service": SERVICE, "submission": example(SERVICE)}, headers=ada)
            assert submitted.status_code == 202, submitted.text
            reference = submitted.json()["reference"]
            engine.started.append(reference)
            assert "access_code" not in submitted.json()
            owner_hash = await engine.pool.fetchval(
                "SELECT owner_hash FROM request_access WHERE reference = $1", reference)
            assert owner_hash is not None and b"citizen-ada" not in owner_hash
            await progress_until(engine.submissions.handle(reference), waiting_for_information,
                                 within_s=20)
            before = await settled(engine, reference)
            bob = {"Authorization": f"Bearer {await engine.issuer.sign_in('citizen-bob')}"}
            for path, body in (("", None), ("/cancel", {}), ("/information", ANSWER)):
                method = "GET" if body is None else "POST"
                refused = await browser.request(method, f"/requests/{reference}{path}",
                                                json=body, headers=bob)
                assert refused.status_code == 404
                assert refused.json()["code"] == "unknown_request"
            assert await snapshot(engine, reference) == before
            ada = {"Authorization": f"Bearer {await engine.issuer.sign_in('citizen-ada')}"}
            status = await browser.get(f"/requests/{reference}", headers=ada)
            assert status.status_code == 200
            cancelled = await browser.post(f"/requests/{reference}/cancel", json={},
                                           headers=ada)
            assert cancelled.status_code == 200, cancelled.text
        assert (await engine.result(reference)).status == "cancelled"


class TestRateLimit:
    async def test_repeated_failures_get_429_with_retry_after_and_change_nothing(
            self, engine: Engine) -> None:
        """After FAILURE_LIMIT refused guesses, the next attempts — even with the right code —
        get 429 with Retry-After; the attempts are counted in PostgreSQL."""
        reference = await waiting_request(engine)
        before = await settled(engine, reference)
        async with engine.stranger() as guesser:
            first_guess = time.monotonic()
            for i in range(FAILURE_LIMIT):
                guess = await guesser.get(f"/requests/{reference}",
                                          headers={"X-Access-Code": f"guess-{i}"})
                assert guess.status_code == 404
            held = await guesser.get(f"/requests/{reference}",
                                     headers={"X-Access-Code": engine.access_code(reference)})
            assert held.status_code == 429, held.text
            assert held.json()["code"] == "too_many_attempts"
            # until the first guess leaves the 5-minute window: 300 s less the time since it
            # (rounded up), not some other wait
            since_first = time.monotonic() - first_guess
            retry_after = int(held.headers["retry-after"])
            assert 300 - since_first - 1 <= retry_after <= 300 - int(since_first) + 1, (
                retry_after, since_first)
            cancel = await guesser.post(f"/requests/{reference}/cancel", json={},
                                        headers={"X-Access-Code": engine.access_code(reference)})
            assert cancel.status_code == 429
        failures = await engine.pool.fetchval(
            "SELECT count(*) FROM access_failures WHERE scope = $1", f"reference:{reference}")
        assert failures == FAILURE_LIMIT
        assert await snapshot(engine, reference) == before

    async def test_strangers_cannot_lock_the_owner_out(self, engine: Engine) -> None:
        """Guesses from one address hold the reference: from another address a wrong code
        gets 429 too, but the citizen's own code still opens the request."""
        reference = await waiting_request(engine)
        async with engine.stranger() as guesser:
            for i in range(FAILURE_LIMIT):
                guess = await guesser.get(f"/requests/{reference}",
                                          headers={"X-Access-Code": f"guess-{i}"})
                assert guess.status_code == 404
        elsewhere = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=engine.intake_url, transport=elsewhere,
                                     timeout=30) as citizen:
            wrong = await citizen.get(f"/requests/{reference}",
                                      headers={"X-Access-Code": "guess-again"})
            assert wrong.status_code == 429, wrong.text
            assert wrong.json()["code"] == "too_many_attempts"
            own = await citizen.get(f"/requests/{reference}",
                                    headers={"X-Access-Code": engine.access_code(reference)})
            assert own.status_code == 200, own.text
            assert own.json()["reference"] == reference


def waiting_for_decision(progress: RequestProgress) -> bool:
    """The decision is awaited and its 2 s due date has passed (its one escalation is in the
    history: nothing but a decision changes the request after that)."""
    return any(s.step_id == "approve_trading" and s.status == "waiting" and s.escalated
               for s in progress.steps)


async def awaiting_decision(engine: Engine, licensed_catalog: Catalog) -> str:
    await engine.agencies.set_behaviour(
        "business-registry", {"mode": "callback", "callback_delay_s": 0.2})
    submissions = engine.submissions_for(licensed_catalog, recorded_at_submit=True)
    submitted = await submissions.submit(LICENSED, example("register-a-business"),
                                         idempotency_key=str(uuid.uuid4()))
    engine.started.append(submitted.reference)
    await progress_until(engine.submissions.handle(submitted.reference), waiting_for_decision,
                         within_s=20)

    async def escalation_recorded() -> None:
        count = await engine.pool.fetchval(
            "SELECT count(*) FROM request_events WHERE reference = $1 AND step_id ="
            " 'approve_trading' AND kind = 'escalated'", submitted.reference)
        assert count == 1

    await eventually(escalation_recorded, within_s=20)
    return submitted.reference


class TestCaseworkers:
    async def test_no_token_wrong_role_expired_or_a_named_decider_changes_nothing(
            self, engine: Engine, licensed_catalog: Catalog) -> None:
        """401 without a token and with an expired one, 403 for a token without the step's
        role (a tax officer's), a citizen's token (no role) the unknown request's 404, 422 for
        a body naming who decides; the step still waits, no decider is recorded."""
        assert engine.issuer is not None
        expired = await engine.issuer.sign_in("caseworker")
        reference = await awaiting_decision(engine, licensed_catalog)
        # the token expires meanwhile, and the decision's 2 s due date passes (its one
        # escalation is in the history before the attempts start)
        await asyncio.sleep(TOKEN_LIFETIME_S + 1)
        before = await settled(engine, reference)
        path = f"/requests/{reference}/decisions"
        decision = {"step_id": "approve_trading", "approve": True}
        async with engine.stranger() as client:
            none = await client.post(path, json=decision)
            assert none.status_code == 401 and none.json()["code"] == "token_required"
            assert none.headers["www-authenticate"] == "Bearer"
            await engine.issuer.set_roles("tom", ["tax-officer"])
            token = await engine.issuer.sign_in("tom")
            wrong = await client.post(path, json=decision,
                                      headers={"Authorization": f"Bearer {token}"})
            assert wrong.status_code == 403, wrong.text
            assert wrong.json()["code"] == "forbidden"
            # a citizen's token (no role at all) cannot tell this request from one that does
            # not exist: the same 404, body and all
            citizen = {"Authorization": f"Bearer {await engine.issuer.sign_in('citizen')}"}
            unknown = "LICENSED-BUSINESS-AAAA-BBBB-CCCC"
            seen = await client.post(path, json=decision, headers=citizen)
            missing = await client.post(f"/requests/{unknown}/decisions", json=decision,
                                        headers=citizen)
            assert seen.status_code == missing.status_code == 404, seen.text
            assert seen.json() == {**missing.json(),
                                   "message": missing.json()["message"].replace(unknown,
                                                                                reference)}
            token = await engine.issuer.sign_in("caseworker")
            for extra in ({"decided_by": "the-mayor"}, {"role": "licensing-officer"}):
                named = await client.post(path, json={**decision, **extra},
                                          headers={"Authorization": f"Bearer {token}"})
                assert named.status_code == 422, named.text
                assert [e["loc"] for e in named.json()["errors"]] == [[next(iter(extra))]]
            late = await client.post(path, json=decision,
                                     headers={"Authorization": f"Bearer {expired}"})
            assert late.status_code == 401 and late.json()["code"] == "invalid_token"
            assert "expired" in late.json()["message"]
        after = await snapshot(engine, reference)
        assert after == before
        assert all(r["decided_by"] is None for r in after.step_rows)
        progress = await engine.submissions.handle(reference).query(
            CitizenRequestWorkflow.progress)
        step = next(s for s in progress.steps if s.step_id == "approve_trading")
        assert (step.status, step.decided_by) == ("waiting", None)

    async def test_the_right_role_decides_and_the_token_subject_is_recorded(
            self, engine: Engine, licensed_catalog: Catalog) -> None:
        """A caseworker with the step's role decides; ``decided_by`` is the token's subject,
        in the workflow's result and the read model."""
        reference = await awaiting_decision(engine, licensed_catalog)
        decided = await engine.decide(reference, "approve_trading", approve=True,
                                      reason="premises inspected", subject="kim-k",
                                      roles=["licensing-officer"])
        assert decided.status_code == 200, decided.text
        result = await engine.result(reference)
        assert result.status == "completed"
        assert {s.step_id: s.decided_by for s in result.steps}["approve_trading"] == "kim-k"
        row = await engine.read_model.get_request(reference)
        assert row is not None
        assert {s.step_id: s.decided_by for s in row.steps}["approve_trading"] == "kim-k"

    async def test_nwd_decide_signs_in_by_client_credentials(
            self, engine: Engine, licensed_catalog: Catalog, issuer: Issuer,
            tmp_path: Path) -> None:
        """``nwd decide`` gets a token from the configured issuer (client credentials of the
        engine's client) and decides through the intake: the decider is the service account;
        with a wrong client secret it gets no token and nothing changes."""
        reference = await awaiting_decision(engine, licensed_catalog)
        env = {"PATH": os.environ.get("PATH", ""), "NWD_STATE_DIR": str(tmp_path),
               "NWD_INTAKE_URL": engine.intake_url, "NWD_OIDC_ISSUER": issuer.url,
               "NWD_OIDC_CLIENT_ID": issuer.client_id,
               "NWD_OIDC_CLIENT_SECRET": "not-the-secret",
               "NWD_REFERENCE_KEY": REFERENCE_KEY.decode(), "NWD_LOG_FORMAT": "json"}
        argv = [NWD, "decide", reference, "approve_trading", "approve", "--reason", "ok"]
        before = await settled(engine, reference)
        refused = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True,
                                          text=True, timeout=60)
        assert refused.returncode != 0
        assert "client" in refused.stderr and "secret" not in refused.stdout
        assert await snapshot(engine, reference) == before
        env["NWD_OIDC_CLIENT_SECRET"] = issuer.client_secret
        done = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True,
                                       text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        result = await engine.result(reference)
        assert {s.step_id: s.decided_by for s in result.steps}["approve_trading"] \
            == issuer.client_id
