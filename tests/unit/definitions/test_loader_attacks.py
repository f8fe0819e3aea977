"""Hand-made attacks on the definition loader: each refused with a code and a position, fast.

The case table (``cases/``) holds one realistic file per code; these are the extreme inputs
that do not fit it (a 50 MB file, 10,000 nested lists, a FIFO) and the ones whose point is a
bound (time, memory, "nothing was constructed"). Time bounds are generous multiples of what
was measured on a shared 2-core machine (docs/reliability.md, "Definitions under attack"), so
a slow neighbour does not fail them but a hang or a quadratic blow-up does.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from definitions.errors import DefinitionErrors, DefinitionProblem
from definitions.expressions import MAX_TREE_DEPTH, ExpressionError, evaluate, parse
from definitions.loader import MAX_CHECK_WORK, MAX_EXPRESSION_TEXT, load_catalog
from definitions.models import MAX_STEPS
from definitions.yaml_source import MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from tests.unit.definitions.test_cases import CASES

REGISTRY = (CASES / "unknown-key" / "agencies.yaml").read_text()
SERVICE = (CASES / "unknown-key" / "services" / "x.yaml").read_text().replace(
    "neds: [first]", "needs: []"
)
"""A valid small catalog (agency `tax`, one step); each attack changes one file of it."""


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "services").mkdir()
    (tmp_path / "agencies.yaml").write_text(REGISTRY)
    (tmp_path / "services" / "x.yaml").write_text(SERVICE)
    return tmp_path


def problems_of(root: Path) -> list[DefinitionProblem]:
    with pytest.raises(DefinitionErrors) as caught:
        load_catalog(root)
    return caught.value.problems


def only(problems: list[DefinitionProblem], code: str) -> DefinitionProblem:
    assert [p.code for p in problems] == [code], [str(p) for p in problems]
    return problems[0]


def test_the_base_catalog_is_valid(root: Path) -> None:
    """Each attack below starts from a catalog that loads, so its problem is the attack's."""
    assert set(load_catalog(root).services) == {"x"}


class TestSize:
    def test_a_50_mb_file_is_refused_before_it_is_read(self, root: Path) -> None:
        """A 50 MB registry (sparse: nothing is written) is refused at once from its size."""
        target = root / "agencies.yaml"
        with target.open("r+b") as file:
            file.truncate(50 * 1024 * 1024)
        timer = Timer()
        problem = only(problems_of(root), "file-too-large")
        assert timer.seconds < 1
        assert (problem.line, problem.column) == (1, 1)
        assert "52,428,800 bytes" in problem.message
        assert f"{MAX_FILE_BYTES:,}" in problem.message

    def test_a_10_mb_single_line_is_refused(self, root: Path) -> None:
        """One line of 10 MB (a huge title) is refused by size, not scanned."""
        (root / "services" / "x.yaml").write_text(f"title: {'x' * 10_000_000}\n")
        timer = Timer()
        only(problems_of(root), "file-too-large")
        assert timer.seconds < 1

    def test_too_many_values_are_refused_at_the_first_extra_one(self, root: Path) -> None:
        """A file within the byte limit but with more values than MAX_NODES is refused when
        the composer reaches the limit (a few seconds: ruamel is pure Python)."""
        (root / "services" / "x.yaml").write_text(
            SERVICE + "notes:\n" + "".join(f"- {i}\n" for i in range(MAX_NODES))
        )
        assert (root / "services" / "x.yaml").stat().st_size < MAX_FILE_BYTES
        timer = Timer()
        problem = only(problems_of(root), "file-too-large")
        assert timer.seconds < 30
        assert f"more than {MAX_NODES:,} values" in problem.message
        assert problem.line > MAX_NODES - 100  # where the limit was reached

    def test_the_slowest_file_at_the_byte_limit_is_decided_in_bounded_time(
        self, root: Path
    ) -> None:
        """Of the 1 MiB files tried (comments, one long scalar, escapes, spaces, a long key,
        a block literal), blank lines cost the scanner most: ~7 s measured on a busy machine.
        A file of exactly MAX_FILE_BYTES of them still loads within the bound."""
        target = root / "services" / "x.yaml"
        target.write_bytes(SERVICE.encode() + b"\n" * (MAX_FILE_BYTES - len(SERVICE.encode())))
        assert target.stat().st_size == MAX_FILE_BYTES
        timer = Timer()
        assert set(load_catalog(root).services) == {"x"}
        assert timer.seconds < 60

    def test_a_large_valid_registry_under_the_limits_loads(self, root: Path) -> None:
        """The limits leave room: 200 agencies (~13,000 values; the shipped registry has 9)
        load."""
        agency = REGISTRY.split("\n", 1)[1]
        many = "agencies:\n" + "".join(
            agency.replace("- id: tax", f"- id: tax{i}" if i else "- id: tax") for i in range(200)
        )
        (root / "agencies.yaml").write_text(many)
        timer = Timer()
        catalog = load_catalog(root)
        assert len(catalog.agencies) == 200
        assert timer.seconds < 60


class TestNesting:
    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("[" * 10_000 + "]" * 10_000, id="10000-nested-lists"),
            pytest.param("{a: " * 10_000 + "1" + "}" * 10_000, id="10000-nested-maps"),
            pytest.param("".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "v\n",
                         id="100-nested-block-maps"),
            pytest.param("".join(f"{'  ' * i}-\n" for i in range(100)) + "  " * 100 + "x\n",
                         id="100-nested-block-lists"),
        ],
    )
    @pytest.mark.parametrize("file", ["agencies.yaml", "services/x.yaml"])
    def test_deep_nesting_is_refused_without_recursion(
        self, root: Path, file: str, text: str
    ) -> None:
        """Nesting beyond MAX_DEPTH is refused where it crosses the limit; no RecursionError."""
        (root / file).write_text(f"description: {text}\n" if text[0] in "[{" else text)
        timer = Timer()
        problem = only(problems_of(root), "too-deep")
        assert timer.seconds < 15  # the scanner looks ~1,000 characters ahead: ~2 s measured
        assert problem.file == root / file
        assert f"more than {MAX_DEPTH} levels" in problem.message

    def test_nesting_at_the_limit_is_read(self, root: Path) -> None:
        """MAX_DEPTH levels exactly are allowed (the root mapping is the first)."""
        inner = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
        (root / "services" / "x.yaml").write_text(SERVICE + f"notes: {inner}\n")
        problem = only(problems_of(root), "unknown-key")  # read, then refused as a key
        assert "'notes'" in problem.message


class TestAliasesAndTags:
    BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n"
        for i in range(8)
    )

    def test_billion_laughs_is_refused_in_bounded_time_and_memory(self, root: Path) -> None:
        """Nine levels of nine aliases (9^9 strings if expanded) are refused at the first
        anchor, before anything is built."""
        (root / "agencies.yaml").write_text(self.BOMB)
        tracemalloc.start()
        try:
            timer = Timer()
            problem = only(problems_of(root), "yaml-alias")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert timer.seconds < 2
        assert peak < 20 * 1024 * 1024
        assert (problem.line, problem.column) == (1, 4)

    def test_an_alias_without_an_anchor_is_refused_as_an_alias(self, root: Path) -> None:
        """`*x` alone names the feature, not an undefined-anchor syntax error."""
        (root / "services" / "x.yaml").write_text(SERVICE.replace("title: X", "title: *x"))
        problem = only(problems_of(root), "yaml-alias")
        assert problem.line == 3
        assert "alias *x is not allowed" in problem.message

    def test_merge_keys_are_refused(self, root: Path) -> None:
        """`<<` (YAML 1.1 merge) is not read, even with an inline mapping."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("title: X", "title: {<<: {en: X}}")
        )
        problem = only(problems_of(root), "invalid-key")
        assert "merge key '<<'" in problem.message

    @pytest.mark.parametrize(
        "tagged",
        [
            '!!python/object/apply:os.system ["touch {marker}"]',
            "!!python/object/new:pathlib.Path [{marker}]",
            "!!python/name:os.system",
            "!Ref {marker}",
            "!!binary aGVsbG8=",
            "!!str 1",
            "!<tag:yaml.org,2002:python/object:os.system> {{}}",
        ],
    )
    def test_tags_are_refused_and_never_constructed(
        self, root: Path, tmp_path: Path, tagged: str
    ) -> None:
        """Every explicit tag is refused at its position; nothing it names runs."""
        marker = tmp_path / "constructed"
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("title: X", f"title: {tagged.format(marker=marker)}")
        )
        problem = only(problems_of(root), "yaml-tag")
        assert (problem.line, problem.column) == (3, 8)
        assert not marker.exists()


class TestEncoding:
    def test_invalid_utf8_is_placed_at_its_byte(self, root: Path) -> None:
        """A Latin-1 byte is reported on its line, at its character column."""
        raw = SERVICE.replace("description: X", "description: Descripci\xf3n").encode("latin-1")
        (root / "services" / "x.yaml").write_bytes(raw)
        problem = only(problems_of(root), "invalid-character")
        assert (problem.line, problem.column) == (4, 23)
        assert "byte 0xf3 is not UTF-8" in problem.message

    def test_a_utf16_file_is_named_as_such(self, root: Path) -> None:
        """UTF-16 (as some Windows editors save) is refused with what to do."""
        (root / "services" / "x.yaml").write_bytes(SERVICE.encode("utf-16"))
        problem = only(problems_of(root), "invalid-character")
        assert "UTF-16" in problem.message

    @pytest.mark.parametrize(
        ("value", "column"),
        [
            pytest.param("X\x00Y", 9, id="raw-NUL"),
            pytest.param("X\x1bY", 9, id="raw-escape-control"),
            pytest.param('"X\\0Y"', 8, id="NUL-escape"),
            pytest.param('"X\\ud83dY"', 8, id="lone-surrogate-escape"),
            pytest.param('"\\ud83d\\ude00"', 8, id="surrogate-pair-escape"),
            pytest.param('"X\\x07"', 8, id="bell-escape"),
            pytest.param('"X\\x80"', 8, id="C1-control-escape"),
            pytest.param('"X\\N"', 8, id="NEL-escape"),
        ],
    )
    def test_control_characters_and_surrogates_are_refused(
        self, root: Path, value: str, column: int
    ) -> None:
        """Raw or escaped, a character no value may hold is refused where it is written."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("title: X", f"title: {value}"), encoding="utf-8", errors="surrogatepass"
        )
        problem = only(problems_of(root), "invalid-character")
        assert (problem.line, problem.column) == (3, column)

    def test_invisible_characters_are_shown_escaped(self, root: Path) -> None:
        """A step kind holding a right-to-left override (allowed in YAML text) is reported
        with the character escaped, so `nwd definitions check` prints what is really there
        (found by hypothesis: pydantic's union message echoed a kind of U+0080 raw)."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("  - id: first\n", "  - id: first\n    kind: c\u202eall\n"),
            encoding="utf-8",
        )
        problem = only(problems_of(root), "invalid-value")
        assert "c\\u202eall" in problem.message
        assert str(problem).isprintable()

    @pytest.mark.parametrize("separator", ["\x85", "\u2028", "\u2029"])
    def test_unusual_line_breaks_are_refused(self, root: Path, separator: str) -> None:
        """NEL, LS and PS end a line for ruamel but not for editors: refused where they are,
        counting lines as an editor does."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("description: X", f"description: X{separator}Y")
        )
        problem = only(problems_of(root), "invalid-character")
        assert (problem.line, problem.column) == (4, 15)

    @pytest.mark.parametrize("ending", ["\r\n", "\r"])
    def test_crlf_and_cr_line_endings_keep_positions(self, root: Path, ending: str) -> None:
        """A problem on line 15 is on line 15 whatever the line endings (and a BOM)."""
        text = SERVICE.replace("needs: []", "neds: []")
        (root / "services" / "x.yaml").write_bytes(
            b"\xef\xbb\xbf" + text.replace("\n", ending).encode()
        )
        problem = only(problems_of(root), "unknown-key")
        assert (problem.line, problem.column) == (15, 5)


class TestKeys:
    def test_duplicate_keys_name_both_positions(self, root: Path) -> None:
        """The second `operation` is the problem; the message names where the first is."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("    needs: []\n", "    needs: []\n    operation: revert-address\n")
        )
        problem = only(problems_of(root), "duplicate-key")
        assert (problem.line, problem.column) == (16, 5)
        assert "first at line 14, column 5" in problem.message

    def test_duplicate_keys_in_flow_style(self, root: Path) -> None:
        """`{type: text, type: date}` is refused too."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("tax_id: {type: text}", "tax_id: {type: text, type: date}")
        )
        problem = only(problems_of(root), "duplicate-key")
        assert (problem.line, problem.column) == (7, 26)
        assert "first at line 7, column 14" in problem.message

    @pytest.mark.parametrize(
        ("key", "kind"),
        [("1", "an integer"), ("true", "a boolean"), ("~", "null"), ("1.5", "a number"),
         ("2024-01-01", "a date")],
    )
    def test_keys_that_are_not_text_are_refused(self, root: Path, key: str, kind: str) -> None:
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("    moved: {type: boolean}", f"    {key}: {{type: boolean}}")
        )
        problem = only(problems_of(root), "invalid-key")
        assert problem.line == 9
        assert f"is read as {kind}" in problem.message

    def test_quoted_keys_are_text(self, root: Path) -> None:
        """`"1":` is text: it reaches the language's own rule for field names."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("    moved: {type: boolean}", '    "1": {type: boolean}')
        )
        assert {p.code for p in problems_of(root)} == {"invalid-value"}


WRONG_TYPES = {
    "registry-is-a-list": ("agencies.yaml", "- tax\n"),
    "agencies-is-a-map": ("agencies.yaml", "agencies: {tax: 1}\n"),
    "agency-id-is-a-number": ("agencies.yaml", REGISTRY.replace("id: tax", "id: 7")),
    "operations-is-null": ("agencies.yaml", REGISTRY.replace(
        "    operations:\n", "    operations:\n    broken:\n")),
    "service-is-a-string": ("services/x.yaml", "just text\n"),
    "service-is-empty": ("services/x.yaml", ""),
    "steps-is-null": ("services/x.yaml", SERVICE.split("steps:")[0] + "steps:\n"),
    "steps-is-a-map": ("services/x.yaml", SERVICE.split("steps:")[0] + "steps: {a: 1}\n"),
    "a-step-is-null": ("services/x.yaml", SERVICE.split("steps:")[0] + "steps: [null]\n"),
    "step-id-is-a-number": ("services/x.yaml", SERVICE.replace("id: first", "id: 12")),
    "needs-is-a-string": ("services/x.yaml", SERVICE.replace("needs: []", "needs: first")),
    "input-is-a-list": ("services/x.yaml", SERVICE.replace(
        "    input:\n      tax_id: submission.tax_id\n      address: submission.address\n",
        "    input: [submission.tax_id]\n")),
    "expression-is-a-number": ("services/x.yaml", SERVICE.replace(
        "tax_id: submission.tax_id", "tax_id: 42")),
    "expression-is-a-map": ("services/x.yaml", SERVICE.replace(
        "tax_id: submission.tax_id", "tax_id: {a: 1}")),
    "fields-is-a-list": ("services/x.yaml", SERVICE.replace(
        "kids: {type: list, items: {type: object, fields: {name: {type: text}}}}",
        "kids: {type: list, items: {type: object, fields: [name]}}")),
    "version-is-text": ("services/x.yaml", SERVICE.replace("version: 1", "version: one")),
    "version-is-beyond-the-read-model": ("services/x.yaml", SERVICE.replace(
        "version: 1", "version: 2147483648")),
    "version-is-infinite": ("services/x.yaml", SERVICE.replace("version: 1", "version: .inf")),
    "title-is-a-list": ("services/x.yaml", SERVICE.replace("title: X", "title: [X]")),
    "timeout-is-nan": ("services/x.yaml", SERVICE.replace("needs: []", "timeout: .nan")),
}


class TestWrongTypes:
    @pytest.mark.parametrize("case", sorted(WRONG_TYPES))
    def test_a_wrong_type_is_a_positioned_problem(self, root: Path, case: str) -> None:
        """A list where a mapping belongs, numbers as ids, null steps...: problems, no crash."""
        file, text = WRONG_TYPES[case]
        (root / file).write_text(text)
        problems = problems_of(root)
        assert problems
        for problem in problems:
            assert problem.code in {"invalid-value", "missing-key", "unknown-key",
                                    "unknown-agency", "ill-typed-expression"}, str(problem)
            assert problem.line >= 1 and problem.column >= 1


def chain(count: int, *, extra: str = "") -> str:
    """A service of ``count`` steps, each needing the one before."""
    head = SERVICE.split("steps:")[0] + "steps:\n"
    return head + "".join(
        f"  - {{id: s{i}, agency: tax, operation: update-address,"
        f" needs: [{f's{i - 1}' if i else ''}],"
        f" input: {{tax_id: submission.tax_id, address: submission.address}}{extra}}}\n"
        for i in range(count)
    )


class TestExpressionsAndSteps:
    @pytest.mark.parametrize(
        "expression",
        [
            pytest.param("[" * 60 + "]" * 60, id="nested-lists"),
            pytest.param("(" * 500 + "submission.tax_id" + ")" * 500, id="nested-parentheses"),
            pytest.param(" + ".join(["submission.tax_id"] * 400), id="long-operator-chain"),
            pytest.param("size(" * 50 + "submission.tax_id" + ")" * 50, id="nested-calls"),
        ],
    )
    def test_deeply_nested_expressions_are_bad_expressions(
        self, root: Path, expression: str
    ) -> None:
        """Expressions deeper than the evaluator can walk are refused, not a RecursionError."""
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("tax_id: submission.tax_id", f'tax_id: "{expression}"')
        )
        problem = only(problems_of(root), "bad-expression")
        assert "nested too deeply" in problem.message
        assert problem.line == 17

    def test_the_depth_limit_leaves_room_for_real_expressions(self) -> None:
        """Ten levels of parentheses around a realistic condition still parse; the limit is
        where the tree depth passes MAX_TREE_DEPTH."""
        condition = "has(submission.benefits) && size(submission.benefits) > 0"
        parse("(" * 10 + condition + ")" * 10)
        with pytest.raises(ExpressionError, match="nested too deeply"):
            parse("(" * MAX_TREE_DEPTH + condition + ")" * MAX_TREE_DEPTH)

    def test_an_expression_at_the_limit_evaluates_on_a_deep_stack(self) -> None:
        """The deepest accepted expression evaluates even 1,000 frames down (a worker's stack
        is far shallower), so the limit, not the interpreter, decides."""
        depth = 0
        while True:
            candidate = "[" * (depth + 1) + "1" + "]" * (depth + 1)
            try:
                parse(candidate)
            except ExpressionError:
                break
            depth += 1
        deepest = "[" * depth + "1" + "]" * depth

        def nested(frames: int) -> object:
            return evaluate(deepest, {}) if frames == 0 else nested(frames - 1)

        result = nested(1_000)
        for _ in range(depth):
            assert isinstance(result, list)
            result = result[0]
        assert result == 1

    def test_too_much_expression_text_is_refused(self, root: Path) -> None:
        """More CEL than MAX_EXPRESSION_TEXT characters in one service is not parsed."""
        long = "submission.tax_id + '" + "x" * MAX_EXPRESSION_TEXT + "'"
        (root / "services" / "x.yaml").write_text(
            SERVICE.replace("tax_id: submission.tax_id", f'tax_id: "{long}"')
        )
        timer = Timer()
        problem = only(problems_of(root), "file-too-large")
        assert timer.seconds < 5
        assert f"at most {MAX_EXPRESSION_TEXT:,}" in problem.message

    def test_many_expressions_over_many_values_are_refused(self, root: Path) -> None:
        """Evaluating each expression over a sample of every upstream output is bounded: an
        operation with 2,000 output fields and 100 chained steps would be minutes of work."""
        outputs = "".join(f"            f{i}: {{type: text}}\n" for i in range(2_000))
        (root / "agencies.yaml").write_text(REGISTRY.replace(
            "        output:\n          fields:\n            reference: {type: text}\n",
            "        output:\n          fields:\n            reference: {type: text}\n" + outputs,
            1,
        ))
        (root / "services" / "x.yaml").write_text(chain(MAX_STEPS, extra=", when: 'true'"))
        timer = Timer()
        problem = only(problems_of(root), "file-too-large")
        assert timer.seconds < 30
        assert f"at most {MAX_CHECK_WORK:,}" in problem.message

    def test_a_long_chain_of_needs_is_checked_quickly(self, root: Path) -> None:
        """MAX_STEPS steps in a chain (each with a condition) load in seconds."""
        (root / "services" / "x.yaml").write_text(chain(MAX_STEPS, extra=", when: 'true'"))
        timer = Timer()
        assert len(load_catalog(root).service("x").steps) == MAX_STEPS
        assert timer.seconds < 30

    def test_a_ladder_of_needs_is_not_exponential(self, root: Path) -> None:
        """Each step needing the two before it: the cycle search visits each step once
        (it used to follow every path: 2^n)."""
        head = SERVICE.split("steps:")[0] + "steps:\n"
        steps = "".join(
            f"  - {{id: s{i}, agency: tax, operation: update-address, "
            f"needs: [{', '.join(f's{j}' for j in (i - 1, i - 2) if j >= 0)}], "
            "input: {tax_id: submission.tax_id, address: submission.address}}\n"
            for i in range(60)
        )
        (root / "services" / "x.yaml").write_text(head + steps)
        timer = Timer()
        load_catalog(root)
        assert timer.seconds < 10

    def test_more_steps_than_the_limit_are_refused(self, root: Path) -> None:
        (root / "services" / "x.yaml").write_text(chain(MAX_STEPS + 1))
        problem = only(problems_of(root), "invalid-value")
        assert f"at most {MAX_STEPS} items" in problem.message


class TestFilesThatAreNotFiles:
    def test_a_fifo_is_reported_without_blocking(self, root: Path) -> None:
        """A named pipe called x.yaml would block a reader forever; it is never opened."""
        (root / "services" / "x.yaml").unlink()
        os.mkfifo(root / "services" / "x.yaml")
        problem = only(problems_of(root), "unreadable-file")
        assert "not a regular file" in problem.message

    def test_a_symlink_to_a_device_is_not_read(self, root: Path) -> None:
        """A link to /dev/zero (endless) is not a regular file either."""
        (root / "services" / "x.yaml").unlink()
        (root / "services" / "x.yaml").symlink_to("/dev/zero")
        only(problems_of(root), "unreadable-file")

