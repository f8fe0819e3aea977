"""CEL expressions: references found by walking the parse tree, evaluation, and errors."""

from __future__ import annotations

from typing import Any

import pytest

from definitions.expressions import (
    ExpressionError,
    MissingValue,
    evaluate,
    is_plain_path,
    parse,
    references,
)

DATA: dict[str, Any] = {
    "submission": {
        "full_name": "Ana Souza",
        "has_driving_licence": True,
        "benefits": [{"programme": "jobseeker", "case_number": "J123"}],
        "new_address": {"line1": "1 High St", "city": "Leeds"},
        "age": 41,
    },
    "steps": {"register_company": {"output": {"registration_number": "RC-1"}}},
    "request": {"reference": "NWD-1", "language": "es"},
    "item": {"programme": "jobseeker"},
}


class TestReferences:
    def test_dotted_paths_in_longest_form(self) -> None:
        """Each path read by an expression is returned whole."""
        found = references("steps.register_company.output.registration_number + submission.x")
        assert found == [
            ("steps", "register_company", "output", "registration_number"),
            ("submission", "x"),
        ]

    def test_macro_variables_are_local(self) -> None:
        """A name bound by map/filter/all/exists is not a reference; its target is."""
        found = references("submission.benefits.map(b, b.programme)")
        assert found == [("submission", "benefits")]

    def test_function_arguments_and_conditions(self) -> None:
        """References inside has(), size() and ?: are all found."""
        found = references(
            "has(submission.payday) ? submission.payday : submission.start"
        )
        assert ("submission", "payday") in found and ("submission", "start") in found

    def test_syntax_error(self) -> None:
        """A parse failure raises ExpressionError naming the expression."""
        with pytest.raises(ExpressionError) as caught:
            references("submission.full_name +")
        assert "CEL syntax error" in caught.value.reason
        assert caught.value.expression == "submission.full_name +"


class TestEvaluate:
    @pytest.mark.parametrize("path", [
        "submission.full_name", "submission.new_address", "submission.benefits",
        "submission.has_driving_licence", "submission.age", "item.programme",
        "steps.register_company.output.registration_number", "request.language",
    ])
    def test_fast_path_equals_cel(self, path: str) -> None:
        """A plain dotted path resolves to what the CEL interpreter gives for it."""
        assert is_plain_path(path)
        fast = evaluate(path, DATA)
        through_cel = evaluate(f"({path})", DATA)  # parentheses force the interpreter
        assert not is_plain_path(f"({path})")
        assert fast == through_cel

    def test_missing_value_both_ways(self) -> None:
        """A missing key is MissingValue on the fast path and through CEL alike."""
        with pytest.raises(MissingValue):
            evaluate("submission.licence_number", DATA)
        with pytest.raises(MissingValue):
            evaluate("(submission.licence_number)", DATA)

    def test_operators_and_macros(self) -> None:
        """Conditions and macros give plain Python values."""
        assert evaluate("size(submission.benefits) > 0 && submission.age >= 18", DATA) is True
        assert evaluate("submission.benefits.map(b, b.case_number)", DATA) == ["J123"]
        assert evaluate("has(submission.licence_number)", DATA) is False
        assert evaluate("request.language == 'es' ? 'hola' : 'hello'", DATA) == "hola"

    def test_type_mismatch(self) -> None:
        """Adding text to a number is an ExpressionError, not a MissingValue."""
        with pytest.raises(ExpressionError) as caught:
            evaluate("submission.full_name + 1", DATA)
        assert not isinstance(caught.value, MissingValue)
        assert "overload" in caught.value.reason

    def test_unknown_root(self) -> None:
        """A root the activation lacks is an error on the fast path."""
        with pytest.raises(ExpressionError):
            evaluate("citizen.full_name", DATA)

    def test_parse_is_cached(self) -> None:
        """The same text gives the same compiled tree object (no re-parse per event)."""
        assert parse("submission.age + 1") is parse("submission.age + 1")
