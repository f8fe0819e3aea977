"""Reading a page's form body: bounded, ``application/x-www-form-urlencoded``, CSRF-checked.

Page forms post URL-encoded fields (no JavaScript needed); the hardening layer lets that media
type through only for page paths (:data:`FORM_PATHS`), everything else must stay JSON. The
body is read with the intake's size limit and parsed by the standard library
(``urllib.parse.parse_qsl``, at most :data:`MAX_FIELDS` fields); a value keeps every
occurrence (a list), in order.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from agency_kit.hardening import FORM_MEDIA_TYPE
from intake.bodies import MAX_BODY_BYTES, read_limited

FORM_PATHS = ("/apply/", "/track", "/tasks", "/language", "/sign-out", "/my-requests")
"""Path prefixes whose POSTs may be URL-encoded forms (the pages); nothing else may."""
MAX_FIELDS = 2_000

Form = dict[str, list[str]]


class FormRefused(Exception):  # noqa: N818 (reads as what happened to the body)
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_form(request: Request, limit: int = MAX_BODY_BYTES) -> Form:
    """The fields of ``request``'s form body (see the module docstring).

    Raises:
        FormRefused: 413 for a body over ``limit``, 415 for another media type, 400 for one
            that is not URL-encoded text or has more than :data:`MAX_FIELDS` fields.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in (FORM_MEDIA_TYPE, ""):
        raise FormRefused(415, "a page form is sent as application/x-www-form-urlencoded")
    body = await read_limited(request, limit)
    if body is None:
        raise FormRefused(413, f"the form is larger than {limit // 1024} KiB")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused(400, "the form could not be read") from exc
    form: Form = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


def first(form: Form, name: str, default: str = "") -> str:
    values = form.get(name)
    return values[0] if values else default
