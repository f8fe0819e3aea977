"""What each field type means beyond its name: the address structure and sample values.

Samples are built from schemas before any request exists, so expressions can be evaluated
once at load time and type errors (``submission.moved_on + 1``) reported with a position.
Optional fields are included in samples: an expression that reads them must type-check for
the day they are present.
"""

from __future__ import annotations

from typing import Any

from definitions.expressions import sample_value
from definitions.models import DataSchema, FieldSpec

ADDRESS_FIELDS: dict[str, FieldSpec] = {
    "line1": FieldSpec(type="text", min_length=1, max_length=200),
    "line2": FieldSpec(type="text", required=False, max_length=200),
    "city": FieldSpec(type="text", min_length=1, max_length=100),
    "region": FieldSpec(type="text", required=False, max_length=100),
    "postcode": FieldSpec(type="text", min_length=1, max_length=20),
    "country": FieldSpec(
        type="text", pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code, e.g. 'GB'."
    ),
}
"""An ``address`` field is an object with exactly these fields (no others)."""

_SAMPLE_ADDRESS = {
    "line1": "1 High Street", "line2": "Flat 2", "city": "Springfield",
    "region": "Shire", "postcode": "AB1 2CD", "country": "GB",
}


def object_fields(spec: FieldSpec) -> dict[str, FieldSpec] | None:
    """The named fields inside an ``object`` or ``address`` field; None for other types."""
    if spec.type == "address":
        return ADDRESS_FIELDS
    if spec.type == "object":
        return dict(spec.fields or {})
    return None


def sample_for(spec: FieldSpec) -> Any:
    """A value of the field's type (enum: its first value; list: one sample item)."""
    if spec.type == "enum" and spec.values:
        return spec.values[0]
    if spec.type == "list" and spec.items is not None:
        return [sample_for(spec.items)]
    if spec.type == "address":
        return dict(_SAMPLE_ADDRESS)
    if spec.type == "object":
        return {name: sample_for(field) for name, field in (spec.fields or {}).items()}
    return sample_value(spec.type)


def sample_data(schema: DataSchema) -> dict[str, Any]:
    """A sample document for a schema, every field (optional ones too) filled in."""
    return {name: sample_for(field) for name, field in schema.fields.items()}


def type_name(value: Any) -> str:
    """How a sample value's type is named in messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


def fits(spec: FieldSpec, value: Any) -> bool:
    """Whether a (sample) value can be sent as a field of this type; None is not judged."""
    if value is None:
        return True
    if spec.type in ("text", "email", "phone", "date", "enum"):
        return isinstance(value, str)
    if spec.type == "boolean":
        return isinstance(value, bool)
    if spec.type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.type == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec.type == "list":
        if not isinstance(value, list):
            return False
        return not value or spec.items is None or fits(spec.items, value[0])
    return isinstance(value, dict)  # object, address
