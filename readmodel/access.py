"""Who may follow a request, and the refused attempts the rate limit counts (PostgreSQL).

The tables are ``readmodel/sql/0004_request_access.sql``'s. This module only stores and
counts; what a hash is made of and when an attempt is refused is the front door's policy
(:mod:`intake.access`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg


@dataclass(frozen=True)
class AccessRow:
    reference: str
    owner_hash: bytes | None
    code_hash: bytes | None


@dataclass(frozen=True)
class OwnedRequest:
    """One of a signed-in citizen's requests, as "my requests" lists it."""

    reference: str
    service: str
    status: str
    submitted_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Throttle:
    """The refused attempts of one scope within the window."""

    failures: int
    retry_after_s: int
    """Seconds until the oldest of them leaves the window (0 when there is none)."""


class AccessStore:
    """The ``request_access`` and ``access_failures`` tables over a pool owned by the caller."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def grant(self, reference: str, *, owner_hash: bytes | None,
                    code_hash: bytes | None) -> bool:
        """Write the request's access row; False when it has one already (never replaced:
        a second submission with the same key must not take the request over)."""
        status = await self._pool.execute(
            "INSERT INTO request_access (reference, owner_hash, code_hash) VALUES ($1, $2, $3)"
            " ON CONFLICT (reference) DO NOTHING", reference, owner_hash, code_hash)
        return bool(status.endswith(" 1"))

    async def revoke(self, reference: str) -> None:
        """Take back the row of a request that was not started after all."""
        await self._pool.execute("DELETE FROM request_access WHERE reference = $1", reference)

    async def get(self, reference: str) -> AccessRow | None:
        row = await self._pool.fetchrow(
            "SELECT reference, owner_hash, code_hash FROM request_access WHERE reference = $1",
            reference)
        if row is None:
            return None
        return AccessRow(row["reference"], row["owner_hash"], row["code_hash"])

    async def owned(self, owner_hash: bytes, *, limit: int = 200) -> list[OwnedRequest]:
        """The requests whose owner is ``owner_hash``, newest first (at most ``limit``)."""
        rows = await self._pool.fetch(
            "SELECT r.reference, r.service, r.status, r.submitted_at, r.finished_at"
            " FROM request_access a JOIN requests r USING (reference)"
            " WHERE a.owner_hash = $1 ORDER BY r.submitted_at DESC, r.reference LIMIT $2",
            owner_hash, limit)
        return [OwnedRequest(r["reference"], r["service"], r["status"], r["submitted_at"],
                             r["finished_at"]) for r in rows]

    async def throttles(self, scopes: Sequence[str], window: timedelta) -> dict[str, Throttle]:
        """The refused attempts of each scope within ``window``, and when the oldest leaves it."""
        rows = await self._pool.fetch(
            "SELECT scope, count(*) AS failures,"
            " ceil(extract(epoch FROM min(failed_at) + $2::interval - clock_timestamp()))"
            "   AS retry_after"
            " FROM access_failures WHERE scope = ANY($1::text[])"
            "  AND failed_at > clock_timestamp() - $2::interval GROUP BY scope",
            list(scopes), window)
        found = {r["scope"]: Throttle(int(r["failures"]), max(1, int(r["retry_after"])))
                 for r in rows}
        return {s: found.get(s, Throttle(0, 0)) for s in scopes}

    async def record_failure(self, scopes: Sequence[str], window: timedelta) -> None:
        """Count one refused attempt in each scope; forget those older than ``window``."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM access_failures WHERE scope = ANY($1::text[])"
                " AND failed_at <= clock_timestamp() - $2::interval", list(scopes), window)
            await conn.executemany("INSERT INTO access_failures (scope) VALUES ($1)",
                                   [(s,) for s in scopes])
