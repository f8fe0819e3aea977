"""Waking a loop of durable work: LISTEN/NOTIFY first, due times next, a slow poll last.

A loop that works through rows falling due in PostgreSQL — the outbox's callbacks
(:mod:`agency_kit.outbox`), a reference agency's accepted calls — should act the moment a
transaction commits new work, without reading its tables every few milliseconds. Writers call
:func:`notify` inside their transaction; PostgreSQL delivers the notification when, and only
if, that transaction commits. :class:`Wakeup` listens on one connection and tells the loop
which channels fired; the loop tells it when each channel's next row falls due
(:meth:`Wakeup.due_in`), and :meth:`Wakeup.wait` sleeps until the first of: a notification, a
due time, the next full poll.

A notification is a hint, never the truth: none arrive while the listening connection is down,
so on every (re)connection and every ``poll_interval_s`` every channel is looked at again.

:func:`run_until_stopped` is that loop, and it outlives the database. A step that fails —
PostgreSQL down or restarting, a connection cut, anything else — is logged and retried after a
capped, jittered backoff with the channels it was given; nothing leaves the loop but
cancellation. Work that fell due meanwhile runs when the database is back.

::

    step(fired) ─▶ wakeup.due_in(channel, s) ─▶ wakeup.wait() ─▶ take() ─▶ step(fired) ...
       │ raises (database down)
       └▶ log, sleep jittered backoff, retry the same channels
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

log = structlog.get_logger("agency_kit.wakeup")


def jittered_backoff(
    attempt: int,
    *,
    initial_s: float,
    maximum_s: float,
    coefficient: float = 2.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry number ``attempt`` (1 = after the first failure), in seconds.

    ``initial_s * coefficient ** (attempt - 1)``, capped at ``maximum_s``, then shortened by a
    random share of up to ``jitter`` (0: none, 1: anything down to zero) so that many rows or
    processes failing together do not retry together.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, not {attempt}")
    exponent = min(attempt - 1, 64)  # past this the cap has long won; avoids an overflow
    base = min(maximum_s, initial_s * math.pow(coefficient, exponent))
    draw = (rng or random).random()
    return base * (1.0 - jitter * draw)


async def seconds_until(conn: asyncpg.Connection, due_column: str, where: str) -> float | None:
    """Seconds until the earliest ``due_column`` of the rows ``where`` selects (``"table
    WHERE ..."``) falls due: 0 if one is due already, None if there is none."""
    value = await conn.fetchval(
        f"SELECT extract(epoch FROM min({due_column}) - now())::float8 FROM {where}"
    )
    # not greatest(0, ...) in SQL: greatest() skips NULLs, and "nothing due" became 0
    return None if value is None else max(0.0, float(value))


async def notify(conn: asyncpg.Connection, channel: str) -> None:
    """Wake the loops listening on ``channel`` once the caller's transaction commits."""
    await conn.execute("SELECT pg_notify($1, '')", channel)


class Wakeup:
    """Which channels have work, and how long a loop may sleep before looking again.

    Args:
        pool: Where the listening connection comes from; it is held (one connection of the
            pool) until :meth:`close`, and taken again after it is lost.
        channels: The notification channels to listen on.
        poll_interval_s: The safety net: every channel counts as fired at least this often.
    """

    def __init__(
        self, pool: asyncpg.Pool, channels: Iterable[str], *, poll_interval_s: float = 5.0
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be above 0, not {poll_interval_s}")
        self._pool = pool
        self.channels = tuple(dict.fromkeys(channels))
        self.poll_interval_s = poll_interval_s
        self._conn: asyncpg.Connection | None = None
        self._conn_lost = False
        self._event = asyncio.Event()
        self._fired: set[str] = set()
        self._due: dict[str, float] = {}
        self._next_full = time.monotonic()  # the first take() looks at everything

    @property
    def listening(self) -> bool:
        """Whether notifications can arrive now (else only due times and the poll wake)."""
        if self._conn is None or self._conn_lost:
            return False
        try:
            return not self._conn.is_closed()
        except asyncpg.InterfaceError:  # the pool took the dead connection back itself
            return False

    def _notified(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        self.poke(channel)

    def _lost(self, _conn: Any) -> None:
        self._conn_lost = True
        self._fired.update(self.channels)  # notifications are missed from now on
        self._event.set()

    async def ensure_listening(self) -> bool:
        """Listen if not listening yet (or any more); never raises. True when listening.

        After a (re)connection every channel counts as fired: what was notified while nobody
        listened has to be found by looking.
        """
        if self.listening:
            return True
        await self._release()
        try:
            conn = await self._pool.acquire(timeout=5.0)
        except Exception as exc:  # the database is down: the step's own errors will say so
            log.debug("wakeup.listen_failed", error=type(exc).__name__)
            return False
        try:
            for channel in self.channels:
                await conn.add_listener(channel, self._notified)
            conn.add_termination_listener(self._lost)
        except Exception as exc:
            log.debug("wakeup.listen_failed", error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await self._pool.release(conn)
            return False
        self._conn = conn
        self._conn_lost = False
        self._fired.update(self.channels)
        self._event.set()
        return True

    def poke(self, channel: str) -> None:
        """Mark ``channel`` as having work now (a notification, or this process's own news)."""
        self._fired.add(channel)
        self._event.set()

    def due_in(self, channel: str, seconds: float | None) -> None:
        """``channel``'s next row falls due in ``seconds`` (None: nothing is due there)."""
        if seconds is None:
            self._due.pop(channel, None)
        else:
            self._due[channel] = time.monotonic() + max(0.0, seconds)

    def take(self) -> set[str]:
        """The channels to look at now: fired, due, or all of them when a full poll is due."""
        now = time.monotonic()
        if now >= self._next_full:
            self._fired.update(self.channels)
            self._next_full = now + self.poll_interval_s
        for channel, at in list(self._due.items()):
            if at <= now:
                self._fired.add(channel)
                del self._due[channel]
        self._event.clear()
        fired, self._fired = self._fired, set()
        return fired

    def give_back(self, channels: Iterable[str]) -> None:
        """Channels a failed step did not finish: they are looked at on the next take."""
        self._fired.update(channels)

    async def wait(self) -> None:
        """Sleep until a notification, the earliest due time, or the next full poll."""
        if self._fired:
            return
        until = min([self._next_full, *self._due.values()])
        timeout = until - time.monotonic()
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()

    async def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # a dead connection is discarded by the pool
            conn.remove_termination_listener(self._lost)
            for channel in self.channels:
                await conn.remove_listener(channel, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    async def close(self) -> None:
        """Stop listening and give the connection back."""
        await self._release()


async def run_until_stopped(
    step: Callable[[set[str]], Awaitable[None]],
    wakeup: Wakeup,
    *,
    name: str,
    retry_initial_s: float = 0.1,
    retry_maximum_s: float | None = None,
) -> None:
    """Run ``step(fired channels)`` whenever there may be work, until cancelled.

    Args:
        step: Does the due work of the channels it is given and reports each channel's next
            due time with :meth:`Wakeup.due_in`. It may raise: the loop logs the failure,
            waits a jittered backoff (``retry_initial_s`` doubling up to ``retry_maximum_s``,
            default the wakeup's poll interval) and calls it again with the same channels.
        wakeup: Where the channels come from and how long to sleep.
        name: The event prefix of the loop's log lines (``outbox``, ``agency.due_work``).
    """
    maximum = wakeup.poll_interval_s if retry_maximum_s is None else retry_maximum_s
    failures = 0
    while True:
        fired: set[str] = set()
        try:
            await wakeup.ensure_listening()
            fired = wakeup.take()
            await step(fired)
        except Exception as exc:  # the loop must outlive any one failure
            failures += 1
            wakeup.give_back(fired)
            delay = jittered_backoff(failures, initial_s=retry_initial_s, maximum_s=maximum)
            log.warning(
                f"{name}.step_failed",
                error=type(exc).__name__,
                message=str(exc)[:200],
                failures=failures,
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)
            continue
        if failures:
            log.info(f"{name}.resumed", after_failures=failures)
            failures = 0
        await wakeup.wait()
