"""YAML documents that remember where each key and value was written — read defensively.

ruamel.yaml's round-trip loader keeps line/column marks on every mapping and sequence; a
:class:`YamlDocument` keeps that tree beside a plain-Python copy (what pydantic validates) so
an error location such as ``("steps", 2, "input", "x")`` can be turned back into a line.

A catalog directory may come from anyone (a pull request, a mounted volume), so reading a file
is bounded before anything else looks at it. Each refusal is a :class:`YamlSyntaxError` whose
problem has a stable code and a position; nothing else escapes :meth:`YamlDocument.read`:

=====================  ============================================================================
``file-too-large``     more than :data:`MAX_FILE_BYTES` bytes (checked before reading), or more
                       than :data:`MAX_NODES` values: ruamel is pure Python (~0.1 ms a value on a
                       shared machine), so the node count is what bounds the time
``too-deep``           lists/mappings nested more than :data:`MAX_DEPTH` levels (the composer and
                       everything after it recurse; a definition is ~10 levels deep)
``yaml-alias``         any anchor (``&a``) or alias (``*a``): "billion laughs" documents expand
                       aliases exponentially, and a definition never needs to repeat a subtree
``yaml-tag``           any explicit tag (``!!python/object``, ``!custom``, even ``!!str``): a tag
                       asks the loader to construct something; a definition is plain data
``duplicate-key``      a key written twice in one mapping (YAML 1.2 requires unique keys; both
                       positions are named, as the second would silently replace the first)
``invalid-key``        a key that is not text (``1:``, ``null:``, ``[a]:``, the merge key ``<<``)
``invalid-character``  bytes that are not UTF-8, NUL and other control characters, lone surrogates
                       (raw or written as escapes): none can be stored, logged or hashed safely
``invalid-value``      a scalar YAML cannot turn into a value (``2001-02-30``, a 5,000-digit int)
``yaml-syntax``        anything else the parser refuses (indentation, quotes, ``%YAML 1.1``)
=====================  ============================================================================

A UTF-8 byte order mark at the start is allowed (YAML allows it) and does not shift columns;
CRLF line endings count as one line break, so positions match what an editor shows.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode
from ruamel.yaml.reader import ReaderError

from definitions.errors import DefinitionProblem, Issue, Loc, key_path

MAX_FILE_BYTES = 1024 * 1024
"""Largest definition file read: 100 times the largest shipped file (``agencies.yaml``, 10 KB)."""

MAX_NODES = 20_000
"""Most values (scalars, lists, mappings) in one file: 24 times the shipped ``agencies.yaml``.
At the limit a file loads or is refused in a few seconds; see docs/reliability.md."""

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings: the shipped files reach 9."""

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TAG_NAMES = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UNUSUAL_BREAK = re.compile("[\x85\u2028\u2029]")
"""NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR: line breaks to ruamel (YAML 1.1), not to YAML 1.2
or most editors, so a position after one would differ between the message and the editor."""
_FORBIDDEN_CHARACTER = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]"
)
"""What no value may hold: C0 controls but tab and line breaks, DEL, C1 controls (NEL too),
surrogates, non-characters.
The reader refuses them in the raw text; this catches them written as escapes (``"\\0"``)."""


class YamlSyntaxError(Exception):
    """The file cannot be read as a definition document; ``problem`` says where and why."""

    def __init__(self, problem: DefinitionProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class YamlDocument:
    """One YAML file: its positioned tree and the same data as plain Python values."""

    path: Path
    tree: Any
    data: Any

    @classmethod
    def read(cls, path: Path) -> YamlDocument:
        """Load ``path``; raise :class:`YamlSyntaxError` (code and position) if it is refused.

        Raises:
            YamlSyntaxError: the file is too large, not UTF-8, not YAML, or uses a YAML
                feature definitions refuse (see the module docstring).
            OSError: the file cannot be opened or read.
        """
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _too_large(path, size)
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)  # the file may have grown since stat()
        if len(raw) > MAX_FILE_BYTES:
            raise _too_large(path, len(raw))
        return cls.parse(path, raw)

    @classmethod
    def parse(cls, path: Path, raw: bytes) -> YamlDocument:
        """Load the bytes of a file named ``path`` (used by :meth:`read`, and by tests)."""
        text = _decode(path, raw)
        yaml = YAML(typ="rt", pure=True)
        yaml.Composer = _GuardedComposer
        yaml.Constructor = _GuardedConstructor
        try:
            tree = yaml.load(text)
        except _RefusedError as exc:
            raise YamlSyntaxError(_problem(path, exc.problem_mark, exc.code, exc.message)) from exc
        except ReaderError as exc:
            line, column = _position_of(text, exc.position)
            raise YamlSyntaxError(DefinitionProblem(
                path, line, column, "", "invalid-character",
                f"character {_describe(exc.character)} is not allowed in YAML; remove it",
            )) from exc
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            reason = exc.problem or exc.context or "invalid YAML"
            raise YamlSyntaxError(_problem(
                path, mark, "yaml-syntax",
                f"invalid YAML: {reason}; check indentation, quoting and colons near here",
            )) from exc
        except YAMLError as exc:
            raise YamlSyntaxError(DefinitionProblem(
                path, 1, 1, "", "yaml-syntax", f"invalid YAML: {exc}",
            )) from exc
        return cls(path=path, tree=tree, data=plain(tree))

    def position(self, loc: Loc, *, at_key: bool = False) -> tuple[int, int]:
        """The 1-based (line, column) of the node at ``loc``, or of its nearest ancestor.

        Parts of ``loc`` that name no node (pydantic's union tags such as ``"call"``) are
        skipped, so pydantic error locations can be passed as they are.
        """
        node = self.tree
        line, column = 0, 0
        parts = list(loc)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            found: Any = None
            if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
                child = node[part]
                if (last and at_key) or isinstance(child, CommentedMap | CommentedSeq):
                    found = node.lc.key(part)
                else:
                    found = node.lc.value(part)
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                child = node[part]
                found = node.lc.item(part)
            else:
                continue
            if found is None:
                break  # no mark kept for this node: its parent's position is the best we have
            line, column = found
            node = child
        return line + 1, column + 1

    def locate(self, issue: Issue) -> DefinitionProblem:
        """Place an issue in this file."""
        line, column = self.position(issue.loc, at_key=issue.at_key)
        return DefinitionProblem(
            self.path, line, column, key_path(issue.loc), issue.code, issue.message
        )


def plain(node: Any) -> Any:
    """ruamel's round-trip values as plain JSON-like Python (dates become ISO strings)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date | datetime.datetime):
        return node.isoformat()
    return node


# --------------------------------------------------------------------------- guards


class _RefusedError(MarkedYAMLError):
    """A definition rule on the YAML itself, raised at the node that breaks it."""

    def __init__(self, code: str, message: str, mark: Any) -> None:
        super().__init__(problem=message, problem_mark=mark)
        self.code = code
        self.message = message


class _GuardedComposer(Composer):
    """ruamel's composer, refusing what a definition never needs before it is built.

    The checks run on parser events as they stream in, so an oversized or hostile document
    is refused at its first offending node; nothing is expanded or constructed first.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nodes = 0

    def compose_document(self) -> Any:
        event = self.parser.peek_event()
        if event.version is not None and tuple(event.version) != (1, 2):
            version = ".".join(str(part) for part in event.version)
            raise _RefusedError(
                "yaml-syntax",
                f"%YAML {version}: definitions are YAML 1.2; remove the directive",
                event.start_mark,
            )
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            raise _RefusedError(
                "yaml-alias",
                f"alias *{event.anchor} is not allowed in definitions (aliases can expand a small "
                "file into an enormous one); write the value out",
                mark,
            )
        if event.anchor is not None:
            raise _RefusedError(
                "yaml-alias",
                f"anchor &{event.anchor} is not allowed in definitions (neither are aliases); "
                "remove it and write each value out",
                mark,
            )
        if event.ctag is not None:
            raise _RefusedError(
                "yaml-tag",
                f"tag {_written(event.ctag)} is not allowed in definitions: a definition is "
                "plain data; remove the tag (quote the value to make it text)",
                mark,
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _RefusedError(
                "file-too-large",
                f"the file holds more than {MAX_NODES:,} values; split it (one service a file)",
                mark,
            )
        if isinstance(event, CollectionStartEvent) and self.depth >= MAX_DEPTH:
            raise _RefusedError(
                "too-deep",
                f"lists and mappings are nested more than {MAX_DEPTH} levels deep here; "
                "a definition needs about 10",
                mark,
            )
        if isinstance(event, ScalarEvent):
            # ruamel marks where a folded scalar (`>`) was folded with BEL in the event's
            # value (the text built from it has none); a BEL typed in the file is refused
            # by the reader before this, so these are the marks, not the text.
            value = event.value.replace("\a", "") if event.style == ">" else event.value
            bad = _FORBIDDEN_CHARACTER.search(value)
            if bad is not None:
                hint = (" (write characters beyond U+FFFF as \\U0001F600, not as two \\u escapes)"
                        if "\ud800" <= bad.group() <= "\udfff" else "")
                raise _RefusedError(
                    "invalid-character",
                    f"this value holds {_describe(ord(bad.group()))}, which a definition may not "
                    f"hold{hint}; remove it",
                    mark,
                )
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        assert isinstance(node, MappingNode)
        seen: dict[str, Any] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                raise _RefusedError(
                    "invalid-key",
                    "a key must be text, not a list or a mapping; write a plain name",
                    key.start_mark,
                )
            tag = str(key.tag)
            if tag == _MERGE_TAG:
                raise _RefusedError(
                    "invalid-key",
                    "the merge key '<<' is not allowed in definitions; write the keys out",
                    key.start_mark,
                )
            if tag != _STR_TAG:
                kind = _TAG_NAMES.get(tag, "not text")
                raise _RefusedError(
                    "invalid-key",
                    f"key {key.value!r} is read as {kind}, but keys must be text; "
                    f"quote it ('{key.value}') or rename it",
                    key.start_mark,
                )
            first = seen.get(key.value)
            if first is not None:
                raise _RefusedError(
                    "duplicate-key",
                    f"key {key.value!r} is written twice in this mapping, first at line "
                    f"{first.line + 1}, column {first.column + 1}; YAML keys must be unique, "
                    "so keep one",
                    key.start_mark,
                )
            seen[key.value] = key.start_mark
        return node


class _GuardedConstructor(RoundTripConstructor):
    """ruamel's round-trip constructor, with a position on scalars it cannot build."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except YAMLError:
            raise
        except (ValueError, OverflowError) as exc:
            # e.g. `2001-02-30` (resolved as a date, no such day) or an integer of 5,000 digits.
            text = str(node.value)
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            raise _RefusedError(
                "invalid-value",
                f"{shown!r} cannot be read as {_TAG_NAMES.get(str(node.tag), 'a value')} "
                f"({exc}); quote it to make it text",
                node.start_mark,
            ) from exc


# --------------------------------------------------------------------------- helpers


def _decode(path: Path, raw: bytes) -> str:
    """The text of a UTF-8 file (a leading byte order mark dropped), or a positioned refusal."""
    if raw.startswith(_UTF16_BOMS):
        raise YamlSyntaxError(DefinitionProblem(
            path, 1, 1, "", "invalid-character",
            "the file starts with a UTF-16 byte order mark; save it as UTF-8",
        ))
    raw = raw.removeprefix(_UTF8_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start:exc.start].decode("utf-8", "replace")) + 1
        raise YamlSyntaxError(DefinitionProblem(
            path, line, column, "", "invalid-character",
            f"byte 0x{raw[exc.start]:02x} is not UTF-8 ({exc.reason}); save the file as UTF-8",
        )) from None
    unusual = _UNUSUAL_BREAK.search(text)
    if unusual is not None:
        line, column = _position_of(text, unusual.start())
        raise YamlSyntaxError(DefinitionProblem(
            path, line, column, "", "invalid-character",
            f"{_describe(ord(unusual.group()))} ends a line for some tools and not for others, "
            "so no position after it could be trusted; replace it with a newline",
        ))
    return text


def _position_of(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of ``text[index]``: CRLF, CR and LF each end a line, as for
    ruamel and editors alike (the unusual breaks they disagree on are refused first)."""
    before = text[:index]
    breaks = list(re.finditer("\r\n|[\r\n]", before))
    if not breaks:
        return 1, index + 1
    return len(breaks) + 1, index - breaks[-1].end() + 1


def _written(tag: Any) -> str:
    """A tag as it was written: ``!!python/object``, ``!custom``, ``!<tag:x>``."""
    handle = getattr(tag, "handle", None)
    return f"{handle}{tag.suffix}" if handle else f"!<{tag}>"


def _describe(code_point: Any) -> str:
    if isinstance(code_point, bytes):
        code_point = code_point[0] if code_point else 0
    name = {
        0: "NUL", 0x7F: "DEL", 0x85: "NEXT LINE", 0x2028: "LINE SEPARATOR",
        0x2029: "PARAGRAPH SEPARATOR", 0xFEFF: "a byte order mark",
    }.get(code_point)
    text = f"U+{code_point:04X}"
    return f"{text} ({name})" if name else text


def _problem(path: Path, mark: Any, code: str, message: str) -> DefinitionProblem:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return DefinitionProblem(path, line, column, "", code, message)


def _too_large(path: Path, size: int) -> YamlSyntaxError:
    return YamlSyntaxError(DefinitionProblem(
        path, 1, 1, "", "file-too-large",
        f"the file is {size:,} bytes; a definition file may hold at most {MAX_FILE_BYTES:,} "
        "bytes (split it: one service a file)",
    ))
