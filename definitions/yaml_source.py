"""YAML documents that remember where each key and value was written.

ruamel.yaml's round-trip loader keeps line/column marks on every mapping and sequence; a
:class:`YamlDocument` keeps that tree beside a plain-Python copy (what pydantic validates) so
an error location such as ``("steps", 2, "input", "x")`` can be turned back into a line.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from definitions.errors import DefinitionProblem, Issue, Loc, key_path


class YamlSyntaxError(Exception):
    """The file is not valid YAML; ``problem`` says where."""

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
        """Load ``path``; raise :class:`YamlSyntaxError` (with a position) if it is not YAML."""
        yaml = YAML(typ="rt")
        try:
            tree = yaml.load(path.read_text(encoding="utf-8"))
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            reason = exc.problem or exc.context or "invalid YAML"
            raise YamlSyntaxError(
                DefinitionProblem(
                    path, line, column, "", "yaml-syntax",
                    f"invalid YAML: {reason}; check indentation, quoting and colons near here",
                )
            ) from exc
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
            if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
                child = node[part]
                if (last and at_key) or isinstance(child, CommentedMap | CommentedSeq):
                    line, column = node.lc.key(part)
                else:
                    line, column = node.lc.value(part)
                node = child
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line, column = node.lc.item(part)
                node = node[part]
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
