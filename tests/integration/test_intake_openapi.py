"""The intake's OpenAPI document is complete and valid, the committed copy is what the app
serves, and schemathesis, run against the live intake with all its checks, finds nothing.

The intake is ``python -m intake`` itself (real uvicorn on a free port), on the session's dev
server, a fresh PostgreSQL database and the shipped catalog. Schemathesis runs as its command
line does, every phase and every check, with a fixed seed, deterministic generation and a
bounded number of examples, so a run is repeatable and takes well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from openapi_spec_validator import validate
from temporalio.testing import WorkflowEnvironment

from intake.openapi import OPENAPI_FILE, render
from tests.integration.intake_process import running_intake

CODEC_TOKEN = "schemathesis-codec-token"
SEED = 20261202
MAX_EXAMPLES = 12
"""Per operation and phase: ~1,000 requests in all, ~20 s on a shared 2-core machine."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live_intake(temporal_env: WorkflowEnvironment, postgres_server: str,
                      tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    async with running_intake(temporal_env, postgres_server, tmp_path_factory,
                              codec_token=CODEC_TOKEN) as intake:
        yield intake.url


async def served(url: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, object] = response.json()
    return document


class TestTheDocument:
    async def test_it_is_valid_openapi(self, live_intake: str) -> None:
        """openapi-spec-validator accepts what the live intake serves."""
        validate(await served(live_intake))  # raises with the path of the first problem

    async def test_the_committed_copy_is_what_the_app_serves(self, live_intake: str) -> None:
        """docs/openapi/intake.json equals GET /openapi.json; regenerate with
        ``.venv/bin/python -m intake.openapi``."""
        assert json.loads(OPENAPI_FILE.read_text()) == await served(live_intake), (
            "docs/openapi/intake.json is stale: run .venv/bin/python -m intake.openapi")
        assert OPENAPI_FILE.read_text() == render(json.loads(OPENAPI_FILE.read_text()))

    async def test_every_route_declares_its_bodies_answers_and_headers(
        self, live_intake: str
    ) -> None:
        """Every POST has a typed JSON body; every refusal is the one error shape; every route
        that may meet an outage declares 503 with Retry-After; Idempotency-Key is declared."""
        document = await served(live_intake)
        paths = document["paths"]
        assert isinstance(paths, dict)
        for path, operations in paths.items():
            for method, operation in operations.items():
                where = f"{method.upper()} {path}"
                if method == "post":
                    body = operation["requestBody"]["content"]["application/json"]["schema"]
                    assert body["$ref"].startswith("#/components/schemas/"), where
                for status, answer in operation["responses"].items():
                    if status.startswith(("4", "5")) and method != "options":
                        schema = answer["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, where
                    if status == "503":
                        assert answer["headers"]["Retry-After"]["required"] is True, where
        temporal_routes = ["/requests", "/requests/{reference}", "/callbacks/{token}",
                           "/requests/{reference}/information",
                           "/requests/{reference}/decisions", "/requests/{reference}/cancel"]
        for path in temporal_routes:
            assert any("503" in op["responses"] for op in paths[path].values()), path
        parameters = paths["/requests"]["post"]["parameters"]
        assert [p["name"] for p in parameters if p["in"] == "header"] == ["Idempotency-Key"]


class TestSchemathesis:
    @pytest.mark.timeout(170)
    async def test_every_check_passes_against_the_live_intake(
        self, live_intake: str, tmp_path: Path
    ) -> None:
        """All phases, all checks (not_a_server_error, status_code_conformance,
        content_type_conformance, response_schema_conformance, response_headers_conformance,
        negative_data_rejection, ...): no 500 and no answer outside the document."""
        command = [
            str(Path(sys.executable).with_name("schemathesis")), "run",
            f"{live_intake}/openapi.json",
            "--checks", "all", "--mode", "all",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
            "--generation-deterministic",
            # Text the intake refuses by rule, as the document says (422, tested in
            # test_intake_bad_input.py): no NUL, and only what UTF-8 can hold.
            "--generation-allow-x00", "false", "--generation-codec", "utf-8",
            "--workers", "1", "--request-timeout", "30", "--max-failures", "20",
            "--header", f"Authorization: Bearer {CODEC_TOKEN}",
            "--no-color", "--report", "junit", "--report-dir", str(tmp_path),
        ]
        process = await asyncio.create_subprocess_exec(
            *command, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # nothing from the caller's environment configures the run (hooks, a config file)
            env={k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")},
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        assert process.returncode == 0, text[-20_000:]
        assert "Test cases:" in text and "Coverage" in text and "Stateful" in text, text[-5_000:]
        print(text[text.index("SUMMARY"):])  # the counts, for `pytest -s` and the docs
