"""The replay cache of signed callbacks: each (key id, nonce) is taken once, until it expires.

A callback's signature carries a random ``nonce`` and a short ``expires``
(:mod:`agency_kit.signing`). :meth:`NonceCache.take` inserts the pair if absent, in one
statement (``ON CONFLICT DO NOTHING``), so two intakes racing on the same captured message
take it once between them: the one whose insert wins goes on, every other gets ``False``.
An entry is needed only while its signature is valid; :meth:`NonceCache.purge` deletes the
expired ones (the intake calls it now and then from the callback route itself).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped,unused-ignore]

PURGE_EVERY = 200
"""On average one take in this many also purges the expired entries."""


class NonceCache:
    """Signature nonces already seen, in the read model's database (``signature_nonces``)."""

    def __init__(self, pool: asyncpg.Pool, *, skew_s: int = 5) -> None:
        self._pool = pool
        self._skew_s = skew_s

    async def take(self, key_id: str, nonce: str, expires: int) -> bool:
        """Record ``nonce`` of ``key_id`` until ``expires`` (unix seconds); whether it was new."""
        until = datetime.fromtimestamp(expires + self._skew_s, UTC)
        inserted = await self._pool.fetchval(
            "INSERT INTO signature_nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (key_id, nonce) DO NOTHING RETURNING true",
            key_id, nonce, until,
        )
        if random.random() < 1 / PURGE_EVERY:
            await self.purge()
        return bool(inserted)

    async def purge(self) -> int:
        """Delete the expired entries; how many went."""
        result = await self._pool.execute("DELETE FROM signature_nonces WHERE expires_at < now()")
        return int(result.split()[-1])
