"""The API's refusals, as pages: one place that turns a 401, 403, 404, 429 or 503 into a page
a person understands, in their language, with what to do next.

The access rule answers the JSON API's refusals (:mod:`intake.access`: a JSONResponse with a
status, a code and maybe ``Retry-After``); the pages keep its status — a stranger gets the very
404 of a reference that does not exist — and show words instead of JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from i18n import catalogs
from i18n.catalogs import gettext as _
from intake.pages import session
from intake.pages.forms import Form, FormRefused, read_form
from intake.pages.render import language_of, page

log = structlog.get_logger(__name__)


def message(request: Request, status: int, title: str, text: str, *,
            link: tuple[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """A page saying ``title`` and ``text`` (already in the page's language), with an
    optional ``(href, words)`` link, answered with ``status``."""
    return page(request, "track/message.html", {"title": title, "text": text, "link": link},
                status_code=status, headers=headers)


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/sign-in?next={quote(target, safe='')}"


def page_for(request: Request, refusal: JSONResponse) -> Response:
    """The page of an access refusal (see the module docstring)."""
    return for_status(request, refusal.status_code, refusal.headers.get("retry-after"))


def for_status(request: Request, status: int, retry_after: str | None = None) -> Response:
    """The page of a refusal with ``status`` (401, 403, 429, 503; anything else: 404)."""
    with catalogs.use(language_of(request)):
        if status == 401:
            # the session's token no longer verifies (it expired): forget it, ask again
            session.sign_out(request)
            return message(request, 401, _("Please sign in again"),
                           _("Your sign-in has expired. Sign in again to go on."),
                           link=(sign_in_url(request), _("Sign in")))
        if status == 429:
            wait = retry_after or "300"
            return message(request, 429, _("Too many attempts"),
                           _("There have been too many wrong attempts. Try again in "
                             "%(seconds)s seconds.") % {"seconds": wait},
                           headers={"Retry-After": wait})
        if status == 503:
            return message(request, 503, _("Sorry, there is a problem with the service"),
                           _("We cannot reach part of the service just now. Nothing was lost: "
                             "try again in a minute."), headers={"Retry-After": "30"})
        if status == 403:
            return forbidden(request)
        return not_found(request)


async def posted(request: Request, *,
                 forged: Callable[[Request], Response] | None = None) -> Form | Response:
    """The fields of a page's POST, or the page refusing it: a body that cannot be read (its
    status: 400, 413, 415), or a form without the session's CSRF token (403, nothing done;
    ``forged`` renders that page, default :func:`forbidden`)."""
    try:
        form = await read_form(request)
    except FormRefused as exc:
        with catalogs.use(language_of(request)):
            return message(request, exc.status, _("The form could not be read"), exc.message)
    if not session.csrf_ok(request, form):
        log.info("page_form_refused", path=request.url.path, reason="csrf")
        if forged is not None:
            return forged(request)
        with catalogs.use(language_of(request)):
            return forbidden(request)
    return form


def not_found(request: Request) -> Response:
    return message(request, 404, _("Page not found"),
                   _("There is no request with that reference that you can see. Check the "
                     "reference, or sign in, or enter its access code."),
                   link=("/track", _("Check a request")))


def forbidden(request: Request) -> Response:
    """A form whose CSRF token is missing or wrong: nothing was done."""
    return message(request, 403, _("This form has expired"),
                   _("Nothing was changed. Go back, reload the page and send the form again."))
