"""An outbox for callbacks: stored with the agency's effect, delivered until the engine answers.

An agency that answered 202 owes the engine a callback. Sending it from memory after the work
is done loses it whenever the process stops, the database blinks or the engine is down at that
moment. The outbox makes the callback part of the effect instead: it is a row written **in
the same transaction** as the effect (the record completed, the licence updated), so either
both exist or neither does, and a sender loop delivers the rows that are due::

    async with pool.acquire() as conn, conn.transaction():
        await update_licence(conn, ...)                        # the effect
        await outbox.enqueue(conn, Callback(status="completed", agency_reference=ref,
                                            output=output),
                             url=callback_url, reference=reference, step=step, item=item)
    # ...and, once per process (several processes may run it on one database):
    async with OutboxSender(pool, [outbox]):
        ...

How a row ends, by the engine's answer (the contract's retry rule, ``docs/agency-contract.md``)::

                 ┌── 2xx ─────────────────────────▶ delivered
    pending ─────┼── 410 (request finished) ──────▶ finished
      ▲  │       ├── other 4xx (not 408/429) ─────▶ refused   (status and body code kept)
      │  │       └── 5xx, 408, 429, connection
      │  │           error, timeout ──▶ pending again after a jittered, capped backoff
      └──┘                                          (``Retry-After`` honoured)
    pending ──── void() (the call was cancelled) ──▶ voided
    pending ──── older than max_age_s (optional) ──▶ expired

There is no attempt limit by default: a callback is the citizen's outcome, and the engine waits
for it as long as the step allows, so the agency keeps trying until the engine answers for good.

Delivery is at least once. A sender claims due rows with ``FOR UPDATE SKIP LOCKED``, so
several senders never claim the same row; a claimed row is leased (its ``next_attempt_at``
moves past the HTTP timeout) until the answer is written back. Only if a sender dies after
the engine took the callback but before it wrote that down is the callback sent again, after
the lease — with the same ``Idempotency-Key`` (``{reference}:{step}:{item or -}:callback``),
which the engine takes once.

Each request is signed afresh (a new ``created``, ``expires`` and ``nonce``) by the agency's
own key with :mod:`agency_kit.signing` (the signer is given to the :class:`Outbox`, the key
never stored in its table) and carries the contract's headers. A committed
enqueue wakes the sender at once through ``NOTIFY`` (:mod:`agency_kit.wakeup`); a slow poll is
the safety net. The sender survives its database: while PostgreSQL is down it backs off and
retries, and work that fell due meanwhile is delivered when it is back. It survives its process
too: rows persist, and a restarted sender delivers what is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal, Self

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import httpx
import structlog

from agency_kit.contract import (
    IDEMPOTENCY_HEADER,
    REFERENCE_HEADER,
    RETRY_AFTER_HEADER,
    RETRYABLE_STATUS,
    Callback,
    idempotency_key,
)
from agency_kit.idempotency import quote_ident
from agency_kit.signing import CALLBACK_TAG, Signer
from agency_kit.wakeup import Wakeup, jittered_backoff, notify, run_until_stopped, seconds_until

log = structlog.get_logger("agency_kit.outbox")

OutboxState = Literal["pending", "delivered", "finished", "refused", "voided", "expired"]
"""A row's state: ``pending`` until one of the final ones (see the module docstring)."""
FINAL_STATES: Final = frozenset({"delivered", "finished", "refused", "voided", "expired"})
STATES: Final = frozenset({"pending", *FINAL_STATES})

Verdict = Literal["delivered", "finished", "refused", "retry"]

FINISHED_STATUS: Final = 410
"""The engine's answer to a callback for a request that has finished: nothing left to tell."""


def verdict(status_code: int | None) -> Verdict:
    """What an answer means for the callback (None: no answer — connection error, timeout)."""
    if status_code is None or status_code >= 500 or status_code in RETRYABLE_STATUS:
        return "retry"
    if 200 <= status_code < 300:
        return "delivered"
    if status_code == FINISHED_STATUS:
        return "finished"
    if 400 <= status_code < 500:
        return "refused"
    return "retry"  # 1xx/3xx: not an answer the contract knows; try again later


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait between attempts, and (optionally) when to stop trying.

    The wait after attempt ``n`` is ``initial_interval_s * backoff_coefficient ** (n - 1)``,
    capped at ``maximum_interval_s`` and shortened by a random share of up to ``jitter``; an
    answer with ``Retry-After`` waits at least that long (at most ``maximum_retry_after_s``).

    Args:
        initial_interval_s: The wait after the first failed attempt.
        backoff_coefficient: How much each wait grows over the last.
        maximum_interval_s: The longest backoff between two attempts.
        jitter: The share (0..1) a wait may be shortened by at random.
        maximum_retry_after_s: The longest ``Retry-After`` obeyed (a longer one is cut down).
        max_age_s: Give up on a row this long after it was stored (state ``expired``); None,
            the default, keeps trying until the engine answers for good.
    """

    initial_interval_s: float = 0.5
    backoff_coefficient: float = 2.0
    maximum_interval_s: float = 60.0
    jitter: float = 0.5
    maximum_retry_after_s: float = 3600.0
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.initial_interval_s <= 0:
            raise ValueError(f"initial_interval_s must be above 0, not {self.initial_interval_s}")
        if self.backoff_coefficient < 1:
            raise ValueError(
                f"backoff_coefficient must be 1 or more, not {self.backoff_coefficient}"
            )
        if self.maximum_interval_s < self.initial_interval_s:
            raise ValueError(
                f"maximum_interval_s ({self.maximum_interval_s}) must be at least "
                f"initial_interval_s ({self.initial_interval_s})"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, not {self.jitter}")
        if self.maximum_retry_after_s < 0:
            raise ValueError(
                f"maximum_retry_after_s must be 0 or more, not {self.maximum_retry_after_s}"
            )
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be above 0 (or None), not {self.max_age_s}")

    def delay_s(
        self, attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """The wait before the next attempt, after ``attempts`` attempts have failed."""
        wait = jittered_backoff(
            attempts,
            initial_s=self.initial_interval_s,
            maximum_s=self.maximum_interval_s,
            coefficient=self.backoff_coefficient,
            jitter=self.jitter,
            rng=rng,
        )
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.maximum_retry_after_s))
        return wait


@dataclass(frozen=True)
class OutboxRow:
    """One callback in the outbox, as operators see it (the body and URL are left out)."""

    id: int
    key: str
    reference: str
    subject: str | None
    state: OutboxState
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    finished_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        data = self.__dict__.copy()
        for name in ("created_at", "next_attempt_at", "last_attempt_at", "finished_at"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        return data


_ROW_COLUMNS = (
    "id, key, reference, subject, state, attempts, created_at, next_attempt_at,"
    " last_attempt_at, last_status, last_error, finished_at"
)


@dataclass(frozen=True)
class Outbox:
    """One outbox table: the SQL to create it, enqueue into it, void and list its rows.

    Args:
        schema: The PostgreSQL schema of the table (None: the search path); keep it next to
            the tables of the effects, in the same database, so one transaction covers both.
        table: The table name.
        signer: Signs each callback with the agency's own private key (None: unsigned).
    """

    schema: str | None = None
    table: str = "outbox"
    signer: Signer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _ = self.qualified  # a name that is not a plain SQL identifier fails here, at once

    @property
    def qualified(self) -> str:
        """The quoted, schema-qualified table name."""
        name = quote_ident(self.table)
        return f"{quote_ident(self.schema)}.{name}" if self.schema else name

    @property
    def channel(self) -> str:
        """The ``NOTIFY`` channel a committed enqueue wakes senders on."""
        return f"nwd_outbox.{self.schema or 'public'}.{self.table}"

    def ddl(self) -> str:
        """The statements creating the table and its index (idempotent)."""
        table = self.qualified
        index = quote_ident(f"{self.table}_due")
        return (
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " id bigserial PRIMARY KEY,"
            " key text NOT NULL,"
            " reference text NOT NULL,"
            " subject text,"
            " url text NOT NULL,"
            " body text NOT NULL,"
            " state text NOT NULL DEFAULT 'pending',"
            " attempts integer NOT NULL DEFAULT 0,"
            " created_at timestamptz NOT NULL DEFAULT now(),"
            " next_attempt_at timestamptz NOT NULL DEFAULT now(),"
            " last_attempt_at timestamptz,"
            " last_status integer,"
            " last_error text,"
            " finished_at timestamptz);\n"
            f"CREATE INDEX IF NOT EXISTS {index} ON {table} (next_attempt_at)"
            " WHERE state = 'pending'"
        )

    async def create(self, conn: asyncpg.Connection) -> None:
        """Create the table if missing (safe on every start-up)."""
        await conn.execute(self.ddl())

    async def enqueue(
        self,
        conn: asyncpg.Connection,
        callback: Callback,
        *,
        url: str,
        reference: str,
        step: str,
        item: str | None,
        subject: str | None = None,
    ) -> int:
        """Store ``callback`` for delivery to ``url``, inside the caller's transaction; its id.

        Args:
            conn: The connection whose open transaction also writes the effect.
            callback: The outcome to tell the engine.
            url: The ``callback_url`` of the engine's call.
            reference, step, item: The call's envelope: they give the ``X-NWD-Reference`` and
                ``Idempotency-Key`` headers.
            subject: The agency's own name for what the callback is about (its agency
                reference), to find or :meth:`void` the row later.

        Raises:
            RuntimeError: ``conn`` is not in a transaction: the callback and the effect must
                commit together or not at all.
        """
        if not conn.is_in_transaction():
            raise RuntimeError(
                "Outbox.enqueue must run inside the transaction that writes the effect"
            )
        body = json.dumps(callback.model_dump(mode="json"), separators=(",", ":"))
        row_id = await conn.fetchval(
            f"INSERT INTO {self.qualified} (key, reference, subject, url, body)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            idempotency_key(reference, step, item, "callback"),
            reference,
            subject,
            url,
            body,
        )
        await notify(conn, self.channel)
        return int(row_id)

    async def void(self, conn: asyncpg.Connection, *, subject: str) -> int:
        """Void the pending rows about ``subject`` (a cancelled call); how many were voided."""
        result = await conn.execute(
            f"UPDATE {self.qualified} SET state = 'voided', finished_at = now()"
            " WHERE subject = $1 AND state = 'pending'",
            subject,
        )
        return int(result.split()[-1])

    async def rows(
        self,
        conn: asyncpg.Connection,
        *,
        reference: str | None = None,
        subject: str | None = None,
        state: str | None = None,
    ) -> list[OutboxRow]:
        """The rows, oldest first, optionally only one request's, one subject's or one state."""
        records = await conn.fetch(
            f"SELECT {_ROW_COLUMNS} FROM {self.qualified}"
            " WHERE ($1::text IS NULL OR reference = $1) AND ($2::text IS NULL OR subject = $2)"
            " AND ($3::text IS NULL OR state = $3) ORDER BY id",
            reference,
            subject,
            state,
        )
        return [OutboxRow(**dict(record)) for record in records]

    async def empty(self, conn: asyncpg.Connection) -> None:
        """Delete every row (tests and demos)."""
        await conn.execute(f"DELETE FROM {self.qualified}")

    async def _claim(
        self, conn: asyncpg.Connection, limit: int, lease_s: float
    ) -> list[_Claimed]:
        """Due rows, locked against other senders and leased for ``lease_s`` seconds."""
        records = await conn.fetch(
            f"UPDATE {self.qualified} AS o SET attempts = o.attempts + 1,"
            " last_attempt_at = now(), next_attempt_at = now() + make_interval(secs => $2)"
            f" WHERE o.id IN (SELECT id FROM {self.qualified} WHERE state = 'pending'"
            " AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1"
            " FOR UPDATE SKIP LOCKED)"
            " RETURNING o.id, o.key, o.reference, o.url, o.body, o.attempts,"
            " extract(epoch FROM now() - o.created_at)::float8 AS age_s",
            limit,
            lease_s,
        )
        return [_Claimed(**dict(record)) for record in records]

    async def _next_due_s(self, conn: asyncpg.Connection) -> float | None:
        """Seconds until the earliest pending row falls due (0 if one is due), or None."""
        return await seconds_until(conn, "next_attempt_at",
                                   f"{self.qualified} WHERE state = 'pending'")

    async def _record(
        self, conn: asyncpg.Connection, claimed: _Claimed, attempt: _Attempt, state: str,
        next_in_s: float,
    ) -> None:
        """Write an attempt's end, unless the row changed meanwhile (voided, or re-claimed)."""
        await conn.execute(
            f"UPDATE {self.qualified} SET state = $3, last_status = $4, last_error = $5,"
            " next_attempt_at = now() + make_interval(secs => $6),"
            " finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END"
            " WHERE id = $1 AND attempts = $2 AND state = 'pending'",
            claimed.id,
            claimed.attempts,
            state,
            attempt.status_code,
            attempt.error,
            next_in_s,
        )


@dataclass(frozen=True)
class _Claimed:
    id: int
    key: str
    reference: str
    url: str
    body: str
    attempts: int
    age_s: float


@dataclass(frozen=True)
class _Attempt:
    """One POST's result: the status (None without an answer) and what went wrong."""

    status_code: int | None
    error: str | None = None
    retry_after: float | None = None


def _body_code(response: httpx.Response) -> str | None:
    """The ``code`` of a JSON error body (the engine's and the contract's shape), if any."""
    try:
        data = response.json()
    except ValueError:
        return None
    code = data.get("code") if isinstance(data, dict) else None
    return str(code)[:200] if code is not None else None


class OutboxSender:
    """Delivers the due rows of one or more outboxes until stopped; survives database outages.

    Use it as an async context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        pool: The database of the outboxes. The sender holds one of its connections (for
            ``LISTEN``) and borrows others briefly; it never holds one during a POST.
        outboxes: The outbox tables to deliver from.
        policy: Backoff between attempts and the optional maximum age.
        timeout_s: The HTTP timeout of one attempt; a claimed row's lease is this plus
            ``lease_margin_s``.
        max_in_flight: At most this many POSTs at once (rows beyond wait for a free slot).
        poll_interval_s: How often every outbox is looked at even without a notification.
        http: An HTTP client to use (the caller owns it); default: one of the sender's own.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        outboxes: Sequence[Outbox],
        *,
        policy: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        lease_margin_s: float = 5.0,
        max_in_flight: int = 32,
        poll_interval_s: float = 5.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        channels = [outbox.channel for outbox in outboxes]
        if len(set(channels)) != len(channels):
            raise ValueError("the same outbox table is given twice")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be 1 or more, not {max_in_flight}")
        self._pool = pool
        self._outboxes = {outbox.channel: outbox for outbox in outboxes}
        self.policy = policy or RetryPolicy()
        self.timeout_s = timeout_s
        self.lease_s = timeout_s + lease_margin_s
        self.max_in_flight = max_in_flight
        self._wakeup = Wakeup(pool, channels, poll_interval_s=poll_interval_s)
        self._own_http = http is None
        self._http = http
        self._loop: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the sender loop (it listens, then delivers whatever is due)."""
        if self._loop is not None:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout_s)
        self._loop = asyncio.create_task(
            run_until_stopped(self._step, self._wakeup, name="outbox"), name="outbox-sender"
        )

    @property
    def running(self) -> bool:
        """Whether the loop is alive (it ends only when stopped)."""
        return self._loop is not None and not self._loop.done()

    async def drop_in_flight(self) -> None:
        """Cancel the POSTs under way; their rows stay pending and are retried after the lease."""
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Stop the loop and the POSTs under way; undelivered rows stay for the next sender."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        await self.drop_in_flight()
        await self._wakeup.close()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _step(self, fired: set[str]) -> None:
        """Claim the due rows of the fired outboxes (as many as there are free slots)."""
        for channel in sorted(fired):
            outbox = self._outboxes[channel]
            free = self.max_in_flight - len(self._in_flight)
            async with self._pool.acquire() as conn:
                claimed = await outbox._claim(conn, free, self.lease_s) if free > 0 else []
                for row in claimed:
                    task = asyncio.create_task(self._deliver(outbox, row))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                if len(claimed) == free:
                    # full: look again as soon as a slot frees (each delivery pokes)
                    self._wakeup.due_in(channel, None)
                    continue
                self._wakeup.due_in(channel, await outbox._next_due_s(conn))

    async def _deliver(self, outbox: Outbox, row: _Claimed) -> None:
        """POST one row, then write down how it ended (retrying the write while needed)."""
        bound = log.bind(reference=row.reference, key=row.key, attempt=row.attempts)
        try:
            attempt = await self._post(outbox, row)
            state, next_in_s = self._judge(row, attempt)
            failures = 0
            while True:
                try:
                    async with self._pool.acquire() as conn:
                        await outbox._record(conn, row, attempt, state, next_in_s)
                    break
                except Exception as exc:  # the database is down: keep the news, try again
                    failures += 1
                    delay = jittered_backoff(failures, initial_s=0.1, maximum_s=5.0)
                    bound.warning("outbox.record_failed", error=type(exc).__name__,
                                  retry_in_s=round(delay, 3))
                    await asyncio.sleep(delay)
            self._log(bound, state, attempt, next_in_s)
        finally:
            self._wakeup.poke(outbox.channel)

    async def _post(self, outbox: Outbox, row: _Claimed) -> _Attempt:
        assert self._http is not None
        body = row.body.encode()
        headers = {
            "Content-Type": "application/json",
            REFERENCE_HEADER: row.reference,
            IDEMPOTENCY_HEADER: row.key,
        }
        if outbox.signer is not None:  # a fresh created, expires and nonce on every attempt
            headers = outbox.signer.request_headers("POST", row.url, body, headers,
                                                    tag=CALLBACK_TAG)
        started = time.perf_counter()
        try:
            # httpx's timeout bounds each phase (connect, write, every read); the lease needs a
            # bound on the whole attempt, so an engine trickling bytes cannot outlast it
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.post(
                    row.url, content=body, headers=headers, timeout=self.timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):  # whichever bound ran out first
            return _Attempt(None, error="Timeout")
        except httpx.HTTPError as exc:
            return _Attempt(None, error=type(exc).__name__)
        log.debug("outbox.answer", status_code=response.status_code,
                  duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return _Attempt(
            response.status_code,
            error=None if response.is_success else _body_code(response),
            retry_after=retry_after_s(response.headers.get(RETRY_AFTER_HEADER)),
        )

    def _judge(self, row: _Claimed, attempt: _Attempt) -> tuple[str, float]:
        """The row's next state, and in how many seconds it is due again if pending."""
        result = verdict(attempt.status_code)
        if result != "retry":
            return result, 0.0
        delay = self.policy.delay_s(row.attempts, retry_after=attempt.retry_after)
        max_age = self.policy.max_age_s
        if max_age is not None and row.age_s + delay > max_age:
            return "expired", 0.0
        return "pending", delay

    @staticmethod
    def _log(bound: Any, state: str, attempt: _Attempt, next_in_s: float) -> None:
        fields = {"status_code": attempt.status_code, "error": attempt.error}
        if state == "delivered":
            bound.info("outbox.delivered", **fields)
        elif state == "finished":
            bound.info("outbox.request_finished", **fields)
        elif state == "pending":
            bound.warning("outbox.retry", retry_in_s=round(next_in_s, 3), **fields)
        else:  # refused, expired: final, and someone should look
            bound.error(f"outbox.{state}", **fields)

