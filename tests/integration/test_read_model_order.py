"""A step's row only moves forward, whatever order its writers land in (real PostgreSQL).

Two writers share a row: the workflow (``record_progress`` after a message, the end's
``record_request``; each carries ``as_of``) and the agency-call activity (no ``as_of``). A
call attempt cut off by its timeout can still write after the workflow moved on, and a local
activity can be retried after a later one succeeded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest_asyncio

from readmodel.migrations import apply_migrations
from readmodel.store import ItemProgress, ReadModel, StepRow, open_pool
from runtime.messages import (
    ItemOutcome,
    RecordProgressInput,
    RecordRequestInput,
    StepOutcome,
    StepStatus,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest_asyncio.fixture
async def store(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, ReadModel]]:
    """A migrated read model holding request REF-1."""
    pool = await open_pool(database_url, max_size=2)
    try:
        await apply_migrations(pool)
        read_model = ReadModel(pool)
        await read_model.record_submitted(RecordRequestInput(
            reference="REF-1", service="svc", version=1, content_hash="h", language="en",
            submitted_at=T0, status="running", agencies=["a"]))
        yield pool, read_model
    finally:
        await pool.close()


def progress(status: StepStatus, at: datetime, *, reference: str | None = "A-1",
             event: str = "callback_completed") -> RecordProgressInput:
    """The workflow's write of item ``register`` in state ``status`` as of ``at``."""
    return RecordProgressInput(
        reference="REF-1", event=event, as_of=at,
        step=StepOutcome(step_id="register", agency="a", operation="op", status="running",
                         items=[ItemOutcome(status=status, agency_reference=reference)]))


def call(status: str, *, reference: str | None = None, attempts: int = 1) -> ItemProgress:
    """The agency-call activity's write of the same item."""
    return ItemProgress(reference="REF-1", step_id="register", item_key=None, agency="a",
                        operation="op", status=status, agency_reference=reference,
                        attempts=attempts, reason=None, event=f"agency_operation_{status}")


async def row(read_model: ReadModel) -> StepRow:
    request = await read_model.get_request("REF-1")
    assert request is not None
    [only] = request.steps
    return only


class TestRowsOnlyMoveForward:
    async def test_an_older_workflow_write_landing_late_is_ignored(
        self, store: tuple[asyncpg.Pool, ReadModel]
    ) -> None:
        """``running`` as of t0 lands after ``completed`` as of t1: the row stays completed."""
        _, read_model = store
        await read_model.record_progress(progress("completed", T0 + timedelta(seconds=1)))
        await read_model.record_progress(progress("running", T0, reference=None,
                                                  event="information_answered"))
        assert ((await row(read_model)).status, (await row(read_model)).agency_reference) == (
            "completed", "A-1")

    async def test_a_late_call_write_never_overwrites_what_the_workflow_settled(
        self, store: tuple[asyncpg.Pool, ReadModel]
    ) -> None:
        """A cut-off attempt's ``retrying`` after the workflow recorded the callback's
        completion changes nothing, not even the attempts."""
        _, read_model = store
        await read_model.record_items([call("waiting", reference="A-1")])
        await read_model.record_progress(progress("completed", T0))
        await read_model.record_items([call("retrying", attempts=3)])
        settled = await row(read_model)
        assert (settled.status, settled.agency_reference, settled.attempts) == (
            "completed", "A-1", 1)

    async def test_the_next_call_overwrites_the_workflows_live_state(
        self, store: tuple[asyncpg.Pool, ReadModel]
    ) -> None:
        """After the answer (running, written by the workflow) the answer's call completes:
        the call's write is the newer news, and the end's record agrees."""
        _, read_model = store
        await read_model.record_progress(progress("running", T0, event="information_answered"))
        await read_model.record_items([call("completed", reference="A-1")])
        assert (await row(read_model)).status == "completed"
        await read_model.record_request(RecordRequestInput(
            reference="REF-1", service="svc", version=1, content_hash="h", language="en",
            submitted_at=T0, status="completed", agencies=["a"], finished=True,
            as_of=T0 + timedelta(seconds=5), steps=[StepOutcome(
                step_id="register", agency="a", operation="op", status="completed",
                items=[ItemOutcome(status="completed", agency_reference="A-1")])]))
        assert (await row(read_model)).status == "completed"

    async def test_a_decision_is_stored_with_who_decided_and_its_event(
        self, store: tuple[asyncpg.Pool, ReadModel]
    ) -> None:
        """A decision step's row (no items) carries ``decided_by``; the audit log the event."""
        pool, read_model = store
        await read_model.record_progress(RecordProgressInput(
            reference="REF-1", event="decision_approved", as_of=T0,
            step=StepOutcome(step_id="approve", kind="decision", status="completed",
                             decided_by="sam")))
        decided = await row(read_model)
        assert (decided.step_id, decided.item_key, decided.status, decided.decided_by) == (
            "approve", None, "completed", "sam")
        events = await pool.fetch("SELECT step_id, item_key, kind, detail FROM request_events"
                                  " WHERE kind = 'decision_approved'")
        detail: dict[str, Any] = json.loads(events[0]["detail"])
        assert [(e["step_id"], e["item_key"]) for e in events] == [("approve", None)]
        assert detail == {"status": "completed", "agency_reference": None, "decided_by": "sam"}
