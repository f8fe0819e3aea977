"""The worker's Prometheus endpoint exposes the engine's named series with the right counts.

A real worker (on a Temporal runtime exporting Prometheus on a free port, exactly as
``worker.py`` builds it) runs three known change-of-address requests against the reference
agencies: one through a short outage of the electoral roll (one retry), one plain, one whose
required tax step is rejected (the request fails). The scrape must then show exactly those
counts, labelled by service/agency/operation/status only.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.agency_directory import AgencyDirectory
from activities.metrics import EscalationInput, record_escalation
from definitions.catalog import Catalog
from intake.submissions import Submissions
from readmodel.migrations import apply_migrations
from readmodel.store import ReadModel, open_pool
from runtime import telemetry
from runtime.settings import Settings
from runtime.temporal import data_converter
from tests.e2e.conftest import EXAMPLES, Agencies, new_database
from worker import agency_http_session, build_worker

SERVICE = "change-of-address"
LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        labels = dict(LABEL.findall(match["labels"] or ""))
        samples.append(Sample(match["name"], labels, float(match["value"])))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@dataclass
class ObservedEngine:
    client: Client
    submissions: Submissions
    agencies: Agencies
    metrics_url: str
    task_queue: str
    runtime: Runtime

    async def run(self, data: dict[str, Any]) -> Any:
        submitted = await self.submissions.submit(SERVICE, data,
                                                  idempotency_key=str(uuid.uuid4()))
        handle = self.submissions.handle(submitted.reference)
        return await asyncio.wait_for(handle.result(), 60)

    async def scrape(self) -> list[Sample]:
        async with httpx.AsyncClient() as http:
            response = await http.get(self.metrics_url)
        response.raise_for_status()
        # every engine series of this test carries its own task queue: ignore other tests'
        return [s for s in parse(response.text)
                if s.labels.get("task_queue") in (None, self.task_queue)]


@pytest_asyncio.fixture
async def observed(
    temporal_address: str, postgres_server: str, agencies: Agencies, catalog: Catalog,
    encryption_key: bytes, task_queue: str,
) -> AsyncIterator[ObservedEngine]:
    address = telemetry.free_local_address()
    runtime: Runtime = telemetry.prometheus_runtime(address)
    client = await Client.connect(temporal_address, runtime=runtime,
                                  data_converter=data_converter(encryption_key))
    database_url = await new_database(postgres_server, "metrics")
    pool = await open_pool(database_url, max_size=5)
    await apply_migrations(pool)
    async with agency_http_session() as http:
        worker = build_worker(client, task_queue=task_queue, http=http,
                              read_model=ReadModel(pool),
                              directory=AgencyDirectory(agencies.env), sandboxed=True)
        async with worker:
            yield ObservedEngine(
                client=client,
                submissions=Submissions(client, catalog, task_queue=task_queue),
                agencies=agencies, metrics_url=f"http://{address}/metrics",
                task_queue=task_queue, runtime=runtime,
            )
    await pool.close()


def example() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{SERVICE}.json").read_text())
    return data


@workflow.defn(sandboxed=False)
class EscalateTwice:
    """Stands in for the workflow's escalation path: records two escalations."""

    @workflow.run
    async def run(self) -> None:
        for step in ("update_tax_address", "update_tax_address"):
            await workflow.execute_local_activity(
                "record_escalation",
                EscalationInput(service=SERVICE, step_id=step, agency="tax-authority"),
                start_to_close_timeout=timedelta(seconds=5),
            )


async def test_metrics_endpoint_counts_known_requests(observed: ObservedEngine) -> None:
    # 1. the electoral roll is down for ~1 s: one 503 (Retry-After), then a retry completes
    await observed.agencies.set_behaviour("electoral-registration",
                                          {"outage": {"duration_s": 1.0}})
    first = await observed.run(example())
    assert first.status == "completed"
    await observed.agencies.set_behaviour("electoral-registration", {})
    # 2. a plain request
    second = await observed.run(example())
    assert second.status == "completed"
    # 3. the tax authority refuses the required step: the request fails
    await observed.agencies.set_behaviour(
        "tax-authority", {"reject": {"code": "unknown_taxpayer", "reason": "No such taxpayer",
                                     "status": 409}})
    third = await observed.run(example())
    assert third.status == "failed"

    samples = await observed.scrape()
    names = {s.name for s in samples}

    # requests by service, end-to-end durations
    assert total(samples, telemetry.REQUESTS_STARTED, service=SERVICE) == 3
    assert total(samples, telemetry.REQUESTS_COMPLETED, service=SERVICE) == 2
    assert total(samples, telemetry.REQUESTS_FAILED, service=SERVICE) == 1
    assert total(samples, telemetry.REQUESTS_FINISHED, service=SERVICE, status="completed") == 2
    assert total(samples, telemetry.REQUESTS_FINISHED, service=SERVICE, status="failed") == 1
    duration = telemetry.REQUEST_DURATION
    assert total(samples, f"{duration}_count", service=SERVICE, status="completed") == 2
    assert total(samples, f"{duration}_count", service=SERVICE, status="failed") == 1
    assert total(samples, f"{duration}_sum", service=SERVICE, status="completed") >= 1.0
    assert total(samples, f"{duration}_bucket", service=SERVICE, status="completed",
                 le="+Inf") == 2

    # agency calls: outcome counter and latency histogram by agency and operation
    tax = {"agency": "tax-authority", "operation": "update-address"}
    assert total(samples, telemetry.AGENCY_CALLS, **tax, outcome="completed") == 2
    assert total(samples, telemetry.AGENCY_CALLS, **tax, outcome="rejected") == 1
    latency = telemetry.AGENCY_CALL_LATENCY
    assert total(samples, f"{latency}_count", **tax, outcome="completed") == 2
    assert total(samples, f"{latency}_count", **tax, outcome="rejected") == 1

    # retries: exactly the one after the outage
    roll = {"agency": "electoral-registration", "operation": "update-registration"}
    assert total(samples, telemetry.AGENCY_CALLS, **roll, outcome="unavailable") == 1
    assert total(samples, telemetry.AGENCY_CALL_RETRIES, **roll) == 1
    assert total(samples, telemetry.AGENCY_CALL_RETRIES) == 1

    # time waiting on each agency: one observation per final answer; the outage is in it
    wait = telemetry.AGENCY_WAIT
    assert total(samples, f"{wait}_count", **tax) == 3
    assert total(samples, f"{wait}_sum", **roll) >= 0.9
    assert total(samples, f"{wait}_count", **roll, outcome="unavailable") == 0

    # labels hold ids only: no reference, no submitted value
    secrets = {first.reference, second.reference, third.reference, "Alex Example",
               "TX12345678"}
    engine_samples = [s for s in samples if s.name.startswith("nwd_")]
    assert engine_samples
    for sample in engine_samples:
        assert set(sample.labels) <= {"service", "status", "agency", "operation", "action",
                                      "outcome", "step", "le", "namespace", "task_queue",
                                      "activity_type", "service_name"}, sample
        assert not secrets & set(sample.labels.values()), sample

    # the SDK's own runtime metrics come out of the same endpoint
    assert any(n.startswith("temporal_") for n in names), sorted(names)[:20]
    assert total(samples, "temporal_activity_execution_latency_count",
                 activity_type="call_agency") > 0


async def test_escalations_are_counted_by_the_record_escalation_activity(
    observed: ObservedEngine,
) -> None:
    queue = f"{observed.task_queue}-escalations"
    async with Worker(observed.client, task_queue=queue, workflows=[EscalateTwice],
                      activities=[record_escalation]):
        await observed.client.execute_workflow(EscalateTwice.run, id=f"esc-{uuid.uuid4()}",
                                               task_queue=queue)
    async with httpx.AsyncClient() as http:
        text = (await http.get(observed.metrics_url)).text
    samples = [s for s in parse(text) if s.labels.get("task_queue") == queue]
    assert total(samples, telemetry.ESCALATIONS, service=SERVICE, agency="tax-authority",
                 step="update_tax_address") == 2



# ------------------------------------------------------------------ the intake process
TOKEN = "test-codec-token"


def intake_app(observed: ObservedEngine, encryption_key: bytes) -> Any:
    from intake.app import create_app

    async def metrics_text() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(observed.metrics_url)).text

    return create_app(
        client=observed.client, submissions=observed.submissions, read_model=None,
        ui_url="http://127.0.0.1:8233", codec=data_converter(encryption_key).payload_codec,
        codec_token=TOKEN, metrics=metrics_text, meter=observed.runtime.metric_meter,
    )


async def test_intake_metrics_and_codec_server(
    observed: ObservedEngine, encryption_key: bytes
) -> None:
    from google.protobuf import json_format
    from temporalio.api.common.v1 import Payloads

    app = intake_app(observed, encryption_key)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as intake:
        submitted = await intake.post("/requests", json={"service": SERVICE,
                                                         "submission": example()})
        assert submitted.status_code == 202, submitted.text
        reference = submitted.json()["reference"]
        refused = await intake.post("/requests", json={"service": SERVICE, "submission": {}})
        assert refused.status_code == 422

        # GET /metrics: the intake's own counter and the SDK's client metrics, one endpoint
        scraped = await intake.get("/metrics")
        assert scraped.status_code == 200
        samples = parse(scraped.text)
        assert total(samples, telemetry.SUBMISSIONS, service=SERVICE, outcome="created") == 1
        assert total(samples, telemetry.SUBMISSIONS, service=SERVICE, outcome="invalid") == 1
        assert any(s.name.startswith("temporal_request") for s in samples)

        # the history holds only ciphertext ...
        handle = observed.client.get_workflow_handle(reference)
        await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        sealed = json_format.MessageToDict(started.input)
        assert sealed["payloads"][0]["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="
        assert b"Alex Example" not in started.input.SerializeToString()

        # ... which the codec server opens for a caller with the token (as the UI does)
        ui = {"Origin": "http://localhost:8233", "X-Namespace": "default"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            denied = await intake.post("/codec/decode", json=sealed, headers={**ui, **headers})
            assert denied.status_code == 401
        opened = await intake.post("/codec/decode", json=sealed,
                                   headers={**ui, "Authorization": f"Bearer {TOKEN}"})
        assert opened.status_code == 200
        assert opened.headers["access-control-allow-origin"] == "http://localhost:8233"
        plain = json_format.ParseDict(opened.json(), Payloads())
        assert plain.payloads[0].metadata["encoding"] == b"json/plain"
        assert b"Alex Example" in plain.payloads[0].data

        # the embedded stack's UI endpoint carries the token in its path instead
        in_path = await intake.post(f"/codec/{TOKEN}/decode", json=sealed, headers=ui)
        assert in_path.status_code == 200 and in_path.json() == opened.json()
        wrong_path = await intake.post("/codec/not-the-token/decode", json=sealed, headers=ui)
        assert wrong_path.status_code == 401

        # encode then decode gives the payload back
        encoded = await intake.post("/codec/encode", json=opened.json(),
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        assert encoded.status_code == 200
        again = json_format.ParseDict(encoded.json(), Payloads())
        assert again.payloads[0].metadata["encoding"] == b"binary/encrypted"
        assert again.payloads[0].data != plain.payloads[0].data
        decoded = await intake.post("/codec/decode", json=encoded.json(),
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        assert decoded.json() == opened.json()

        # CORS preflight: the UI's origins only
        for origin in ("http://localhost:8233", "http://127.0.0.1:8233"):
            preflight = await intake.options("/codec/decode", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace"})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
        stranger = await intake.options("/codec/decode", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert stranger.status_code == 403
        assert "access-control-allow-origin" not in stranger.headers
        garbage = await intake.post("/codec/decode", content=b"not json",
                                    headers={"Authorization": f"Bearer {TOKEN}"})
        assert garbage.status_code == 400


def test_tracing_switch_is_off_by_default_and_says_when_it_cannot_trace() -> None:
    import importlib.util

    from structlog.testing import capture_logs

    assert Settings().otel is False
    assert Settings(otel="1").otel
    assert telemetry.tracing_interceptors(False) == []
    with capture_logs() as logs:
        interceptors = telemetry.tracing_interceptors(True)
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        assert interceptors == []
        assert [entry["event"] for entry in logs] == ["tracing_unavailable"]
        assert "not installed" in logs[0]["reason"]
    else:
        from temporalio.contrib.opentelemetry import TracingInterceptor

        assert [type(i) for i in interceptors] == [TracingInterceptor]
