"""The front door during a Temporal outage: 503 with Retry-After on every route, nothing half
done, and the same submission creates exactly one request once Temporal is back.

The dev server is the test's own (file-backed, on free ports), stopped and started again on
the same database file; the read model is a real PostgreSQL database; the intake is the app
``python -m intake`` serves (``build_app``), on uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import Client
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from definitions.loader import load_catalog
from intake.app import build_app
from intake.errors import RETRY_AFTER_S
from nwd.stack import Stack
from readmodel.migrations import apply_migrations
from readmodel.store import ReadModel, open_pool
from runtime import callback_tokens, metric_names
from runtime.messages import request_reference
from runtime.process import free_port
from runtime.settings import DEFAULT_CATALOG_DIR, Settings
from runtime.temporal import data_converter
from tests.conftest import new_database, quiet_stack
from tests.identity import Issuer
from tests.keys import agency_signed, keyring, serving_jwks
from tests.polling import eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "change-of-address.json"
ELECTORAL = keyring("electoral-registration")


@dataclass
class Intake:
    http: httpx.AsyncClient
    client: Client
    pool: asyncpg.Pool
    settings: Settings
    metrics: MetricBuffer

    async def rows(self) -> tuple[int, int]:
        """(requests, request_events) in the read model."""
        return (await self.pool.fetchval("SELECT count(*) FROM requests"),
                await self.pool.fetchval("SELECT count(*) FROM request_events"))

    def counted(self) -> dict[str, float]:
        """The submissions counter's increments by outcome, and the started counter's total."""
        totals: dict[str, float] = {}
        for update in self.metrics.retrieve_updates():
            if update.metric.name == metric_names.SUBMISSIONS:
                outcome = str(update.attributes["outcome"])
                totals[outcome] = totals.get(outcome, 0) + update.value
            elif update.metric.name == metric_names.REQUESTS_STARTED:
                totals["started"] = totals.get("started", 0) + update.value
        return totals


@pytest.fixture
def own_temporal(tmp_path: Path) -> Iterator[Stack]:
    """A file-backed dev server of this test's own, so the test may stop and start it."""
    stack = quiet_stack(tmp_path / "state", start_timeout=60)
    try:
        stack.up(["temporal"])
        yield stack
    finally:
        stack.down()


@asynccontextmanager
async def serving(client: Client, key: bytes, database_url: str,
                  issuer: Issuer | None = None) -> AsyncIterator[Intake]:
    """The app ``python -m intake`` serves, on uvicorn on a free port, over ``client`` and a
    migrated read model at ``database_url``; stopped afterwards."""
    async with serving_jwks(ELECTORAL) as jwks_url, \
            _serving(client, key, database_url, jwks_url, issuer) as intake:
        yield intake


@asynccontextmanager
async def _serving(client: Client, key: bytes, database_url: str,
                   jwks_url: str, issuer: Issuer | None) -> AsyncIterator[Intake]:
    pool = await open_pool(database_url, max_size=5)
    await apply_migrations(pool)
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    port = free_port()
    settings = Settings.build(
        task_queue=f"tq-{uuid.uuid4()}", intake_url=f"http://127.0.0.1:{port}",
        encryption_key=base64.b64encode(key).decode(), codec_token="t",
        agency_env={"NWD_AGENCY_ELECTORAL_REGISTRATION_JWKS_URL": jwks_url},
        reference_key="outage-tests-" * 4,
        **({"oidc_issuer": issuer.url} if issuer is not None else {}),
    )
    app = build_app(settings, client=client, catalog=load_catalog(DEFAULT_CATALOG_DIR),
                    read_model=ReadModel(pool), meter=runtime.metric_meter)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        assert server.started

    try:
        await eventually(started, within_s=5, every_s=0.02)
        async with httpx.AsyncClient(base_url=settings.intake_url, timeout=60) as http:
            yield Intake(http, client, pool, settings, buffer)
    finally:
        server.should_exit = True
        await task
        await pool.close()


@pytest_asyncio.fixture
async def intake(own_temporal: Stack, postgres_server: str,
                 oidc_issuer: Issuer) -> AsyncIterator[Intake]:
    """The intake on a dev server of the test's own and the session's PostgreSQL, trusting
    the session's OIDC provider."""
    key = os.urandom(32)
    client = await Client.connect(own_temporal.temporal_address,
                                  data_converter=data_converter(key))
    async with serving(client, key, await new_database(postgres_server, "intake"),
                       oidc_issuer) as running:
        yield running


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Stack]:
    """A PostgreSQL of this test's own, so the test may stop and start it."""
    stack = quiet_stack(tmp_path / "pg-state", start_timeout=60)
    try:
        stack.up(["postgres"])
        yield stack
    finally:
        stack.down()


@pytest_asyncio.fixture
async def intake_on_own_postgres(temporal_env: WorkflowEnvironment,
                                 own_postgres: Stack) -> AsyncIterator[Intake]:
    """The intake on the session's dev server and a PostgreSQL of the test's own."""
    key = os.urandom(32)
    config = temporal_env.client.config()
    config["data_converter"] = data_converter(key)
    async with serving(Client(**config), key, await new_database(own_postgres.postgres_dsn)) \
            as running:
        yield running


def submission(key: str) -> tuple[dict[str, Any], dict[str, str]]:
    body = {"service": "change-of-address", "submission": json.loads(EXAMPLE.read_text())}
    return body, {"Idempotency-Key": key}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    body = response.json()
    assert body["code"] == "temporarily_unavailable" and "again" in body["message"]


class TestTemporalOutage:
    @pytest.mark.timeout(120)
    async def test_every_route_answers_503_then_the_same_submission_creates_one_request(
        self, intake: Intake, own_temporal: Stack, oidc_issuer: Issuer
    ) -> None:
        """While the server is down: 503 + Retry-After on each route, the record still shown,
        no row or event written, nothing counted as created; once it is back, the submission
        sent again with its key creates exactly one request."""
        first_key, later_key = str(uuid.uuid4()), str(uuid.uuid4())
        before = await intake.http.post("/requests", json=submission(first_key)[0],
                                        headers=submission(first_key)[1])
        assert before.status_code == 202, before.text
        existing = before.json()["reference"]
        owner = {"X-Access-Code": before.json()["access_code"]}
        caseworker = {"Authorization": f"Bearer {await oidc_issuer.sign_in('caseworker')}"}
        reference_key = intake.settings.reference_secret()
        later = request_reference("change-of-address", later_key, reference_key)
        never = request_reference("change-of-address", "never", reference_key)
        token = callback_tokens.issue(
            callback_tokens.callback_key(intake.settings.payload_key()),
            callback_tokens.CallbackTarget(existing, "update_voter_registration", None,
                                           "electoral-registration"))
        callback = json.dumps({"status": "completed", "agency_reference": "ER-1",
                               "output": {}}).encode()
        rows_before = await intake.rows()
        intake.counted()  # drop the first submission's increments

        await asyncio.to_thread(own_temporal.down, ["temporal"])
        body, headers = submission(later_key)
        (submitted, answered, decided, cancelled, called_back, status, unknown) = (
            await asyncio.gather(
                intake.http.post("/requests", json=body, headers=headers),
                intake.http.post(f"/requests/{existing}/information", json={
                    "step_id": "update_tax_address", "answers": {"proof_of_address": "bill"}},
                    headers=owner),
                intake.http.post(f"/requests/{existing}/decisions", json={
                    "step_id": "approve", "approve": True}, headers=caseworker),
                intake.http.post(f"/requests/{existing}/cancel", json={}, headers=owner),
                intake.http.post(f"/callbacks/{token}", content=callback, headers=agency_signed(
                    ELECTORAL, f"{intake.settings.intake_url}/callbacks/{token}", callback)),
                intake.http.get(f"/requests/{existing}", headers=owner),
                intake.http.get(f"/requests/{never}"),
            ))
        for response in (submitted, answered, decided, cancelled, called_back):
            assert_unavailable(response)
        # nobody holds access to a request that was never made: the read model says so
        assert unknown.status_code == 404, unknown.text
        assert status.status_code == 200, status.text
        view = status.json()
        assert view["record"]["reference"] == existing and view["record"]["status"] == "running"
        assert "live" not in view
        assert view["live_unavailable"]["code"] == "temporarily_unavailable"
        assert await intake.rows() == rows_before  # the taken-back row left no trace
        assert intake.counted() == {"unavailable": 1}

        await asyncio.to_thread(own_temporal.up, ["temporal"])
        again = await intake.http.post("/requests", json=body, headers=headers)
        assert again.status_code == 202, again.text
        assert again.json() == {**again.json(), "reference": later, "created": True}
        twice = await intake.http.post("/requests", json=body, headers=headers)
        assert twice.status_code == 200 and twice.json()["created"] is False
        assert await intake.rows() == (rows_before[0] + 1, rows_before[1] + 1)
        assert intake.counted() == {"created": 1, "existing": 1, "started": 1}

        async def one_run() -> None:
            runs = [w async for w in intake.client.list_workflows(f"WorkflowId = '{later}'")]
            assert len(runs) == 1

        await eventually(one_run, within_s=10)


class TestReadModelOutage:
    @pytest.mark.timeout(120)
    async def test_a_submission_is_503_and_starts_nothing_while_postgresql_is_down(
        self, intake_on_own_postgres: Intake, own_postgres: Stack
    ) -> None:
        """The row cannot be written, so the request is not started (no workflow with its
        reference exists) and the answer is 503; once PostgreSQL is back, the same submission
        creates the request and its row."""
        intake = intake_on_own_postgres
        key = str(uuid.uuid4())
        reference = request_reference("change-of-address", key,
                                      intake.settings.reference_secret())
        body, headers = submission(key)
        await asyncio.to_thread(own_postgres.down, ["postgres"])
        refused = await intake.http.post("/requests", json=body, headers=headers)
        assert_unavailable(refused)
        assert "read model" in refused.json()["message"]
        with pytest.raises(RPCError) as missing:
            await intake.client.get_workflow_handle(reference).describe()
        assert missing.value.status == RPCStatusCode.NOT_FOUND
        status = await intake.http.get(f"/requests/{reference}")
        assert_unavailable(status)  # no record to read, and no such workflow: may exist
        assert intake.counted() == {"unavailable": 1}

        await asyncio.to_thread(own_postgres.up, ["postgres"])

        async def accepted() -> None:
            response = await intake.http.post("/requests", json=body, headers=headers)
            assert response.status_code == 202, response.text

        await eventually(accepted, within_s=20, every_s=0.5)  # the pool reconnects
        assert (await intake.rows())[0] == 1
        assert (await intake.client.get_workflow_handle(reference).describe()).id == reference
        await intake.client.get_workflow_handle(reference).terminate("test finished")
