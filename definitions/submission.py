"""Check a citizen's submission against a service's input schema, and mask its personal data.

A small hand-written validator rather than generated pydantic models: it runs on every
request, reports every bad field at once with its full path (``("benefits", 0,
"case_number")``), and its messages are written for the citizen-facing form. Fields the
schema does not declare are rejected, not dropped: the engine must not hold data it was not
asked to hold (data minimisation).

This module walks the structure — unknown and missing fields, paths, list items, fields
inside objects and addresses — and asks each field's type (:mod:`definitions.field_types`)
to judge and normalise the value itself; the personal-data helpers walk the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from definitions.field_types import InvalidValue, kind_of

if TYPE_CHECKING:
    from definitions.models import DataSchema, FieldSpec

REDACTED = "***"

FieldLoc = tuple[str | int, ...]


ERROR_CODES = (
    "required", "unknown_field", "not_an_object", "not_text", "bad_text", "too_short",
    "too_long", "pattern", "not_an_email", "not_a_phone", "not_a_number", "not_whole",
    "too_small", "too_large", "not_boolean", "not_a_date", "not_a_real_date", "not_one_of",
    "not_a_list", "too_few_items", "too_many_items", "invalid",
)
"""Every :attr:`FieldError.code`: stable names a page translates (``intake.pages``), while
:attr:`FieldError.message` stays the English the API answers."""


@dataclass(frozen=True)
class FieldError:
    """One bad field: where it is (keys and list positions) and what is wrong with it.

    ``message`` is English for the API and the CLI; ``code`` (one of :data:`ERROR_CODES`) and
    ``params`` (``{"min": 4}``, ``{"max": 10}``, ``{"pattern": ...}``, ``{"values": [...]}``)
    say the same for a page to put in the citizen's language.
    """

    loc: FieldLoc
    message: str
    code: str = "invalid"
    params: Mapping[str, Any] = field(default_factory=dict)


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
        errors.append(FieldError(loc, "must be an object with named fields", "not_an_object"))
        return _BAD
    out: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            accepted = ", ".join(fields)
            errors.append(FieldError(
                (*loc, str(key)), f"is not a field of this form; accepted fields: {accepted}",
                "unknown_field"))
    for name, spec in fields.items():
        value = data.get(name)
        if value is None:
            if spec.required:
                errors.append(FieldError((*loc, name), "is required", "required"))
            continue
        checked = _value(spec, value, (*loc, name), errors)
        if not isinstance(checked, _Bad):
            out[name] = checked
    return out


def _value(spec: FieldSpec, value: Any, loc: FieldLoc, errors: list[FieldError]) -> Any:
    kind = kind_of(spec)
    try:
        checked = kind.check(spec, value)
    except InvalidValue as exc:
        errors.append(FieldError(loc, exc.message, exc.code, exc.params))
        return _BAD
    fields = kind.fields(spec)
    if fields is not None:
        return _object(fields, checked, loc, errors)
    item = kind.item(spec)
    if item is not None:
        items = [_value(item, one, (*loc, i), errors) for i, one in enumerate(checked)]
        return _BAD if any(isinstance(one, _Bad) for one in items) else items
    return checked


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
    kind = kind_of(spec)
    item = kind.item(spec)
    if item is not None:
        _collect(item, f"{path}[]", paths)
    for name, inner in (kind.fields(spec) or {}).items():
        _collect(inner, f"{path}.{name}", paths)


def redact(schema: DataSchema, data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with every personal value replaced by ``"***"`` (for logs, operators).

    Fields the schema does not know are masked too, at any depth (inside an object or an
    address): what is not declared is not trusted.
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
    kind = kind_of(spec)
    item = kind.item(spec)
    if item is not None and isinstance(value, list):
        return [_redact_value(item, one) for one in value]
    fields = kind.fields(spec)
    if fields is not None and isinstance(value, Mapping):
        return _redact_object(fields, value)
    return value
