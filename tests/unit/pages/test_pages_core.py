"""The pages' common parts: redirects stay on the site, forms are bounded, bodies checked."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agency_kit.hardening import harden
from intake.pages.forms import FORM_PATHS, MAX_FIELDS, FormRefused, read_form
from intake.pages.router import safe_next


@pytest.mark.parametrize(("target", "expected"), [
    ("/apply/x", "/apply/x"),
    ("/track?ref=1", "/track?ref=1"),
    ("//evil.example", "/"),
    ("https://evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("", "/"),
    (None, "/"),
    ("javascript:alert(1)", "/"),
])
def test_safe_next_only_follows_paths_of_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def _app() -> FastAPI:
    app = FastAPI()
    harden(app, error_body=lambda code, message: {"code": code, "message": message},
           form_paths=FORM_PATHS)

    @app.post("/apply/echo")
    async def echo(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await read_form(request, limit=64 * 1024))
        except FormRefused as exc:
            return JSONResponse({"refused": exc.message}, status_code=exc.status)

    @app.post("/requests")
    async def api() -> JSONResponse:
        return JSONResponse({})

    return app


FORM = {"content-type": "application/x-www-form-urlencoded"}


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t")


class TestForms:
    async def test_a_page_path_reads_url_encoded_fields_in_order(self) -> None:
        async with _client() as client:
            answer = await client.post("/apply/echo", content="a=1&b=x%20y&a=2&empty=",
                                       headers=FORM)
        assert answer.status_code == 200
        assert answer.json() == {"a": ["1", "2"], "b": ["x y"], "empty": [""]}

    async def test_an_api_path_still_refuses_a_form(self) -> None:
        """Only the pages take forms: the JSON API answers 415 before its route runs."""
        async with _client() as client:
            answer = await client.post("/requests", content="a=1", headers=FORM)
        assert answer.status_code == 415

    async def test_other_media_types_are_refused_on_page_paths_too(self) -> None:
        async with _client() as client:
            answer = await client.post("/apply/echo", content="a=1",
                                       headers={"content-type": "text/plain"})
        assert answer.status_code == 415

    @pytest.mark.parametrize(("body", "status"), [
        ("a=" + "x" * 70_000, 413),
        ("a=%ff%fe", 400),
        ("&".join(f"f{i}=1" for i in range(MAX_FIELDS + 1)), 400),
    ])
    async def test_oversized_or_unreadable_forms_are_refused(self, body: str, status: int) -> None:
        async with _client() as client:
            answer = await client.post("/apply/echo", content=body, headers=FORM)
        assert answer.status_code == status
