"""Versioned schema migrations for the read model, applied by the engine itself at start-up.

Files ``sql/NNNN_name.sql`` run once each, in order, inside one transaction per file,
under an advisory lock so a worker and the intake starting together do not race.
"""

from __future__ import annotations

from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)
_LOCK_ID = 0x4E57_4430  # "NWD0": any constant, shared by every process applying migrations


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("readmodel").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(pool: asyncpg.Pool) -> list[str]:
    """Apply what is missing; return the names applied now (empty when up to date)."""
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        version, name,
                    )
                applied_now.append(name)
                log.info("migration_applied", migration=name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
