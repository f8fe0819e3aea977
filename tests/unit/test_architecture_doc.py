"""docs/architecture.md's import table is the import-linter contracts, and stays so."""

from __future__ import annotations

import re
import tomllib

from runtime.settings import PROJECT_ROOT


def contracts() -> dict[str, tuple[set[str], set[str]]]:
    """Room -> (modules it must not import, modules exempted by ignore_imports)."""
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    rooms: dict[str, tuple[set[str], set[str]]] = {}
    for contract in config["tool"]["importlinter"]["contracts"]:
        assert contract["type"] == "forbidden", contract["name"]
        exempt = {rule.split("->")[1].strip() for rule in contract.get("ignore_imports", [])}
        for source in contract["source_modules"]:
            forbidden, allowed = rooms.setdefault(source, (set(), set()))
            forbidden.update(contract["forbidden_modules"])
            allowed.update(exempt)
    return rooms


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Room -> (names in its 'must not import' cell, names inside its '(except ...)')."""
    text = (PROJECT_ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Rooms and import rules", 1)[1].split("\n## ", 1)[0]
    rooms: dict[str, tuple[set[str], set[str]]] = {}
    for line in table.splitlines():
        match = re.match(r"^\| `([a-z][a-z0-9_]*)(?:/|\.py)` \|.*\| (.*) \|$", line)
        if not match:
            continue
        cell = match.group(2)
        exceptions = set(re.findall(r"`([\w.]+)`", " ".join(re.findall(r"\(except ([^)]*)\)",
                                                                          cell))))
        names = set(re.findall(r"`([\w.]+)`", re.sub(r"\(except [^)]*\)", "", cell)))
        rooms[match.group(1)] = (names, exceptions)
    return rooms


def test_the_table_is_the_contracts() -> None:
    """Every room's forbidden imports (and exceptions) are what lint-imports checks."""
    doc = documented()
    assert {"definitions", "workflows", "runtime", "agency_kit"} <= set(doc)  # the table parsed
    for room, (forbidden, exempt) in contracts().items():
        assert room in doc, f"docs/architecture.md has no row for {room}"
        assert doc[room] == (forbidden, exempt), room


def test_every_room_with_a_row_has_a_contract_or_says_none() -> None:
    """A documented room with forbidden imports is checked by a contract."""
    checked = contracts()
    for room, (forbidden, _) in documented().items():
        assert not forbidden or room in checked, room
