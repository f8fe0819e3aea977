"""Check an operation's input against its declared schema (:class:`DataSchema`).

Rules, per :class:`FieldSpec` type: ``text`` is a string (``min_length``, ``max_length``,
``pattern`` searched as in JSON Schema — anchor it with ``^...$``); ``email`` and ``phone`` are
plausible strings; ``date`` is an ISO date ``YYYY-MM-DD``; ``integer`` and ``number`` are JSON
numbers, never booleans (``minimum``, ``maximum``); ``boolean``; ``enum`` is one of
``values``; ``address`` is a non-empty string or a non-empty object; ``list`` and ``object``
recurse. A required field must be present and not null; an optional one may be absent or null.
Unknown fields are errors, so a misspelt field never passes silently.

Errors carry a path (``input.new_address``, ``input.services[1]``, ``input.owner.email``) and
a message naming the rule — never the value (it may be personal data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from agency_kit.contract import FieldError
from definitions.models import DataSchema, FieldSpec

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{3,24}$")


def validate_input(
    schema: DataSchema | Mapping[str, FieldSpec], value: Any, *, root: str = "input"
) -> list[FieldError]:
    """Every problem of ``value`` against the schema's fields (empty list: valid)."""
    fields = schema.fields if isinstance(schema, DataSchema) else dict(schema)
    errors: list[FieldError] = []
    _check_object(fields, value, root, errors)
    return errors


def _check_object(
    fields: Mapping[str, FieldSpec], value: Any, path: str, errors: list[FieldError]
) -> None:
    if not isinstance(value, dict):
        errors.append(FieldError(path=path, message="an object is expected"))
        return
    for name in value:
        if name not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            errors.append(
                FieldError(path=f"{path}.{name}", message=f"unknown field (allowed: {allowed})")
            )
    for name, spec in fields.items():
        field_path = f"{path}.{name}"
        if name not in value or value[name] is None:
            if spec.required:
                errors.append(FieldError(path=field_path, message="this field is required"))
            continue
        _check_value(spec, value[name], field_path, errors)


def _check_value(spec: FieldSpec, value: Any, path: str, errors: list[FieldError]) -> None:
    def fail(message: str) -> None:
        errors.append(FieldError(path=path, message=message))

    kind = spec.type
    if kind in ("text", "email", "phone"):
        if not isinstance(value, str):
            fail(f"a string is expected ({kind})")
            return
        if spec.min_length is not None and len(value) < spec.min_length:
            fail(f"at least {spec.min_length} characters are required")
        if spec.max_length is not None and len(value) > spec.max_length:
            fail(f"at most {spec.max_length} characters are allowed")
        if spec.pattern is not None and not re.search(spec.pattern, value):
            fail(f"does not match the pattern {spec.pattern!r}")
        if kind == "email" and not _EMAIL.match(value):
            fail("not an email address")
        if kind == "phone" and not _PHONE.match(value):
            fail("not a phone number")
    elif kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail(f"a number is expected ({kind})")
            return
        if kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
            fail("a whole number is expected")
        if spec.minimum is not None and value < spec.minimum:
            fail(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            fail(f"must be at most {spec.maximum:g}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            fail("true or false is expected")
    elif kind == "date":
        if not isinstance(value, str):
            fail("a date 'YYYY-MM-DD' is expected")
            return
        try:
            date.fromisoformat(value)
        except ValueError:
            fail("a date 'YYYY-MM-DD' is expected")
    elif kind == "enum":
        allowed = spec.values or ()
        if not isinstance(value, str) or value not in allowed:
            fail(f"must be one of: {', '.join(allowed)}")
    elif kind == "address":
        if isinstance(value, str):
            if not value.strip():
                fail("an address cannot be empty")
        elif isinstance(value, dict):
            if not value:
                fail("an address cannot be empty")
        else:
            fail("an address (string or object) is expected")
    elif kind == "list":
        if not isinstance(value, list):
            fail("a list is expected")
            return
        if spec.min_items is not None and len(value) < spec.min_items:
            fail(f"at least {spec.min_items} items are required")
        if spec.max_items is not None and len(value) > spec.max_items:
            fail(f"at most {spec.max_items} items are allowed")
        if spec.items is not None:
            for index, item in enumerate(value):
                _check_value(spec.items, item, f"{path}[{index}]", errors)
    elif kind == "object":
        _check_object(spec.fields or {}, value, path, errors)
