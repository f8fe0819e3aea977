"""Properties of the loader over hostile input (hypothesis): a clean refusal or a catalog.

Whatever a catalog file holds — random bytes, a soup of YAML syntax, random documents of
scalars, lists and maps, or a real catalog file with a key removed, renamed or retyped or a
line duplicated — :func:`load_catalog` either returns a catalog or raises
:class:`DefinitionErrors` whose every problem names a file of the catalog, a line and column
inside it, a documented code and a message a terminal can print. Nothing else may escape
(no RecursionError, UnicodeError, TypeError...), and each example has a time budget.

The run is bounded so the fast tier stays fast (``EXAMPLES``); a longer exploration is one
edit away.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from definitions.errors import DefinitionErrors
from definitions.loader import load_catalog, load_registry_file
from runtime.settings import DEFAULT_CATALOG_DIR
from tests.unit.definitions.test_cases import CASES, documented_codes

EXAMPLES = {
    "bytes": 50, "soup": 50, "documents": 30, "shaped": 30, "mutations": 20, "registry": 30,
}
"""Examples per property: 210 in all, ~20 s on a shared 2-core machine (a shipped-catalog
mutation costs ~0.4 s: the registry alone is 10 KB of pure-Python YAML). Raise them to explore;
hypothesis keeps what it finds in .hypothesis/ and replays it first."""


def budget(examples: int) -> settings:
    """Bounded runs, each example with a deadline: a load that hangs fails the property."""
    return settings(
        max_examples=examples,
        # Per example. The loads take 5-500 ms; the margin is for a machine shared by others.
        deadline=timedelta(seconds=5),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


KNOWN_CODES = documented_codes()
SMALL_REGISTRY = (CASES / "unknown-key" / "agencies.yaml").read_bytes()
SMALL_SERVICE = (CASES / "unknown-key" / "services" / "x.yaml").read_bytes().replace(
    b"neds: [first]", b"needs: []"
)
REAL_FILES = sorted(
    [DEFAULT_CATALOG_DIR / "agencies.yaml", *(DEFAULT_CATALOG_DIR / "services").glob("*.yaml")]
)
REAL_DATA = {path: YAML(typ="safe", pure=True).load(path.read_bytes()) for path in REAL_FILES}


@contextmanager
def catalog(files: dict[str, bytes]) -> Iterator[Path]:
    """A catalog directory holding ``files`` (relative path -> bytes), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="nwd-catalog-"))
    try:
        (root / "services").mkdir()
        for name, content in files.items():
            (root / name).write_bytes(content)
        yield root
    finally:
        shutil.rmtree(root)


def assert_loads_or_refuses_cleanly(root: Path) -> None:
    """The property: a catalog, or problems that are all well formed; nothing else."""
    try:
        load_catalog(root)
    except DefinitionErrors as exc:
        assert_well_formed(exc, root)


def assert_well_formed(exc: DefinitionErrors, root: Path) -> None:
    """Every problem names a file of the catalog, a position inside it, a documented code
    and a printable, non-empty message."""
    assert exc.problems, "DefinitionErrors without a problem"
    for problem in exc.problems:
        shown = str(problem)
        assert problem.file.resolve().is_relative_to(root.resolve()), shown
        assert problem.code in KNOWN_CODES, shown
        assert problem.message.strip(), shown
        assert problem.line >= 1 and problem.column >= 1, shown
        assert shown.isprintable(), f"unprintable problem: {shown!r}"
        if problem.file.is_file():
            lines = _line_count(problem.file.read_bytes())
            assert problem.line <= lines, f"{shown} (the file has {lines} lines)"


def _line_count(raw: bytes) -> int:
    """Lines as an editor counts them (CRLF, CR and LF each end one), plus a last open one."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1


# --------------------------------------------------------------------------- strategies

YAML_PIECES = [
    b"[", b"]", b"{", b"}", b": ", b":", b", ", b"- ", b"-", b"? ", b"\n", b"  ", b"    ",
    b"&a ", b"*a", b"!!python/object:os.system ", b"!x ", b"!!str ", b"|\n", b">-\n", b"'",
    b'"', b"\\", b"# c\n", b"%YAML 1.1\n", b"%TAG ! tag:x,1:\n", b"---\n", b"...\n", b"\t",
    b"\r\n", b"\r", b"\xef\xbb\xbf", b"\x00", b"\xff", b"\xc3", b"\xe2\x80\xa8", b"a", b"id",
    b"steps", b"service", b"agencies", b"1", b"-1", b"0x1f", b"1e999", b".nan", b"null", b"~",
    b"true", b"2001-02-30", b"2001-01-01", b"<<", b'"\\0"', b'"\\ud800"', b'"\\x1b"', b"9" * 5000,
]
yaml_soup = st.lists(st.sampled_from(YAML_PIECES), max_size=80).map(b"".join)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),
    st.text(max_size=20), st.sampled_from(["", "x", "first", "tax", "update-address", "1d"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=30,
)
step_keys = st.sampled_from([
    "id", "kind", "agency", "operation", "input", "needs", "when", "for_each", "item_key",
    "mode", "timeout", "retry", "compensation", "deadline", "information", "role", "show",
])
shaped_services = st.fixed_dictionaries(
    {},
    optional={
        "service": st.one_of(st.just("x"), documents),
        "version": st.one_of(st.just(1), documents),
        "title": st.one_of(st.just("X"), documents),
        "description": st.one_of(st.just("X"), documents),
        "input": st.one_of(st.just({"fields": {"a": {"type": "text"}}}), documents),
        "steps": st.one_of(
            documents,
            st.lists(st.dictionaries(step_keys, documents, max_size=6), max_size=3),
        ),
    },
)


def dump(document: Any) -> bytes:
    """A document as YAML text, the way a person or a tool would write it."""
    out = StringIO()
    YAML(typ="safe", pure=True).dump(document, out)
    return out.getvalue().encode("utf-8", "surrogatepass")


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_real_file(draw: st.DrawFn) -> tuple[Path, bytes]:
    """A shipped catalog file with one change a person could make by mistake."""
    path = draw(st.sampled_from(REAL_FILES))
    raw = path.read_bytes()
    kind = draw(st.sampled_from(["remove", "rename", "retype", "duplicate-line", "drop-line"]))
    if kind in {"duplicate-line", "drop-line"}:
        lines = raw.splitlines(keepends=True)
        index = draw(st.integers(0, len(lines) - 1))
        copies = [lines[index]] * (2 if kind == "duplicate-line" else 0)
        return path, b"".join([*lines[:index], *copies, *lines[index + 1 :]])
    data = copy.deepcopy(REAL_DATA[path])
    paths = [p for p in _paths(data) if p]
    target = draw(st.sampled_from(paths))
    parent = data
    for part in target[:-1]:
        parent = parent[part]
    last = target[-1]
    if kind == "remove":
        del parent[last]
    elif kind == "rename" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
    else:
        parent[last] = draw(documents)
    return path, dump(data)


# --------------------------------------------------------------------------- properties


class TestHostileFiles:
    @budget(EXAMPLES["bytes"])
    @given(raw=st.binary(max_size=2000), as_registry=st.booleans())
    def test_random_bytes(self, raw: bytes, as_registry: bool) -> None:
        """Random bytes as the registry or as a service: loaded or refused cleanly."""
        files = {"agencies.yaml": SMALL_REGISTRY, "services/x.yaml": SMALL_SERVICE}
        files["agencies.yaml" if as_registry else "services/x.yaml"] = raw
        with catalog(files) as root:
            assert_loads_or_refuses_cleanly(root)

    @budget(EXAMPLES["soup"])
    @given(raw=yaml_soup, as_registry=st.booleans())
    def test_yaml_syntax_soup(self, raw: bytes, as_registry: bool) -> None:
        """Pieces of YAML syntax (anchors, tags, directives, BOMs, NULs...) in any order."""
        files = {"agencies.yaml": SMALL_REGISTRY, "services/x.yaml": SMALL_SERVICE}
        files["agencies.yaml" if as_registry else "services/x.yaml"] = raw
        with catalog(files) as root:
            assert_loads_or_refuses_cleanly(root)

    @budget(EXAMPLES["documents"])
    @given(document=documents, as_registry=st.booleans())
    def test_random_documents(self, document: Any, as_registry: bool) -> None:
        """Random well-formed YAML documents of scalars, lists and maps."""
        files = {"agencies.yaml": SMALL_REGISTRY, "services/x.yaml": SMALL_SERVICE}
        files["agencies.yaml" if as_registry else "services/x.yaml"] = dump(document)
        with catalog(files) as root:
            assert_loads_or_refuses_cleanly(root)

    @budget(EXAMPLES["shaped"])
    @given(document=shaped_services)
    def test_services_of_the_right_shape_with_wrong_values(self, document: Any) -> None:
        """Service files with the language's keys and random values (reaches the validator)."""
        files = {"agencies.yaml": SMALL_REGISTRY, "services/x.yaml": dump(document)}
        with catalog(files) as root:
            assert_loads_or_refuses_cleanly(root)

    @budget(EXAMPLES["mutations"])
    @given(mutation=mutated_real_file())
    def test_mutations_of_the_shipped_catalog(self, mutation: tuple[Path, bytes]) -> None:
        """A shipped file with a key removed, renamed or retyped, or a line duplicated or
        dropped, next to the shipped registry."""
        path, raw = mutation
        registry = (DEFAULT_CATALOG_DIR / "agencies.yaml").read_bytes()
        files = {"agencies.yaml": registry}
        if path.name == "agencies.yaml":
            files["agencies.yaml"] = raw
            files["services/x.yaml"] = (REAL_FILES[-1]).read_bytes()
        else:
            files[f"services/{path.name}"] = raw
        with catalog(files) as root:
            assert_loads_or_refuses_cleanly(root)

    @budget(EXAMPLES["registry"])
    @given(raw=st.one_of(st.binary(max_size=2000), yaml_soup, documents.map(dump)))
    def test_a_registry_file_on_its_own(self, raw: bytes) -> None:
        """load_registry_file (what the embedded stack reads) keeps the same promise."""
        with catalog({"agencies.yaml": raw}) as root:
            try:
                load_registry_file(root / "agencies.yaml")
            except DefinitionErrors as exc:
                assert_well_formed(exc, root)
