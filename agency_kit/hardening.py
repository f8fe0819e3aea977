"""What every HTTP app of the project does before and after its routes: one hardening layer.

The intake and the reference agencies both wrap their ASGI app with :func:`harden`, so the
rules below hold for every route, error answers included (a 500 too: the layer sits outside
Starlette's error middleware, which answers it):

- **Security headers on every response**, built with the ``secure`` package
  (:func:`security_headers`): a Content-Security-Policy allowing only the app's own scripts,
  styles and images (the vendored ``/docs`` page loads nothing else) and
  ``frame-ancestors 'none'``; HSTS; ``X-Content-Type-Options: nosniff``;
  ``X-Frame-Options: DENY``; ``Referrer-Policy: no-referrer``; ``Cache-Control: no-store``
  (answers may hold personal data, and no proxy or browser cache should keep them).
- **A body must be JSON**: a request that carries a body (a ``Content-Length`` above 0, or
  chunked) with a media type other than ``application/json`` (or a ``+json`` type such as
  ``application/cloudevents+json``) is refused with ``415`` before any route reads it. Only
  the paths an app names as its HTML pages (``form_paths``) also take URL-encoded forms.
- **JSON is bounded**: :func:`loads_bounded` parses a body and refuses nesting deeper than
  :data:`MAX_JSON_DEPTH` (``422 too_deep``; without it, a body nested 3,000 deep raised
  ``RecursionError`` and answered 500) and any string, value or key, longer than
  :data:`MAX_STRING_CHARS` (``413 string_too_long``, with its path).

Each app keeps its own refusal shape: :func:`harden` takes an ``error_body`` callable that
turns ``(code, message)`` into the app's JSON body.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from secure import (
    CacheControl,
    ContentSecurityPolicy,
    ReferrerPolicy,
    Secure,
    StrictTransportSecurity,
    XContentTypeOptions,
    XFrameOptions,
)
from secure.middleware import SecureASGIMiddleware

MAX_JSON_DEPTH = 32
"""The deepest nesting of arrays and objects a body may have (a form nests a few levels)."""
MAX_STRING_CHARS = 16_384
"""The longest string, value or key, a body may hold (a field's own bound is usually lower)."""
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
"""What an HTML form posts; accepted only on the paths an app names (its pages)."""
HSTS_MAX_AGE_S = 2 * 365 * 24 * 3600
"""Two years: the value HSTS preload lists ask for."""

ErrorBody = Callable[[str, str], dict[str, Any]]
"""``(code, message)`` -> the app's JSON refusal body."""
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JsonRefused(Exception):  # noqa: N818 (reads as what happened to the body)
    """A body :func:`loads_bounded` will not accept, with the status and code to answer."""

    def __init__(self, status: int, code: str, message: str,
                 loc: list[str | int] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.loc = loc


def security_headers() -> Secure:
    """The headers every response carries (see the module docstring)."""
    csp = (
        ContentSecurityPolicy()
        .default_src("'none'")
        .script_src("'self'")
        .style_src("'self'", "'unsafe-inline'")  # Swagger UI sets style attributes
        .img_src("'self'", "data:")  # and draws its icons as data: SVG
        .connect_src("'self'")  # "Try it out" calls this origin only
        .font_src("'self'")
        .base_uri("'none'")
        .form_action("'self'")
        .frame_ancestors("'none'")
    )
    return Secure(
        csp=csp,
        hsts=StrictTransportSecurity().max_age(HSTS_MAX_AGE_S).include_subdomains(),
        xcto=XContentTypeOptions().nosniff(),
        xfo=XFrameOptions().deny(),
        referrer=ReferrerPolicy().no_referrer(),
        cache=CacheControl().no_store(),
    )


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` structured type (RFC 6839), parameters ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def loads_bounded(body: bytes | str, *, max_depth: int = MAX_JSON_DEPTH,
                  max_string: int = MAX_STRING_CHARS, **json_options: Any) -> Any:
    """``json.loads(body, **json_options)``, refusing what is too deep or too long.

    Raises:
        JsonRefused: nesting deeper than ``max_depth`` (422 ``too_deep``) or a string longer
            than ``max_string`` characters (413 ``string_too_long``, with its path).
        ValueError: the bytes are not JSON (the caller answers that in its own words).
    """
    try:
        data = json.loads(body, **json_options)
    except RecursionError:
        raise _too_deep(max_depth) from None
    check_bounds(data, max_depth=max_depth, max_string=max_string)
    return data


def check_bounds(data: Any, *, max_depth: int = MAX_JSON_DEPTH,
                 max_string: int = MAX_STRING_CHARS) -> None:
    """Raise :class:`JsonRefused` if parsed JSON nests or stretches past the bounds.

    Walks with its own stack, never recursion, so any input is checked in constant stack.
    """
    pending: list[tuple[Any, list[str | int], int]] = [(data, [], 0)]
    while pending:
        value, loc, depth = pending.pop()
        if isinstance(value, str):
            if len(value) > max_string:
                raise _too_long(max_string, loc)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth >= max_depth:
            raise _too_deep(max_depth)
        if isinstance(value, list):
            pending.extend((item, [*loc, i], depth + 1) for i, item in enumerate(value))
            continue
        for key, item in value.items():
            if len(key) > max_string:
                raise _too_long(max_string, loc)  # the key itself is not echoed
            pending.append((item, [*loc, key], depth + 1))


def _too_deep(max_depth: int) -> JsonRefused:
    return JsonRefused(422, "too_deep",
                       f"the body nests arrays and objects more than {max_depth} levels deep")


def _too_long(max_string: int, loc: list[str | int]) -> JsonRefused:
    return JsonRefused(413, "string_too_long",
                       f"a string in the body is longer than {max_string} characters", loc)


class Hardening:
    """ASGI middleware: refuse non-JSON bodies (415), then add the security headers.

    Args:
        app: The app to wrap (the whole Starlette stack, error middleware included).
        error_body: Builds the app's refusal body from ``(code, message)``.
        secure: The headers to add (default :func:`security_headers`).
    """

    def __init__(self, app: ASGIApp, *, error_body: ErrorBody,
                 secure: Secure | None = None, form_paths: tuple[str, ...] = ()) -> None:
        self._headers = SecureASGIMiddleware(app, secure=secure or security_headers())
        self._refusal = SecureASGIMiddleware(self._unsupported,
                                             secure=secure or security_headers())
        self._error_body = error_body
        self._form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and _has_non_json_body(scope, self._form_paths):
            await self._refusal(scope, receive, send)
            return
        await self._headers(scope, receive, send)

    async def _unsupported(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(self._error_body(
            "unsupported_media_type", "a request body must be JSON: send "
            "Content-Type: application/json")).encode()
        await send({"type": "http.response.start", "status": 415, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"accept", b"application/json"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _has_non_json_body(scope: Scope, form_paths: tuple[str, ...] = ()) -> bool:
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", ()):
        headers[bytes(name).lower()] = bytes(value)
    length = headers.get(b"content-length", b"").strip()
    has_body = (length.isdigit() and int(length) > 0) or b"transfer-encoding" in headers
    if not has_body:
        return False
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    if form_paths and str(scope.get("path", "")).startswith(form_paths):
        media = content_type.split(";", 1)[0].strip().lower()
        if media == FORM_MEDIA_TYPE:
            return False
    return not is_json_media_type(content_type)


def harden(app: FastAPI, *, error_body: ErrorBody, secure: Secure | None = None,
           form_paths: tuple[str, ...] = ()) -> None:
    """Wrap ``app``'s whole middleware stack in :class:`Hardening` (outside its error
    middleware, so its 500s carry the headers too). ``form_paths``: path prefixes (a site's
    HTML pages) whose bodies may also be ``application/x-www-form-urlencoded`` forms."""
    build = app.build_middleware_stack

    def hardened() -> Any:
        return Hardening(build(), error_body=error_body, secure=secure, form_paths=form_paths)

    app.build_middleware_stack = hardened  # type: ignore[method-assign]
