"""Bad input at the live front door: a clear 4xx in the one error shape, and nothing changes.

NUL characters and lone surrogates are refused wherever they are (a submission's field, an
answer, a callback's output, a key) with the path to blame; a pattern matches whole values; a
field without a declared bound still has one; what is not strict JSON is 400; FastAPI's and
the router's own refusals have the same shape as the intake's.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from intake.access import AccessKeys
from readmodel.access import AccessStore
from runtime import callback_tokens
from runtime.messages import request_reference
from tests.integration.intake_process import LiveIntake, running_intake
from tests.keys import agency_signed, keyring, serving_jwks

EXAMPLE = json.loads(
    (Path(__file__).resolve().parents[2] / "examples" / "change-of-address.json").read_text())
ELECTORAL = keyring("electoral-registration")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live(temporal_env: WorkflowEnvironment, postgres_server: str,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveIntake]:
    async with serving_jwks(ELECTORAL) as jwks_url, running_intake(
            temporal_env, postgres_server, tmp_path_factory, codec_token="bad-input",
            agency_env={"NWD_AGENCY_ELECTORAL_REGISTRATION_JWKS_URL": jwks_url}) as intake:
        yield intake


@pytest_asyncio.fixture(loop_scope="session")
async def http(live: LiveIntake) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
        yield client


async def nothing_stored(live: LiveIntake) -> None:
    """No request row and no event: every refusal in this module changes nothing."""
    assert live.settings.database_url is not None
    conn = await asyncpg.connect(str(live.settings.database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM requests") == 0
        assert await conn.fetchval("SELECT count(*) FROM request_events") == 0
    finally:
        await conn.close()


def raw(text: str) -> dict[str, Any]:
    """A request whose JSON is sent exactly as written (escapes such as \\ud800 kept)."""
    return {"content": text.encode(), "headers": {"Content-Type": "application/json"}}


def submission_with(field: str, json_value: str) -> str:
    """The example submission with one field replaced by raw JSON text."""
    data = {**EXAMPLE, field: "@@"}
    return json.dumps({"service": "change-of-address", "submission": data}).replace(
        '"@@"', json_value)


def errors_of(response: httpx.Response) -> dict[tuple[Any, ...], str]:
    return {tuple(e["loc"]): e["msg"] for e in response.json()["errors"]}


class TestTextThatCannotBeStored:
    @pytest.mark.parametrize("value", [r'"Alex\u0000Example"', r'"Alex \ud800"', r'"\udfff"'])
    async def test_a_submission_field_is_refused_with_its_path(
        self, http: httpx.AsyncClient, live: LiveIntake, value: str
    ) -> None:
        response = await http.post("/requests", **raw(submission_with("full_name", value)))
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_submission"
        assert list(errors_of(response)) == [("submission", "full_name")]
        await nothing_stored(live)

    async def test_a_lone_surrogate_in_a_key_blames_the_object_holding_it(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        """The key itself cannot be shown (it is not writable as UTF-8): its object is."""
        body = json.dumps({"service": "change-of-address",
                           "submission": {**EXAMPLE, "@@": 1}}).replace('"@@"', r'"\ud800"')
        response = await http.post("/requests", **raw(body))
        assert response.status_code == 422, response.text
        errors = errors_of(response)
        assert list(errors) == [("submission",)] and "key" in errors[("submission",)]
        await nothing_stored(live)

    async def test_an_answer_is_refused_before_it_reaches_the_request(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        """The access check comes first (a stranger's body is not even read); the holder of a
        valid code then gets the body's 422, before anything is sent to the request (none
        runs for this reference: a 404 would come from Temporal)."""
        key = live.settings.reference_secret()
        reference = request_reference("change-of-address", "no-such-request", key)
        code = "a-code-granted-for-this-test"
        pool = await asyncpg.connect(str(live.settings.database_url))
        try:
            await AccessStore(pool).grant(reference, owner_hash=None,  # type: ignore[arg-type]
                                          code_hash=AccessKeys(key).code(reference, code))
        finally:
            await pool.close()
        body = r'{"step_id": "update_tax_address", "answers": {"proof_of_address": "a\u0000b"}}'
        stranger = await http.post(f"/requests/{reference}/information", **raw(body))
        assert stranger.status_code == 404, stranger.text
        response = await http.post(f"/requests/{reference}/information",
                                   content=body.encode(), headers={
                                       "Content-Type": "application/json",
                                       "X-Access-Code": code})
        assert response.status_code == 422, response.text
        assert list(errors_of(response)) == [("answers", "proof_of_address")]

    async def test_a_signed_callback_is_refused_with_its_path(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        token = callback_tokens.issue(
            callback_tokens.callback_key(live.settings.payload_key()),
            callback_tokens.CallbackTarget(request_reference("change-of-address", "x", b"k"),
                                           "update_voter_registration", None,
                                           "electoral-registration"))
        body = (br'{"status": "completed", "agency_reference": "ER-1", '
                br'"output": {"note": "\ud83d"}}')
        response = await http.post(f"/callbacks/{token}", content=body, headers=agency_signed(
            ELECTORAL, f"{live.url}/callbacks/{token}", body))
        assert response.status_code == 422, response.text
        assert list(errors_of(response)) == [("output", "note")]


class TestFieldValues:
    async def test_a_final_newline_does_not_pass_an_anchored_pattern(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        """``^[A-Z0-9]{8,12}$`` refuses ``"TX12345678\\n"`` (Python's ``$`` would not)."""
        response = await http.post("/requests", **raw(
            submission_with("tax_id", r'"TX12345678\n"')))
        assert response.status_code == 422, response.text
        assert "expected format" in errors_of(response)[("submission", "tax_id")]
        await nothing_stored(live)

    async def test_a_field_without_max_length_still_has_a_bound(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        response = await http.post("/requests", json={
            "service": "change-of-address", "submission": {**EXAMPLE, "tax_id": "A" * 2_000}})
        assert response.status_code == 422, response.text
        assert "at most 1000 characters" in errors_of(response)[("submission", "tax_id")]
        await nothing_stored(live)


class TestNotStrictJson:
    @pytest.mark.parametrize("body", [
        '{"service": "change-of-address", "submission": {"moved_on": NaN}}',
        '{"service": "a", "service": "b", "submission": {}}',
        "\xff\xfe{",
    ], ids=["nan", "duplicate-key", "not-utf8"])
    async def test_is_400_malformed_json(self, http: httpx.AsyncClient, live: LiveIntake,
                                         body: str) -> None:
        response = await http.post("/requests", content=body.encode("latin-1"),
                                   headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "malformed_json"
        await nothing_stored(live)


class TestOneErrorShape:
    async def test_a_bad_idempotency_key_is_the_intakes_422(
        self, http: httpx.AsyncClient, live: LiveIntake
    ) -> None:
        """FastAPI checks the header; the answer still has the intake's shape and code."""
        response = await http.post("/requests", json={"service": "change-of-address",
                                                      "submission": EXAMPLE},
                                   headers={"Idempotency-Key": "k" * 256})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "invalid_submission" and set(body) == {"code", "message",
                                                                     "errors"}
        assert body["errors"][0]["loc"] == ["header", "Idempotency-Key"]
        await nothing_stored(live)

    async def test_unknown_paths_and_methods(self, http: httpx.AsyncClient) -> None:
        missing = await http.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.json()["code"] == "not_found" and "message" in missing.json()
        wrong = await http.delete("/requests")
        assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
        assert wrong.headers["allow"] == "POST"

    async def test_a_strict_envelope(self, http: httpx.AsyncClient, live: LiveIntake) -> None:
        """Unknown keys, a non-object submission and an unknown language are refused."""
        for envelope, loc in [
            ({"service": "change-of-address", "submission": EXAMPLE, "extra": 1}, ["extra"]),
            ({"service": "change-of-address", "submission": [1]}, ["submission"]),
            ({"service": "change-of-address", "submission": EXAMPLE, "language": "fr"},
             ["language"]),
            ({"service": "change-of-address", "submission": EXAMPLE, "language": "zh_Hans"},
             ["language"]),
            ({"submission": EXAMPLE}, ["service"]),
        ]:
            response = await http.post("/requests", json=envelope)
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["loc"] == loc
        await nothing_stored(live)
