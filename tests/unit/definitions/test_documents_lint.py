"""Every YAML document under docs/ and the shipped catalog passes strict linters.

Three checks, because each misses what the others catch:

- **yamllint** ``--strict`` with the repository's ``.yamllint.yaml``: YAML hygiene that a
  parser accepts silently — duplicate keys, ``key:`` left empty, ``yes``/``no`` read as
  booleans by YAML 1.1 tools, text that only YAML 1.2 parsers read (``{en: Why?, es: ¿Por
  qué?}`` is a syntax error to PyYAML-based tools), lines too long to review;
- **openapi-spec-validator** on each OpenAPI document: the OpenAPI 3.1 structure (required
  fields, references, schema dialect);
- the **implicit-null** check below: in an OpenAPI document no value is null unless it is an
  example or a default, and every ``description`` is text. An unquoted comma in a flow
  mapping — ``{type: string, description: A code, e.g. x.}`` — makes ``e.g. x.`` a key with
  a null value; JSON Schema ignores unknown keywords and the document is valid YAML, so without
  this (or yamllint's ``empty-values`` rule) the description is silently cut short (as two in
  the agency contract were).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from ruamel.yaml import YAML
from yamllint import config, linter

ROOT = Path(__file__).resolve().parents[3]
LINTED_DIRS = (ROOT / "docs", ROOT / "definitions")
"""docs/ (the OpenAPI documents) and the shipped catalog."""

DOCUMENTS = sorted(
    path
    for folder in LINTED_DIRS
    for pattern in ("*.yaml", "*.yml")
    for path in folder.rglob(pattern)
)
OPENAPI = [
    path for path in DOCUMENTS if "openapi" in (YAML(typ="safe").load(path.read_text()) or {})
]
YAMLLINT = config.YamlLintConfig(file=str(ROOT / ".yamllint.yaml"))
NULL_ALLOWED_UNDER = {"default", "example", "const", "examples", "enum"}


def yamllint_problems(text: str, name: str) -> list[str]:
    """Every problem yamllint reports, warnings included (that is --strict)."""
    return [f"{name}:{p.line}:{p.column}: {p.message} ({p.rule})"
            for p in linter.run(text, YAMLLINT, name)]


def implicit_nulls(node: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """Where a mapping holds a null nobody wrote on purpose, or a description is not text."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*path, str(key))
            if value is None and str(key) not in NULL_ALLOWED_UNDER:
                yield f"{'.'.join(here)} is null (an unquoted comma in a flow mapping?)"
            if key == "description" and path[-1:] != ("properties",) and not isinstance(value, str):
                yield f"{'.'.join(here)} is {type(value).__name__}, not text"
            if str(key) not in NULL_ALLOWED_UNDER:
                yield from implicit_nulls(value, here)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from implicit_nulls(value, (*path, str(index)))


def test_the_documents_are_found() -> None:
    """The globs find the agency contract and every catalog file (a test of the test)."""
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert "docs/openapi/agency-contract.yaml" in names
    assert "definitions/agencies.yaml" in names
    assert {p.name for p in (ROOT / "definitions" / "services").glob("*.yaml")} <= {
        Path(name).name for name in names
    }
    assert [path.name for path in OPENAPI] == ["agency-contract.yaml"]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_yamllint_strict(path: Path) -> None:
    """yamllint --strict with .yamllint.yaml reports nothing."""
    problems = yamllint_problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert problems == []


@pytest.mark.parametrize("path", OPENAPI, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_openapi_31_structure(path: Path) -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    spec = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    validate(spec, base_uri=path.as_uri(), cls=OpenAPIV31SpecValidator)


@pytest.mark.parametrize("path", OPENAPI, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_openapi_has_no_implicit_nulls(path: Path) -> None:
    """No value is null by accident and every description is text."""
    spec = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    assert list(implicit_nulls(spec)) == []


class TestTheChecksBite:
    """Each check fails on the mistake it is there for (so a green run means something)."""

    COMMA = "code: {type: string, description: A stable machine code, e.g. bad_signature.}\n"

    def test_the_unquoted_comma_is_an_implicit_null(self) -> None:
        found = list(implicit_nulls({"schema": YAML(typ="safe").load(self.COMMA)}))
        assert found == ["schema.code.e.g. bad_signature. is null (an unquoted comma in a "
                         "flow mapping?)"]

    def test_a_non_text_description_is_found(self) -> None:
        found = list(implicit_nulls({"info": {"description": {"en": "x"}}}))
        assert found == ["info.description is dict, not text"]

    def test_a_property_named_description_is_not_an_annotation(self) -> None:
        assert list(implicit_nulls({"properties": {"description": {"type": "string"}}})) == []

    @pytest.mark.parametrize(
        ("text", "rule"),
        [
            ("a: 1\na: 2\n", "key-duplicates"),
            ("a:\n", "empty-values"),
            ("a: {b: }\n", "empty-values"),
            ("a: yes\n", "truthy"),
            ("label: {en: Why?, es: Por qué?}\n", "syntax"),
            (f"a: {'x' * 101}\n", "line-length"),
            ("a: &x 1\nb: 2\n", "anchors"),  # an unused anchor
            ("a: *x\n", "anchors"),  # an alias to no anchor
        ],
    )
    def test_yamllint_config_refuses(self, text: str, rule: str) -> None:
        assert any(f"({rule})" in p for p in yamllint_problems(text, "x.yaml"))

    def test_the_openapi_validator_refuses_a_broken_document(self) -> None:
        with pytest.raises(OpenAPIValidationError, match="info"):
            validate({"openapi": "3.1.0", "paths": {}}, cls=OpenAPIV31SpecValidator)
