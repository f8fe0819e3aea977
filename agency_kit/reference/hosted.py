"""The agencies one reference app hosts: each with its own store, the pool they share, keys.

Every agency keeps its tables in a PostgreSQL schema of its own (:mod:`agency_kit.reference.store`),
as separate agency systems would; one pool serves them all because they share one process.
"""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import structlog

from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.reference.plumbing import known_agency
from agency_kit.reference.store import AgencyStore, schema_name
from agency_kit.signing import Signer
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
    """The registry's agencies, their stores and keys, and (once opened) the database pool.

    Args:
        registry: The agencies to host.
        database_url: PostgreSQL DSN; each agency gets its own schema in that database.
        credentials: Each agency's private keys and the engine's public keys.

    Raises:
        ValueError: two agency ids map to the same schema name.
    """

    def __init__(
        self, registry: AgencyRegistry, database_url: str, credentials: AgencyCredentials
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
        self.credentials = credentials
        self.stores = {
            agency.id: AgencyStore(agency.id, signer=self.signer(agency))
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

    def signer(self, agency: Agency) -> Signer | None:
        """What the agency signs its answers and callbacks with (None: it does not sign)."""
        return self.credentials.signer(agency.id) if agency.keys is not None else None

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
            if agency.keys is not None and (
                    self.signer(agency) is None or self.credentials.engine_keys is None):
                log.error(
                    "agency.keys_missing",
                    agency=agency.id,
                    missing="its private key (NWD_AGENCY_KEYS_FILE)"
                    if self.signer(agency) is None else "the engine's keys (NWD_ENGINE_JWKS_URL)",
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
