"""Every test under tests/integration/ needs the real Temporal dev server or PostgreSQL (or
both, from tests/conftest.py), and carries the ``integration`` marker for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiers import mark_folder


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_folder(items, Path(__file__).parent, pytest.mark.integration)
