"""The table of invalid catalogs: each folder under cases/ breaks one rule.

Each case holds ``agencies.yaml``, ``services/x.yaml`` and ``expected.yaml`` (the problem's
code, file, line and the substrings its message must contain). The same table drives the
loader and ``nwd definitions check``, so the command prints what the loader finds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from definitions.errors import DefinitionErrors, DefinitionProblem
from definitions.loader import load_catalog
from nwd.cli import main

CASES = Path(__file__).parent / "cases"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _expected(case: str) -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((CASES / case / "expected.yaml").read_text())
    return data


def _matching(problems: list[DefinitionProblem], expected: dict[str, Any]) -> DefinitionProblem:
    for problem in problems:
        if problem.code == expected["code"] and problem.file.as_posix().endswith(expected["file"]):
            return problem
    raise AssertionError(f"no {expected['code']} problem in {[str(p) for p in problems]}")


def test_every_error_code_has_a_case() -> None:
    """Each code the validator can emit is exercised by at least one case."""
    codes = {_expected(case)["code"] for case in CASE_NAMES}
    assert codes >= {
        "unknown-agency", "unknown-operation", "unknown-step", "needs-cycle", "not-upstream",
        "bad-expression", "unknown-reference", "ill-typed-expression", "unknown-operation-field",
        "missing-required-field", "duplicate-id", "unknown-key", "invalid-value", "missing-key",
        "yaml-syntax",
    }


@pytest.mark.parametrize("case", CASE_NAMES)
def test_loader_reports_the_case(case: str) -> None:
    """load_catalog raises a problem with the case's code, line and message substrings."""
    expected = _expected(case)
    with pytest.raises(DefinitionErrors) as caught:
        load_catalog(CASES / case)
    problem = _matching(caught.value.problems, expected)
    assert problem.line == expected["line"], str(problem)
    assert problem.column >= 1
    for text in expected["contains"]:
        assert text in problem.message, str(problem)
    assert str(problem).startswith(f"{problem.file}:{problem.line}:{problem.column}: ")
    assert str(problem).endswith(f"[{expected['code']}]")


@pytest.mark.parametrize("case", CASE_NAMES)
def test_check_command_prints_the_case(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`nwd definitions check` prints `path:line:column: message [code]` and exits 1."""
    expected = _expected(case)
    code = main(["definitions", "check", str(CASES / case)])
    out = capsys.readouterr().out
    assert code == 1
    lines = [line for line in out.splitlines() if f"[{expected['code']}]" in line]
    assert any(
        f"{expected['file']}:{expected['line']}:" in line
        and all(text in line for text in expected["contains"])
        for line in lines
    ), out
    assert "problem" in out.splitlines()[-1]
