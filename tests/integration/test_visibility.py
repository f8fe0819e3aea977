"""Every run is findable: a visibility query by each search attribute finds exactly the runs it
should on the real dev server, and the ``temporal`` CLI queries from docs/operations.md return
them too.

Four known requests on this test's own task queue: one change-of-address completed, one
register-a-business completed, one change-of-address whose required tax step is rejected
(failed), and one change-of-address held by the tax authority's request for information
(running, AgenciesAwaited = tax-authority). Visibility is eventually consistent (~1-2 s):
queries are polled.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from nwd.commands.report import setup_search_attributes
from nwd.stack import temporal_binary
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Engine, example
from tests.polling import eventually
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

# the e2e fixtures (a real worker, reference agencies, read model), shared with this module
agencies, catalog, engine = e2e.agencies, e2e.catalog, e2e.engine
encryption_key = e2e.encryption_key

COA, BIZ = "change-of-address", "register-a-business"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def ids(engine: Engine, query: str) -> set[str]:
    scoped = f'TaskQueue = "{engine.task_queue}" AND ({query})'
    return {wf.id async for wf in engine.client.list_workflows(scoped)}


async def listed(engine: Engine, query: str, expected: set[str]) -> None:
    """Within 15 s, the query lists exactly ``expected`` (visibility lags ~1-2 s)."""
    async def probe() -> None:
        found = await ids(engine, query)
        assert found == expected, f"{query}: found {sorted(found)}, expected {sorted(expected)}"

    await eventually(probe, within_s=15, every_s=0.25)


def cli_ids(address: str, query: str) -> set[str]:
    done = subprocess.run(
        [str(temporal_binary()), "workflow", "list", "--address", address,
         "--namespace", "default", "--query", query, "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    text = done.stdout.strip()
    if not text:
        return set()
    if text.startswith("["):
        rows = json.loads(text)
    else:  # one JSON object per line
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {row["execution"]["workflowId"] for row in rows}


async def test_each_search_attribute_finds_exactly_its_runs(
    engine: Engine, temporal_address: str
) -> None:
    services = engine.submissions.catalog
    before = datetime.now(UTC) - timedelta(seconds=1)

    done = await engine.submit(COA, example(COA))
    business = await engine.submit(BIZ, example(BIZ))
    assert (await engine.result(done)).status == "completed"
    assert (await engine.result(business)).status == "completed"

    await engine.agencies.set_behaviour(
        "tax-authority", {"reject": {"code": "unknown_taxpayer", "reason": "No such taxpayer",
                                     "status": 409}})
    failed = await engine.submit(COA, example(COA))
    assert (await engine.result(failed)).status == "failed"

    # held by the tax authority: it asked the citizen for more information (a long wait)
    await engine.agencies.set_behaviour("tax-authority", {"needs_information": {
        "fields": {"proof_of_address": {"type": "text"}}, "message": {"en": "Proof, please"}}})
    slow_submitted = datetime.now(UTC) - timedelta(milliseconds=1)
    slow = await engine.submit(COA, example(COA))
    everyone = {done, business, failed, slow}

    # held by the tax authority: the workflow says so in its search attributes
    await listed(engine, 'AgenciesAwaited IN ("tax-authority")', {slow})
    await listed(engine, 'RequestStatus = "running"', {slow})
    await listed(engine, 'RequestStatus = "completed"', {done, business})
    await listed(engine, 'RequestStatus = "failed"', {failed})
    await listed(engine, f'CitizenService = "{COA}"', {done, failed, slow})
    await listed(engine, f'CitizenService = "{BIZ}"', {business})
    coa_version = f"{COA}@{services.service(COA).version}#{services.content_hash(COA)[:12]}"
    await listed(engine, f'DefinitionVersion = "{coa_version}"', {done, failed, slow})
    await listed(engine, 'AgenciesInvolved IN ("business-registry")', {business})
    await listed(engine, 'AgenciesInvolved IN ("tax-authority")', everyone)
    await listed(engine, 'AgenciesInvolved IN ("electoral-registration")', {done, failed, slow})
    await listed(engine, "Escalated = false", everyone)
    await listed(engine, "Escalated = true", set())
    await listed(engine, f'SubmittedAt >= "{rfc3339(before)}"', everyone)
    await listed(engine, f'SubmittedAt >= "{rfc3339(slow_submitted)}"', {slow})
    await listed(engine, f'SubmittedAt < "{rfc3339(before)}"', set())
    # no personal data anywhere in them
    description = await engine.client.get_workflow_handle(slow).describe()
    values = json.dumps({k.name: str(v) for k, v in
                         ((p.key, p.value) for p in description.typed_search_attributes)})
    for secret in ("Alex Example", "TX12345678", "alex@example.org"):
        assert secret not in values

    # the ready-made query of docs/operations.md ("waiting on the tax authority for more than
    # N days"), with the cutoff at "now" instead of 5 days ago, through the temporal CLI
    cutoff = rfc3339(datetime.now(UTC) + timedelta(seconds=1))
    waiting = (f'CitizenService = "{COA}" AND AgenciesAwaited IN ("tax-authority") '
               f'AND SubmittedAt < "{cutoff}"')
    scope = f'TaskQueue = "{engine.task_queue}"'
    assert await asyncio.to_thread(cli_ids, temporal_address, f"{scope} AND {waiting}") == {slow}
    assert await asyncio.to_thread(
        cli_ids, temporal_address, f'{scope} AND RequestStatus = "failed"') == {failed}
    assert await asyncio.to_thread(
        cli_ids, temporal_address,
        f'{scope} AND CitizenService = "{COA}" AND RequestStatus != "running"',
    ) == {done, failed}
    # and the 5-days-ago form is valid syntax that (today) finds none of these runs
    five_days_ago = rfc3339(datetime.now(UTC) - timedelta(days=5))
    assert await asyncio.to_thread(
        cli_ids, temporal_address,
        f'{scope} AND CitizenService = "{COA}" AND AgenciesAwaited IN ("tax-authority") '
        f'AND SubmittedAt < "{five_days_ago}"') == set()


async def test_setup_search_attributes_is_idempotent_on_a_fresh_namespace(
    temporal_env: WorkflowEnvironment,
) -> None:
    """`nwd setup-search-attributes` adds the engine's set once; the second run adds nothing."""
    client = temporal_env.client
    namespace = f"ops-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=namespace, workflow_execution_retention_period=Duration(seconds=86400)))

    async def namespace_known() -> None:
        try:
            await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=namespace))
        except RPCError as unknown:
            raise AssertionError(f"namespace {namespace} not served yet: {unknown}") from unknown

    # the new namespace reaches the frontend's cache within a second or so
    await eventually(namespace_known, within_s=10, every_s=0.2)

    added, present = await setup_search_attributes(client, namespace)
    assert sorted(added) == sorted(key.name for key in SEARCH_ATTRIBUTES)
    assert present == []
    again_added, again_present = await setup_search_attributes(client, namespace)
    assert again_added == []
    assert sorted(again_present) == sorted(added)

    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    custom = dict(listed.custom_attributes)
    assert custom["AgenciesAwaited"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST
    assert custom["SubmittedAt"] == IndexedValueType.INDEXED_VALUE_TYPE_DATETIME
    assert custom["Escalated"] == IndexedValueType.INDEXED_VALUE_TYPE_BOOL
    assert custom["CitizenService"] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD

    # the command operators run does the same (here: everything is already there)
    env = {**os.environ, "TEMPORAL_ADDRESS": client.service_client.config.target_host,
           "TEMPORAL_NAMESPACE": namespace}
    done = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "nwd"), "setup-search-attributes"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"0 added, {len(SEARCH_ATTRIBUTES)} already there (namespace {namespace}" in done.stdout
