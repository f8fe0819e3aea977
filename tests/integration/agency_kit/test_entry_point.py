"""``python -m agency_kit`` serves the repository's registry, configured from the environment."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx
import pytest

from definitions.loader import load_registry_file
from runtime.process import free_port
from tests.integration.agency_kit.conftest import write_agency_keys
from tests.keys import ENGINE, agency_credentials
from tests.polling import eventually

ROOT = Path(__file__).resolve().parents[3]




class TestEntryPoint:
    async def test_serves_repository_registry(
        self, database_url: str, tmp_path: Path, engine_jwks_url: str
    ) -> None:
        """The module starts, hosts every registry agency and verifies the engine's calls with
        the engine's JWKS, signing with the keys of its keys file."""
        registry = load_registry_file(ROOT / "definitions" / "agencies.yaml")
        agency = next(a for a in registry.agencies if a.keys and a.operations)
        keys = agency_credentials(registry)
        keys_file = write_agency_keys(tmp_path / "agency-keys.json", keys)
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "NWD_AGENCIES_URL": f"http://127.0.0.1:{port}",
            "NWD_AGENCY_KEYS_FILE": str(keys_file),
            "NWD_ENGINE_JWKS_URL": engine_jwks_url,
            "NWD_AGENCY_BEHAVIOUR": json.dumps({"*": {"latency_ms": 1}}),
            "NWD_LOG_FORMAT": "json",
        }
        env.pop("NWD_CATALOG_DIR", None)
        log_path = tmp_path / "agencies.log"
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "agency_kit",
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                async def healthy() -> None:
                    if process.returncode is not None:  # it exited: no point waiting
                        pytest.fail(log_path.read_text())
                    try:
                        response = await client.get(f"{base}/health")
                    except httpx.TransportError as down:
                        raise AssertionError(f"not listening yet: {down!r}") from down
                    assert response.status_code == 200, response.text

                await eventually(healthy, within_s=10, every_s=0.05)
                health = (await client.get(f"{base}/health")).json()
                assert set(health["agencies"]) == {a.id for a in registry.agencies}
                operation = agency.operations[0]
                body = json.dumps(
                    {"reference": "R-1", "step": "s", "item": None, "input": {}}
                ).encode()
                url = f"{base}/agencies/{agency.id}/operations/{operation.id}"
                response = await client.post(url, content=body, headers=ENGINE.signer(
                    ).request_headers("POST", url, body, {
                        "Idempotency-Key": "R-1:s:-", "Content-Type": "application/json"}))
                # Signed correctly, so the empty input reaches validation: 422 with paths.
                assert response.status_code == 422, response.text
                assert response.json()["code"] == "invalid_input"
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)
        conn = await asyncpg.connect(database_url)
        try:
            schemas = {
                row["nspname"]
                for row in await conn.fetch("SELECT nspname FROM pg_namespace")
            }
        finally:
            await conn.close()
        expected = {"agency_" + a.id.replace("-", "_") for a in registry.agencies}
        assert expected <= schemas
