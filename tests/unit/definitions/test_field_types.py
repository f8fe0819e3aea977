"""The field-type registry: closed, complete, and every type answers every question.

The registry is closed by design (definitions.field_types says why), so the proof that a type
is one object is that each registered type answers each question — rules, JSON Schema, check,
sample and CEL, generated output, personal data — consistently, and that the names the model
accepts, the registry, the JSON Schema and the docs' table are the same set.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, get_args

import jsonschema
import pytest
from pydantic import ValidationError

from agency_kit.reference.outputs import generate_output
from agency_kit.validation import validate_input
from definitions.expressions import evaluate
from definitions.field_types import (
    FIELD_TYPES,
    RULE_GROUPS,
    FieldKind,
    FieldType,
    Rule,
    Seed,
    fits,
    generate,
    rule_problem,
    sample_for,
)
from definitions.models import Agency, DataSchema, FieldSpec, ServiceDefinition
from definitions.schema import json_schema
from definitions.submission import REDACTED, SubmissionInvalid, redact, validate_submission
from definitions.validation import validate_service

DOCS = Path(__file__).resolve().parents[3] / "docs" / "definitions.md"
COMMON_KEYS = {"type", "required", "personal", "label", "hint", "description"}
"""Keys every field spec has whatever its type; all the others are rules."""

RULE_EXAMPLES: dict[str, Any] = {
    "values": ("a", "b"), "options": {"a": {"en": "A"}}, "items": {"type": "text"},
    "min_items": 1, "max_items": 3,
    "fields": {"x": {"type": "integer"}}, "min_length": 1, "max_length": 50,
    "pattern": "^.", "minimum": 0, "maximum": 1000000,
}
"""A sound value of every rule (checked below to name every rule exactly once)."""

TYPES = list(FIELD_TYPES)


def _minimal(name: str, **rules: Any) -> dict[str, Any]:
    """The smallest spec of a type: its name and every rule it needs."""
    return {"type": name, **{rule: RULE_EXAMPLES[rule] for rule in FIELD_TYPES[name].needs},
            **rules}


def _spec(name: str, **rules: Any) -> FieldSpec:
    return FieldSpec.model_validate(_minimal(name, **rules))


def _seed(number: int = 42) -> Seed:
    return Seed(field="x", agency_id="tax-office", agency_prefix="TAX-OFFICE", number=number,
                day=date(2026, 1, 2))


class TestTheRegistryIsClosedAndComplete:
    def test_field_type_literal_equals_the_registry(self) -> None:
        """FieldType names exactly the registered types, in the registry's order."""
        assert get_args(FieldType) == tuple(FIELD_TYPES)
        assert all(kind.name == name for name, kind in FIELD_TYPES.items())

    def test_the_model_accepts_exactly_the_registered_names(self) -> None:
        """FieldSpec.type takes every registered name and refuses any other, listing them."""
        for name in TYPES:
            assert _spec(name).type == name
        with pytest.raises(ValidationError, match="'text', 'integer'"):
            FieldSpec.model_validate({"type": "postcode"})

    def test_json_schema_lists_the_registered_names(self) -> None:
        """The editors' schema offers the same names for `type`."""
        spec = json_schema()["$defs"]["FieldSpec"]
        assert spec["properties"]["type"]["enum"] == TYPES

    def test_every_rule_is_in_exactly_one_group(self) -> None:
        """The rule groups cover every non-common key of FieldSpec, each once."""
        grouped = [rule for group in RULE_GROUPS for rule in group.rules]
        assert len(grouped) == len(set(grouped))
        assert set(grouped) == set(get_args(Rule)) == set(FieldSpec.model_fields) - COMMON_KEYS
        assert set(RULE_EXAMPLES) == set(grouped)

    def test_needed_rules_are_accepted_rules(self) -> None:
        """A type cannot need a rule it refuses."""
        for kind in FIELD_TYPES.values():
            assert set(kind.needs) <= kind.rules, kind.name

    def test_the_docs_table_lists_every_type(self) -> None:
        """docs/definitions.md's field-type table has one row per registered type."""
        text = DOCS.read_text()
        table = text[text.index("| type | value in a submission"):]
        table = table[: table.index("\n\n")]
        names = re.findall(r"^\| `([a-z]+)` \|", table, flags=re.MULTILINE)
        assert sorted(names) == sorted(TYPES)


@pytest.mark.parametrize("name", TYPES)
class TestEveryTypeAnswersEveryQuestion:
    def test_rules_it_accepts_and_refuses(self, name: str) -> None:
        """Accepted rules pass; every other rule is refused with its group's message."""
        kind = FIELD_TYPES[name]
        for group in RULE_GROUPS:
            for rule in group.rules:
                data = {**_minimal(name), rule: RULE_EXAMPLES[rule]}
                if rule in kind.rules:
                    FieldSpec.model_validate(data)
                else:
                    with pytest.raises(ValidationError) as caught:
                        FieldSpec.model_validate(data)
                    assert group.misplaced.format(type=name) in str(caught.value)

    def test_rules_it_needs(self, name: str) -> None:
        """Leaving out (or emptying) a needed rule is refused with the type's message."""
        kind = FIELD_TYPES[name]
        for rule, message in kind.needs.items():
            without = {key: value for key, value in _minimal(name).items() if key != rule}
            with pytest.raises(ValidationError, match=re.escape(message)):
                FieldSpec.model_validate(without)
            if rule != "items":  # an empty list of values, an empty mapping of fields
                empty = {**_minimal(name), rule: type(RULE_EXAMPLES[rule])()}
                with pytest.raises(ValidationError, match=re.escape(message)):
                    FieldSpec.model_validate(empty)

    def test_json_schema_agrees_with_the_model(self, name: str) -> None:
        """For each rule given or left out, the JSON Schema and the model give one verdict."""
        defs = json_schema()["$defs"]
        validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/FieldSpec", "$defs": defs})
        cases = [_minimal(name)]
        cases += [{**_minimal(name), rule: RULE_EXAMPLES[rule]} for rule in RULE_EXAMPLES]
        cases += [{k: v for k, v in _minimal(name).items() if k != rule}
                  for rule in FIELD_TYPES[name].needs]
        for case in cases:
            document = {k: list(v) if isinstance(v, tuple) else v for k, v in case.items()}
            try:
                FieldSpec.model_validate(case)
                model_ok = True
            except ValidationError:
                model_ok = False
            assert validator.is_valid(document) == model_ok, case

    def test_its_sample_is_a_valid_value_that_fits(self, name: str) -> None:
        """The sample passes the type's own check and fits the type, unchanged."""
        spec = _spec(name)
        sample = sample_for(spec)
        assert sample is not None
        assert fits(spec, sample)
        assert validate_submission(DataSchema(fields={"x": spec}), {"x": sample}) == {"x": sample}

    def test_its_sample_type_checks_in_expressions(self, name: str) -> None:
        """CEL evaluates over the sample, and mapping the field onto its own type is sound."""
        spec = _spec(name)
        sample = sample_for(spec)
        assert evaluate("[submission.x][0]", {"submission": {"x": sample}}) == sample
        assert evaluate("submission.x == submission.x", {"submission": {"x": sample}}) is True
        assert _mapping_issues(source=spec, target=spec) == []

    def test_a_foreign_value_is_refused_at_its_path(self, name: str) -> None:
        """A mapping with an unknown key is wrong for every type, and the error names x."""
        with pytest.raises(SubmissionInvalid) as caught:
            validate_submission(DataSchema(fields={"x": _spec(name)}), {"x": {"nope": 1}})
        assert caught.value.errors
        assert all(error.loc[0] == "x" and error.message for error in caught.value.errors)

    def test_its_generated_value_is_valid_and_stable(self, name: str) -> None:
        """A generated output passes the type's check, and one seed gives one value."""
        spec = _spec(name)
        value = generate(spec, _seed())
        assert value == generate(spec, _seed())
        assert validate_input({"x": spec}, {"x": value}, root="output") == []
        out = generate_output(DataSchema(fields={"x": spec}), agency_id="tax-office", number=42,
                              input={}, today=date(2026, 1, 2))
        assert out == {"x": value}

    def test_personal_marks_cover_it(self, name: str) -> None:
        """A personal field of the type is masked whole by redact()."""
        spec = _spec(name, personal=True)
        masked = redact(DataSchema(fields={"x": spec}), {"x": sample_for(spec)})
        assert masked == {"x": REDACTED}


def _mapping_issues(*, source: FieldSpec, target: FieldSpec) -> list[tuple[str, str]]:
    """Issues of a service mapping its input field `x` onto an operation field of `target`."""
    agency = Agency.model_validate({
        "id": "tax", "name": "Tax", "http": {"base_url_env": "TAX_URL"},
        "operations": [{"id": "op", "title": "Op", "input": {"fields": {"y": target}}}],
    })
    service = ServiceDefinition.model_validate({
        "service": "s", "version": 1, "title": "S", "description": "S",
        "input": {"fields": {"x": source}},
        "steps": [{"id": "a", "agency": "tax", "operation": "op", "input": {"y": "submission.x"}}],
    })
    return [(issue.code, issue.message) for issue in validate_service(service, {"tax": agency})]


class TestTypeChecking:
    @pytest.mark.parametrize(("source", "target", "sound"), [
        ("integer", "number", True),
        ("number", "integer", False),
        ("date", "text", True),
        ("enum", "text", True),
        ("boolean", "text", False),
        ("address", "object", True),
        ("text", "address", False),
        ("list", "text", False),
    ])
    def test_mapping_between_types(self, source: str, target: str, sound: bool) -> None:
        """A field maps onto another type when its sample fits; otherwise it is ill-typed."""
        issues = _mapping_issues(source=_spec(source), target=_spec(target))
        if sound:
            assert issues == []
        else:
            [(code, message)] = issues
            assert code == "ill-typed-expression" and f"to be {target}" in message

    def test_list_items_are_judged_by_their_type(self) -> None:
        """A list of integers does not fit a list of text."""
        numbers = _spec("list", items={"type": "integer"})
        assert [code for code, _ in _mapping_issues(source=numbers, target=_spec("list"))] == [
            "ill-typed-expression"
        ]


class TestRuleProblems:
    def test_an_empty_pattern_on_a_non_text_type_is_refused(self) -> None:
        """`pattern: ''` is a rule given (not null): it fits text only, like any other rule."""
        with pytest.raises(ValidationError, match="apply to text, not integer"):
            FieldSpec(type="integer", pattern="")
        assert FieldSpec(type="text", pattern="").pattern == ""

    def test_an_invalid_pattern_is_the_text_types_own_problem(self) -> None:
        """A pattern that does not compile is reported after the rules fit the type."""
        with pytest.raises(ValidationError, match="not a valid regular expression"):
            FieldSpec(type="email", pattern="[")

    def test_options_name_only_the_values(self) -> None:
        """An enum's option texts are for its values: a text for another value is refused."""
        FieldSpec(type="enum", values=("a", "b"), options={"a": {"en": "A", "zh-Hans": "甲"}})
        with pytest.raises(ValidationError, match="'options' names 'c', not among 'values'"):
            FieldSpec(type="enum", values=("a", "b"), options={"c": {"en": "C"}})

    def test_the_first_problem_is_stable(self) -> None:
        """With several problems, the group order decides which one is reported."""
        spec = FieldSpec.model_construct(type="text", values=("a",), items=FieldSpec(type="text"))
        assert rule_problem(spec) == "'values' and 'options' apply to enum fields, not text"
        spec = FieldSpec.model_construct(type="enum", items=FieldSpec(type="text"))
        assert rule_problem(spec) == "an enum field needs 'values'"


class TestStructure:
    def test_only_containers_hold_fields(self) -> None:
        """list has an item spec, object and address named fields; scalars hold nothing."""
        holders = {name: (kind.item(_spec(name)) is not None, kind.fields(_spec(name)) is not None)
                   for name, kind in FIELD_TYPES.items()}
        assert {name for name, (item, _) in holders.items() if item} == {"list"}
        assert {name for name, (_, named) in holders.items() if named} == {"object", "address"}

    def test_the_address_structure_belongs_to_the_address_type(self) -> None:
        """The address type holds its parts; only line2 and region are optional."""
        address = FIELD_TYPES["address"]
        parts = address.fields(_spec("address"))
        assert parts is not None
        assert list(parts) == ["line1", "line2", "city", "region", "postcode", "country"]
        assert [name for name, part in parts.items() if not part.required] == ["line2", "region"]

    def test_kinds_are_field_kinds(self) -> None:
        """Each registry entry is one FieldKind object, one per name."""
        kinds = list(FIELD_TYPES.values())
        assert all(isinstance(kind, FieldKind) for kind in kinds)
        assert len({id(kind) for kind in kinds}) == len(kinds)
