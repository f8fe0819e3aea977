"""Cross-file rules applied to services built in code, beyond the table of YAML cases."""

from __future__ import annotations

from typing import Any

import pytest

from definitions.catalog import Catalog
from definitions.models import ServiceDefinition
from definitions.validation import validate_service


def _service(*steps: dict[str, Any]) -> ServiceDefinition:
    return ServiceDefinition.model_validate({
        "service": "x", "version": 1, "title": "X", "description": "X",
        "input": {"fields": {
            "tax_id": {"type": "text"},
            "address": {"type": "address"},
            "benefits": {"type": "list", "required": False, "items": {
                "type": "object", "fields": {"programme": {"type": "text"}}}},
            "count": {"type": "integer"},
        }},
        "steps": list(steps),
    })


def _call(step_id: str = "a", **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id, "agency": "tax-authority", "operation": "update-address",
        "input": {"tax_id": "submission.tax_id", "new_address": "submission.address",
                  "moved_on": "'2026-01-01'"},
    }
    step.update(extra)
    return step


def _codes(catalog: Catalog, *steps: dict[str, Any]) -> list[tuple[str, str]]:
    issues = validate_service(_service(*steps), catalog.agencies)
    return [(issue.code, issue.message) for issue in issues]


def test_a_sound_service_has_no_issues(catalog: Catalog) -> None:
    """Mapping every required field with well-typed expressions passes."""
    assert _codes(catalog, _call(when="request.language == 'es' && submission.count > 2")) == []


def test_value_dependent_failures_are_not_type_errors(catalog: Catalog) -> None:
    """Dividing by a sample zero or indexing past a sample list is not reported."""
    assert _codes(catalog, _call(when="10 / (submission.count - 1) > 1")) == []
    assert _codes(catalog, _call(when="submission.benefits[3].programme == 'x'")) == []


def test_unknown_function(catalog: Catalog) -> None:
    """Calling a function CEL lacks is an unknown-reference with a short message."""
    [(code, message)] = _codes(catalog, _call(when="shout(submission.tax_id)"))
    assert code == "unknown-reference" and "'shout'" in message and len(message) < 200


def test_wrong_type_for_operation_field(catalog: Catalog) -> None:
    """Sending an integer where the operation expects an address is ill-typed."""
    step = _call()
    step["input"]["new_address"] = "submission.count"
    [(code, message)] = _codes(catalog, step)
    assert code == "ill-typed-expression"
    assert "expects 'new_address' to be address" in message and "an integer" in message


def test_request_fields(catalog: Catalog) -> None:
    """request holds reference and language only."""
    [(code, message)] = _codes(catalog, _call(when="request.channel == 'web'"))
    assert code == "unknown-reference" and "language, reference" in message


def test_output_only_in_compensation(catalog: Catalog) -> None:
    """`output` outside a compensation names nothing, and says where it exists."""
    [(code, message)] = _codes(catalog, _call(when="output.reference == 'x'"))
    assert code == "unknown-reference" and "only in a compensation's input" in message


def test_item_in_when_of_a_for_each_step(catalog: Catalog) -> None:
    """`when` runs before for_each, so `item` is not in scope there; the fix is named."""
    step = _call(for_each="submission.benefits", when="item.programme == 'x'")
    [(code, message)] = _codes(catalog, step)
    assert code == "unknown-reference" and "filter items in `for_each`" in message


def test_item_is_the_for_each_element(catalog: Catalog) -> None:
    """Inside for_each, item has the list item's fields and item_key may read them."""
    good = _call(for_each="submission.benefits", item_key="item.programme")
    assert _codes(catalog, good) == []
    bad = _call(for_each="submission.benefits", item_key="item.case")
    [(code, message)] = _codes(catalog, bad)
    assert code == "unknown-reference" and "item has no field 'case'" in message


def test_for_each_output_is_a_list(catalog: Catalog) -> None:
    """A downstream step reads a fan-out step's outputs with a macro, not a field."""
    fan_out = _call("a", for_each="submission.benefits")
    by_field = _call("b", needs=["a"], when="steps.a.output.reference == 'r'")
    [(code, message)] = _codes(catalog, fan_out, by_field)
    assert code == "unknown-reference" and "steps.a.output.map(o, o.reference)" in message
    by_macro = _call("b", needs=["a"], when="size(steps.a.output.map(o, o.reference)) > 0")
    assert _codes(catalog, fan_out, by_macro) == []


def test_transitive_upstream(catalog: Catalog) -> None:
    """A step reachable through needs of needs is upstream."""
    steps = (
        _call("a"), _call("b", needs=["a"]),
        _call("c", needs=["b"], when="steps.a.output.reference != ''"),
    )
    assert _codes(catalog, *steps) == []


def test_decision_step_output(catalog: Catalog) -> None:
    """A decision's result is readable downstream: decision, reason, decided_by."""
    decision = {"id": "review", "kind": "decision", "role": "caseworker",
                "show": {"tax_id": "submission.tax_id"}}
    after = _call("a", needs=["review"], when="steps.review.output.decision == 'approved'")
    assert _codes(catalog, decision, after) == []


@pytest.mark.parametrize("cycle", [["a"], ["b"]])
def test_self_and_mutual_cycles(catalog: Catalog, cycle: list[str]) -> None:
    """A step needing itself, or two needing each other, is one needs-cycle issue."""
    steps = (_call("a", needs=cycle), _call("b", needs=["a"]))
    codes = [code for code, _ in _codes(catalog, *steps)]
    assert codes == ["needs-cycle"]
