"""The embedded stack (``nwd up``/``down``): real Temporal dev server and PostgreSQL processes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nwd.stack import COMPONENTS, Stack, port_open, read_secrets
from tests.conftest import quiet_stack
from workflows.search_attributes import ALL as SEARCH_ATTRIBUTES

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:  # an exited child of init that init has not reaped yet is gone too
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = quiet_stack(tmp_path_factory.mktemp("stack") / "state", start_timeout=30)
    try:
        yield stack
    finally:
        stack.down()


class TestEmbeddedStack:
    def test_up_starts_temporal_and_postgres(self, stack: Stack) -> None:
        """`up` starts both servers on the requested ports and both answer."""
        statuses = {s.name: s for s in stack.up(["temporal", "postgres"])}
        assert set(statuses) == {"temporal", "postgres"}
        assert all(s.running and s.pid for s in statuses.values())
        assert port_open("127.0.0.1", stack.ports.temporal)
        assert port_open("127.0.0.1", stack.ports.temporal_ui)
        assert port_open("127.0.0.1", stack.ports.postgres)
        health = stack.temporal_cli("operator", "cluster", "health")
        assert "SERVING" in health.stdout

    def test_databases_exist(self, stack: Stack) -> None:
        """The engine's and the reference agencies' databases are created."""
        stack.up(["postgres"])
        listed = stack.psql("SELECT datname FROM pg_database")
        assert {"nwd", "agencies"} <= set(listed.stdout.split())
        assert stack.database_url.endswith(f":{stack.ports.postgres}/nwd")

    def test_search_attributes_registered(self, stack: Stack) -> None:
        """Every search attribute of the engine is registered on the dev server."""
        stack.up(["temporal"])
        listed = stack.temporal_cli("operator", "search-attribute", "list", "-o", "json")
        custom = json.loads(listed.stdout)["customAttributes"]
        assert {key.name for key in SEARCH_ATTRIBUTES} <= set(custom)

    def test_secrets_created_private(self, stack: Stack) -> None:
        """Secrets are generated once, kept 0600, and include one per agency in the registry."""
        stack.up(["temporal", "postgres"])
        path = stack.state_dir / "secrets.json"
        assert path.stat().st_mode & 0o777 == 0o600
        secrets = read_secrets(stack.state_dir)
        assert secrets is not None
        assert stack.child_env("worker")["NWD_ENCRYPTION_KEY"] == secrets.encryption_key
        assert stack.child_env("agencies")["DATABASE_URL"].endswith("/agencies")

    def test_up_twice_reuses(self, stack: Stack) -> None:
        """A second `up` keeps the running processes (same PIDs) and is quick."""
        first = {s.name: s.pid for s in stack.up(["temporal", "postgres"])}
        started = time.monotonic()
        second = {s.name: s.pid for s in stack.up(["temporal", "postgres"])}
        assert second == first
        assert time.monotonic() - started < 5

    def test_stale_pid_file_is_cleaned(self, stack: Stack) -> None:
        """A pid file naming a dead process does not count as running and is removed."""
        stack.pids_dir.mkdir(parents=True, exist_ok=True)
        stack.pid_path("intake").write_text("999999999\n")
        assert stack.running_pid("intake") is None
        assert not stack.pid_path("intake").exists()

    def test_down_leaves_no_process(self, stack: Stack) -> None:
        """`down` stops every process it started (and PostgreSQL's backends) by PID."""
        pids = [s.pid for s in stack.up(["temporal", "postgres"]) if s.pid]
        backends = [
            int(c) for pid in pids for f in Path(f"/proc/{pid}/task").glob("*/children")
            for c in f.read_text().split()
        ]
        stopped = stack.down()
        assert set(stopped) == {"temporal", "postgres"}
        deadline = time.monotonic() + 5
        while not all(_gone(p) for p in pids + backends) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(p) for p in pids + backends)
        assert not any(stack.pid_path(name).exists() for name in COMPONENTS)
        assert not port_open("127.0.0.1", stack.ports.temporal)
        assert not port_open("127.0.0.1", stack.ports.postgres)
        assert not any(s.running for s in stack.status())
