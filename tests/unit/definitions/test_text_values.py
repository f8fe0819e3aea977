"""Text values the engine refuses: NUL, lone surrogates, a pattern matched only in part, and
values longer than any bound — whether the definition declares a bound or not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from definitions.catalog import Catalog
from definitions.field_types import FIELD_TYPES, TextKind, text_problem
from definitions.models import DataSchema, FieldSpec
from definitions.schema import json_schema
from definitions.submission import SubmissionInvalid, validate_submission
from tests.unit.definitions.test_submission import VALID


@pytest.fixture
def schema(catalog: Catalog) -> DataSchema:
    """The change-of-address input schema."""
    return catalog.services["change-of-address"].input


def _errors(schema: DataSchema, data: Any) -> dict[tuple[str | int, ...], str]:
    with pytest.raises(SubmissionInvalid) as caught:
        validate_submission(schema, data)
    return {error.loc: error.message for error in caught.value.errors}


def _check(spec: FieldSpec, value: Any) -> Any:
    return FIELD_TYPES[spec.type].check(spec, value)


class TestNulAndSurrogates:
    @pytest.mark.parametrize("value", ["Ana\x00Souza", "\x00", "Ana \ud800", "\udfff"])
    def test_refused_in_a_field_with_its_path(self, schema: DataSchema, value: str) -> None:
        """A NUL or an unpaired surrogate in a text field is a 422-style error at its path."""
        errors = _errors(schema, {**VALID, "full_name": value})
        assert set(errors) == {("full_name",)}
        assert "NUL" in errors[("full_name",)] or "surrogate" in errors[("full_name",)]

    def test_refused_deep_inside_lists_objects_and_addresses(self, schema: DataSchema) -> None:
        """The rule holds at any depth: a list item's field, an address part."""
        data = copy.deepcopy(VALID)
        data["benefits"][0]["case_number"] = "J-22\x0031"
        data["new_address"]["city"] = "Leeds\ud83d"  # the first half of an emoji, alone
        errors = _errors(schema, data)
        assert set(errors) == {("benefits", 0, "case_number"), ("new_address", "city")}

    @pytest.mark.parametrize("type_", ["text", "email", "phone"])
    def test_every_text_type_refuses_them(self, type_: str) -> None:
        spec = FieldSpec.model_validate({"type": type_})
        for bad in ("a@example.org\x00", "+441234567\ud800"):
            with pytest.raises(ValueError, match=r"NUL|surrogate"):
                _check(spec, bad)

    def test_real_unicode_is_accepted(self, schema: DataSchema) -> None:
        """Non-ASCII text, including a surrogate *pair* written as one character, passes."""
        data = {**VALID, "full_name": "Zoë Ñúñez 名前 \U0001f600"}
        assert validate_submission(schema, data)["full_name"] == data["full_name"]

    def test_text_problem_names_each_problem(self) -> None:
        assert text_problem("plain") is None
        assert text_problem("é\U0001f600") is None
        assert "NUL" in (text_problem("a\x00") or "")
        assert "surrogate" in (text_problem("\ud800x") or "")


class TestPatternsMatchTheWholeValue:
    @pytest.mark.parametrize("tail", ["\n", "\r\n", " ", "\n\n"])
    def test_a_trailing_newline_does_not_pass_an_anchored_pattern(
        self, schema: DataSchema, tail: str
    ) -> None:
        """``^[A-Z0-9]{8,12}$`` refuses ``"TX12345678\\n"``: Python's ``$`` would have let it in."""
        errors = _errors(schema, {**VALID, "tax_id": f"TX12345678{tail}"})
        assert errors == {("tax_id",): "does not have the expected format (^[A-Z0-9]{8,12}$)"}

    def test_the_same_value_without_the_newline_passes(self, schema: DataSchema) -> None:
        assert validate_submission(schema, {**VALID, "tax_id": "TX12345678"})["tax_id"] == (
            "TX12345678")

    def test_an_unanchored_pattern_is_matched_whole_too(self) -> None:
        """``[0-9]{3}`` means exactly three digits, not "three digits somewhere"."""
        spec = FieldSpec.model_validate({"type": "text", "pattern": "[0-9]{3}"})
        assert _check(spec, "123") == "123"
        for bad in ("a123", "1234", "123\n"):
            with pytest.raises(ValueError, match="expected format"):
                _check(spec, bad)

    @pytest.mark.parametrize(("type_", "value"), [
        ("email", "ana@example.org\n"), ("phone", "+441234567890\n"), ("date", "2026-03-01\n"),
        ("date", "\uff12\uff10\uff12\uff16-03-01"),  # fullwidth digits: not ASCII ones
    ])
    def test_built_in_formats_are_matched_whole(self, type_: str, value: str) -> None:
        """Emails, phone numbers and dates: no final newline, no non-ASCII digits."""
        spec = FieldSpec.model_validate({"type": type_})
        with pytest.raises(ValueError, match="must be"):
            _check(spec, value)


class TestEveryTextHasALengthBound:
    @pytest.mark.parametrize(("type_", "longest", "make"), [
        ("text", 1000, lambda n: "x" * n),
        ("email", 254, lambda n: "a" * (n - len("@example.org")) + "@example.org"),
        ("phone", 21, lambda n: "+" + "1" * (n - 1)),
    ])
    def test_a_spec_without_max_length_has_its_type_default(
        self, type_: str, longest: int, make: Any
    ) -> None:
        """The longest value a default bound allows passes; one character more is refused."""
        spec = FieldSpec.model_validate({"type": type_})
        kind = FIELD_TYPES[spec.type]
        assert isinstance(kind, TextKind) and kind.max_length(spec) == longest
        assert _check(spec, make(longest)) == make(longest)
        with pytest.raises(ValueError, match=f"at most {longest} characters"):
            _check(spec, make(longest + 1))

    def test_megabytes_are_refused_in_a_field_that_declares_nothing(
        self, schema: DataSchema
    ) -> None:
        """``tax_id`` declares a pattern but no ``max_length``: a megabyte stops at the default
        bound before the pattern is even tried."""
        errors = _errors(schema, {**VALID, "tax_id": "A" * 1_000_000})
        assert set(errors) == {("tax_id",)}
        assert "at most 1000 characters" in errors[("tax_id",)]

    def test_a_declared_max_length_wins_over_the_default(self) -> None:
        longer = FieldSpec.model_validate({"type": "text", "max_length": 5000})
        assert _check(longer, "x" * 5000) == "x" * 5000
        shorter = FieldSpec.model_validate({"type": "email", "max_length": 20})
        with pytest.raises(ValueError, match="at most 20 characters"):
            _check(shorter, "someone@example.org.uk")

    def test_the_json_schema_names_the_default_bounds(self) -> None:
        """Editors show the defaults under ``max_length`` (schema.json is generated from it)."""
        description = json_schema()["$defs"]["FieldSpec"]["properties"]["max_length"][
            "description"]
        assert "text 1000" in description and "email 254" in description
        assert "phone 21" in description
