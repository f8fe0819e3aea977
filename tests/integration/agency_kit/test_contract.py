"""The reference agencies speak the contract: signatures, idempotency, validation, errors."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import structlog

from agency_kit.keys import StaticKeys
from agency_kit.signing import SignatureError, Signer, Verifier
from tests.integration.agency_kit.conftest import (
    DMV_INPUT,
    Agencies,
    StartAgencies,
    request_body,
)
from tests.keys import ENGINE, keyring


class TestSignature:
    async def test_good_signature_completes(self, agencies: Agencies) -> None:
        """A signed call completes with the agency reference and the generated output."""
        response = await agencies.call("dmv", "update-address", request_body())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "completed"
        assert body["agency_reference"] == "DMV-000001"
        output = body["output"]
        assert output["reference"] == "DMV-000001"
        assert output["licence_number"] == "ABC12345"  # echoed from the input
        assert output["case_number"] == "DMV-CN-000001"
        assert output["new_licence_posted"] is True
        assert output["channel"] == "post"
        assert output["copies"] == 1
        assert len(output["posted_on"]) == 10

    async def test_bad_missing_or_stale_signatures_are_refused(self, agencies: Agencies) -> None:
        """Another key, no signature, an expired one: 401 and nothing written."""
        wrong = await agencies.call("dmv", "update-address", request_body(),
                                    signer=keyring("impostor").signer())
        missing = await agencies.call("dmv", "update-address", request_body(), signed=False)
        stale = await agencies.call("dmv", "update-address", request_body(), signer=Signer(
            ENGINE.signing[1], ENGINE.signing[0], expires_s=60, clock=lambda: time.time() - 120))
        for response, fragment in (
            (wrong, "no key"),
            (missing, "Signature header is missing"),
            (stale, "expired"),
        ):
            assert response.status_code == 401
            body = response.json()
            assert body["status"] == "rejected"
            assert body["code"] == "bad_signature"
            assert fragment in body["reason"]
        assert await agencies.count("dmv", "records") == 0
        assert await agencies.count("dmv", "idempotency") == 0

    async def test_a_captured_call_replayed_elsewhere_or_altered_is_refused(
        self, agencies: Agencies
    ) -> None:
        """A signed call replayed with another Idempotency-Key (instead of the signed one, or
        as a second copy before it), to another operation's URL, or with another body: 401
        each, and no record, no key, no second effect."""
        body = request_body()
        raw = json.dumps(body).encode()
        url = f"{agencies.base('dmv')}/operations/update-address"
        signed = ENGINE.signer().request_headers("POST", url, raw, {
            "Content-Type": "application/json", "Idempotency-Key": "R:dmv:-"})
        other_key = {**signed, "Idempotency-Key": "R:dmv:-:again"}
        other_url = f"{agencies.base('dmv')}/operations/withdraw-registration"
        # a second key sent before the signed one: the application would read the first copy
        key_put_first = [("Idempotency-Key", "R:dmv:-:again"), *signed.items()]
        for target, content, headers in (
            (url, raw, list(other_key.items())),
            (other_url, raw, list(signed.items())),
            (url, raw.replace(b"Ada", b"Eve"), list(signed.items())),
            (url, raw, key_put_first),
        ):
            response = await agencies.http.post(target, content=content, headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["code"] == "bad_signature"
        assert await agencies.count("dmv", "records") == 0
        assert await agencies.count("dmv", "idempotency") == 0
        # the original, as signed, is still good: the refusals changed nothing
        response = await agencies.http.post(url, content=raw, headers=signed)
        assert response.status_code == 200, response.text
        assert await agencies.count("dmv", "records") == 1

    async def test_malformed_or_non_ascii_signature_headers_are_401_never_500(
        self, agencies: Agencies
    ) -> None:
        """Garbage, non-ASCII bytes, a duplicated label or an empty value in the signature
        headers: 401 ``bad_signature`` each, nothing written."""
        raw = json.dumps(request_body()).encode()
        url = f"{agencies.base('dmv')}/operations/update-address"
        good = ENGINE.signer().request_headers("POST", url, raw, {
            "Content-Type": "application/json", "Idempotency-Key": "R:dmv:-"})
        cases: list[dict[str, str | bytes]] = [
            {"Signature": "(((not a dictionary"},
            {"Signature-Input": 'nwd="@method"'},
            {"Signature": "nwd=:AAAA:, nwd=:BBBB:"},
            {"Signature": ""},
            {"Signature-Input": 'nwd=("@method");created=\u00e9'.encode("latin-1")},
            {"Signature": "nwd=:\xff\xfe:".encode("latin-1")},
            {"Content-Digest": "sha-256=:\xe9:".encode("latin-1")},
        ]
        for change in cases:
            headers: dict[str, str | bytes] = {**good, **change}
            response = await agencies.http.post(url, content=raw, headers=headers)
            assert response.status_code == 401, (change, response.text)
            assert response.json()["code"] == "bad_signature"
        assert await agencies.count("dmv", "records") == 0

    async def test_answers_are_signed_by_the_agency_for_the_request(
        self, agencies: Agencies
    ) -> None:
        """The answer carries the agency's signature, bound to the request it answers."""
        raw = json.dumps(request_body()).encode()
        url = f"{agencies.base('dmv')}/operations/update-address"
        sent = ENGINE.signer().request_headers("POST", url, raw, {
            "Content-Type": "application/json", "Idempotency-Key": "R:dmv:-"})
        response = await agencies.http.post(url, content=raw, headers=sent)
        assert response.status_code == 200
        dmv = Verifier(StaticKeys(agencies.credentials.keyrings["dmv"].public()).get)
        verified = dmv.verify_answer(200, response.content, dict(response.headers),
                                     request_method="POST", request_url=url,
                                     request_headers=sent)
        assert verified.key_id == agencies.credentials.keyrings["dmv"].signing[0]
        with pytest.raises(SignatureError):  # not an answer to another request
            dmv.verify_answer(200, response.content, dict(response.headers),
                              request_method="POST", request_url=url,
                              request_headers={**sent, "Idempotency-Key": "R:other:-"})

    async def test_agency_without_configured_keys_refuses_everything(
        self, agencies: Agencies
    ) -> None:
        """An agency with keys in the registry but no private key given answers 401."""
        body = request_body(input={})
        response = await agencies.call("locked", "anything", body)
        assert response.status_code == 401
        assert "not configured" in response.json()["reason"]

    async def test_agency_without_keys_takes_unsigned_calls(
        self, agencies: Agencies
    ) -> None:
        """An agency that has no keys in the registry does not check signatures."""
        body = request_body(step="company", input={"business_name": "Acme"})
        response = await agencies.call("companies", "register-company", body, signed=False)
        assert response.status_code == 200, response.text
        assert response.json()["output"]["registration_number"] == "COMPANIES-RN-000001"


class TestIdempotency:
    async def test_repeat_returns_first_response_and_writes_once(self, agencies: Agencies) -> None:
        """The same key again gives the same status and body, and no second row."""
        body = request_body()
        first = await agencies.call("dmv", "update-address", body)
        second = await agencies.call("dmv", "update-address", body)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        assert second.headers["X-NWD-Idempotent-Replay"] == "true"
        assert await agencies.count("dmv", "records") == 1
        assert await agencies.count("dmv", "idempotency") == 1

    async def test_key_order_and_spacing_do_not_matter(self, agencies: Agencies) -> None:
        """The body is compared as JSON, not as bytes."""
        body = request_body()
        first = await agencies.call("dmv", "update-address", body)
        reordered = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
        key = f"{body['reference']}:dmv:-"
        second = await agencies.call("dmv", "update-address", reordered, key=key)
        assert second.json() == first.json()

    async def test_concurrent_duplicates_write_once(self, agencies: Agencies) -> None:
        """Ten identical calls at once: one record, ten identical answers."""
        body = request_body()
        responses = await asyncio.gather(
            *(agencies.call("dmv", "update-address", body) for _ in range(10))
        )
        assert {r.status_code for r in responses} == {200}
        assert len({r.text for r in responses}) == 1
        assert await agencies.count("dmv", "records") == 1

    async def test_same_key_other_body_is_refused(self, agencies: Agencies) -> None:
        """A key reused with a different body is a 422, and nothing new is written."""
        body = request_body()
        await agencies.call("dmv", "update-address", body)
        other = {**body, "input": {**DMV_INPUT, "full_name": "Grace Hopper"}}
        response = await agencies.call("dmv", "update-address", other)
        assert response.status_code == 422
        assert response.json()["code"] == "idempotency_key_reused"
        assert await agencies.count("dmv", "records") == 1

    async def test_different_items_are_different_effects(self, agencies: Agencies) -> None:
        """Keys differing by item make separate records."""
        ref = "REQ-items"
        for item in ("a", "b"):
            response = await agencies.call("dmv", "update-address", request_body(ref, item=item))
            assert response.status_code == 200
        assert await agencies.count("dmv", "records") == 2

    async def test_missing_key_is_a_400(self, agencies: Agencies) -> None:
        """An operation call without Idempotency-Key is refused."""
        response = await agencies.call("dmv", "update-address", request_body(), key="")
        assert response.status_code == 400
        assert response.json()["code"] == "missing_idempotency_key"


class TestBadRequests:
    async def test_invalid_input_names_the_fields_and_writes_nothing(
        self, agencies: Agencies
    ) -> None:
        """Wrong types, a missing field and an unknown field: 422 with paths."""
        bad = {
            "licence_number": "abc",
            "new_address": {"line1": "1 High Street", "city": "X", "country": "GB"},
            "services": ["licence", "boats"],
            "shoe_size": 42,
        }
        response = await agencies.call("dmv", "update-address", request_body(input=bad))
        assert response.status_code == 422
        body = response.json()
        assert body["status"] == "rejected"
        assert body["code"] == "invalid_input"
        paths = {error["path"] for error in body["errors"]}
        assert paths == {
            "input.licence_number",
            "input.full_name",
            "input.new_address.postcode",
            "input.services[1]",
            "input.shoe_size",
        }
        assert await agencies.count("dmv", "records") == 0
        assert await agencies.count("dmv", "idempotency") == 0

    async def test_envelope_errors_are_422(self, agencies: Agencies) -> None:
        """A body without reference or step does not follow the contract."""
        response = await agencies.call("dmv", "update-address", {"input": DMV_INPUT}, key="k")
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"
        assert {e["path"] for e in response.json()["errors"]} == {"reference", "step"}

    async def test_malformed_json_is_400(self, agencies: Agencies) -> None:
        """Bytes that are not JSON (but correctly signed) are a 400."""
        response = await agencies.call("dmv", "update-address", b"{not json", key="k")
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_json"

    async def test_oversized_body_is_413(self, agencies: Agencies) -> None:
        """A body above 1 MiB is refused before anything else."""
        body = request_body(input={**DMV_INPUT, "full_name": "x" * (1024 * 1024)})
        response = await agencies.call("dmv", "update-address", body)
        assert response.status_code == 413
        assert response.json()["code"] == "too_large"
        assert await agencies.count("dmv", "records") == 0

    async def test_unknown_agency_and_operation_are_404(self, agencies: Agencies) -> None:
        """Unknown names are 404 with the known ones listed."""
        agency = await agencies.call("nobody", "update-address", request_body())
        operation = await agencies.call("dmv", "fly", request_body())
        assert agency.status_code == operation.status_code == 404
        assert agency.json()["code"] == "unknown_agency"
        assert operation.json()["code"] == "unknown_operation"
        assert "update-address" in operation.json()["reason"]

    async def test_health(self, agencies: Agencies) -> None:
        """Every hosted agency answers its health check; unknown ones are 404."""
        ok = await agencies.http.get(f"{agencies.base('dmv')}/health")
        unknown = await agencies.http.get(f"{agencies.base('nobody')}/health")
        assert ok.status_code == 200
        assert unknown.status_code == 404
        assert (await agencies.http.get(f"{agencies.url}/health")).status_code == 200


class TestLogging:
    async def test_logs_name_fields_never_values(self, agencies: Agencies) -> None:
        """Logs carry reference, agency, operation and field names, not personal values."""
        body = request_body(input={**DMV_INPUT, "full_name": "Zebedee Quux"})
        with structlog.testing.capture_logs(
            processors=[structlog.contextvars.merge_contextvars]
        ) as logs:
            await agencies.call("dmv", "update-address", body)
            await agencies.call("dmv", "update-address", request_body(input={"full_name": "Q"}))
        calls = [e for e in logs if e["event"] == "agency.call"]
        assert calls[0]["agency"] == "dmv"
        assert calls[0]["operation"] == "update-address"
        assert calls[0]["reference"] == body["reference"]
        assert calls[0]["input_fields"] == ["full_name", "licence_number", "new_address"]
        dumped = repr(logs)
        assert "Zebedee" not in dumped
        assert "ABC12345" not in dumped
        assert "High Street" not in dumped


class TestStartup:
    async def test_schemas_are_created_idempotently(self, start_agencies: StartAgencies) -> None:
        """Two apps on one database both start (the DDL is idempotent) and share the rows."""
        first = await start_agencies()
        second = await start_agencies()
        await first.call("dmv", "update-address", request_body())
        assert len(await second.records("dmv")) == 1
