"""Shared fixtures of the definitions tests: the shipped catalog, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from definitions.catalog import Catalog
from definitions.loader import load_catalog
from runtime.settings import DEFAULT_CATALOG_DIR


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The catalog shipped in definitions/."""
    return load_catalog(DEFAULT_CATALOG_DIR)


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped catalog's YAML files."""
    (tmp_path / "services").mkdir()
    for file in DEFAULT_CATALOG_DIR.glob("agencies*.yaml"):  # the registry and its translations
        (tmp_path / file.name).write_text(file.read_text())
    for file in (DEFAULT_CATALOG_DIR / "services").glob("*.yaml"):
        (tmp_path / "services" / file.name).write_text(file.read_text())
    return tmp_path
