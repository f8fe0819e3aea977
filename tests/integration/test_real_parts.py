"""The real parts the suite stands on are up: Temporal dev server and PostgreSQL."""

from __future__ import annotations

import asyncpg
from temporalio.testing import WorkflowEnvironment


class TestRealParts:
    async def test_temporal_dev_server_answers(self, temporal_env: WorkflowEnvironment) -> None:
        """The dev server reports its system info over gRPC."""
        info = await temporal_env.client.workflow_service.get_system_info(
            __import__("temporalio.api.workflowservice.v1", fromlist=["x"]).GetSystemInfoRequest()
        )
        assert info.server_version

    async def test_postgres_database_is_fresh(self, database_url: str) -> None:
        """Each test gets an empty database on the embedded server."""
        conn = await asyncpg.connect(database_url)
        try:
            tables = await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
            )
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        assert tables == 0
        assert version.split(".")[0].isdigit()
