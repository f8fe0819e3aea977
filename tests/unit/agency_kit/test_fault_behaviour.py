"""The reference agencies' fault options: latency on the first calls only, malformed answers."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourBook, MalformedSpec

TRUE = json.dumps({"status": "completed", "agency_reference": "TAX-1", "output": {}}).encode()


def book(behaviour: dict[str, object]) -> BehaviourBook:
    return BehaviourBook({"tax": AgencyBehaviour.model_validate(behaviour)})


class TestLatencyCalls:
    def test_latency_on_the_first_calls_only_and_counted_per_operation(self) -> None:
        b = book({"latency_ms": 1500, "latency_calls": 2})
        effective = b.effective("tax", "update")
        assert [b.latency_s("tax", "update", effective) for _ in range(3)] == [1.5, 1.5, 0.0]
        assert b.latency_s("tax", "other", b.effective("tax", "other")) == 1.5

    def test_without_latency_calls_every_call_is_slow(self) -> None:
        b = book({"latency_ms": 200})
        assert {b.latency_s("tax", "u", b.effective("tax", "u")) for _ in range(5)} == {0.2}

    def test_setting_the_behaviour_again_restarts_the_count(self) -> None:
        b = book({"latency_ms": 100, "latency_calls": 1})
        b.latency_s("tax", "u", b.effective("tax", "u"))
        b.set("tax", AgencyBehaviour.model_validate({"latency_ms": 100, "latency_calls": 1}))
        assert b.latency_s("tax", "u", b.effective("tax", "u")) == 0.1


class TestMalformed:
    @pytest.mark.parametrize(("kind", "media"), [
        ("not_json", "text/plain"), ("html", "text/html"),
        ("not_an_object", "application/json"), ("missing_fields", "application/json"),
        ("truncated_json", "application/json"), ("as_is", "text/plain"),
    ])
    def test_each_body_breaks_the_contract_as_named(self, kind: str, media: str) -> None:
        body, content_type = MalformedSpec.model_validate({"body": kind}).render(TRUE)
        assert content_type == media
        if kind == "as_is":
            assert body == TRUE
            return
        try:
            parsed = json.loads(body)
        except ValueError:
            assert kind in ("not_json", "html", "truncated_json")
            return
        assert not (isinstance(parsed, dict) and "agency_reference" in parsed), kind

    def test_first_calls_only_then_the_true_answer(self) -> None:
        b = book({"malformed": {"body": "html", "calls": 1}})
        effective = b.effective("tax", "u")
        assert b.garble("tax", "u", effective, TRUE) is not None
        assert b.garble("tax", "u", effective, TRUE) is None

    def test_content_type_given(self) -> None:
        spec = MalformedSpec.model_validate({"body": "as_is", "content_type": "text/csv"})
        assert spec.render(TRUE) == (TRUE, "text/csv")

    def test_no_malformed_no_garbling(self) -> None:
        b = book({})
        assert b.garble("tax", "u", b.effective("tax", "u"), TRUE) is None

    def test_an_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            AgencyBehaviour.model_validate({"malformed": {"body": "gibberish"}})
