"""Templates, in the visitor's language.

One Jinja2 environment (autoescaped, with the ``i18n`` extension) renders every page. Its
``_``/``gettext``/``ngettext`` read the language of the current task (:mod:`i18n.catalogs`),
which :func:`page` sets for the request: ``?lang=``, then the ``nwd_lang`` cookie, then
``Accept-Language``, then English (:func:`i18n.languages.choose`). A service's own texts
(titles, labels, hints) are :data:`definitions.models.LocalizedText` dicts; templates pick the
page's language with the ``local`` filter, falling back to English.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from i18n import catalogs, languages

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
LANGUAGE_COOKIE = "nwd_lang"
LANGUAGE_COOKIE_MAX_AGE_S = 365 * 24 * 3600


def local(text: Mapping[str, str] | str | None, tag: str | None = None) -> str:
    """``text`` in ``tag`` (default: the page's language), else its base language, else
    English; a plain string as it is."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    tag = tag or catalogs.current()
    return text.get(tag) or text.get(tag.split("-")[0]) or text.get("en") or ""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml", "txt"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        catalogs.gettext, catalogs.ngettext, newstyle=True, pgettext=catalogs.pgettext)
    env.filters["local"] = local
    return env


ENVIRONMENT = _environment()


def language_of(request: Request) -> str:
    return languages.choose(
        asked=request.query_params.get("lang"),
        remembered=request.cookies.get(LANGUAGE_COOKIE),
        accept_language=request.headers.get("accept-language", ""),
    )


def page(request: Request, template: str, context: Mapping[str, Any] | None = None, *,
         status_code: int = 200, headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """Render ``template`` for ``request`` in its language, with the layout's context:
    ``language`` (a :class:`i18n.languages.Language`), ``languages`` (all of them),
    ``request``, ``path`` (this page, for the language switch) and ``session`` (what
    :mod:`.session` knows of the visitor)."""
    from intake.pages import session  # the session module imports this one

    tag = language_of(request)
    language = languages.by_tag(tag) or languages.describe(tag)
    with catalogs.use(tag):
        html = ENVIRONMENT.get_template(template).render(
            request=request, language=language, languages=languages.available(),
            path=request.url.path, path_query=request.url.query, visitor=session.visitor(request),
            csrf_token=session.csrf_token(request), **(context or {}))
    response = HTMLResponse(html, status_code=status_code, headers=dict(headers or {}))
    if request.query_params.get("lang") == tag:
        response.set_cookie(LANGUAGE_COOKIE, tag, max_age=LANGUAGE_COOKIE_MAX_AGE_S,
                            httponly=True, samesite="lax")
    return response
