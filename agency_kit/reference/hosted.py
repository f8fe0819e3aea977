"""The agencies one reference app hosts: each with its own store, the pool they share, secrets.

Every agency keeps its tables in a PostgreSQL schema of its own (:mod:`agency_kit.reference.store`),
as separate agency systems would; one pool serves them all because they share one process.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

from agency_kit.reference.plumbing import known_agency
from agency_kit.reference.store import AgencyStore, schema_name
from definitions.models import Agency, AgencyRegistry

log = structlog.get_logger("agency_kit.reference")

DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError is one too
    asyncpg.PostgresConnectionError,  # SQLSTATE 08: the connection failed or was lost
    asyncpg.InterfaceError,  # the connection is closed on our side
    asyncpg.exceptions.OperatorInterventionError,  # 57: shutting down, starting up
)
"""What a database outage raises: the call did nothing, and trying again later is right."""


class HostedAgencies:
    """The registry's agencies, their stores and secrets, and (once opened) the database pool.

    Args:
        registry: The agencies to host.
        database_url: PostgreSQL DSN; each agency gets its own schema in that database.
        secrets: Agency id -> signing secret.

    Raises:
        ValueError: two agency ids map to the same schema name.
    """

    def __init__(
        self, registry: AgencyRegistry, database_url: str, secrets: Mapping[str, str]
    ) -> None:
        self.agencies = {agency.id: agency for agency in registry.agencies}
        schemas: dict[str, str] = {}
        for agency_id in self.agencies:
            schema = schema_name(agency_id)
            if schema in schemas:
                raise ValueError(
                    f"agencies {schemas[schema]!r} and {agency_id!r} map to the same "
                    f"database schema {schema!r}; rename one"
                )
            schemas[schema] = agency_id
        self.database_url = database_url
        self.secrets = dict(secrets)
        self.stores = {
            agency.id: AgencyStore(agency.id, secret=self.signing_secret(agency))
            for agency in self.agencies.values()
        }
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the reference agencies are not started")
        return self._pool

    def agency(self, agency_id: str) -> Agency:
        """The hosted agency, or a 404 refusal naming the hosted ones."""
        return known_agency(self.agencies, agency_id)

    def signing_secret(self, agency: Agency) -> str | None:
        """The secret the agency signs its callbacks with (None: it does not sign)."""
        return self.secrets.get(agency.id) if agency.auth_secret else None

    async def open(self) -> int:
        """Open the pool and create every agency's tables; how many owed callbacks were
        adopted from tables made before the outbox."""
        # 10 for calls, and one each held by the outbox sender's and the due work's LISTEN
        self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=12)
        async with self.pool.acquire() as conn:
            async with conn.transaction():  # one round trip for every agency's tables
                await conn.execute(";\n".join(store.ddl() for store in self.stores.values()))
            adopted = 0
            for store in self.stores.values():
                adopted += await store.adopt_owed_callbacks(conn)
        for agency in self.agencies.values():
            if agency.auth_secret and not self.secrets.get(agency.id):
                log.error(
                    "agency.secret_missing",
                    agency=agency.id,
                    env=agency.auth_secret,
                    effect="every call to this agency is refused with 401",
                )
        return adopted

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def empty_tables(self) -> None:
        """Delete every record, outbox row and idempotency key of every agency, at once."""
        async with self.pool.acquire() as conn, conn.transaction():
            for store in self.stores.values():
                await store.reset(conn)
