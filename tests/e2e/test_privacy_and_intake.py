"""Citizen data stays private, and the front door refuses bad input without side effects."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from definitions.models import FieldSpec
from tests.e2e.conftest import Engine, example, reference_for


def leaves(data: Any) -> set[str]:
    """Every leaf string of ``data`` long enough not to turn up in ciphertext by chance."""
    if isinstance(data, dict):
        return set().union(*(leaves(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(*(leaves(value) for value in data))
    return {data} if isinstance(data, str) and len(data) >= 6 else set()


def personal_values(fields: Mapping[str, FieldSpec], data: Any) -> set[str]:
    """The submitted values of every field the service marks ``personal``, at any depth."""
    found: set[str] = set()
    if not isinstance(data, dict):
        return found
    for name, spec in fields.items():
        value = data.get(name)
        if spec.personal:
            found |= leaves(value)
        elif spec.fields is not None:
            found |= personal_values(spec.fields, value)
        elif spec.items is not None and spec.items.fields is not None:
            for item in value if isinstance(value, list) else []:
                found |= personal_values(spec.items.fields, item)
    return found


class TestPrivacy:
    async def test_no_personal_data_in_logs_or_unencrypted_payloads(
        self, engine: Engine, temporal_env: WorkflowEnvironment, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Logs of a full run and the raw history on the server hold no personal value."""
        data = example("change-of-address")
        service = engine.submissions.catalog.service("change-of-address")
        personal = personal_values(service.input.fields, data)
        # found at every depth: top level, inside an address, inside a list item
        assert {"Alex Example", "1984-03-12", "SP1 4QX", "TX12345678", "HS-7781",
                "alex@example.org"} <= personal
        reference = await engine.submit("change-of-address", data)
        result = await engine.result(reference)
        assert result.status == "completed"

        out, err = capfd.readouterr()
        logs = out + err
        assert reference in logs  # the logs do speak about the request ...
        leaked = {value for value in personal if value in logs}
        assert not leaked  # ... but never about the citizen

        raw_client = temporal_env.client  # no codec: what the server (and its operators) hold
        history = await raw_client.get_workflow_handle(reference).fetch_history()
        raw = b"".join(event.SerializeToString() for event in history.events)
        assert b"change-of-address" in raw  # search attributes are readable ...
        leaked_bytes = {value for value in personal if value.encode() in raw}
        assert not leaked_bytes  # ... payloads are sealed
        described = await raw_client.get_workflow_handle(reference).describe()
        attributes = json.dumps({k.name: str(v) for k, v in
                                 ((p.key, p.value) for p in described.typed_search_attributes)})
        assert not {value for value in personal if value in attributes}


class TestIntakeHttp:
    async def test_valid_submission_is_accepted_with_reference(self, engine: Engine) -> None:
        """POST /requests answers 202 with the reference; the same key again answers 200."""
        key = str(uuid.uuid4())
        body = {"service": "register-a-business", "submission": example("register-a-business")}
        first = await engine.intake.post("/requests", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 202, first.text
        reference = first.json()["reference"]
        engine.started.append(reference)
        assert reference == reference_for("register-a-business", key)
        again = await engine.intake.post("/requests", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 200 and again.json()["reference"] == reference
        await engine.result(reference)
        status = await engine.intake.get(f"/requests/{reference}")
        assert status.status_code == 200
        assert status.json()["record"]["status"] == "completed"

    async def test_invalid_submission_gets_422_with_field_paths_and_changes_nothing(
        self, engine: Engine
    ) -> None:
        """Missing and mistyped fields come back with their paths; nothing starts or is stored."""
        data = example("change-of-address")
        del data["tax_id"]
        data["new_address"]["postcode"] = 12
        key = str(uuid.uuid4())
        response = await engine.intake.post(
            "/requests", json={"service": "change-of-address", "submission": data},
            headers={"Idempotency-Key": key})
        assert response.status_code == 422
        locs = {tuple(e["loc"]) for e in response.json()["errors"]}
        assert ("submission", "tax_id") in locs
        assert ("submission", "new_address", "postcode") in locs
        reference = reference_for("change-of-address", key)
        missing = await engine.intake.get(f"/requests/{reference}")
        assert missing.status_code == 404
        assert await engine.pool.fetchval("SELECT count(*) FROM requests") == 0

    async def test_unknown_service_malformed_and_oversized_bodies(self, engine: Engine) -> None:
        """404 names known services; malformed JSON is 400; an oversized body is 413."""
        unknown = await engine.intake.post("/requests", json={"service": "nope", "submission": {}})
        assert unknown.status_code == 404
        assert "change-of-address" in unknown.json()["message"]
        malformed = await engine.intake.post("/requests", content=b"{not json",
                                             headers={"Content-Type": "application/json"})
        assert malformed.status_code == 400
        huge = await engine.intake.post("/requests", content=b"{" + b" " * 300_000 + b"}",
                                        headers={"Content-Type": "application/json"})
        assert huge.status_code == 413
        no_service = await engine.intake.post("/requests", json={"submission": {}})
        assert no_service.status_code == 422
        assert no_service.json()["errors"][0]["loc"] == ["service"]
        assert await engine.pool.fetchval("SELECT count(*) FROM requests") == 0
