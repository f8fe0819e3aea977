"""The catalogue, the language switch and the static assets: the pages' common routes.

- ``GET /``: every service of the catalogue, searchable (``?q=``, in the page's language and
  in English), each linking to its start page.
- ``GET /language?lang=TAG&next=PATH``: remember a language (cookie) and go back to ``PATH``
  (a path of this site only); what the drop-down on every page submits.
- ``/static/...``: USWDS (vendored by ``make assets``) and the pages' own small CSS and JS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from definitions.catalog import Catalog
from i18n import languages
from intake.pages.render import (
    LANGUAGE_COOKIE,
    LANGUAGE_COOKIE_MAX_AGE_S,
    STATIC,
    language_of,
    local,
    page,
)


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (``/x``, not ``//host`` or a URL), else
    ``default``: a redirect parameter must not send the visitor elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC, check_dir=False)


def services_view(
    catalog: Catalog, query: str = "", tag: str | None = None
) -> list[dict[str, Any]]:
    """The catalogue's services matching ``query`` (every word, case-insensitive), each with
    its title and description in ``tag`` (default: the current task's language)."""
    words = query.casefold().split()
    found = []
    for definition in catalog.services.values():
        title = local(definition.title, tag)
        description = local(definition.description, tag)
        haystack = " ".join([title, description, local(definition.title, "en"),
                             local(definition.description, "en"), definition.service]).casefold()
        if all(word in haystack for word in words):
            found.append({"id": definition.service, "title": title,
                          "description": description})
    return sorted(found, key=lambda s: str(s["title"]).casefold())


def router(catalog: Catalog) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get("/")
    async def catalogue(request: Request, q: str = "") -> Response:
        query = q.strip()[:200]
        # The page's language is set while the template renders; the titles are picked now.
        return page(request, "catalogue.html", {
            "query": query, "services": services_view(catalog, query, language_of(request)),
            "total": len(catalog.services)})

    @routes.get("/language")
    async def choose_language(request: Request, lang: str = "", next: str = "/") -> Response:
        response = RedirectResponse(safe_next(next), status_code=303)
        if lang in languages.tags():
            response.set_cookie(LANGUAGE_COOKIE, lang, max_age=LANGUAGE_COOKIE_MAX_AGE_S,
                                httponly=True, samesite="lax")
        return response

    return routes
