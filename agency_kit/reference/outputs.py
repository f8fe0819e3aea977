"""Deterministic outputs for any operation, generated from its output schema and the record.

The rules are generic over the registry (no per-catalog cases). For each output field:

1. ``reference`` / ``agency_reference`` (text): the record's agency reference (``DMV-000042``).
2. A field the input also has, whose value fits the output spec: echoed from the input.
3. Otherwise by type:
   - text named ``*_reference``, ``*_id`` or containing ``number``: an id
     ``{AGENCY}-{INITIALS}-{n:06d}`` (``registration_number`` -> ``BUSINESS-REGISTRY-RN-000042``);
     other text: ``"{field name} {n}"``;
   - email ``case-{n}@{agency}.example.gov``; phone ``+1555{n:07d}``; address
     ``{"line1": "{n} Reference Street", "city": "Springfield", ...}``;
   - integer ``n`` and number ``float(n)`` (clamped into minimum..maximum); boolean ``true``;
     date today (ISO); enum its first value; list ``min_items`` (at least 1) generated items;
     object its fields, recursively.

``n`` is the agency's sequence number for the record, so outputs differ between records and
are stable for one record.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from agency_kit.validation import validate_input
from definitions.models import DataSchema, FieldSpec

REFERENCE_FIELDS = frozenset({"reference", "agency_reference"})


def reference_prefix(agency_id: str) -> str:
    """``driver-licensing`` -> ``DRIVER-LICENSING``."""
    return re.sub(r"[^A-Z0-9]+", "-", agency_id.upper()).strip("-")


def agency_reference(agency_id: str, number: int) -> str:
    return f"{reference_prefix(agency_id)}-{number:06d}"


def _initials(name: str) -> str:
    return "".join(part[0] for part in name.split("_") if part).upper() or "ID"


def _is_identifier(name: str) -> bool:
    return name.endswith(("_reference", "_id")) or "number" in name


def generate_output(
    schema: DataSchema,
    *,
    agency_id: str,
    number: int,
    input: dict[str, Any],
    today: date | None = None,
) -> dict[str, Any]:
    """The output of one record (see the module docstring for the rules)."""
    day = today or date.today()
    output: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        if name in REFERENCE_FIELDS and spec.type == "text":
            output[name] = agency_reference(agency_id, number)
        elif name in input and not validate_input({name: spec}, {name: input[name]}):
            output[name] = input[name]
        else:
            output[name] = _value(name, spec, agency_id=agency_id, number=number, day=day)
    return output


def _value(name: str, spec: FieldSpec, *, agency_id: str, number: int, day: date) -> Any:
    kind = spec.type
    if kind == "text":
        if _is_identifier(name):
            text = f"{reference_prefix(agency_id)}-{_initials(name)}-{number:06d}"
        else:
            text = f"{name.replace('_', ' ')} {number}"
        if spec.min_length is not None and len(text) < spec.min_length:
            text = text.ljust(spec.min_length, "0")
        return text[: spec.max_length] if spec.max_length else text
    if kind == "email":
        return f"case-{number}@{agency_id}.example.gov"
    if kind == "phone":
        return f"+1555{number:07d}"
    if kind == "address":
        return {
            "line1": f"{number} Reference Street",
            "city": "Springfield",
            "postcode": f"RF{number % 100} 1AA",
            "country": "GB",
        }
    if kind in ("integer", "number"):
        value: float = number
        if spec.minimum is not None:
            value = max(value, spec.minimum)
        if spec.maximum is not None:
            value = min(value, spec.maximum)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "date":
        return day.isoformat()
    if kind == "enum":
        return (spec.values or ("",))[0]
    if kind == "list":
        count = max(spec.min_items or 1, 1)
        if spec.max_items is not None:
            count = min(count, spec.max_items)
        assert spec.items is not None
        return [
            _value(name, spec.items, agency_id=agency_id, number=number, day=day)
            for _ in range(count)
        ]
    # object
    return {
        sub: _value(sub, sub_spec, agency_id=agency_id, number=number, day=day)
        for sub, sub_spec in (spec.fields or {}).items()
    }
