"""Check an operation's input against its declared schema (:class:`DataSchema`).

The rules are the definition language's own (:func:`definitions.submission.validate_submission`),
so an agency judges a value exactly as the engine judged the citizen's submission: types,
``required``, lengths, patterns, ``enum`` values, list sizes, the ``address`` structure
(``line1``, ``line2``, ``city``, ``region``, ``postcode``, ``country``), and unknown fields are
errors, so a misspelt field never passes silently. A required field must be present and not
null; an optional one may be absent or null.

Errors carry a path (``input.new_address.postcode``, ``input.services[1]``) and a message
naming the rule — never the value (it may be personal data).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agency_kit.contract import FieldError
from definitions.models import DataSchema, FieldSpec
from definitions.submission import SubmissionInvalid, validate_submission


def field_path(root: str, loc: tuple[str | int, ...]) -> str:
    """``("services", 1)`` under ``input`` -> ``input.services[1]``."""
    path = root
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def validate_input(
    schema: DataSchema | Mapping[str, FieldSpec], value: Any, *, root: str = "input"
) -> list[FieldError]:
    """Every problem of ``value`` against the schema's fields (empty list: valid)."""
    data_schema = schema if isinstance(schema, DataSchema) else DataSchema(fields=dict(schema))
    try:
        validate_submission(data_schema, value)
    except SubmissionInvalid as exc:
        return [
            FieldError(path=field_path(root, error.loc), message=error.message)
            for error in exc.errors
        ]
    return []
