"""Hardening of every HTTP app, against the real stack: the intake and the reference agencies.

- security headers on every response, errors included, of both apps;
- a body that is not JSON: 415; nesting past 32 levels: 422 ``too_deep`` (a body 3,000 deep
  made the agencies answer 500, RecursionError); a string past 16,384 characters: 413
  ``string_too_long`` with its path — each refused before anything is written or started;
- the same ``Idempotency-Key`` with another body: 409 ``idempotency_conflict``, and the first
  request stays the only one, with its own input;
- production (``NWD_DEPLOYMENT=production``, ``python -m intake`` and ``python -m
  agency_kit`` as processes): no ``/docs``, ``/openapi.json``, ``/redoc`` or ``/_admin``,
  no token-in-path codec endpoint, and ``/metrics`` only with its bearer token;
- ``/docs`` in development loads nothing from another origin.

"Nothing changed" is checked where it could: the engine's ``requests`` and
``submission_digests`` rows, the workflows on the test's task queue, the agencies' records.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from agency_kit.hardening import MAX_JSON_DEPTH, MAX_STRING_CHARS
from definitions.catalog import Catalog
from runtime.process import free_port
from tests.conftest import new_database
from tests.e2e.conftest import Agencies, Engine, example
from tests.integration.intake_process import running_intake
from tests.keys import ENGINE
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "change-of-address"
AGENCY = "driver-licensing"
OPERATION = "update-address"
EXPECTED_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def assert_hardened(response: httpx.Response) -> None:
    """The security headers of :mod:`agency_kit.hardening`, whatever the status."""
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, f"{where}: {name}"
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, where
    assert "script-src 'self'" in csp, where


async def engine_rows(engine: Engine) -> tuple[int, int]:
    async with engine.pool.acquire() as conn:
        return (await conn.fetchval("SELECT count(*) FROM requests"),
                await conn.fetchval("SELECT count(*) FROM submission_digests"))


async def workflows_on(client: Client, task_queue: str) -> list[str]:
    return [w.id async for w in client.list_workflows(f'TaskQueue="{task_queue}"')]


async def assert_nothing_changed(engine: Engine, agencies: Agencies) -> None:
    assert await engine_rows(engine) == (0, 0)
    assert await workflows_on(engine.client, engine.task_queue) == []
    assert await agencies.records(AGENCY) == []


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def agency_call(agencies: Agencies, body: bytes,
                content_type: str = "application/json") -> dict[str, Any]:
    """A call of ``body`` to the driver-licensing agency, signed as the engine signs it."""
    url = f"{agencies.url}/agencies/{AGENCY}/operations/{OPERATION}"
    return {"url": url, "content": body,
            "headers": ENGINE.signer().request_headers("POST", url, body, {
                "Content-Type": content_type, "Idempotency-Key": "R-1:s:-"})}


class TestSecurityHeaders:
    async def test_every_intake_answer_carries_them(self, engine: Engine) -> None:
        """Success, 404, 405, 415, 422 and the codec's refusals all carry the headers."""
        intake = engine.intake
        answers = [
            await intake.get("/health"),
            await intake.get("/services"),
            await intake.get("/no/such/route"),
            await intake.delete("/requests"),
            await intake.post("/requests", content=b"x", headers={"Content-Type": "text/plain"}),
            await intake.post("/requests", json={"service": SERVICE, "submission": {}}),
            await intake.get("/requests/no-such-reference"),
            await intake.post("/codec/decode", json={"payloads": []}),
            await intake.get("/docs"),
            await intake.get("/openapi.json"),
        ]
        assert [a.status_code for a in answers] == [200, 200, 404, 405, 415, 422, 404, 404,
                                                    200, 200]
        for answer in answers:
            assert_hardened(answer)
        submitted = await intake.post("/requests", json={"service": SERVICE,
                                                         "submission": example(SERVICE)})
        assert submitted.status_code == 202
        engine.started.append(submitted.json()["reference"])
        assert_hardened(submitted)

    async def test_every_agency_answer_carries_them(self, agencies: Agencies) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            answers = [
                await http.get(f"{agencies.url}/health"),
                await http.get(f"{agencies.url}/agencies/{AGENCY}/health"),
                await http.get(f"{agencies.url}/agencies/nobody/health"),
                await http.post(f"{agencies.url}/agencies/{AGENCY}/operations/{OPERATION}",
                                json={"reference": "R-1"}),  # unsigned: 401
                await http.post(**agency_call(agencies, b"x", "text/plain")),
                await http.get(f"{agencies.url}/_admin/agencies/{AGENCY}/records"),
            ]
        assert [a.status_code for a in answers] == [200, 200, 404, 401, 415, 200]
        for answer in answers:
            assert_hardened(answer)


class TestBodies:
    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                              None])
    async def test_a_body_that_is_not_json_is_415(
        self, engine: Engine, agencies: Agencies, content_type: str | None
    ) -> None:
        body = json.dumps({"service": SERVICE, "submission": example(SERVICE)}).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        refused = await engine.intake.post("/requests", content=body, headers=headers)
        assert refused.status_code == 415, refused.text
        assert refused.json()["code"] == "unsupported_media_type"
        call = agency_call(agencies, b'{"reference": "R-1", "step": "s", "input": {}}',
                           content_type or "")
        async with httpx.AsyncClient(timeout=10) as http:
            at_agency = await http.post(**call)
        assert at_agency.status_code == 415, at_agency.text
        assert at_agency.json()["code"] == "unsupported_media_type"
        await assert_nothing_changed(engine, agencies)

    async def test_json_with_a_charset_is_json(self, engine: Engine) -> None:
        body = json.dumps({"service": SERVICE, "submission": example(SERVICE)}).encode()
        accepted = await engine.intake.post("/requests", content=body, headers={
            "Content-Type": "application/json; charset=utf-8"})
        assert accepted.status_code == 202, accepted.text
        engine.started.append(accepted.json()["reference"])

    @pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 3_000, 100_000])
    async def test_deep_nesting_is_422_not_500(
        self, engine: Engine, agencies: Agencies, levels: int
    ) -> None:
        """At the intake and at an agency (which answered 500 before: RecursionError)."""
        body = ('{"service": "change-of-address", "submission": {"x": ' + deep(levels - 2)
                + "}}").encode()
        refused = await engine.intake.post("/requests", content=body,
                                           headers={"Content-Type": "application/json"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "too_deep"
        async with httpx.AsyncClient(timeout=10) as http:
            at_agency = await http.post(**agency_call(
                agencies, ('{"reference": "R-1", "step": "s", "input": ' + deep(levels - 1)
                           + "}").encode()))
        assert at_agency.status_code == 422, at_agency.text
        assert at_agency.json()["code"] == "too_deep"
        await assert_nothing_changed(engine, agencies)

    async def test_nesting_at_the_limit_is_read(self, engine: Engine) -> None:
        """32 levels are allowed: the answer is about the form (422 invalid_submission)."""
        body = ('{"service": "change-of-address", "submission": {"x": '
                + deep(MAX_JSON_DEPTH - 2) + "}}").encode()
        read = await engine.intake.post("/requests", content=body,
                                        headers={"Content-Type": "application/json"})
        assert read.status_code == 422, read.text
        assert read.json()["code"] == "invalid_submission"

    async def test_a_long_string_is_413_with_its_path(
        self, engine: Engine, agencies: Agencies
    ) -> None:
        long = "A" * (MAX_STRING_CHARS + 1)
        refused = await engine.intake.post("/requests", json={
            "service": SERVICE, "submission": {**example(SERVICE), "full_name": long}})
        assert refused.status_code == 413, refused.text
        assert refused.json()["code"] == "string_too_long"
        assert refused.json()["errors"][0]["loc"] == ["submission", "full_name"]
        long_key = await engine.intake.post("/requests", json={
            "service": SERVICE, "submission": {long: 1}})
        assert long_key.status_code == 413
        assert long not in long_key.text  # the key is not echoed
        body = json.dumps({"reference": "R-1", "step": "s", "input": {"name": long}}).encode()
        async with httpx.AsyncClient(timeout=10) as http:
            at_agency = await http.post(**agency_call(agencies, body))
        assert at_agency.status_code == 413, at_agency.text
        assert at_agency.json()["code"] == "string_too_long"
        assert at_agency.json()["errors"][0]["path"] == "input.name"
        await assert_nothing_changed(engine, agencies)


class TestIdempotencyConflict:
    async def test_the_same_key_with_another_body_is_409_and_changes_nothing(
        self, engine: Engine
    ) -> None:
        key = f"conflict-{uuid.uuid4()}"
        first = example(SERVICE)
        created = await engine.intake.post("/requests", json={"service": SERVICE,
                                                              "submission": first},
                                           headers={"Idempotency-Key": key})
        assert created.status_code == 202, created.text
        reference = created.json()["reference"]
        engine.started.append(reference)
        rows = await engine_rows(engine)

        other = {**first, "full_name": "Someone Else"}
        for body in ({"service": SERVICE, "submission": other},
                     {"service": SERVICE, "submission": first, "language": "es"}):
            conflict = await engine.intake.post("/requests", json=body,
                                                headers={"Idempotency-Key": key})
            assert conflict.status_code == 409, conflict.text
            assert conflict.json()["code"] == "idempotency_conflict"
            assert "different submission" in conflict.json()["message"]
            assert "Someone Else" not in conflict.text

        # The same body again (its keys in another order) still names the first request.
        again = await engine.intake.post(
            "/requests", content=json.dumps({"submission": dict(reversed(first.items())),
                                             "service": SERVICE}).encode(),
            headers={"Idempotency-Key": key, "Content-Type": "application/json"})
        assert again.status_code == 200, again.text
        assert again.json()["reference"] == reference

        assert await engine_rows(engine) == rows == (1, 1)
        assert await workflows_on(engine.client, engine.task_queue) == [reference]
        result = await engine.result(reference)
        assert result.status == "completed"
        history = await engine.client.get_workflow_handle(reference).fetch_history()
        assert b"Someone Else" not in history.events[0].SerializeToString()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def production(temporal_env: WorkflowEnvironment, postgres_server: str,
                     tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """``python -m intake`` with ``NWD_DEPLOYMENT=production`` and a metrics token."""
    async with running_intake(temporal_env, postgres_server, tmp_path_factory,
                              codec_token="prod-path-token", deployment="production",
                              metrics_token="prod-metrics-token") as intake:
        yield intake.url


@pytest_asyncio.fixture(loop_scope="session")
async def production_without_metrics_token(
    temporal_env: WorkflowEnvironment, postgres_server: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """``python -m intake`` with ``NWD_DEPLOYMENT=production`` and no ``NWD_METRICS_TOKEN``."""
    async with running_intake(temporal_env, postgres_server, tmp_path_factory,
                              codec_token="prod-path-token", deployment="production") as intake:
        yield intake.url


@pytest_asyncio.fixture(loop_scope="session")
async def production_agencies(postgres_server: str, catalog: Catalog,
                              tmp_path: Path) -> AsyncIterator[str]:
    """``python -m agency_kit`` with ``NWD_DEPLOYMENT=production``."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""),
           "DATABASE_URL": await new_database(postgres_server, "agencies"),
           "NWD_AGENCIES_URL": f"http://127.0.0.1:{port}", "NWD_DEPLOYMENT": "production",
           "NWD_LOG_FORMAT": "json"}
    log_path = tmp_path / "agencies.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agency_kit", cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            async def healthy() -> None:
                assert process.returncode is None, log_path.read_text()
                try:
                    response = await http.get(f"{base}/health")
                except httpx.TransportError as exc:
                    raise AssertionError(f"not listening yet: {exc!r}") from exc
                assert response.status_code == 200

            await eventually(healthy, within_s=20, every_s=0.1)
        yield base
    finally:
        process.terminate()
        await process.wait()


class TestProduction:
    async def test_the_intake_hides_docs_and_locks_metrics(self, production: str) -> None:
        async with httpx.AsyncClient(base_url=production, timeout=10) as http:
            for path in ("/docs", "/openapi.json", "/redoc", "/docs/swagger-ui-bundle.js"):
                hidden = await http.get(path)
                assert hidden.status_code == 404, path
                assert_hardened(hidden)
            assert (await http.get("/health")).status_code == 200
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": "prod-metrics-token"}):
                locked = await http.get("/metrics", headers=headers)
                assert locked.status_code == 401, headers
                assert locked.json()["code"] == "unauthorized"
                assert "temporal_" not in locked.text
            scraped = await http.get("/metrics",
                                     headers={"Authorization": "Bearer prod-metrics-token"})
            assert scraped.status_code == 200
            assert "temporal_" in scraped.text or "nwd_" in scraped.text
            # The dev UI's token-in-path codec endpoint does not exist in production.
            path_door = await http.post("/codec/prod-path-token/decode", json={"payloads": []})
            assert path_door.status_code == 404

    async def test_without_a_metrics_token_nobody_scrapes(
        self, production_without_metrics_token: str
    ) -> None:
        """Production without ``NWD_METRICS_TOKEN``: ``/metrics`` answers 401 to everyone
        (it was served openly), whatever bearer is sent."""
        async with httpx.AsyncClient(base_url=production_without_metrics_token,
                                     timeout=10) as http:
            for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
                locked = await http.get("/metrics", headers=headers)
                assert locked.status_code == 401, headers
                assert locked.json()["code"] == "unauthorized"
                assert "temporal_" not in locked.text and "nwd_" not in locked.text

    async def test_the_agencies_serve_no_admin_api(self, production_agencies: str) -> None:
        async with httpx.AsyncClient(base_url=production_agencies, timeout=10) as http:
            for method, path in (("GET", f"/_admin/agencies/{AGENCY}/records"),
                                 ("GET", f"/_admin/agencies/{AGENCY}/behaviour"),
                                 ("POST", "/_admin/reset")):
                hidden = await http.request(method, path)
                assert hidden.status_code == 404, path
                assert_hardened(hidden)
            assert (await http.get(f"/agencies/{AGENCY}/health")).status_code == 200


class TestDocs:
    async def test_docs_load_nothing_from_another_origin(self, engine: Engine) -> None:
        """The page and every asset it names come from the intake; no CDN, no /redoc."""
        intake = engine.intake
        page = await intake.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls, page.text
        assert not [u for u in urls if "//" in u], urls
        assert "<script>" not in page.text  # no inline script: the CSP allows none
        for url in urls:
            asset = await intake.get(url)
            assert asset.status_code == 200, url
            assert_hardened(asset)
            assert not re.search(rb"https?://[^\"' ]*(cdn|unpkg|jsdelivr)", asset.content), url
        start = await intake.get("/docs/start.js")
        assert "/openapi.json" in start.text and "validatorUrl: null" in start.text
        assert "http" not in page.headers["content-security-policy"]
        assert (await intake.get("/redoc")).status_code == 404
        assert (await intake.get("/docs/index.html")).status_code == 404
