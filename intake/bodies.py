"""Reading request bodies: a size limit before anything parses them, then strict JSON.

Every body the intake reads goes through :func:`read_json` (or :func:`read_model`, which adds
a model), so every route refuses the same things the same way:

- more than :data:`MAX_BODY_BYTES` (declared or actually sent): ``413 body_too_large``;
- bytes that are not JSON, including what Python's ``json`` module accepts beyond the standard
  (``NaN``, ``Infinity``) and an object giving one key twice (two parsers could read two
  different bodies from it, one of them the signed one): ``400 malformed_json``;
- nesting deeper than :data:`MAX_DEPTH` (a form is flat; a deep body only costs stack):
  ``422 too_deep``; a string, value or key, longer than
  :data:`agency_kit.hardening.MAX_STRING_CHARS`: ``413 string_too_long`` with its path (the
  bounds every app of the project applies, :mod:`agency_kit.hardening`);
- a NUL character or an unpaired surrogate anywhere, in a value or a key: ``422`` with the
  path of the value, or of the object whose key it is (a key has no field to blame). Such text
  cannot be stored (PostgreSQL refuses NUL in ``jsonb``/``text``) and a lone surrogate cannot
  even be written back as UTF-8, so it must not get as far as an error message that echoes it.

The text rule is :func:`definitions.field_types.text_problem`, the one the field types apply.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from agency_kit.hardening import MAX_JSON_DEPTH, JsonRefused, loads_bounded
from definitions.field_types import text_problem

MAX_BODY_BYTES = 256 * 1024
"""A submission, an answer or a callback is a form, not a file upload."""
MAX_DEPTH = MAX_JSON_DEPTH
"""The deepest nesting of arrays and objects a body may have (a form nests a few levels)."""

M = TypeVar("M", bound=BaseModel)
Loc = list[str | int]


class BodyRefused(Exception):  # noqa: N818 (reads as what happened to the body)
    """A body the intake will not read, with the answer to give (see the module docstring)."""

    def __init__(self, status: int, code: str, message: str,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = list(errors or [])


async def read_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


async def read_json(request: Request, *, invalid_code: str = "invalid",
                    limit: int = MAX_BODY_BYTES) -> Any:
    """The body parsed as strict JSON; an empty body reads as ``{}``.

    Raises:
        BodyRefused: too large (413), not JSON (400), or text that cannot be stored (422,
            with ``invalid_code``).
    """
    body = await read_limited(request, limit)
    if body is None:
        raise BodyRefused(413, "body_too_large", f"the body is over {limit} bytes")
    return parse_json(body, invalid_code=invalid_code)


def parse_json(body: bytes, *, invalid_code: str = "invalid") -> Any:
    """:func:`read_json`'s parsing, for a body already read (a signed callback's)."""
    if not body.strip():
        return {}
    try:
        data = loads_bounded(body, parse_constant=_not_json, object_pairs_hook=_unique_keys)
    except JsonRefused as exc:
        where = [{"loc": exc.loc, "msg": exc.message}] if exc.loc is not None else None
        raise BodyRefused(exc.status, exc.code, exc.message, where) from None
    except ValueError as exc:  # includes UnicodeDecodeError: bytes that are not UTF-8/16/32
        raise BodyRefused(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    errors: list[dict[str, Any]] = []
    _check_text(data, [], errors)
    if errors:
        raise BodyRefused(422, invalid_code, "the body holds text that cannot be stored", errors)
    return data


async def read_model(request: Request, model: type[M], *, invalid_code: str = "invalid") -> M:
    """The body as ``model`` (strict JSON, then the model's own rules).

    Raises:
        BodyRefused: as :func:`read_json`; and 422 with one entry per field the model refuses.
    """
    return validate_model(await read_json(request, invalid_code=invalid_code), model,
                          invalid_code=invalid_code)


def validate_model(data: Any, model: type[M], *, invalid_code: str = "invalid") -> M:
    """``data`` (parsed JSON) as ``model``, strictly (``"true"`` is not a boolean); a 422
    :class:`BodyRefused` with field paths if not."""
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise BodyRefused(422, invalid_code, "the body is not valid",
                          field_errors(exc)) from None


def field_errors(exc: ValidationError, prefix: Loc | None = None) -> list[dict[str, Any]]:
    """Pydantic's errors in the intake's shape, ``{"loc": [...], "msg": "..."}``: no input
    echoed (it may be personal, or not even writable as UTF-8)."""
    return [{"loc": [*(prefix or []), *e["loc"]], "msg": e["msg"]} for e in exc.errors()]


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("an object gives the same key more than once")
    return result


def _check_text(value: Any, loc: Loc, errors: list[dict[str, Any]]) -> None:
    """Record every string (value or key) :func:`text_problem` refuses, at its path."""
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            errors.append({"loc": loc, "msg": problem})
        return
    if not isinstance(value, dict | list):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, [*loc, index], errors)
        return
    for key, item in value.items():
        problem = text_problem(key)
        if problem is not None:
            # The key itself is not shown: it may not even be writable as UTF-8.
            errors.append({"loc": loc, "msg": f"has a key that {problem}"})
            continue
        _check_text(item, [*loc, key], errors)
