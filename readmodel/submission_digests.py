"""The body each idempotency key was first used with (table ``submission_digests``).

The front door claims a digest for a request reference before it starts the request, in the
same place it writes the request's first row; a second submission with the same key (so the
same reference) and another digest is a conflict, answered 409 without touching anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Claim:
    """What claiming a reference's digest found."""

    new: bool
    """This call wrote the digest (the key was not used before)."""
    matches: bool
    """The digest is the one first recorded for the reference (always True when ``new``)."""


class SubmissionDigests:
    """Reads and writes ``submission_digests`` through one pool (owned by the caller)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, reference: str, digest: str) -> Claim:
        """Record ``digest`` for ``reference`` unless one is recorded; compare with it."""
        for _ in range(2):
            row = await self._claim(reference, digest)
            if row is not None:
                return Claim(new=bool(row["new"]), matches=row["digest"] == digest)
        # A concurrent claim committed between this statement's snapshot and its insert,
        # twice: not seen in practice; refusing is the safe answer.
        return Claim(new=False, matches=False)

    async def _claim(self, reference: str, digest: str) -> asyncpg.Record | None:
        # The statement's snapshot predates a concurrent claim that committed while the
        # insert waited on it: then neither half returns a row, and the caller asks again.
        return await self._pool.fetchrow(
            """
            WITH new AS (
                INSERT INTO submission_digests (reference, digest) VALUES ($1, $2)
                ON CONFLICT (reference) DO NOTHING RETURNING digest
            )
            SELECT true AS new, digest FROM new
            UNION ALL
            SELECT false AS new, digest FROM submission_digests WHERE reference = $1
            LIMIT 1
            """,
            reference, digest,
        )

    async def forget(self, reference: str, digest: str) -> None:
        """Take back a digest claimed for a request that was not started."""
        await self._pool.execute(
            "DELETE FROM submission_digests WHERE reference = $1 AND digest = $2",
            reference, digest)
