"""The table of invalid catalogs: each folder under cases/ breaks one rule.

Each case holds ``agencies.yaml``, ``services/x.yaml`` and ``expected.yaml`` (the problem's
code, file, line, optionally column, and the substrings its message must contain);
``missing-file`` leaves out the ``agencies.yaml`` it is about. A case whose file is too large
to commit says how to make it (``generate``: pad a file to a size); it is then run on a copy.
The same table drives the loader and ``nwd definitions check``, so the command prints what the
loader finds.

The codes the table must cover are read from the source of :mod:`definitions` (every literal
code a problem is made with), not written out here: a new code without a case fails the
table, and so does a case whose code nothing emits any more.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

import definitions
from definitions.errors import DefinitionErrors, DefinitionProblem, Issue
from definitions.loader import load_catalog
from definitions.yaml_source import _RefusedError
from nwd.cli import main

CASES = Path(__file__).parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
SOURCES = sorted(Path(definitions.__file__).parent.rglob("*.py"))
DOCS = Path(__file__).resolve().parents[3] / "docs" / "definitions.md"

PROBLEM_TYPES = {
    **{
        cls.__name__: [field.name for field in dataclasses.fields(cls)].index("code")
        for cls in (Issue, DefinitionProblem)
    },
    # The YAML reader's refusals (raised inside ruamel, turned into problems by the reader).
    _RefusedError.__name__: [*inspect.signature(_RefusedError.__init__).parameters].index("code")
    - 1,
}
"""The types a problem is made with, and the position of their ``code`` argument."""


def _code_argument(call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    position = PROBLEM_TYPES[_called_name(call)]
    return call.args[position] if len(call.args) > position else None


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def emitted_codes() -> dict[str, str]:
    """Every literal code in ``definitions``, with where it is written (``file:line``).

    Two shapes carry a code: the ``code`` argument of ``Issue(...)`` or
    ``DefinitionProblem(...)``, and the first item of the ``(code, message)`` pairs returned
    by the checks annotated ``-> tuple[str, str] | None`` (their caller makes the Issue).
    """
    codes: dict[str, str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            found: list[ast.expr | None] = []
            if isinstance(node, ast.Call) and _called_name(node) in PROBLEM_TYPES:
                found.append(_code_argument(node))
            elif (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.returns is not None
                  and "tuple[str, str]" in ast.unparse(node.returns)):
                found.extend(
                    returned.value.elts[0] for returned in ast.walk(node)
                    if isinstance(returned, ast.Return) and isinstance(returned.value, ast.Tuple)
                    and returned.value.elts
                )
            for expr in found:
                code = _literal(expr)
                if code is not None and expr is not None:
                    codes.setdefault(code, f"{path.name}:{expr.lineno}")
    return codes


def documented_codes() -> set[str]:
    """The codes in the error-code table of docs/definitions.md."""
    table = DOCS.read_text(encoding="utf-8").split("## Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.MULTILINE))


def _expected(case: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((CASES / case / "expected.yaml").read_text())
    return data


def _case_dir(case: str, tmp_path: Path) -> Path:
    """The case's catalog: its folder, or a copy with the file ``generate`` asks for."""
    generate = _expected(case).get("generate")
    if generate is None:
        return CASES / case
    copy = tmp_path / case
    shutil.copytree(CASES / case, copy)
    target = copy / generate["file"]
    size = target.stat().st_size
    pad = generate["pad"].encode()
    repeat, rest = divmod(generate["bytes"] - size, len(pad))
    with target.open("ab") as out:
        out.write(pad * repeat + pad[:rest])
    assert target.stat().st_size == generate["bytes"]
    return copy


def _matching(problems: list[DefinitionProblem], expected: dict[str, Any]) -> DefinitionProblem:
    for problem in problems:
        if problem.code == expected["code"] and problem.file.as_posix().endswith(expected["file"]):
            return problem
    raise AssertionError(f"no {expected['code']} problem in {[str(p) for p in problems]}")


def test_every_error_code_has_a_case() -> None:
    """Each code the loader and validator can emit has a case, and each case's code is one
    they emit."""
    emitted = emitted_codes()
    cased = {_expected(case)["code"] for case in CASE_NAMES}
    uncovered = {code: where for code, where in emitted.items() if code not in cased}
    assert not uncovered, f"codes without a case under cases/: {uncovered}"
    assert cased <= set(emitted), f"cases for codes nothing emits: {cased - set(emitted)}"


def test_every_error_code_is_documented() -> None:
    """The error-code table of docs/definitions.md lists exactly the codes that are emitted."""
    emitted, documented = set(emitted_codes()), documented_codes()
    assert emitted - documented == set(), "emitted but not in docs/definitions.md"
    assert documented - emitted == set(), "in docs/definitions.md but never emitted"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_loader_reports_the_case(case: str, tmp_path: Path) -> None:
    """load_catalog raises a problem with the case's code, line and message substrings."""
    expected = _expected(case)
    with pytest.raises(DefinitionErrors) as caught:
        load_catalog(_case_dir(case, tmp_path))
    problem = _matching(caught.value.problems, expected)
    assert problem.line == expected["line"], str(problem)
    assert problem.column == expected.get("column", problem.column) >= 1, str(problem)
    for text in expected["contains"]:
        assert text in problem.message, str(problem)
    assert str(problem).startswith(f"{problem.file}:{problem.line}:{problem.column}: ")
    assert str(problem).endswith(f"[{expected['code']}]")


@pytest.mark.parametrize("case", CASE_NAMES)
def test_check_command_prints_the_case(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nwd definitions check` prints `path:line:column: message [code]` and exits 1."""
    expected = _expected(case)
    code = main(["definitions", "check", str(_case_dir(case, tmp_path))])
    out = capsys.readouterr().out
    assert code == 1
    lines = [line for line in out.splitlines() if f"[{expected['code']}]" in line]
    assert any(
        f"{expected['file']}:{expected['line']}:{expected.get('column', '')}" in line
        and all(text in line for text in expected["contains"])
        for line in lines
    ), out
    assert "problem" in out.splitlines()[-1]
