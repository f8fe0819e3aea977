"""How the read model writes, on a real PostgreSQL.

- Agency calls' progress rows go through group commit: calls finishing together share one
  statement, each still waits for its row, and a batch applies rows as one upsert each
  would have.
- The pool hands connections back without asyncpg's reset query (a round trip and four
  statements after every write); safe only because the read model keeps no session state and
  the migrations release their advisory lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from readmodel.migrations import apply_migrations
from readmodel.progress import ProgressWriter
from readmodel.store import ItemProgress, ReadModel, open_pool
from runtime.messages import RecordRequestInput


class CountingReadModel(ReadModel):
    """The real read model, counting the statements that write progress."""

    statements = 0

    async def record_items(self, items: Sequence[ItemProgress]) -> None:
        self.statements += 1
        await super().record_items(items)


RequestRow = tuple[asyncpg.Pool, CountingReadModel]


@pytest_asyncio.fixture
async def request_row(database_url: str) -> AsyncIterator[RequestRow]:
    """A migrated read model holding request REF-1 (the parent of every progress row)."""
    pool = await open_pool(database_url, max_size=4)
    try:
        await apply_migrations(pool)
        read_model = CountingReadModel(pool)
        await read_model.record_submitted(RecordRequestInput(
            reference="REF-1", service="svc", version=1, content_hash="h", language="en",
            submitted_at=datetime.now(UTC), status="running", agencies=["a"]))
        yield pool, read_model
    finally:
        await pool.close()


def _item(n: int, status: str = "completed", **changes: object) -> ItemProgress:
    fields: dict[str, object] = dict(
        reference="REF-1", step_id="notify", item_key=str(n), agency="a", operation="op",
        status=status, agency_reference=f"A-{n}", attempts=1, reason=None,
        event=f"agency_operation_{status}")
    fields.update(changes)
    return ItemProgress(**fields)  # type: ignore[arg-type]


async def test_calls_finishing_together_share_statements_and_all_commit(
    request_row: RequestRow,
) -> None:
    pool, read_model = request_row
    writer = ProgressWriter(read_model)
    await asyncio.gather(*(writer.record(_item(n)) for n in range(60)))
    # the 60 calls queued before the writer ran share one statement
    assert read_model.statements == writer.batches == 1
    rows = await pool.fetch("SELECT item_key, status, agency_reference FROM request_steps"
                            " WHERE reference = 'REF-1' ORDER BY item_key::int")
    assert [(r["item_key"], r["status"], r["agency_reference"]) for r in rows] == [
        (str(n), "completed", f"A-{n}") for n in range(60)]
    events = await pool.fetchval(
        "SELECT count(*) FROM request_events WHERE kind = 'agency_operation_completed'")
    assert events == 60
    await writer.record(_item(99))  # a call alone is written at once, on its own
    assert writer.batches == 2


async def test_a_batch_applies_rows_as_one_upsert_each_would(request_row: RequestRow) -> None:
    pool, read_model = request_row
    await read_model.record_items([
        _item(1, "retrying", agency_reference="A-1", attempts=1, reason=None),
        _item(1, "completed", agency_reference=None, attempts=2),
        _item(2, "failed", attempts=3, reason="rejected"),
    ])
    rows = {r["item_key"]: dict(r) for r in await pool.fetch(
        "SELECT item_key, status, agency_reference, attempts, reason FROM request_steps")}
    assert rows["1"] == {"item_key": "1", "status": "completed", "agency_reference": "A-1",
                         "attempts": 2, "reason": None}
    assert rows["2"]["status"] == "failed" and rows["2"]["reason"] == "rejected"
    kinds = [r["kind"] for r in await pool.fetch(
        "SELECT kind FROM request_events WHERE step_id = 'notify' ORDER BY id")]
    assert kinds == ["agency_operation_retrying", "agency_operation_completed",
                     "agency_operation_failed"]


async def test_a_bad_row_fails_only_its_own_call(
    request_row: RequestRow,
) -> None:
    pool, read_model = request_row
    writer = ProgressWriter(read_model)
    orphan = _item(1, reference="NO-SUCH-REQUEST")  # violates the requests foreign key
    results = await asyncio.gather(writer.record(_item(0)), writer.record(orphan),
                                   writer.record(_item(2)), return_exceptions=True)
    # the shared statement failed; each row was then written on its own
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], asyncpg.ForeignKeyViolationError)
    keys = {r["item_key"] for r in await pool.fetch("SELECT item_key FROM request_steps")}
    assert keys == {"0", "2"}


async def test_a_cancelled_call_does_not_stop_the_others(request_row: RequestRow) -> None:
    pool, read_model = request_row
    writer = ProgressWriter(read_model)
    first = asyncio.create_task(writer.record(_item(0)))
    second = asyncio.create_task(writer.record(_item(1)))
    await asyncio.sleep(0)  # both queued, the writer started
    first.cancel()  # an activity cancelled while its row is being written
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    # the row was already in the statement: written even so (the read model is a view)
    assert await pool.fetchval("SELECT count(*) FROM request_steps") == 2


async def test_a_released_connection_keeps_its_session(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'nwd-pool-check'")
        async with pool.acquire() as conn:  # the same, single connection, not reset
            assert await conn.fetchval("SHOW application_name") == "nwd-pool-check"
    finally:
        await pool.close()


async def test_migrations_leave_no_advisory_lock_on_the_pooled_connection(
    database_url: str,
) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        await apply_migrations(pool)
        async with pool.acquire() as conn:
            held = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND pid = pg_backend_pid()")
        assert held == 0
    finally:
        await pool.close()
