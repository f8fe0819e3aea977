"""The outbox on its own, as any agency would use it: real PostgreSQL, real HTTP on loopback.

Every test enqueues callbacks in its own transactions and runs an :class:`OutboxSender`
against a :class:`CountingReceiver` that misbehaves as the test says; deliveries are counted
by idempotency key on the receiver's side.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from agency_kit.contract import Callback
from agency_kit.keys import StaticKeys
from agency_kit.outbox import Outbox, OutboxRow, OutboxSender, RetryPolicy
from agency_kit.signing import CALLBACK_TAG, Verifier
from tests.integration.agency_kit.receiver import HANG, RESET, Answer, CountingReceiver
from tests.keys import keyring
from tests.polling import eventually

AGENCY = keyring("outbox-agency")
FAST = RetryPolicy(initial_interval_s=0.05, maximum_interval_s=0.2, jitter=0)


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def outbox(pool: asyncpg.Pool) -> Outbox:
    box = Outbox(schema="agency", signer=AGENCY.signer())
    async with pool.acquire() as conn:
        await conn.execute('CREATE SCHEMA IF NOT EXISTS "agency"')
        await box.create(conn)
    return box


Enqueue = Callable[..., Awaitable[str]]


@pytest.fixture
def enqueue(pool: asyncpg.Pool, outbox: Outbox, counting_receiver: CountingReceiver) -> Enqueue:
    """Store one completed callback in a committed transaction of its own; its key."""

    async def enqueue(subject: str | None = None) -> str:
        reference = f"REQ-{uuid.uuid4().hex[:8]}"
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(
                conn,
                Callback(status="completed", agency_reference="AG-1", output={"n": 1}),
                url=counting_receiver.url, reference=reference, step="licence", item=None,
                subject=subject,
            )
        return f"{reference}:licence:-:callback"

    return enqueue


Sender = Callable[..., AbstractAsyncContextManager[OutboxSender]]


@pytest.fixture
def sender(pool: asyncpg.Pool, outbox: Outbox) -> Sender:
    def make(**options: Any) -> OutboxSender:
        options.setdefault("policy", FAST)
        options.setdefault("timeout_s", 2.0)
        return OutboxSender(pool, [outbox], **options)

    return make


async def row(pool: asyncpg.Pool, outbox: Outbox, key: str) -> OutboxRow:
    async with pool.acquire() as conn:
        [found] = [r for r in await outbox.rows(conn) if r.key == key]
    return found


async def until_state(
    pool: asyncpg.Pool, outbox: Outbox, key: str, state: str, within_s: float = 10
) -> OutboxRow:
    async def probe() -> OutboxRow:
        found = await row(pool, outbox, key)
        assert found.state == state, found
        return found

    return await eventually(probe, within_s=within_s, every_s=0.05)


class TestDelivery:
    async def test_a_committed_enqueue_is_delivered_at_once_signed_with_the_headers(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """The commit wakes the sender (the poll is a minute away): signed, with the
        contract's headers and the callback body, delivered once."""
        async with sender(poll_interval_s=60):
            await eventually(_listening(pool, outbox), within_s=5, every_s=0.02)
            await asyncio.sleep(0.5)  # its first scan is over: the next poll is a minute away
            committed = time.monotonic()
            key = await enqueue()
            delivered = await until_state(pool, outbox, key, "delivered", within_s=5)
        [arrival] = counting_receiver.arrivals
        assert arrival.at - committed < 1.0, "woken by the commit, not by the poll"
        signed = Verifier(StaticKeys(AGENCY.public()).get).verify_request(
            "POST", counting_receiver.url, arrival.body, arrival.headers, tag=CALLBACK_TAG,
            require_nonce=True)
        assert signed.key_id == AGENCY.signing[0]
        assert arrival.headers["content-type"] == "application/json"
        assert arrival.headers["idempotency-key"] == key
        assert arrival.headers["x-nwd-reference"] == key.split(":")[0]
        assert json.loads(arrival.body) == {
            "status": "completed", "agency_reference": "AG-1", "output": {"n": 1},
            "reason": None, "code": None, "fields": None, "message": None,
        }
        assert (delivered.attempts, delivered.last_status, delivered.finished_at is not None) \
            == (1, 200, True)

    async def test_a_rolled_back_enqueue_is_never_sent(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """The callback commits with the effect or not at all; outside a transaction it is
        refused and nothing is stored."""
        class AbandonedError(Exception):
            pass

        callback = Callback(status="completed", agency_reference="AG-9")
        with pytest.raises(AbandonedError):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.enqueue(conn, callback, url=counting_receiver.url,
                                     reference="REQ-gone", step="s", item=None)
                raise AbandonedError
        async with pool.acquire() as conn:
            with pytest.raises(RuntimeError, match="inside the transaction"):
                await outbox.enqueue(conn, callback, url=counting_receiver.url,
                                     reference="REQ-loose", step="s", item=None)
            assert await outbox.rows(conn) == []
        async with sender():
            key = await enqueue()
            await until_state(pool, outbox, key, "delivered")
        assert [a.key for a in counting_receiver.arrivals] == [key]

    async def test_a_voided_callback_is_not_sent(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """void(subject) in the cancel's transaction: the row is voided, never sent."""
        withdrawn = await enqueue(subject="AG-withdrawn")
        async with pool.acquire() as conn, conn.transaction():
            assert await outbox.void(conn, subject="AG-withdrawn") == 1
        async with sender():
            kept = await enqueue(subject="AG-kept")
            await until_state(pool, outbox, kept, "delivered")
        assert (await row(pool, outbox, withdrawn)).state == "voided"
        assert [a.key for a in counting_receiver.arrivals] == [kept]


class TestIdle:
    async def test_an_idle_sender_leaves_the_database_alone(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
    ) -> None:
        """Nothing due, nothing notified: the sender sleeps (no busy loop, no fast poll)."""
        async with sender(poll_interval_s=60):
            key = await enqueue()
            await until_state(pool, outbox, key, "delivered")
            before = await commits(pool)
            await asyncio.sleep(3)  # the window the database is watched over
            after = await commits(pool)
        assert after - before < 30, f"{after - before} transactions in 3 s of idling"


class TestRetries:
    async def test_errors_resets_and_timeouts_of_the_engine_are_retried_until_taken(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """503, a reset connection, 408, 429 and 500 are retried; the 2xx after them is the
        one delivery, and every attempt is counted."""
        counting_receiver.script = [Answer(503), RESET, Answer(408), RESET, Answer(429),
                                    Answer(500)]
        async with sender():
            key = await enqueue()
            delivered = await until_state(pool, outbox, key, "delivered")
        answers = [a.answer for a in counting_receiver.requests(key)]
        assert answers == [503, "reset", 408, "reset", 429, 500, 200]
        assert counting_receiver.delivered() == {key: 1}
        assert delivered.attempts == 7

    async def test_an_engine_that_does_not_answer_times_out_and_is_tried_again(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """No answer within timeout_s: the attempt ends as a timeout (no status), the row
        stays pending, and the next attempt — same key — is the one delivery."""
        counting_receiver.script = [HANG]
        slow = RetryPolicy(initial_interval_s=1.0, jitter=0)  # time to see the timeout
        async with sender(timeout_s=0.5, policy=slow):
            key = await enqueue()

            async def timed_out() -> None:
                found = await row(pool, outbox, key)
                assert (found.state, found.attempts, found.last_status, found.last_error) == (
                    "pending", 1, None, "Timeout"
                ), found

            await eventually(timed_out, within_s=5, every_s=0.02)
            delivered = await until_state(pool, outbox, key, "delivered")
        first, second = counting_receiver.requests(key)
        assert (first.answer, second.answer) == ("hang", 200)
        assert second.at - first.at >= 0.45, "the first attempt waited for its timeout"
        assert counting_receiver.delivered() == {key: 1}
        assert delivered.attempts == 2

    async def test_an_engine_down_for_a_while_gets_the_callback_when_back(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """Connection refused is retried with backoff, with no attempt limit; once the
        engine listens again the callback is delivered once."""
        await counting_receiver.stop()
        async with sender():
            key = await enqueue()

            async def refused_a_few_times() -> None:
                found = await row(pool, outbox, key)
                assert found.attempts >= 4, found
                assert (found.state, found.last_status, found.last_error) == (
                    "pending", None, "ConnectError"
                ), found

            await eventually(refused_a_few_times, within_s=10, every_s=0.05)
            await counting_receiver.start()
            await until_state(pool, outbox, key, "delivered")
        assert counting_receiver.delivered() == {key: 1}

    async def test_retry_after_is_honoured(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """503 with Retry-After: 2 — the next attempt waits 2 s, not the 50 ms backoff."""
        counting_receiver.script = [Answer(503, headers={"Retry-After": "2"})]
        async with sender():
            key = await enqueue()
            await until_state(pool, outbox, key, "delivered")
        first, second = counting_receiver.requests(key)
        assert second.at - first.at >= 1.95
        assert second.at - first.at < 4.0


class TestFinalAnswers:
    async def test_410_request_finished_stops_and_is_recorded(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """410: the request has finished; the row is done as 'finished', not retried."""
        counting_receiver.script = [Answer(410, body={"code": "request_finished"})]
        async with sender():
            key = await enqueue()
            finished = await until_state(pool, outbox, key, "finished")
            after = await enqueue()  # a later row is still delivered: the sender goes on
            await until_state(pool, outbox, after, "delivered")
        assert (finished.attempts, finished.last_status, finished.last_error) == (
            1, 410, "request_finished"
        )
        assert len(counting_receiver.requests(key)) == 1

    async def test_another_4xx_is_final_with_its_status_and_code(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """409 not_expected and a 401 without a JSON body: refused at once, status and body
        code kept, one request each."""
        counting_receiver.script = [Answer(409, body={"code": "not_expected", "message": "x"})]
        async with sender():
            conflict = await enqueue()
            refused = await until_state(pool, outbox, conflict, "refused")
            counting_receiver.script = [Answer(401, body={"detail": "who are you"})]
            unsigned = await enqueue()
            unauthorised = await until_state(pool, outbox, unsigned, "refused")
            last = await enqueue()
            await until_state(pool, outbox, last, "delivered")
        assert (refused.attempts, refused.last_status, refused.last_error) == (
            1, 409, "not_expected"
        )
        assert (unauthorised.last_status, unauthorised.last_error) == (401, None)
        assert len(counting_receiver.requests(conflict)) == 1
        assert len(counting_receiver.requests(unsigned)) == 1

    async def test_an_optional_max_age_expires_a_callback_nobody_takes(
        self, pool: asyncpg.Pool, outbox: Outbox, enqueue: Enqueue, sender: Sender,
        counting_receiver: CountingReceiver,
    ) -> None:
        """With max_age_s set, a row still undelivered after that long is given up
        (expired); without it (the default) retries never stop."""
        counting_receiver.default = Answer(503)
        policy = RetryPolicy(initial_interval_s=0.05, maximum_interval_s=0.1, max_age_s=0.5)
        async with sender(policy=policy):
            key = await enqueue()
            expired = await until_state(pool, outbox, key, "expired")
        assert expired.attempts >= 2
        assert expired.last_status == 503
        assert counting_receiver.delivered() == {}



async def commits(pool: asyncpg.Pool) -> int:
    """Transactions committed in this database so far (backends report about once a second)."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        return int(await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ))


def _listening(pool: asyncpg.Pool, outbox: Outbox) -> Callable[[], Awaitable[None]]:
    """A probe: a session of this database LISTENs on the outbox's channel."""

    async def probe() -> None:
        async with pool.acquire() as conn:
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND query = $1",
                f'LISTEN "{outbox.channel}"',
            )
        assert listening == 1, "the sender does not listen yet"

    return probe
