"""Fault injection on the real stack: what every fault test shares.

A fault test runs the real engine — the dev server, PostgreSQL, a worker (in this process, or
worker processes it can SIGKILL), the intake, the reference agencies over HTTP — injects one
fault mid-flight, and then asserts the four things of docs/reliability.md ("Faults, one by
one") with :func:`assert_settled`:

1. every request reached its correct final state;
2. each agency effect happened exactly once, counted in the agencies' own tables;
3. the read model equals Temporal (``tests/consistency.py``);
4. nothing is stuck: no workflow still running, nothing still owed by an agency (no outcome
   due, no outbox row not delivered).

Most tests run the *drill* service: the voter roll answering by callback and the tax
authority synchronously, with short timeouts and quick retries, so that a fault and its
recovery take seconds, not the shipped services' minutes.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from definitions.catalog import Catalog
from definitions.loader import load_catalog
from runtime.messages import RequestResult, StepOutcome
from runtime.settings import DEFAULT_CATALOG_DIR
from tests.consistency import assert_read_model_equals_temporal
from tests.e2e.conftest import (
    Agencies,
    Engine,
    agencies,
    catalog,
    encryption_key,
    engine_client,
    example,
    running_engine,
)
from tests.polling import eventually
from tests.tiers import mark_folder
from workflows.request_workflow import CitizenRequestWorkflow

SHARED_FIXTURES = (agencies, catalog, encryption_key)
"""The e2e tier's fixtures, registered here by being imported (pytest finds them by name;
parameters of the same names below are those fixtures)."""

VOTER = "electoral-registration"
TAX = "tax-authority"
VOTER_STEP = "update_voter_registration"
TAX_STEP = "update_tax_address"
RETRY = "{initial_interval: 300ms, backoff: 1.5, max_interval: 2s, max_attempts: 12}"
DRILL_SERVICE = f"""\
service: fault-drill
version: 1
title: {{en: Fault drill}}
description:
  en: "The voter roll answers by callback and the tax authority at once; quick retries."
input:
  fields:
    full_name: {{type: text, personal: true}}
    date_of_birth: {{type: date, personal: true}}
    new_address: {{type: address, personal: true}}
    previous_address: {{type: address, personal: true}}
    tax_id: {{type: text, personal: true}}
    moved_on: {{type: date}}
steps:
  - id: {VOTER_STEP}
    agency: {VOTER}
    operation: update-registration
    mode: callback
    timeout: 2s
    retry: {RETRY}
    input:
      full_name: submission.full_name
      date_of_birth: submission.date_of_birth
      new_address: submission.new_address
      previous_address: submission.previous_address
    compensation:
      operation: revert-registration
      input:
        reference: output.reference
  - id: {TAX_STEP}
    agency: {TAX}
    operation: update-address
    timeout: 1s
    retry: {RETRY}
    input:
      tax_id: submission.tax_id
      new_address: submission.new_address
      moved_on: submission.moved_on
"""
DRILL_EFFECTS = {VOTER: 1, TAX: 1}
"""What one completed drill request does at the agencies: one record at each."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault test drives the whole engine: the ``e2e`` marker, by folder."""
    mark_folder(items, Path(__file__).parent, pytest.mark.e2e)


def drill_submission() -> dict[str, Any]:
    return {k: v for k, v in example("change-of-address").items() if k in (
        "full_name", "date_of_birth", "new_address", "previous_address", "tax_id", "moved_on")}


@pytest.fixture(scope="session")
def drill_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The shipped catalog plus the drill service."""
    folder = tmp_path_factory.mktemp("drill-catalog")
    shutil.copy(DEFAULT_CATALOG_DIR / "agencies.yaml", folder / "agencies.yaml")
    shutil.copytree(DEFAULT_CATALOG_DIR / "services", folder / "services",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (folder / "services" / "fault-drill.yaml").write_text(DRILL_SERVICE)
    return load_catalog(folder)


@pytest_asyncio.fixture
async def drill(
    temporal_env: WorkflowEnvironment, postgres_server: str, agencies: Agencies,
    drill_catalog: Catalog, encryption_key: bytes, task_queue: str,
) -> AsyncIterator[Engine]:
    """The engine (in-process worker) on the session's dev server, with the drill service."""
    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=drill_catalog, encryption_key=encryption_key,
        task_queue=task_queue,
    ) as engine:
        yield engine


async def submit_drill(engine: Engine, count: int) -> list[str]:
    """Submit ``count`` drill requests; their references."""
    return [await engine.submit("fault-drill", drill_submission()) for _ in range(count)]


def attempts(steps: Sequence[StepOutcome], step_id: str) -> int:
    """The attempts of every item of step ``step_id``, summed."""
    return sum(i.attempts for s in steps if s.step_id == step_id for i in s.items)


async def retried(engine: Engine, reference: str, *, times: int, within_s: float = 20,
                  client: Client | None = None) -> None:
    """Until one of the request's pending activities is on attempt ``times + 1`` or later
    (the server retries activities; the workflow sees only their final outcome)."""
    handle = (client or engine.client).get_workflow_handle(reference)

    async def probe() -> None:
        pending = (await handle.describe()).raw_description.pending_activities
        got = max((a.attempt for a in pending), default=0)
        assert got > times, f"pending activities at attempt {got}, waiting for {times + 1}"

    await eventually(probe, within_s=within_s, every_s=0.1)


async def records_by_reference(agencies: Agencies, agency: str) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in await agencies.records(agency):
        rows.setdefault(row["reference"], []).append(row)
    return rows


async def assert_settled(
    engine: Engine,
    references: Iterable[str],
    *,
    status: str = "completed",
    effects: Mapping[str, int] = DRILL_EFFECTS,
    undone: Mapping[str, int] | None = None,
    client: Client | None = None,
    within_s: float = 60,
) -> list[RequestResult]:
    """The four promises after a fault, for every request in ``references``.

    Args:
        status: the final status each request must have.
        effects: agency -> records (non-undo) each request must have there, exactly.
        undone: agency -> undo records each request must have there, exactly (default none);
            each undo must have reverted one of the request's records.
        client: the client of the server running the requests (default the engine's).
        within_s: how long the requests may take to end.
    """
    client = client or engine.client
    references = list(references)
    results = [await asyncio.wait_for(
        client.get_workflow_handle_for(CitizenRequestWorkflow.run, ref).result(), within_s)
        for ref in references]
    problems = [f"{ref}: {r.status}; steps: {[(s.step_id, s.status, s.reason) for s in r.steps]}"
                for ref, r in zip(references, results, strict=True) if r.status != status]
    assert not problems, f"requests not {status}: {problems}"
    undone = dict(undone or {})
    for agency in sorted(set(effects) | set(undone)):
        rows = await records_by_reference(engine.agencies, agency)
        for ref in references:
            mine = rows.get(ref, [])
            done = [r for r in mine if not r["is_undo"]]
            undos = [r for r in mine if r["is_undo"]]
            assert len(done) == effects.get(agency, 0), (
                f"{ref}: {len(done)} effects at {agency}, expected {effects.get(agency, 0)}: "
                f"{[(r['operation'], r['status']) for r in done]}")
            assert len(undos) == undone.get(agency, 0), (
                f"{ref}: {len(undos)} undo records at {agency}, expected "
                f"{undone.get(agency, 0)}")
            assert sum(1 for r in done if r["reverted_at"] is not None) == len(undos)
    await assert_nothing_owed(engine.agencies, references, among=set(effects) | set(undone))
    for ref in references:
        await assert_read_model_equals_temporal(engine.read_model, client, ref)
    await assert_nothing_running(client, engine.started)
    return results


async def assert_nothing_owed(agencies: Agencies, references: Iterable[str], *,
                              among: Iterable[str] = (VOTER, TAX), within_s: float = 10) -> None:
    """No agency of ``among`` still owes one of ``references`` anything: no outcome still
    due (a record ``accepted`` with ``due_at``) and no callback still ``pending`` in its
    outbox; every callback it sent ended ``delivered``. An agency writes the delivery down
    once the intake has answered it: a moment after the request may have ended."""
    wanted = set(references)

    async def settled() -> None:
        owed: list[tuple[str, str, str]] = []
        for agency in sorted(among):
            owed += [(agency, row["reference"], f"outcome due {row['agency_reference']}")
                     for row in await agencies.records(agency)
                     if row["reference"] in wanted and row["due_at"] is not None]
            owed += [(agency, row["reference"], f"callback {row['state']} {row['key']}")
                     for row in await agencies.outbox(agency)
                     if row["reference"] in wanted and row["state"] != "delivered"]
        assert not owed, f"owed or undelivered (agency, request, what): {owed}"

    await eventually(settled, within_s=within_s, every_s=0.1)


async def assert_nothing_running(client: Client, references: Iterable[str]) -> None:
    """No workflow of ``references`` still runs (each was started by the test)."""
    for ref in references:
        described = await client.get_workflow_handle(ref).describe()
        assert described.status != WorkflowExecutionStatus.RUNNING, f"{ref} still runs"


async def wait_for_records(agencies: Agencies, agency: str, references: Iterable[str],
                           *, within_s: float = 20) -> None:
    """Until ``agency`` has a record of each of ``references``."""
    wanted = set(references)

    async def recorded() -> None:
        rows = await records_by_reference(agencies, agency)
        missing = wanted - set(rows)
        assert not missing, f"{agency} has no record yet of {sorted(missing)}"

    await eventually(recorded, within_s=within_s, every_s=0.05)
