"""Forged, replayed, misdirected and late callbacks and answers, against the real stack.

Each drives a real request (Temporal dev server, worker, PostgreSQL read model, reference
agencies over HTTP) to a real wait for the voter-roll agency's callback, then sends the
attack to the intake's callback route (uvicorn) and asserts the refusal (401) **and** that
nothing changed: no update entered the request's history, the step still waits, the read
model's row is as it was. A callback is an RFC 9421 message signed by the agency's own
Ed25519 key (agency_kit.signing); the intake verifies it with the keys of the agency the
callback URL was issued to, fetched from that agency's JWKS over HTTP, and takes each nonce
once (readmodel/nonces.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType

from agency_kit.contract import Callback
from agency_kit.keys import Keyring, KeySource
from agency_kit.signing import Signer
from runtime import callback_tokens as tokens
from runtime.messages import RequestProgress, StepOutcome
from tests.e2e.conftest import Engine, example
from tests.keys import keyring
from tests.polling import progress_until
from workflows.request_workflow import CitizenRequestWorkflow

VOTER = "update_voter_registration"
AGENCY = "electoral-registration"


async def waiting_voter_step(engine: Engine) -> tuple[str, StepOutcome]:
    """A change of address whose voter-roll agency accepted (202) and has not called back."""
    await engine.agencies.set_behaviour(AGENCY, {"mode": "callback", "callback_delay_s": 36000})
    reference = await engine.submit("change-of-address", example("change-of-address"))
    progress = await progress_until(
        engine.submissions.handle(reference), voter_waits_for_callback, within_s=20)
    return reference, voter_step(progress)


def voter_step(progress: RequestProgress) -> StepOutcome:
    return next(s for s in progress.steps if s.step_id == VOTER)


def voter_waits_for_callback(progress: RequestProgress) -> bool:
    step = voter_step(progress)
    return step.status == "waiting" and step.items[0].waiting_for == "callback"


def callback_path(engine: Engine, reference: str, *, agency: str = AGENCY,
                  expires: int | None = None) -> str:
    token = tokens.issue(engine.callback_key, tokens.CallbackTarget(
        reference, VOTER, None, agency, expires))
    return f"/callbacks/{token}"


def completed(agency_reference: str) -> bytes:
    return Callback(status="completed", agency_reference=agency_reference,
                    output={"reference": agency_reference}).model_dump_json().encode()


async def updates_in_history(engine: Engine, reference: str) -> int:
    history = await engine.client.get_workflow_handle(reference).fetch_history()
    return sum(
        1 for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


async def voter_row(engine: Engine, reference: str) -> dict[str, Any]:
    row = await engine.pool.fetchrow(
        "SELECT status, agency_reference, updated_at FROM request_steps WHERE reference = $1"
        " AND step_id = $2", reference, VOTER)
    assert row is not None
    return dict(row)


async def assert_unchanged(engine: Engine, reference: str, before: dict[str, Any]) -> None:
    """No update in history, the step still waits for its callback, the row as it was."""
    assert await updates_in_history(engine, reference) == 0
    progress = await engine.submissions.handle(reference).query(CitizenRequestWorkflow.progress)
    assert voter_waits_for_callback(progress), progress
    assert await voter_row(engine, reference) == before


def refused(response: httpx.Response, code: str = "bad_signature") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code, response.text


class TestForgedAndReplayedCallbacks:
    async def test_a_callback_replayed_to_the_same_url_is_refused_once_taken(
        self, engine: Engine
    ) -> None:
        """The agency's callback completes the wait; the same signed message again (a
        captured copy) is refused by its nonce and adds nothing to the history."""
        reference, step = await waiting_voter_step(engine)
        path = callback_path(engine, reference)
        body = completed(str(step.items[0].agency_reference))
        headers = engine.agency_signed(AGENCY, path, body)
        first = await engine.intake.post(path, content=body, headers=headers)
        assert first.status_code == 200, first.text
        again = await engine.intake.post(path, content=body, headers=headers)
        refused(again)
        assert "already received" in again.json()["message"]
        assert await updates_in_history(engine, reference) == 1
        assert (await engine.result(reference)).status == "completed"
        assert await updates_in_history(engine, reference) == 1

    async def test_a_callback_captured_for_one_request_is_refused_for_another(
        self, engine: Engine
    ) -> None:
        """A validly signed callback for request A, sent to request B's callback URL (the
        signature covers the URL): 401, and B is untouched."""
        first, _ = await waiting_voter_step(engine)
        second, second_step = await waiting_voter_step(engine)
        before = await voter_row(engine, second)
        body = completed(str(second_step.items[0].agency_reference))
        captured = engine.agency_signed(AGENCY, callback_path(engine, first), body)
        response = await engine.intake.post(callback_path(engine, second), content=body,
                                            headers=captured)
        refused(response)
        await assert_unchanged(engine, second, before)
        await assert_unchanged(engine, first, await voter_row(engine, first))

    async def test_a_callback_signed_by_another_agency_or_an_unknown_key_is_refused(
        self, engine: Engine
    ) -> None:
        """The URL is bound to the voter-roll agency: a callback signed by another agency's
        real key, or by a key nobody published, is refused; nothing changes."""
        reference, step = await waiting_voter_step(engine)
        before = await voter_row(engine, reference)
        path = callback_path(engine, reference)
        body = completed(str(step.items[0].agency_reference))
        other_agency = engine.agencies.credentials.signer("tax-authority")
        for signer in (other_agency, keyring("impostor").signer()):
            response = await engine.post_signed(AGENCY, path, body, signer=signer)
            refused(response)
            assert "no key" in response.json()["message"]
        await assert_unchanged(engine, reference, before)

    async def test_a_late_or_forged_callback_is_refused(self, engine: Engine) -> None:
        """A signature past its expiry, and a body other than the one signed: 401 each."""
        reference, step = await waiting_voter_step(engine)
        before = await voter_row(engine, reference)
        path = callback_path(engine, reference)
        agency_reference = str(step.items[0].agency_reference)
        ring = engine.agencies.credentials.keyrings[AGENCY]
        kid, key = ring.signing
        late = Signer(key, kid, expires_s=60, clock=lambda: time.time() - 120)
        response = await engine.post_signed(AGENCY, path, completed(agency_reference),
                                            signer=late)
        refused(response)
        assert "expired" in response.json()["message"]
        signed = engine.agency_signed(AGENCY, path, completed(agency_reference))
        forged = Callback(status="rejected", agency_reference=agency_reference, code="x",
                          reason="forged").model_dump_json().encode()
        response = await engine.intake.post(path, content=forged, headers=signed)
        refused(response)
        assert "Content-Digest" in response.json()["message"]
        await assert_unchanged(engine, reference, before)

    async def test_malformed_non_ascii_or_missing_signature_headers_are_401_never_500(
        self, engine: Engine
    ) -> None:
        """Garbled, non-ASCII, duplicated or absent signature headers: 401 each."""
        reference, step = await waiting_voter_step(engine)
        before = await voter_row(engine, reference)
        path = callback_path(engine, reference)
        body = completed(str(step.items[0].agency_reference))
        good = engine.agency_signed(AGENCY, path, body)
        cases: list[dict[str, str | bytes | None]] = [
            {"Signature": None},
            {"Signature-Input": None},
            {"Signature": "((( not a dictionary"},
            {"Signature-Input": 'nwd=("@method");created=\u00e9'.encode("latin-1")},
            {"Signature": "nwd=:\xff\xfe:".encode("latin-1")},
            {"Signature": "nwd=:AAAA:, nwd=:BBBB:"},
            {"Content-Digest": "sha-256=:\xe9:".encode("latin-1")},
        ]
        for change in cases:
            headers: dict[str, str | bytes] = dict(good)
            for name, value in change.items():
                if value is None:
                    headers.pop(name)
                else:
                    headers[name] = value
            response = await engine.intake.post(path, content=body, headers=headers)
            refused(response)
        await assert_unchanged(engine, reference, before)

    async def test_an_expired_or_forged_callback_url_is_refused(self, engine: Engine) -> None:
        """A callback URL past its expiry, or one not issued by the engine: 401 bad_token,
        however well the callback is signed."""
        reference, step = await waiting_voter_step(engine)
        before = await voter_row(engine, reference)
        body = completed(str(step.items[0].agency_reference))
        expired = callback_path(engine, reference, expires=int(time.time()) - 1)
        refused(await engine.post_signed(AGENCY, expired, body), "bad_token")
        forged = tokens.issue(b"not the engine's key" * 2, tokens.CallbackTarget(
            reference, VOTER, None, AGENCY))
        refused(await engine.post_signed(AGENCY, f"/callbacks/{forged}", body), "bad_token")
        await assert_unchanged(engine, reference, before)


class TestKeyRotation:
    async def test_old_and_new_keys_both_verify_while_both_are_published(
        self, engine: Engine
    ) -> None:
        """The agency publishes a second key (its JWKS, fetched over HTTP) and signs with it:
        the intake, which knew only the first, refetches on the new kid and takes the
        callback; a callback signed with the old key still verifies meanwhile."""
        first, first_step = await waiting_voter_step(engine)
        second, second_step = await waiting_voter_step(engine)
        third, third_step = await waiting_voter_step(engine)
        credentials = engine.agencies.credentials
        old = credentials.keyrings[AGENCY]

        def body(step: StepOutcome) -> bytes:
            return completed(str(step.items[0].agency_reference))

        # the intake learns the agency's one key
        by_old = await engine.post_signed(AGENCY, callback_path(engine, first), body(first_step),
                                          signer=old.signer())
        assert by_old.status_code == 200, by_old.text
        new = keyring(AGENCY)
        rotating = Keyring((*old.keys, *new.keys))
        credentials.keyrings[AGENCY] = rotating  # type: ignore[index]
        assert rotating.signing[0] == new.signing[0]
        await asyncio.sleep(KeySource.min_refresh_s + 0.1)  # the refetch rate bound
        by_new = await engine.post_signed(AGENCY, callback_path(engine, second),
                                          body(second_step), signer=rotating.signer())
        assert by_new.status_code == 200, by_new.text
        still_old = await engine.post_signed(AGENCY, callback_path(engine, third),
                                             body(third_step), signer=old.signer())
        assert still_old.status_code == 200, still_old.text
        for reference in (first, second, third):
            assert (await engine.result(reference)).status == "completed"


class TestForgedAnswers:
    async def test_an_answer_not_signed_by_the_agency_is_not_acted_on(
        self, engine: Engine
    ) -> None:
        """A man in the middle answers the tax authority's call `completed`, signed with a
        key the agency never published: the engine refuses the answer (protocol error, the
        step fails, the request is undone), and the real agency made no record."""
        from tests.e2e.fake_agency import impostor_agency

        async with impostor_agency(keyring("tax-authority-impostor")) as fake:
            engine.agencies.env["NWD_AGENCY_TAX_AUTHORITY_URL"] = fake.url
            reference = await engine.submit("change-of-address", example("change-of-address"))
            result = await engine.result(reference)
        tax = next(s for s in result.steps if s.step_id == "update_tax_address")
        assert tax.status == "failed", tax
        assert "without a valid signature" in str(tax.items[0].reason)
        assert fake.answered >= 1
        assert await engine.agencies.records("tax-authority", reference=reference) == []


class TestCapturedAgencyCalls:
    async def test_a_captured_engine_call_replayed_with_changes_makes_no_second_effect(
        self, engine: Engine
    ) -> None:
        """The engine's real call to the tax authority, taken off the wire: sent again with
        another Idempotency-Key (the old attack: a second effect), to another operation's URL,
        or with another body, it is refused with 401; sent again as it is, the agency answers
        its first answer (idempotency). Either way the agency's records are unchanged."""
        reference = await engine.submit("change-of-address", example("change-of-address"))
        assert (await engine.result(reference)).status == "completed"
        tap = engine.agencies.wiretap
        assert tap is not None
        [call] = [c for c in tap.calls
                  if c.url.endswith("/agencies/tax-authority/operations/update-address")]
        records = await engine.agencies.records("tax-authority", reference=reference)
        assert len(records) == 1
        sent = {k: v for k, v in call.headers.items() if k not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=10) as http:
            for url, body, headers in (
                (call.url, call.body, {**sent, "idempotency-key": f"{reference}:again:-"}),
                (call.url.replace("update-address", "revert-address"), call.body, sent),
                (call.url, call.body.replace(b"TX12345678", b"TX99999999"), sent),
            ):
                response = await http.post(url, content=body, headers=headers)
                assert response.status_code == 401, response.text
                assert response.json()["code"] == "bad_signature"
            same = await http.post(call.url, content=call.body, headers=sent)
        assert same.status_code == 200, same.text
        assert same.headers.get("x-nwd-idempotent-replay") == "true"
        assert await engine.agencies.records("tax-authority", reference=reference) == records
