"""The contract's shared pieces: the idempotency key format and the request envelopes."""

from __future__ import annotations

import pytest

from agency_kit.contract import (
    CancelRequest,
    InformationRequest,
    OperationRequest,
    idempotency_key,
)


class TestIdempotencyKey:
    @pytest.mark.parametrize(
        ("args", "key"),
        [
            (("NWD-1", "licence", None), "NWD-1:licence:-"),
            (("NWD-1", "licence", None, ""), "NWD-1:licence:-"),
            (("NWD-1", "licence", "car"), "NWD-1:licence:car"),
            (("NWD-1", "licence", "car", ""), "NWD-1:licence:car"),
            (("NWD-1", "licence", None, "undo"), "NWD-1:licence:-:undo"),
            (("NWD-1", "licence", "car", "undo"), "NWD-1:licence:car:undo"),
            (("NWD-1", "licence", None, "cancel"), "NWD-1:licence:-:cancel"),
            (("NWD-1", "licence", None, "info:3"), "NWD-1:licence:-:info:3"),
            (("NWD-1", "licence", "car", "info:3"), "NWD-1:licence:car:info:3"),
            (("NWD-1", "licence", None, "callback"), "NWD-1:licence:-:callback"),
            (("NWD-1", "licence", "", "undo"), "NWD-1:licence::undo"),
        ],
    )
    def test_format_is_the_one_agencies_deduplicate_on(
        self, args: tuple[str, str, str | None, str], key: str
    ) -> None:
        """Keys are byte-identical to those the engine has always sent (one suffix, or none)."""
        assert idempotency_key(*args) == key

    def test_suffix_in_parts_equals_suffix_in_one(self) -> None:
        """``"info", "3"`` and ``"info:3"`` are the same key: both spellings are safe."""
        assert idempotency_key("R", "s", None, "info", "3") == idempotency_key(
            "R", "s", None, "info:3"
        )


class TestEnvelopes:
    def test_operation_body_keys_in_the_engine_order(self) -> None:
        """An operation body serialises every key, nulls included, in the order sent so far."""
        body = OperationRequest(reference="R", step="s", input={"a": 1}).model_dump_json()
        assert body == (
            '{"reference":"R","step":"s","item":null,"language":"en",'
            '"input":{"a":1},"callback_url":null}'
        )

    def test_information_and_cancel_carry_the_language(self) -> None:
        """The language the engine has always sent with answers and cancels is a contract field."""
        answer = InformationRequest(
            reference="R", step="s", agency_reference="A-1", answers={"x": 1}, language="es"
        )
        cancel = CancelRequest(reference="R", step="s", agency_reference="A-1", language="es")
        assert list(answer.model_dump()) == [
            "reference", "step", "item", "language", "agency_reference", "answers"
        ]
        assert list(cancel.model_dump()) == [
            "reference", "step", "item", "language", "agency_reference"
        ]
        assert answer.language == cancel.language == "es"

    def test_unknown_envelope_keys_are_ignored(self) -> None:
        """An agency reading a newer engine's envelope ignores the keys it does not know."""
        call = OperationRequest.model_validate(
            {"reference": "R", "step": "s", "input": {}, "priority": "high"}
        )
        assert "priority" not in call.model_dump()
