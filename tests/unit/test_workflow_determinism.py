"""Workflow code stays deterministic: a static check of `workflows/` and what it imports.

The worker runs workflow code directly, outside the SDK's sandbox (worker.workflow_runner
says why); the test suite's in-process workers run it sandboxed, and this check refuses, by
reading the source, the clocks, randomness, I/O and process-dependent values the sandbox
would catch only at run time — in every project module workflow code imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

from runtime.settings import PROJECT_ROOT

PROJECT_PACKAGES = {"definitions", "workflows", "activities", "runtime", "readmodel", "intake",
                    "agency_kit", "nwd", "worker", "benchmarks"}
FORBIDDEN_MODULES = {
    "time", "random", "secrets", "uuid", "os", "socket", "subprocess", "threading",
    "multiprocessing", "concurrent", "asyncpg", "aiohttp", "httpx", "urllib", "http",
    "requests", "sqlite3", "shutil", "tempfile", "signal", "ssl", "structlog", "logging",
}
FORBIDDEN_BUILTINS = {"open", "input", "print", "hash", "id", "exec", "eval", "breakpoint"}
"""`hash` and `id` differ between processes (PYTHONHASHSEED, addresses): a replay on
another worker would decide differently."""
FORBIDDEN_METHODS = {"now", "utcnow", "today", "fromtimestamp"}
"""Clock reads on datetime/date; the workflow's clock is ``workflow.now()``."""
ALLOWED_PROJECT_MODULES = (
    "definitions", "workflows", "runtime.messages", "runtime.metric_names", "agency_kit.contract",
)


def _module_path(name: str) -> Path | None:
    parts = name.split(".")
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            # `from definitions import expressions` imports a module, not a name
            names += [f"{node.module}.{alias.name}" for alias in node.names
                      if _module_path(f"{node.module}.{alias.name}") is not None]
    return names


def problems_in(source: str, filename: str) -> tuple[list[str], list[str]]:
    """(problems, project modules imported) of one module's source."""
    tree = ast.parse(source, filename)
    problems: list[str] = []
    project: list[str] = []
    for name in _imports(tree):
        top = name.split(".")[0]
        if top in FORBIDDEN_MODULES:
            problems.append(f"{filename}: imports {name}")
        elif top in PROJECT_PACKAGES:
            if not name.startswith(ALLOWED_PROJECT_MODULES):
                problems.append(f"{filename}: imports {name} (not workflow-safe code)")
            project.append(name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_BUILTINS:
            problems.append(f"{filename}:{node.lineno}: calls {func.id}()")
        if (isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_METHODS
                and not (isinstance(func.value, ast.Name) and func.value.id == "workflow")):
            problems.append(f"{filename}:{node.lineno}: calls .{func.attr}()")
    return problems, project


def workflow_closure() -> tuple[list[str], set[str]]:
    """Problems in `workflows/` and every project module it imports, and those modules."""
    pending = [f"workflows.{p.stem}" for p in (PROJECT_ROOT / "workflows").glob("*.py")]
    seen: set[str] = set()
    problems: list[str] = []
    while pending:
        name = pending.pop()
        path = _module_path(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        found, imported = problems_in(path.read_text(), str(path.relative_to(PROJECT_ROOT)))
        problems += found
        pending += imported
    return problems, seen


def test_workflow_code_and_its_imports_are_deterministic() -> None:
    problems, modules = workflow_closure()
    assert "workflows.request_workflow" in modules
    assert "definitions.expressions" in modules  # the closure follows imports
    assert "runtime.messages" in modules
    assert problems == []


def test_the_check_refuses_clocks_randomness_io_and_process_values() -> None:
    bad = (
        "import random\nfrom datetime import datetime\nfrom readmodel import store\n"
        "def f(x):\n    datetime.now()\n    open('f')\n    return hash(x)\n"
    )
    problems, _ = problems_in(bad, "bad.py")
    assert problems == [
        "bad.py: imports random",
        "bad.py: imports readmodel (not workflow-safe code)",
        "bad.py: imports readmodel.store (not workflow-safe code)",
        "bad.py:5: calls .now()",
        "bad.py:6: calls open()",
        "bad.py:7: calls hash()",
    ]
    assert problems_in("from temporalio import workflow\nworkflow.now()\n", "ok.py")[0] == []
