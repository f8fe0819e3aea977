"""The engine's Prometheus endpoints expose its named series with the right counts.

A real worker and intake, wired as ``worker.py`` and ``intake.__main__`` wire them, share a
Temporal runtime exporting Prometheus on a free port, so one scrape shows both processes'
series (in production each process has its own endpoint; sum them by service):

- three known change-of-address requests started as ``nwd submit`` starts them (the worker's
  start record counts them): one through a short outage of the electoral roll (one retry),
  one plain, one whose required tax step is rejected (the request fails);
- a request through the intake's ``POST /requests`` (the front door writes its first row and
  counts it), and the same idempotency key again (counted as a submission, not a request);
- a request of the tests' licensed-business service whose registration misses its 1 s
  deadline: the real workflow escalates it through ``notify_operator``.

Labels are service/agency/operation/status ids only.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client

from definitions.catalog import Catalog
from runtime import metric_names, telemetry
from runtime.messages import RequestResult
from runtime.process import free_address
from runtime.temporal import data_converter
from tests.e2e.conftest import Agencies, Engine, example, running_engine
from tests.identity import Issuer
from tests.polling import progress_until

SERVICE = "change-of-address"
LICENSED = "licensed-business"
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
    """The engine of ``running_engine`` on a client whose runtime exports Prometheus."""

    engine: Engine
    metrics_url: str

    async def scrape(self) -> list[Sample]:
        async with httpx.AsyncClient() as http:
            response = await http.get(self.metrics_url)
        response.raise_for_status()
        return parse(response.text)

    async def post_request(self, service: str, data: dict[str, Any],
                           key: str | None = None) -> httpx.Response:
        """``POST /requests`` on the intake, as a citizen's browser sends it."""
        response = await self.engine.intake.post(
            "/requests", json={"service": service, "submission": data},
            headers={"Idempotency-Key": key or str(uuid.uuid4())})
        if response.status_code == 202:
            self.engine.started.append(response.json()["reference"])
        return response


@asynccontextmanager
async def observed_engine(
    temporal_address: str, postgres_server: str, agencies: Agencies, catalog: Catalog,
    encryption_key: bytes, task_queue: str, issuer: Issuer | None = None,
) -> AsyncIterator[ObservedEngine]:
    address = free_address()
    runtime = telemetry.prometheus_runtime(address)
    client = await Client.connect(temporal_address, runtime=runtime,
                                  data_converter=data_converter(encryption_key))
    metrics_url = f"http://{address}/metrics"

    async def metrics_text() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(metrics_url)).text

    async with running_engine(
        client, postgres_server=postgres_server, agencies=agencies, catalog=catalog,
        encryption_key=encryption_key, task_queue=task_queue, meter=runtime.metric_meter,
        metrics=metrics_text, issuer=issuer,
    ) as engine:
        yield ObservedEngine(engine=engine, metrics_url=metrics_url)


@pytest_asyncio.fixture
async def observed(
    temporal_address: str, postgres_server: str, agencies: Agencies, catalog: Catalog,
    encryption_key: bytes, task_queue: str,
) -> AsyncIterator[ObservedEngine]:
    """An observed engine on the shipped catalog."""
    async with observed_engine(temporal_address, postgres_server, agencies, catalog,
                               encryption_key, task_queue) as observed:
        yield observed


@pytest_asyncio.fixture
async def observed_licensed(
    temporal_address: str, postgres_server: str, agencies: Agencies,
    licensed_catalog: Catalog, encryption_key: bytes, task_queue: str, oidc_issuer: Issuer,
) -> AsyncIterator[ObservedEngine]:
    """The tests' licensed-business service (tests/e2e/catalog), with its 1 s deadline."""
    async with observed_engine(temporal_address, postgres_server, agencies, licensed_catalog,
                               encryption_key, task_queue, oidc_issuer) as observed:
        yield observed


async def test_metrics_endpoint_counts_known_requests(observed: ObservedEngine) -> None:
    """Requests started outside the intake are counted by the worker's start record; calls,
    retries, waits and durations by the activities."""
    engine = observed.engine
    # started as `nwd submit`, the demo and the benchmark start them: no row at submit
    elsewhere = engine.submissions_for(engine.submissions.catalog)

    async def run(data: dict[str, Any]) -> RequestResult:
        submitted = await elsewhere.submit(SERVICE, data, idempotency_key=str(uuid.uuid4()))
        engine.started.append(submitted.reference)
        return await engine.result(submitted.reference)

    # 1. the electoral roll is down for ~1 s: one 503 (Retry-After), then a retry completes
    await engine.agencies.set_behaviour("electoral-registration",
                                        {"outage": {"duration_s": 1.0}})
    first = await run(example(SERVICE))
    assert first.status == "completed"
    await engine.agencies.set_behaviour("electoral-registration", {})
    # 2. a plain request
    second = await run(example(SERVICE))
    assert second.status == "completed"
    # 3. the tax authority refuses the required step: the request fails
    await engine.agencies.set_behaviour(
        "tax-authority", {"reject": {"code": "unknown_taxpayer", "reason": "No such taxpayer",
                                     "status": 409}})
    third = await run(example(SERVICE))
    assert third.status == "failed"

    samples = await observed.scrape()
    names = {s.name for s in samples}

    # requests by service, end-to-end durations
    assert total(samples, metric_names.REQUESTS_STARTED, service=SERVICE) == 3
    assert total(samples, metric_names.REQUESTS_COMPLETED, service=SERVICE) == 2
    assert total(samples, metric_names.REQUESTS_FAILED, service=SERVICE) == 1
    assert total(samples, metric_names.REQUESTS_FINISHED, service=SERVICE, status="completed") == 2
    assert total(samples, metric_names.REQUESTS_FINISHED, service=SERVICE, status="failed") == 1
    duration = metric_names.REQUEST_DURATION
    assert total(samples, f"{duration}_count", service=SERVICE, status="completed") == 2
    assert total(samples, f"{duration}_count", service=SERVICE, status="failed") == 1
    assert total(samples, f"{duration}_sum", service=SERVICE, status="completed") >= 1.0
    assert total(samples, f"{duration}_bucket", service=SERVICE, status="completed",
                 le="+Inf") == 2

    # agency calls: outcome counter and latency histogram by agency and operation
    tax = {"agency": "tax-authority", "operation": "update-address"}
    assert total(samples, metric_names.AGENCY_CALLS, **tax, outcome="completed") == 2
    assert total(samples, metric_names.AGENCY_CALLS, **tax, outcome="rejected") == 1
    latency = metric_names.AGENCY_CALL_LATENCY
    assert total(samples, f"{latency}_count", **tax, outcome="completed") == 2
    assert total(samples, f"{latency}_count", **tax, outcome="rejected") == 1

    # retries: exactly the one after the outage
    roll = {"agency": "electoral-registration", "operation": "update-registration"}
    assert total(samples, metric_names.AGENCY_CALLS, **roll, outcome="unavailable") == 1
    assert total(samples, metric_names.AGENCY_CALL_RETRIES, **roll) == 1
    assert total(samples, metric_names.AGENCY_CALL_RETRIES) == 1

    # time waiting on each agency: one observation per final answer; the outage is in it
    wait = metric_names.AGENCY_WAIT
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


async def test_the_intake_counts_a_new_request_once_and_a_repeated_key_not_again(
    observed: ObservedEngine,
) -> None:
    """A submission through the front door, which writes the request's first row (so the
    workflow skips its start record), is counted as started once, by the intake; the same
    idempotency key again is an `existing` submission and no new request."""
    key = str(uuid.uuid4())
    first = await observed.post_request(SERVICE, example(SERVICE), key)
    assert first.status_code == 202, first.text
    reference = first.json()["reference"]
    result = await observed.engine.result(reference)
    assert result.status == "completed"
    again = await observed.post_request(SERVICE, example(SERVICE), key)
    assert again.status_code == 200 and again.json()["created"] is False

    scraped = await observed.engine.intake.get("/metrics")
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    assert total(samples, metric_names.REQUESTS_STARTED, service=SERVICE) == 1
    assert total(samples, metric_names.REQUESTS_FINISHED, service=SERVICE) == 1
    assert total(samples, metric_names.SUBMISSIONS, service=SERVICE, outcome="created") == 1
    assert total(samples, metric_names.SUBMISSIONS, service=SERVICE, outcome="existing") == 1


async def test_a_missed_deadline_is_counted_and_audited_once(
    observed_licensed: ObservedEngine,
) -> None:
    """The registry answers 1.5 s after its 1 s deadline: the workflow escalates the step
    once through `notify_operator`, which counts it and writes the audit row."""
    engine = observed_licensed.engine
    await engine.agencies.set_behaviour(
        "business-registry", {"mode": "callback", "callback_delay_s": 2.5})
    submitted = await observed_licensed.post_request(LICENSED, example("register-a-business"))
    assert submitted.status_code == 202, submitted.text
    reference = submitted.json()["reference"]
    # the registry called back; the caseworker's decision is awaited
    await progress_until(engine.submissions.handle(reference), lambda p: any(
        s.step_id == "approve_trading" and s.status == "waiting" for s in p.steps), within_s=20)
    # well inside the decision's 2 s: no second escalation
    decided = await engine.decide(reference, "approve_trading", approve=True, subject="sam",
                                  roles=["licensing-officer"])
    assert decided.status_code == 200, decided.text
    result = await engine.result(reference)
    assert result.status == "completed"

    samples = await observed_licensed.scrape()
    assert total(samples, metric_names.ESCALATIONS, service=LICENSED,
                 step="register_company") == 1
    assert total(samples, metric_names.ESCALATIONS) == 1
    # the callback's wait is the workflow's own figure, in the activities' series
    assert total(samples, f"{metric_names.AGENCY_WAIT}_count", agency="business-registry",
                 operation="register-company", outcome="callback") == 1
    audit = await engine.pool.fetch(
        "SELECT step_id, detail FROM request_events WHERE reference = $1"
        " AND kind = 'escalated'", reference)
    assert [row["step_id"] for row in audit] == ["register_company"]
    assert json.loads(audit[0]["detail"])["role"] == "registry-liaison"
    row = await engine.read_model.get_request(reference)
    assert row is not None
    assert {s.step_id for s in row.steps if s.escalated} == {"register_company"}


async def test_intake_metrics(observed: ObservedEngine) -> None:
    """The intake's /metrics counts its submissions by outcome, and the SDK's client metrics
    (the codec server is tests/e2e/test_operators.py's)."""
    intake = observed.engine.intake
    submitted = await observed.post_request(SERVICE, example(SERVICE))
    assert submitted.status_code == 202, submitted.text
    refused = await intake.post("/requests", json={"service": SERVICE, "submission": {}})
    assert refused.status_code == 422

    # GET /metrics: the intake's own counter and the SDK's client metrics, one endpoint
    scraped = await intake.get("/metrics")
    assert scraped.status_code == 200
    samples = parse(scraped.text)
    assert total(samples, metric_names.SUBMISSIONS, service=SERVICE, outcome="created") == 1
    assert total(samples, metric_names.SUBMISSIONS, service=SERVICE, outcome="invalid") == 1
    assert any(s.name.startswith("temporal_request") for s in samples)
