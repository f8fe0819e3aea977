"""An idempotency store on PostgreSQL (asyncpg): the first response to a key is the answer.

Use it inside the same transaction as the effect, so the effect and the remembered response
commit together or not at all::

    store = IdempotencyStore(schema="agency_dmv")
    async with conn.transaction():
        stored = await store.claim(conn, key, request_hash(body))
        if stored is not None:          # seen before: answer exactly as the first time
            return stored.status_code, stored.body
        ...write the effect with `conn`...
        await store.save(conn, key, 200, response_body)

How concurrent duplicates are kept out: :meth:`IdempotencyStore.claim` inserts the key (the
primary key) at once. A second transaction inserting the same key waits on the first one's
uncommitted row; when the first commits, the second's ``INSERT ... ON CONFLICT DO NOTHING``
inserts nothing and it reads the committed response instead — so exactly one writes. If the
first rolls back, the second goes ahead. No in-memory lock, so it holds across processes.

The same key with a different body raises :class:`IdempotencyKeyReusedError` (answer 422
``idempotency_key_reused``). Only the standard library and asyncpg are needed; no jsonb codec
is assumed (JSON is passed as text and cast).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]


class IdempotencyKeyReusedError(Exception):
    """The key was first used with a different request body."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was already used with a different body")
        self.key = key


@dataclass(frozen=True)
class StoredResponse:
    """The response first given for a key."""

    status_code: int
    body: dict[str, Any]


def request_hash(body: Any) -> str:
    """sha256 of the canonical JSON of a parsed body (key order and spacing do not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def quote_ident(name: str) -> str:
    """A safe SQL identifier (lower-case letters, digits, underscores only)."""
    if not _IDENT.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (a-z, 0-9, _)")
    return f'"{name}"'


class IdempotencyStore:
    """Remembers the first response to each Idempotency-Key in one table.

    Args:
        schema: The PostgreSQL schema holding the table (None: the search path).
        table: The table name.
    """

    def __init__(self, *, schema: str | None = None, table: str = "idempotency") -> None:
        self.table = (
            f"{quote_ident(schema)}.{quote_ident(table)}" if schema else quote_ident(table)
        )

    def ddl(self) -> str:
        """The ``CREATE TABLE IF NOT EXISTS`` statement (idempotent)."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " key text PRIMARY KEY,"
            " request_hash text NOT NULL,"
            " status_code integer NOT NULL,"
            " body jsonb NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )

    async def create(self, conn: asyncpg.Connection) -> None:
        await conn.execute(self.ddl())

    async def claim(
        self, conn: asyncpg.Connection, key: str, body_hash: str
    ) -> StoredResponse | None:
        """Claim ``key`` inside the caller's transaction.

        Returns None when the caller now owns the key (do the work, then :meth:`save`), or the
        stored first response. Raises :class:`IdempotencyKeyReusedError` on a different body.
        """
        if not conn.is_in_transaction():
            raise RuntimeError("IdempotencyStore.claim must run inside a transaction")
        inserted = await conn.fetchval(
            f"INSERT INTO {self.table} (key, request_hash, status_code, body)"
            " VALUES ($1, $2, 0, '{}'::jsonb) ON CONFLICT (key) DO NOTHING RETURNING true",
            key,
            body_hash,
        )
        if inserted:
            return None
        row = await conn.fetchrow(
            f"SELECT request_hash, status_code, body::text AS body FROM {self.table}"
            " WHERE key = $1",
            key,
        )
        if row is None:  # pragma: no cover - the conflicting row was deleted meanwhile
            raise RuntimeError(f"Idempotency-Key {key!r} vanished while being claimed")
        if row["request_hash"] != body_hash:
            raise IdempotencyKeyReusedError(key)
        return StoredResponse(status_code=row["status_code"], body=json.loads(row["body"]))

    async def save(
        self, conn: asyncpg.Connection, key: str, status_code: int, body: dict[str, Any]
    ) -> None:
        """Record the response for a key claimed in this transaction."""
        await conn.execute(
            f"UPDATE {self.table} SET status_code = $2, body = $3::jsonb WHERE key = $1",
            key,
            status_code,
            json.dumps(body),
        )

    async def lookup(self, conn: asyncpg.Connection, key: str) -> StoredResponse | None:
        """The stored response for a key, if any (outside a claim)."""
        row = await conn.fetchrow(
            f"SELECT status_code, body::text AS body FROM {self.table} WHERE key = $1", key
        )
        if row is None:
            return None
        return StoredResponse(status_code=row["status_code"], body=json.loads(row["body"]))
