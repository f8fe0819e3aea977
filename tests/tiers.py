"""The test tiers are folders; their markers are given by folder, never by hand.

``tests/integration/`` is marked ``integration`` and ``tests/e2e/`` ``e2e`` by their conftests
(a ``pytestmark`` in a conftest marks nothing, and a marker each module must remember is one
a new module forgets). ``pytest -m "not integration and not e2e"`` (``make test-fast``) is then
the fast tier: unit tests, the replay of committed histories, the stub-activity workflow
tests. See docs/testing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_folder(items: list[pytest.Item], folder: Path, marker: pytest.MarkDecorator) -> None:
    """Add ``marker`` to every collected item whose file lies under ``folder``.

    A conftest's ``pytest_collection_modifyitems`` receives the whole session's items, so the
    folder decides which are its own.
    """
    for item in items:
        if item.path.is_relative_to(folder):
            item.add_marker(marker)
