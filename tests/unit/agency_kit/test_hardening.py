"""The hardening layer on its own: headers on every answer (a 500 too), 415, JSON bounds."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from agency_kit.hardening import (
    MAX_JSON_DEPTH,
    MAX_STRING_CHARS,
    JsonRefused,
    check_bounds,
    harden,
    is_json_media_type,
    loads_bounded,
)


def app() -> FastAPI:
    built = FastAPI()

    @built.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        return {"length": len(await request.body())}

    @built.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    harden(built, error_body=lambda code, message: {"code": code, "message": message})
    return built


async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.request(method, path, **kwargs)


class TestHeaders:
    @pytest.mark.parametrize(("method", "path"), [("POST", "/echo"), ("GET", "/boom"),
                                                  ("GET", "/missing")])
    async def test_every_answer_has_them_even_a_500(self, method: str, path: str) -> None:
        """Starlette answers a 500 outside the app's own middleware; the layer is outside."""
        response = await call(method, path, json={})
        assert response.status_code in (200, 404, 500)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert response.headers["referrer-policy"] == "no-referrer"

    async def test_a_500_is_one(self) -> None:
        assert (await call("GET", "/boom")).status_code == 500


class TestMediaType:
    @pytest.mark.parametrize("value", ["application/json", "Application/JSON; charset=utf-8",
                                       "application/cloudevents+json"])
    def test_json_types(self, value: str) -> None:
        assert is_json_media_type(value)

    @pytest.mark.parametrize("value", ["", "text/plain", "application/jsonp", "text/json",
                                       "multipart/form-data; boundary=x"])
    def test_other_types(self, value: str) -> None:
        assert not is_json_media_type(value)

    async def test_a_body_of_another_type_is_415_before_the_route(self) -> None:
        response = await call("POST", "/echo", content=b"{}",
                              headers={"Content-Type": "text/plain"})
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"
        assert response.headers["x-content-type-options"] == "nosniff"

    async def test_no_body_needs_no_type(self) -> None:
        assert (await call("POST", "/echo")).status_code == 200

    async def test_a_chunked_body_is_a_body(self) -> None:
        async def chunks() -> Any:
            yield b"{}"

        response = await call("POST", "/echo", content=chunks(),
                              headers={"Content-Type": "text/plain"})
        assert response.status_code == 415


class TestBounds:
    def test_depth_at_the_limit_passes(self) -> None:
        nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
        assert loads_bounded(nested) is not None

    @pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 3_000, 200_000])
    def test_deeper_is_422_without_recursion(self, levels: int) -> None:
        with pytest.raises(JsonRefused) as refused:
            loads_bounded("[" * levels + "]" * levels)
        assert (refused.value.status, refused.value.code) == (422, "too_deep")

    def test_a_long_value_is_413_with_its_path(self) -> None:
        body = json.dumps({"a": [{"b": "x" * (MAX_STRING_CHARS + 1)}]})
        with pytest.raises(JsonRefused) as refused:
            loads_bounded(body)
        assert (refused.value.status, refused.value.code) == (413, "string_too_long")
        assert refused.value.loc == ["a", 0, "b"]

    def test_a_long_key_is_refused_at_its_object(self) -> None:
        with pytest.raises(JsonRefused) as refused:
            check_bounds({"a": {"k" * (MAX_STRING_CHARS + 1): 1}})
        assert refused.value.loc == ["a"]

    def test_the_longest_string_passes(self) -> None:
        check_bounds({"a": "x" * MAX_STRING_CHARS})

    def test_not_json_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="Expecting"):
            loads_bounded(b"{nope")
