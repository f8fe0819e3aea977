"""Deterministic outputs for any operation, generated from its output schema and the record.

The rules are generic over the registry (no per-catalog cases). For each output field:

1. ``reference`` / ``agency_reference`` (text): the record's agency reference (``DMV-000042``).
2. A field the input also has, whose value fits the output spec: echoed from the input.
3. Otherwise the field's type generates it (``FieldKind.generate`` in
   :mod:`definitions.field_types`): text named ``*_reference``, ``*_id`` or containing
   ``number`` becomes an id ``{AGENCY}-{INITIALS}-{n:06d}`` (``registration_number`` ->
   ``BUSINESS-REGISTRY-RN-000042``), other text ``"{field name} {n}"``; email
   ``case-{n}@{agency}.example.gov``; phone ``+1555{n:07d}``; address
   ``{"line1": "{n} Reference Street", "city": "Springfield", ...}``; integer ``n`` and number
   ``float(n)`` (clamped into minimum..maximum); boolean ``true``; date today (ISO); enum its
   first value; list ``min_items`` (at least 1) generated items; object its fields, recursively.

``n`` is the agency's sequence number for the record, so outputs differ between records and
are stable for one record.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from agency_kit.validation import validate_input
from definitions.field_types import Seed, generate

if TYPE_CHECKING:
    from definitions.models import DataSchema

REFERENCE_FIELDS = frozenset({"reference", "agency_reference"})


def reference_prefix(agency_id: str) -> str:
    """``driver-licensing`` -> ``DRIVER-LICENSING``."""
    return re.sub(r"[^A-Z0-9]+", "-", agency_id.upper()).strip("-")


def agency_reference(agency_id: str, number: int) -> str:
    return f"{reference_prefix(agency_id)}-{number:06d}"


def generate_output(
    schema: DataSchema,
    *,
    agency_id: str,
    number: int,
    input: dict[str, Any],
    today: date | None = None,
) -> dict[str, Any]:
    """The output of one record (see the module docstring for the rules)."""
    prefix = reference_prefix(agency_id)
    day = today or date.today()
    output: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        if name in REFERENCE_FIELDS and spec.type == "text":
            output[name] = f"{prefix}-{number:06d}"  # agency_reference(), prefix worked out once
        elif name in input and not validate_input({name: spec}, {name: input[name]}):
            output[name] = input[name]
        else:
            output[name] = generate(spec, Seed(name, agency_id, prefix, number, day))
    return output
