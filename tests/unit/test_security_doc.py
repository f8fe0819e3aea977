"""docs/security.md names, for each threat, the test that tries it: every name must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"`(tests/[\w/]+(?:\.py)?)((?:::\w+)*)`")


def defined(path: Path) -> set[tuple[str, ...]]:
    """Every test class and function of a module, as paths of names."""
    names: set[tuple[str, ...]] = set()

    def walk(body: list[ast.stmt], prefix: tuple[str, ...]) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                names.add((*prefix, node.name))
                walk(node.body, (*prefix, node.name))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add((*prefix, node.name))

    walk(ast.parse(path.read_text()).body, ())
    return names


def test_every_test_the_threat_model_names_exists() -> None:
    references = REFERENCE.findall(DOC.read_text())
    assert len(references) > 40
    missing = []
    for file, names in references:
        path = ROOT / file
        if not path.exists():
            missing.append(file)
            continue
        if names and tuple(names.split("::")[1:]) not in defined(path):
            missing.append(file + names)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
