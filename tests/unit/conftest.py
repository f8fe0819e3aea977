"""Unit tests are pure: no server fixture may reach them, so the fast tier stays fast.

A unit test asking for the session's dev server or PostgreSQL fails collection with the
fix (move it to tests/integration/), instead of quietly starting a server for the tier
that is meant to need none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SERVER_FIXTURES = frozenset({"temporal_env", "temporal_address", "postgres_server",
                             "database_url"})
"""The fixtures of tests/conftest.py that start a real server."""

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        servers = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if servers:
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but uses {', '.join(sorted(servers))}: "
                "move it to tests/integration/ (unit tests start no server)")
