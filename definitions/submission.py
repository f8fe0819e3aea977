"""Check a citizen's submission against a service's input schema, and mask its personal data.

A small hand-written validator rather than generated pydantic models: it runs on every
request, reports every bad field at once with its full path (``("benefits", 0,
"case_number")``), and its messages are written for the citizen-facing form. Fields the
schema does not declare are rejected, not dropped: the engine must not hold data it was not
asked to hold (data minimisation).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from definitions.field_types import ADDRESS_FIELDS
from definitions.models import DataSchema, FieldSpec

REDACTED = "***"

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,19}$")

FieldLoc = tuple[str | int, ...]


@dataclass(frozen=True)
class FieldError:
    """One bad field: where it is (keys and list positions) and what is wrong with it."""

    loc: FieldLoc
    message: str


class SubmissionInvalid(ValueError):  # noqa: N818 (reads as the state of the submission)
    """The submission breaks the schema; ``errors`` has one entry per bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = list(errors)
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e.loc) or '(submission)'}: {e.message}" for e in errors
        )
        super().__init__(f"invalid submission: {summary}")


class _Bad:
    """Marks a value that failed (its error is already recorded)."""


_BAD = _Bad()


def validate_submission(schema: DataSchema, data: Any) -> dict[str, Any]:
    """Return the normalised submission (dates as ISO strings, nulls of optional fields dropped).

    Raises:
        SubmissionInvalid: one :class:`FieldError` per bad field.
    """
    errors: list[FieldError] = []
    result = _object(schema.fields, data, (), errors)
    if errors or isinstance(result, _Bad):
        raise SubmissionInvalid(errors)
    return result


def _object(
    fields: Mapping[str, FieldSpec], data: Any, loc: FieldLoc, errors: list[FieldError]
) -> dict[str, Any] | _Bad:
    if not isinstance(data, Mapping):
        errors.append(FieldError(loc, "must be an object with named fields"))
        return _BAD
    out: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            accepted = ", ".join(fields)
            errors.append(FieldError(
                (*loc, str(key)), f"is not a field of this form; accepted fields: {accepted}"
            ))
    for name, spec in fields.items():
        value = data.get(name)
        if value is None:
            if spec.required:
                errors.append(FieldError((*loc, name), "is required"))
            continue
        checked = _value(spec, value, (*loc, name), errors)
        if not isinstance(checked, _Bad):
            out[name] = checked
    return out


def _value(spec: FieldSpec, value: Any, loc: FieldLoc, errors: list[FieldError]) -> Any:
    def bad(message: str) -> _Bad:
        errors.append(FieldError(loc, message))
        return _BAD

    kind = spec.type
    if kind in ("text", "email", "phone"):
        if not isinstance(value, str):
            return bad("must be text")
        if spec.min_length is not None and len(value) < spec.min_length:
            return bad(f"must be at least {spec.min_length} characters long")
        if spec.max_length is not None and len(value) > spec.max_length:
            return bad(f"must be at most {spec.max_length} characters long")
        if spec.pattern is not None and not _compiled(spec.pattern).search(value):
            return bad(f"does not have the expected format ({spec.pattern})")
        if kind == "email" and not _EMAIL.match(value):
            return bad("must be an email address such as name@example.org")
        if kind == "phone" and not _PHONE.match(value):
            return bad("must be a phone number such as +44 20 7946 0000")
        return value
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return bad(f"must be {'a whole number' if kind == 'integer' else 'a number'}")
        if kind == "integer" and isinstance(value, float):
            if not value.is_integer():
                return bad("must be a whole number")
            value = int(value)
        if spec.minimum is not None and value < spec.minimum:
            return bad(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            return bad(f"must be at most {spec.maximum:g}")
        return value
    if kind == "boolean":
        return value if isinstance(value, bool) else bad("must be true or false")
    if kind == "date":
        return _date(value, bad)
    if kind == "enum":
        allowed = spec.values or ()
        if not isinstance(value, str) or value not in allowed:
            return bad(f"must be one of: {', '.join(allowed)}")
        return value
    if kind == "list":
        if not isinstance(value, list | tuple):
            return bad("must be a list")
        if spec.min_items is not None and len(value) < spec.min_items:
            return bad(f"must have at least {spec.min_items} item(s)")
        if spec.max_items is not None and len(value) > spec.max_items:
            return bad(f"must have at most {spec.max_items} item(s)")
        assert spec.items is not None  # a list spec always has items (model rule)
        items = [_value(spec.items, item, (*loc, i), errors) for i, item in enumerate(value)]
        return _BAD if any(isinstance(item, _Bad) for item in items) else items
    if kind == "address":
        return _object(ADDRESS_FIELDS, value, loc, errors)
    return _object(spec.fields or {}, value, loc, errors)  # object


def _date(value: Any, bad: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return bad("must be a date (YYYY-MM-DD), without a time")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if not isinstance(value, str) or not _DATE.match(value):
        return bad("must be a date written YYYY-MM-DD")
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        return bad("is not a real date")


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


# --------------------------------------------------------------------------- personal data


def personal_paths(schema: DataSchema) -> set[str]:
    """Dotted paths of personal fields; list items are written ``name[]``.

    A field marked personal covers everything inside it (``new_address``), so its inner
    fields are not listed separately. Example: ``{"full_name", "benefits[].case_number"}``.
    """
    paths: set[str] = set()
    for name, spec in schema.fields.items():
        _collect(spec, name, paths)
    return paths


def _collect(spec: FieldSpec, path: str, paths: set[str]) -> None:
    if spec.personal:
        paths.add(path)
        return
    if spec.type == "list" and spec.items is not None:
        _collect(spec.items, f"{path}[]", paths)
    elif spec.type == "object":
        for name, inner in (spec.fields or {}).items():
            _collect(inner, f"{path}.{name}", paths)


def redact(schema: DataSchema, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every personal value replaced by ``"***"`` (for logs, operators).

    Fields the schema does not know are masked too: what is not declared is not trusted.
    """
    return _redact_object(schema.fields, data)


def _redact_object(fields: Mapping[str, FieldSpec], data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        spec = fields.get(key)
        out[key] = REDACTED if spec is None else _redact_value(spec, value)
    return out


def _redact_value(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        return None
    if spec.personal:
        return REDACTED
    if spec.type == "list" and spec.items is not None and isinstance(value, list):
        return [_redact_value(spec.items, item) for item in value]
    if spec.type == "object" and isinstance(value, Mapping):
        return _redact_object(spec.fields or {}, value)
    return value
