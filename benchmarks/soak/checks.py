"""The soak's end checks: nothing lost, nothing done twice, nothing stuck — each seen from
outside the engine.

Three witnesses, each read directly:

- **the agencies' own tables** (``agency_<id>.records`` in the agencies' database, and their
  callback outbox ``agency_<id>.outbox`` when the agency kit has one): every effect the soak
  planned (:mod:`benchmarks.soak.workload`) is there exactly once and completed, nothing else
  is, nothing was undone, and every callback owed was delivered — no outbox row still pending;
- **Temporal**: every accepted request has a workflow, it has closed, completed, and its
  result names the very agency references the agencies hold, step by step (the other steps
  skipped); the namespace holds no workflow the soak did not start;
- **the read model**: for every request, equal to Temporal
  (:func:`nwd.consistency.differences`, the assertion the e2e tests use).

Every check is a count of offending requests or rows plus the first few examples; the run
passes when every count is 0 (:attr:`Checks.ok`).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus

from benchmarks.soak.workload import PlannedRequest
from nwd.consistency import TemporalView, differences
from readmodel.store import ReadModel
from workflows.request_workflow import CitizenRequestWorkflow

EXAMPLES_KEPT = 5


@dataclass
class Checks:
    """Counts of everything that went wrong (all 0: the run passed) and what was verified."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    verified: dict[str, int] = field(default_factory=dict)
    """What was looked at: requests, effects, callbacks, outbox rows..."""

    def fail(self, check: str, example: str) -> None:
        self.counts[check] = self.counts.get(check, 0) + 1
        kept = self.examples.setdefault(check, [])
        if len(kept) < EXAMPLES_KEPT:
            kept.append(example)

    def zero(self, *checks: str) -> None:
        for check in checks:
            self.counts.setdefault(check, 0)

    @property
    def ok(self) -> bool:
        return all(v == 0 for v in self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": dict(sorted(self.counts.items())),
                "verified": self.verified,
                "examples": {k: v for k, v in self.examples.items() if v}}


CHECKS = (
    "not_accepted", "lost_in_temporal", "stuck_running", "wrong_workflow_status",
    "wrong_request_status", "wrong_steps", "unexpected_workflows",
    "lost_effects", "duplicated_effects", "unfinished_effects", "unexpected_effects",
    "undone_effects", "temporal_agency_mismatch", "undelivered_callbacks",
    "pending_outbox_rows", "read_model_mismatches",
)


def schema_name(agency_id: str) -> str:
    """``driver-licensing`` -> ``agency_driver_licensing`` (the agency kit's naming)."""
    return "agency_" + re.sub(r"[^a-z0-9]+", "_", agency_id.lower()).strip("_")


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2", schema, table)
    return {r["column_name"] for r in rows}


async def agency_tables(agencies_dsn: str, agencies: list[str]) -> tuple[
        list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Every record of every agency, and every outbox row (None: no agency has an outbox)."""
    conn = await asyncpg.connect(agencies_dsn)
    try:
        records: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] | None = None
        for agency in agencies:
            schema = schema_name(agency)
            columns = await _columns(conn, schema, "records")
            if not columns:
                continue
            state = "callback_state" if "callback_state" in columns else "NULL AS callback_state"
            for row in await conn.fetch(
                    f"SELECT agency_reference, operation, reference, step, item, status, is_undo,"
                    f" callback_url, created_at, {state} FROM {schema}.records ORDER BY id"):
                records.append({"agency": agency, **dict(row)})
            out_columns = await _columns(conn, schema, "outbox")
            if out_columns:
                outbox = outbox or []
                for row in await conn.fetch(
                        f"SELECT reference, subject, state, attempts, created_at,"
                        f" finished_at, last_attempt_at, last_status, last_error"
                        f" FROM {schema}.outbox ORDER BY id"):
                    outbox.append({"agency": agency, **dict(row)})
        return records, outbox
    finally:
        await conn.close()


async def _temporal_views(client: Client, references: list[str]) -> dict[str, Any]:
    """Per reference: ``(status, result or None)`` of its workflow; missing: not in Temporal."""
    found: dict[str, Any] = {}
    semaphore = asyncio.Semaphore(20)

    async def one(reference: str) -> None:
        async with semaphore:
            handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
            try:
                described = await handle.describe()
            except Exception:  # not found (RPCError NOT_FOUND): the check reports it
                return
            result = None
            if described.status == WorkflowExecutionStatus.COMPLETED:
                result = await handle.result()
            found[reference] = (described.status, result)

    await asyncio.gather(*(one(r) for r in references))
    return found


async def run_checks(
    *, planned: list[PlannedRequest], accepted: dict[str, str], client: Client,
    read_model: ReadModel, agencies_dsn: str, agency_ids: list[str],
) -> tuple[Checks, list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Every end check over the run; the checks, the agencies' records and their outbox rows
    (for the figures).

    Args:
        planned: every request the soak meant to send.
        accepted: idempotency key -> reference, for those the intake accepted.
        client: a client of the soak's Temporal, with the engine's data converter.
        read_model: the engine's read model.
        agencies_dsn: the agencies' database.
        agency_ids: every agency of the registry.
    """
    checks = Checks()
    checks.zero(*CHECKS)
    by_reference = {accepted[p.idempotency_key]: p for p in planned
                    if p.idempotency_key in accepted}
    for p in planned:
        if p.idempotency_key not in accepted:
            checks.fail("not_accepted", f"request #{p.index} ({p.service})")
    references = list(by_reference)
    checks.verified["requests"] = len(references)

    # ---- Temporal ----
    views = await _temporal_views(client, references)
    async for execution in client.list_workflows():
        if execution.id not in by_reference:
            checks.fail("unexpected_workflows", execution.id)
    completed_results: dict[str, Any] = {}
    for reference in references:
        if reference not in views:
            checks.fail("lost_in_temporal", reference)
            continue
        status, result = views[reference]
        if status == WorkflowExecutionStatus.RUNNING:
            checks.fail("stuck_running", reference)
            continue
        if status != WorkflowExecutionStatus.COMPLETED:
            checks.fail("wrong_workflow_status", f"{reference}: {status.name}")
            continue
        completed_results[reference] = result
        if result.status != "completed":
            checks.fail("wrong_request_status", f"{reference}: {result.status}")

    # ---- the agencies' tables ----
    records, outbox = await agency_tables(agencies_dsn, agency_ids)
    checks.verified["agency_records"] = len(records)
    effects: dict[tuple[str, str, str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["is_undo"]:
            checks.fail("undone_effects", f"{record['reference']} {record['agency']} "
                                          f"{record['operation']}")
            continue
        item = record["item"] or None
        effects[(record["reference"], record["agency"], record["step"], item)].append(record)
    expected_keys: set[tuple[str, str, str, str | None]] = set()
    callbacks_owed = 0
    owed_callbacks: list[tuple[str, str, str]] = []
    """(agency, agency reference, label) of every callback owed: the outbox row's subject."""
    still_running = {r for r, (status, _) in views.items()
                     if status == WorkflowExecutionStatus.RUNNING}
    for reference, request in by_reference.items():
        result = completed_results.get(reference)
        for effect in request.effects:
            key = (reference, effect.agency, effect.step, effect.item)
            expected_keys.add(key)
            label = f"{reference} {effect.step}" + (f"[{effect.item}]" if effect.item else "")
            held = effects.get(key, [])
            if len(held) > 1:
                checks.fail("duplicated_effects", f"{label}: {len(held)} records")
            if reference in still_running:
                # not lost yet: the request is counted as stuck_running; what it has done so
                # far must still not be doubled (above)
                continue
            if not held:
                checks.fail("lost_effects", label)
                continue
            record = held[0]
            if record["operation"] != effect.operation or record["status"] != "completed":
                checks.fail("unfinished_effects", f"{label}: {record['operation']} "
                                                  f"{record['status']}")
            if effect.callback:
                callbacks_owed += 1
                owed_callbacks.append((effect.agency, record["agency_reference"], label))
                if outbox is None and record["callback_state"] != "sent":
                    checks.fail("undelivered_callbacks",
                                f"{label}: callback {record['callback_state']}")
            if result is not None:
                _compare_step(checks, result, effect.step, effect.item,
                              record["agency_reference"], label)
        if result is not None:
            wanted = {e.step for e in request.effects}
            for step in result.steps:
                if step.step_id not in wanted and step.status != "skipped":
                    checks.fail("wrong_steps", f"{reference} {step.step_id}: {step.status}, "
                                               "expected skipped")
    for key, held in effects.items():
        if key not in expected_keys:
            checks.fail("unexpected_effects", f"{key[0]} {key[1]} {key[2]}: {len(held)}")
    checks.verified["effects_expected"] = len(expected_keys)
    checks.verified["callbacks_owed"] = callbacks_owed

    if outbox is not None:
        checks.verified["outbox_rows"] = len(outbox)
        states = Counter(row["state"] for row in outbox)
        checks.verified.update({f"outbox_{state}": n for state, n in states.items()})
        for row in outbox:
            if row["state"] == "pending":
                checks.fail("pending_outbox_rows",
                            f"{row['agency']} {row['subject']} ({row['attempts']} attempts, "
                            f"last {row['last_status'] or row['last_error']})")
        # ``finished`` (the engine answered 410: the request had ended) counts as delivered
        # when the request took the outcome — an earlier attempt reached it, its answer was
        # lost; temporal_agency_mismatch and wrong_steps check that it did
        delivered = Counter((row["agency"], row["subject"]) for row in outbox
                            if row["state"] in ("delivered", "finished"))
        checks.verified["outbox_pending_of_running_requests"] = sum(
            1 for row in outbox if row["state"] == "pending" and row["reference"] in still_running)
        for agency, subject, label in owed_callbacks:
            if delivered.get((agency, subject), 0) != 1:
                checks.fail("undelivered_callbacks",
                            f"{label}: {delivered.get((agency, subject), 0)} outbox rows "
                            "delivered, not 1")

    # ---- the read model ----
    await _check_read_model(checks, read_model, completed_results)
    return checks, records, outbox


def _compare_step(checks: Checks, result: Any, step_id: str, item: str | None,
                  agency_reference: str, label: str) -> None:
    step = next((s for s in result.steps if s.step_id == step_id), None)
    if step is None or step.status != "completed":
        checks.fail("wrong_steps", f"{label}: {step.status if step else 'absent'} in Temporal")
        return
    found = next((i for i in step.items if (i.key or None) == item), None)
    if found is None or found.agency_reference != agency_reference:
        checks.fail("temporal_agency_mismatch",
                    f"{label}: Temporal {found.agency_reference if found else None!r}, "
                    f"agency {agency_reference!r}")


async def _check_read_model(checks: Checks, read_model: ReadModel,
                            results: dict[str, Any], within_s: float = 30.0) -> None:
    """Each closed request's read-model row equals its result; a row still catching up gets
    ``within_s`` (its writers are activities landing a moment after the state)."""
    pending = dict(results)
    deadline = asyncio.get_running_loop().time() + within_s
    problems: dict[str, list[str]] = {}
    while pending:
        problems = {}
        for reference, result in pending.items():
            row = await read_model.get_request(reference)
            view = TemporalView(result.status, True, result.steps)
            found = ["no row"] if row is None else differences(row, view)
            if found:
                problems[reference] = found
        pending = {r: pending[r] for r in problems}
        if not pending or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(1.0)
    for reference, found in problems.items():
        checks.fail("read_model_mismatches", f"{reference}: {'; '.join(found[:3])}")
    checks.verified["read_model_rows"] = len(results)
