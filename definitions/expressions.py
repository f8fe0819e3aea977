"""Conditions and input mappings in CEL (the Common Expression Language).

Why CEL (via ``cel-python``):
- it is what Kubernetes admission policies and Envoy use: developers may know it already;
- it is side-effect free, has no clock, no randomness and no I/O, and always terminates, so
  evaluating it inside a Temporal workflow is deterministic;
- ``cel-python`` is pure Python (lark parser): its parse tree can be walked to find every
  ``submission.x`` / ``steps.y.output.z`` reference, which the validator checks are upstream;
- it imports cleanly in Temporal's workflow sandbox (the worker passes it through).

Two performance choices, because the workflow evaluates expressions on every event:
- compiled programs are cached per expression text (the text is the whole key: a CEL program
  has no hidden inputs);
- a plain dotted path such as ``submission.new_address`` (most input mappings) is resolved
  directly, with the same meaning CEL gives it, without running the interpreter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import celpy
import celpy.celtypes as celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError
from lark import Token, Tree

_PLAIN_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESERVED = {"true", "false", "null", "in"}

_env = celpy.Environment()


class ExpressionError(Exception):
    """An expression that does not parse, or that failed while being evaluated."""

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"{reason} (in expression {expression!r})")
        self.expression = expression
        self.reason = reason


class MissingValue(ExpressionError):  # noqa: N818 (public name, kept)
    """A path named a value the data does not hold (e.g. an optional field left empty)."""


MAX_TREE_DEPTH = 200
"""Deepest parse tree accepted. The parser is iterative but the reference walk and cel-python's
evaluator recurse about five frames a level, so a deeper tree (``[[[[...]]]]`` fifty deep) would
end in RecursionError, at load time or in a workflow task (cel-python sets the limit to 2,500
frames; 200 levels use about 1,000). Each bracket or call adds about ten levels; the shipped
expressions reach 26."""


@lru_cache(maxsize=4096)
def parse(expression: str) -> Tree[Token]:
    """Parse an expression, raising :class:`ExpressionError` with the parser's reason."""
    try:
        tree = _env.compile(expression)
    except CELParseError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise ExpressionError(expression, f"CEL syntax error: {first_line}") from exc
    if _depth(tree) > MAX_TREE_DEPTH:
        raise ExpressionError(
            expression,
            "the expression is nested too deeply (more than about 15 levels of brackets, "
            "calls or chained operators); split it into simpler expressions",
        )
    return tree


def _depth(tree: Tree[Token]) -> int:
    """Height of a parse tree, found without recursion."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))
    return deepest


@lru_cache(maxsize=4096)
def _program(expression: str) -> celpy.Runner:
    return _env.program(parse(expression))


def is_plain_path(expression: str) -> bool:
    text = expression.strip()
    return bool(_PLAIN_PATH.match(text)) and text.split(".")[0] not in _RESERVED


def evaluate(expression: str, activation: Mapping[str, Any]) -> Any:
    """Evaluate an expression over plain JSON-like data and return plain Python values.

    Raises:
        MissingValue: a path names a key the data does not have.
        ExpressionError: any other parse or evaluation failure (e.g. a type mismatch).
    """
    text = expression.strip()
    if is_plain_path(text):
        return _resolve_path(text, activation)
    program = _program(text)
    cel_activation = {k: json_to_cel(v) for k, v in activation.items()}
    try:
        result = program.evaluate(cel_activation)
    except CELEvalError as exc:
        raise _classify(text, exc) from exc
    if isinstance(result, CELEvalError):
        raise _classify(text, result)
    return to_python(result)


def _classify(expression: str, exc: CELEvalError) -> ExpressionError:
    message = exc.args[0] if exc.args else str(exc)
    if "no such member" in str(message) or "no such key" in str(message):
        return MissingValue(expression, str(message))
    return ExpressionError(expression, str(message))


def _resolve_path(path: str, activation: Mapping[str, Any]) -> Any:
    parts = path.split(".")
    if parts[0] not in activation:
        raise ExpressionError(path, f"undeclared reference to {parts[0]!r}")
    value: Any = activation[parts[0]]
    for depth, part in enumerate(parts[1:], start=1):
        if not isinstance(value, Mapping):
            raise ExpressionError(path, f"{'.'.join(parts[:depth])} is not an object")
        if part not in value:
            raise MissingValue(path, f"no such member in mapping: {part!r}")
        value = value[part]
    return value


def to_python(value: Any) -> Any:
    """Turn CEL values into JSON-like Python values (bool before int: BoolType is an int)."""
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.BytesType):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, Mapping):
        return {str(to_python(k)): to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    if value is None or isinstance(value, celtypes.NullType):
        return None
    return value


# --------------------------------------------------------------------------- references


def references(expression: str) -> list[tuple[str, ...]]:
    """Every dotted path read by an expression, longest form, e.g. ``("steps", "a", "output")``.

    Names bound by comprehension macros (``list.map(x, ...)``) are left out: they are local.
    """
    tree = parse(expression.strip())
    return list(_walk(tree, bound=frozenset()))


def _walk(node: Tree[Token] | Token, bound: frozenset[str]) -> Iterator[tuple[str, ...]]:
    if isinstance(node, Token):
        return
    path = _path_of(node)
    if path is not None:
        if path[0] not in bound:
            yield path
        return
    if node.data == "member_dot_arg" and len(node.children) == 3:
        target, method, args = node.children
        yield from _walk(target, bound)
        arg_list = list(args.children) if isinstance(args, Tree) else []
        if str(method) in {"map", "filter", "all", "exists", "exists_one"} and arg_list:
            local = _path_of(arg_list[0])
            inner = bound | {local[0]} if local and len(local) == 1 else bound
            for arg in arg_list[1:]:
                yield from _walk(arg, inner)
        else:
            for arg in arg_list:
                yield from _walk(arg, bound)
        return
    if node.data == "ident_arg":
        for child in node.children[1:]:
            yield from _walk(child, bound)
        return
    for child in node.children:
        yield from _walk(child, bound)


def _path_of(node: Tree[Token] | Token) -> tuple[str, ...] | None:
    """The dotted path a ``member``/``primary`` subtree denotes, or None if it is not a path."""
    if isinstance(node, Token):
        return None
    if node.data in {"member", "primary", "unary", "multiplication", "addition", "relation",
                     "conditionaland", "conditionalor", "expr"} and len(node.children) == 1:
        return _path_of(node.children[0])
    if node.data == "ident" and node.children:
        return (str(node.children[0]),)
    if node.data == "member_dot" and len(node.children) == 2:
        head = _path_of(node.children[0])
        if head is None:
            return None
        return (*head, str(node.children[1]))
    return None

