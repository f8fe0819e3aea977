"""The codec server's audit log (table ``codec_audit``): every decrypt, who and which workflow.

Written by :mod:`intake.codec_server` before it answers plaintext, in one statement for all the
workflows of one call; read by operators and auditors (docs/operations.md, "The audit log").
The table is append-only: nothing here updates or deletes a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class CodecAccess:
    """One decrypt call's row for one workflow."""

    subject: str
    via: str
    namespace: str | None
    workflow_id: str | None
    payloads: int
    origin: str | None = None
    at: datetime | None = None
    """Set by the database (``now()``) when written; read back with :meth:`CodecAuditLog.rows`."""


class CodecAuditLog:
    """Appends to and reads ``codec_audit`` through one pool (owned by the caller)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, *, subject: str, via: str, namespace: str | None,
                     origin: str | None, payloads_by_workflow: Mapping[str | None, int]) -> None:
        """One row per workflow whose payloads one call decrypted, atomically."""
        ids = list(payloads_by_workflow)
        counts = [payloads_by_workflow[w] for w in ids]
        await self._pool.execute(
            """
            INSERT INTO codec_audit (subject, via, namespace, workflow_id, payloads, origin)
            SELECT $1, $2, $3, w, n, $6 FROM unnest($4::text[], $5::int[]) AS t(w, n)
            """,
            subject, via, namespace, ids, counts, origin,
        )

    async def rows(self, *, workflow_id: str | None = None,
                   subject: str | None = None) -> list[CodecAccess]:
        """The log, oldest first; only one workflow's or one subject's when given."""
        records = await self._pool.fetch(
            """
            SELECT subject, via, namespace, workflow_id, payloads, origin, at FROM codec_audit
            WHERE ($1::text IS NULL OR workflow_id = $1) AND ($2::text IS NULL OR subject = $2)
            ORDER BY id
            """,
            workflow_id, subject,
        )
        return [CodecAccess(**dict(r)) for r in records]
