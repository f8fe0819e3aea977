"""The agencies one reference app hosts: each with its own store, the pool they share, secrets.

Every agency keeps its tables in a PostgreSQL schema of its own (:mod:`agency_kit.reference.store`),
as separate agency systems would; one pool serves them all because they share one process.
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

from agency_kit.reference.plumbing import known_agency
from agency_kit.reference.store import AgencyStore, Record, schema_name
from definitions.models import Agency, AgencyRegistry

log = structlog.get_logger("agency_kit.reference")


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
        self.stores = {agency_id: AgencyStore(agency_id) for agency_id in self.agencies}
        self.database_url = database_url
        self.secrets = dict(secrets)
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

    async def open(self) -> list[tuple[str, Record]]:
        """Open the pool and create every agency's tables; return the callbacks still owed."""
        self._pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=10)
        async with self.pool.acquire() as conn:
            async with conn.transaction():  # one round trip for every agency's tables
                await conn.execute(";\n".join(store.ddl() for store in self.stores.values()))
            pending = [
                (agency_id, record)
                for agency_id, store in self.stores.items()
                for record in await store.pending_callbacks(conn)
            ]
        for agency in self.agencies.values():
            if agency.auth_secret and not self.secrets.get(agency.id):
                log.error(
                    "agency.secret_missing",
                    agency=agency.id,
                    env=agency.auth_secret,
                    effect="every call to this agency is refused with 401",
                )
        return pending

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def empty_tables(self) -> None:
        """Delete every record and idempotency key of every agency, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            for store in self.stores.values():
                await store.reset(conn)
