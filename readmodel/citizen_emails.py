"""Which emails to citizens went out: the exactly-once ledger of ``send_citizen_email``.

One row per ``(reference, key)``, where the key names the occasion (the kind, the step, the
round). The activity :meth:`claim`\\ s the key before it talks to the SMTP server and
:meth:`mark_sent` after the server accepted the message; a retry of a key already sent is
told so and sends nothing. Between the server's acceptance and the mark a crash can still
cause a second delivery: the Message-ID is derived from the key, so the receiving side can
drop the copy. No address, subject or body is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class EmailRow:
    reference: str
    key: str
    kind: str
    message_id: str
    status: str
    attempts: int
    error: str | None
    sent_at: datetime | None


class CitizenEmailLedger:
    """The ``citizen_emails`` table.

    Args:
        pool: the read model's pool; owned by the caller.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(self, reference: str, key: str, kind: str, message_id: str) -> int | None:
        """Claim ``key`` for an attempt to send: the attempt's number (1 for the first), or
        None when it was sent already (nothing must be sent again)."""
        attempt: int | None = await self._pool.fetchval(
            "INSERT INTO citizen_emails (reference, key, kind, message_id, status, attempts)"
            " VALUES ($1, $2, $3, $4, 'sending', 1)"
            " ON CONFLICT (reference, key) DO UPDATE"
            "   SET attempts = citizen_emails.attempts + 1, status = 'sending'"
            "   WHERE citizen_emails.status <> 'sent'"
            " RETURNING attempts",
            reference, key, kind, message_id)
        return attempt

    async def mark_sent(self, reference: str, key: str) -> None:
        await self._pool.execute(
            "UPDATE citizen_emails SET status = 'sent', sent_at = now(), error = NULL"
            " WHERE reference = $1 AND key = $2", reference, key)

    async def mark_failed(self, reference: str, key: str, error: str) -> None:
        """Note a failed attempt by the failure's type name (never its text)."""
        await self._pool.execute(
            "UPDATE citizen_emails SET status = 'failed', error = $3"
            " WHERE reference = $1 AND key = $2 AND status <> 'sent'", reference, key, error)

    async def of_request(self, reference: str) -> list[EmailRow]:
        """The request's emails, oldest claim first."""
        rows = await self._pool.fetch(
            "SELECT reference, key, kind, message_id, status, attempts, error, sent_at"
            " FROM citizen_emails WHERE reference = $1 ORDER BY claimed_at, key", reference)
        return [EmailRow(**dict(row)) for row in rows]
