"""Rules that need more than one document: the registry and each service against it.

Rules produce :class:`~definitions.errors.Issue` values (a location inside the document, a
code, a message); the loader places them in files. Every rule runs and every issue is kept,
so a developer sees all problems in one ``nwd definitions check``.

Expressions are checked three ways: they parse (``bad-expression``); every name they read
exists and is in scope (``unknown-reference``, ``unknown-step``, ``not-upstream``); and
evaluating them over a sample built from the schemas raises no type error and gives the
kind of value the key needs (``ill-typed-expression``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from definitions.errors import Issue, Loc
from definitions.expressions import ExpressionError, MissingValue, evaluate, references
from definitions.field_types import fits, sample_data, type_name
from definitions.models import (
    Agency,
    AgencyRegistry,
    CallStep,
    DataSchema,
    DecisionStep,
    FieldSpec,
    ServiceDefinition,
)

DECISION_OUTPUT = DataSchema(
    fields={
        "decision": FieldSpec(type="enum", values=("approved", "rejected")),
        "reason": FieldSpec(type="text", required=False),
        "decided_by": FieldSpec(type="text"),
    }
)
"""What a decision step returns, readable as ``steps.<id>.output.<field>``."""

REQUEST_SAMPLE = {"reference": "NWD-0000-0000", "language": "en"}
"""What ``request`` holds: the citizen's reference and their language."""


def _listing(names: Iterable[str]) -> str:
    items = sorted(names)
    return ", ".join(items) if items else "(none)"


# --------------------------------------------------------------------------- registry


def validate_registry(registry: AgencyRegistry) -> list[Issue]:
    """Agency ids are unique, and operation ids are unique within each agency."""
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for index, agency in enumerate(registry.agencies):
        if agency.id in seen:
            issues.append(Issue(
                ("agencies", index, "id"), "duplicate-id",
                f"agency id {agency.id!r} is already used by agencies[{seen[agency.id]}]; "
                "give each agency its own id",
            ))
        else:
            seen[agency.id] = index
        operations: dict[str, int] = {}
        for op_index, operation in enumerate(agency.operations):
            if operation.id in operations:
                issues.append(Issue(
                    ("agencies", index, "operations", op_index, "id"), "duplicate-id",
                    f"operation id {operation.id!r} is already used in agency {agency.id!r} "
                    f"(operations[{operations[operation.id]}]); rename one of them",
                ))
            else:
                operations[operation.id] = op_index
    return issues


# --------------------------------------------------------------------------- services

AnyStep = CallStep | DecisionStep


@dataclass
class _Scope:
    """The names an expression may read at one place in a service, with sample values."""

    activation: dict[str, Any]
    upstream: frozenset[str]
    step_ids: frozenset[str]
    hints: dict[str, str] = field(default_factory=dict)
    """Why a root is not in scope here, by root name."""


def validate_service(
    service: ServiceDefinition,
    agencies: Mapping[str, Agency],
    *,
    unchecked_agencies: frozenset[str] = frozenset(),
    unchecked_steps: frozenset[str] = frozenset(),
) -> list[Issue]:
    """Every cross-document rule for one service; ``agencies`` is the registry by id.

    Steps calling an agency in ``unchecked_agencies`` (one whose own definition is broken and
    already reported) are not checked against it, so one typo gives one problem. Likewise
    ``unchecked_steps`` are steps left out because they are themselves invalid: naming them
    in ``needs`` or expressions is not a further problem.
    """
    checker = _ServiceChecker(service, agencies, unchecked_agencies, unchecked_steps)
    return checker.run()


class _ServiceChecker:
    def __init__(
        self,
        service: ServiceDefinition,
        agencies: Mapping[str, Agency],
        unchecked_agencies: frozenset[str],
        unchecked_steps: frozenset[str] = frozenset(),
    ) -> None:
        self.service = service
        self.agencies = agencies
        self.unchecked_agencies = unchecked_agencies
        self.unchecked_steps = unchecked_steps
        self.issues: list[Issue] = []
        self.steps: dict[str, AnyStep] = {}
        self.submission = sample_data(service.input)

    def run(self) -> list[Issue]:
        self._check_ids()
        self._check_needs()
        upstream = self._upstream()
        outputs = {step_id: self._output_sample(step) for step_id, step in self.steps.items()}
        for index, step in enumerate(self.service.steps):
            if self.steps.get(step.id) is not step:
                continue  # a duplicate id: reported once, not checked against the other step
            loc: Loc = ("steps", index)
            ups = upstream.get(step.id, frozenset())
            base = {
                "submission": self.submission,
                "request": REQUEST_SAMPLE,
                "steps": {s: {"output": outputs[s]} for s in ups if outputs.get(s) is not None},
            }
            scope = _Scope(
                base, ups | self.unchecked_steps, frozenset(self.steps) | self.unchecked_steps,
                hints={
                    "item": "`item` exists only inside a step with `for_each`",
                    "output": "`output` exists only in a compensation's input",
                },
            )
            if isinstance(step, DecisionStep):
                self._check_decision(step, loc, scope)
            else:
                self._check_call(step, loc, scope)
        self._check_contact()
        return self.issues

    def _check_contact(self) -> None:
        """``contact`` sees the submission and the request only: it is read at any moment
        of the request, also before any step has an output."""
        contact = self.service.contact
        if contact is None:
            return
        only = "`contact` sees only `submission` and `request`"
        scope = _Scope({"submission": self.submission, "request": REQUEST_SAMPLE},
                       frozenset(), frozenset(),
                       hints={"steps": only, "item": only, "output": only})
        for name, expression in (("email", contact.email), ("language", contact.language)):
            if expression is None:
                continue
            value = self._expression(expression, ("contact", name), scope)
            if value is not None and not isinstance(value, str):
                self.issues.append(Issue(
                    ("contact", name), "ill-typed-expression",
                    f"{expression!r} gives {type_name(value)}, but `contact.{name}` needs "
                    "text (e.g. `submission.email`)",
                ))

    # ------------------------------------------------------------------ ids and needs

    def _check_ids(self) -> None:
        for index, step in enumerate(self.service.steps):
            if step.id in self.steps:
                first = self.service.steps.index(self.steps[step.id])
                self.issues.append(Issue(
                    ("steps", index, "id"), "duplicate-id",
                    f"step id {step.id!r} is already used by steps[{first}]; "
                    "step ids must be unique within a service",
                ))
            else:
                self.steps[step.id] = step

    def _check_needs(self) -> None:
        for index, step in enumerate(self.service.steps):
            for need_index, need in enumerate(step.needs):
                if need not in self.steps and need not in self.unchecked_steps:
                    self.issues.append(Issue(
                        ("steps", index, "needs", need_index), "unknown-step",
                        f"step {step.id!r} needs {need!r}, which is not a step of this service; "
                        f"steps are: {_listing(self.steps)}",
                    ))
        reported: set[frozenset[str]] = set()
        for index, step in enumerate(self.service.steps):
            cycle = self._cycle_from(step.id)
            if cycle and frozenset(cycle) not in reported and cycle[0] == step.id:
                reported.add(frozenset(cycle))
                chain = " -> ".join([*cycle, cycle[0]])
                self.issues.append(Issue(
                    ("steps", index, "needs"), "needs-cycle",
                    f"steps wait for each other in a cycle: {chain}; "
                    "remove one of these `needs` so the steps can start",
                ))

    def _cycle_from(self, start: str) -> list[str] | None:
        """The first cycle through ``start`` found by depth-first search, as a path.

        Iterative, and each step is searched at most once (a step already searched without
        reaching ``start`` cannot reach it by another way): a long chain of `needs` must not
        overflow the stack, nor a ladder of them take exponential time.
        """
        path = [start]
        on_path = {start}
        searched: set[str] = set()
        pending = [iter(self.steps[start].needs)]
        while pending:
            need = next(pending[-1], None)
            if need is None:
                pending.pop()
                done = path.pop()
                on_path.discard(done)
                searched.add(done)
                continue
            if need == start:
                return list(path)
            if need in on_path or need in searched or need not in self.steps:
                continue
            path.append(need)
            on_path.add(need)
            pending.append(iter(self.steps[need].needs))
        return None

    def _upstream(self) -> dict[str, frozenset[str]]:
        """For each step, every step it waits for, directly or through others."""
        result: dict[str, frozenset[str]] = {}
        for step_id in self.steps:
            seen: set[str] = set()
            todo = list(self.steps[step_id].needs)
            while todo:
                need = todo.pop()
                if need in seen or need not in self.steps or need == step_id:
                    continue
                seen.add(need)
                todo.extend(self.steps[need].needs)
            result[step_id] = frozenset(seen)
        return result

    def _output_schema(self, step: AnyStep) -> DataSchema | None:
        if isinstance(step, DecisionStep):
            return DECISION_OUTPUT
        agency = self.agencies.get(step.agency)
        operation = agency.operation(step.operation) if agency else None
        return operation.output if operation else None

    def _output_sample(self, step: AnyStep) -> Any:
        schema = self._output_schema(step)
        if schema is None:
            return None
        sample = sample_data(schema)
        if isinstance(step, CallStep) and step.for_each:
            return [sample]  # one output per item
        return sample

    # ------------------------------------------------------------------ steps

    def _check_decision(self, step: DecisionStep, loc: Loc, scope: _Scope) -> None:
        if not step.role.strip():
            self.issues.append(Issue(
                (*loc, "role"), "invalid-value",
                "a decision step needs a role, e.g. 'benefits-caseworker': who may decide",
            ))
        if step.when is not None:
            self._expression(step.when, (*loc, "when"), scope, want="boolean")
        for name, expression in step.show.items():
            self._expression(expression, (*loc, "show", name), scope)

    def _check_call(self, step: CallStep, loc: Loc, scope: _Scope) -> None:
        if step.when is not None:
            when_scope = scope
            if step.for_each is not None:
                when_scope = _Scope(scope.activation, scope.upstream, scope.step_ids, {
                    **scope.hints,
                    "item": "`when` decides once whether the step runs, before `for_each`; "
                            "filter items in `for_each` instead, e.g. "
                            "`submission.benefits.filter(b, b.programme != 'x')`",
                })
            self._expression(step.when, (*loc, "when"), when_scope, want="boolean")
        item_scope = scope
        if step.for_each is not None:
            items = self._expression(step.for_each, (*loc, "for_each"), scope, want="list")
            item = items[0] if isinstance(items, list) and items else None
            item_scope = _Scope(
                {**scope.activation, "item": item}, scope.upstream, scope.step_ids,
                {k: v for k, v in scope.hints.items() if k != "item"},
            )
            if step.item_key is not None:
                self._expression(step.item_key, (*loc, "item_key"), item_scope)
        elif step.item_key is not None:
            self.issues.append(Issue(
                (*loc, "item_key"), "invalid-value",
                "`item_key` names items of a `for_each`; add `for_each` or remove `item_key`",
                at_key=True,
            ))

        if step.agency in self.unchecked_agencies:
            return
        agency = self.agencies.get(step.agency)
        if agency is None:
            self.issues.append(Issue(
                (*loc, "agency"), "unknown-agency",
                f"unknown agency {step.agency!r}; agencies.yaml defines: "
                f"{_listing([a for a in self.agencies])}",
            ))
            return
        operation = agency.operation(step.operation)
        if operation is None:
            self.issues.append(Issue(
                (*loc, "operation"), "unknown-operation",
                f"agency {agency.id!r} has no operation {step.operation!r}; it offers: "
                f"{_listing([op.id for op in agency.operations])}",
            ))
            return
        self._mapping(step.input, operation.input, (*loc, "input"), item_scope,
                      what=f"{agency.id}/{operation.id}")

        if step.compensation is not None:
            comp_loc = (*loc, "compensation")
            undo = agency.operation(step.compensation.operation)
            if undo is None:
                self.issues.append(Issue(
                    (*comp_loc, "operation"), "unknown-operation",
                    f"agency {agency.id!r} has no operation {step.compensation.operation!r} "
                    f"to undo this step; it offers: "
                    f"{_listing([op.id for op in agency.operations])}",
                ))
                return
            output = sample_data(operation.output)
            comp_scope = _Scope(
                {**item_scope.activation, "output": output}, scope.upstream, scope.step_ids,
                {k: v for k, v in item_scope.hints.items() if k != "output"},
            )
            self._mapping(step.compensation.input, undo.input, (*comp_loc, "input"), comp_scope,
                          what=f"{agency.id}/{undo.id}")

    def _mapping(
        self, mapping: Mapping[str, str], schema: DataSchema, loc: Loc, scope: _Scope, *, what: str
    ) -> None:
        for name, expression in mapping.items():
            spec = schema.fields.get(name)
            if spec is None:
                self.issues.append(Issue(
                    (*loc, name), "unknown-operation-field",
                    f"{what} does not accept a field {name!r}; it accepts: "
                    f"{_listing(schema.fields)}. Only declared fields may be sent",
                    at_key=True,
                ))
                self._expression(expression, (*loc, name), scope)
                continue
            value = self._expression(expression, (*loc, name), scope)
            if value is not None and not fits(spec, value):
                self.issues.append(Issue(
                    (*loc, name), "ill-typed-expression",
                    f"{what} expects {name!r} to be {spec.type}, but {expression!r} gives "
                    f"{type_name(value)}",
                ))
        for name, spec in schema.fields.items():
            if spec.required and name not in mapping:
                self.issues.append(Issue(
                    loc, "missing-required-field",
                    f"{what} requires {name!r} ({spec.type}), which this input does not map; "
                    f"add `{name}: <expression>`",
                    at_key=True,
                ))

    # ------------------------------------------------------------------ expressions

    def _expression(self, expression: str, loc: Loc, scope: _Scope, *, want: str = "") -> Any:
        """Check one expression; return its sample value when it is sound, else None."""
        try:
            paths = references(expression)
        except ExpressionError as exc:
            self.issues.append(Issue(
                loc, "bad-expression",
                f"{exc.reason}; expressions are CEL, e.g. `submission.full_name` or "
                f"`size(submission.benefits) > 0`",
            ))
            return None
        if any(scope.activation.get(path[0], True) is None for path in paths):
            return None  # e.g. `item` of a for_each that is itself wrong: reported there
        sound = True
        for path in paths:
            problem = self._reference(path, scope)
            if problem is not None:
                code, message = problem
                self.issues.append(Issue(loc, code, message))
                sound = False
        if not sound:
            return None
        try:
            value = evaluate(expression, scope.activation)
        except MissingValue:
            return None
        except ExpressionError as exc:
            issue = _evaluation_issue(expression, exc.reason, loc)
            if issue is not None:
                self.issues.append(issue)
            return None
        if want == "boolean" and not isinstance(value, bool):
            self.issues.append(Issue(
                loc, "ill-typed-expression",
                f"{expression!r} gives {type_name(value)}, but a condition must give a boolean "
                "(e.g. `submission.has_driving_licence` or `size(submission.benefits) > 0`)",
            ))
        if want == "list" and not isinstance(value, list):
            self.issues.append(Issue(
                loc, "ill-typed-expression",
                f"{expression!r} gives {type_name(value)}, but `for_each` needs a list "
                "(e.g. `submission.benefits`)",
            ))
        return value

    def _reference(self, path: tuple[str, ...], scope: _Scope) -> tuple[str, str] | None:
        """What is wrong with one dotted path read by an expression, as (code, message)."""
        root = path[0]
        if root not in scope.activation:
            in_scope = _listing(scope.activation)
            hint = scope.hints.get(root)
            reason = f"; {hint}" if hint else ""
            return ("unknown-reference",
                    f"unknown name {root!r}{reason}; in scope here: {in_scope}")
        if root == "steps":
            return self._step_reference(path, scope)
        return _walk_sample(path, scope.activation[root], 1)

    def _step_reference(self, path: tuple[str, ...], scope: _Scope) -> tuple[str, str] | None:
        upstream = _listing(scope.upstream) if scope.upstream else "(none: add `needs`)"
        if len(path) < 3 or path[2] != "output":
            return ("unknown-reference",
                    f"write `steps.<id>.output.<field>` to read a step's result, not "
                    f"{'.'.join(path)!r}; upstream steps: {upstream}")
        step_id = path[1]
        if step_id not in scope.step_ids:
            return ("unknown-step",
                    f"{'.'.join(path)!r} names no step of this service; upstream steps: {upstream}")
        if step_id not in scope.upstream:
            return ("not-upstream",
                    f"{'.'.join(path)!r} reads step {step_id!r}, which is not upstream: add "
                    f"{step_id!r} to this step's `needs`; upstream steps: {upstream}")
        steps = scope.activation["steps"]
        if step_id not in steps:
            return None  # its operation is unknown: reported on that step
        output = steps[step_id]["output"]
        if isinstance(output, list) and len(path) > 3:
            return ("unknown-reference",
                    f"step {step_id!r} runs for_each, so its output is a list (one per item); "
                    f"use e.g. `steps.{step_id}.output.map(o, o.{path[3]})`")
        return _walk_sample(path, output, 3)


def _evaluation_issue(expression: str, reason: str, loc: Loc) -> Issue | None:
    """The issue a failed sample evaluation shows, or None when it depends on sample values.

    Overload and member errors hold for every value of the types involved: they are type
    errors. Division by zero, a bad index or an overflow depend on the sample values the
    checker made up, so they say nothing about the definition and are not reported.
    """
    undeclared = re.match(r"undeclared reference to '([^']+)'", reason)
    if undeclared:
        return Issue(loc, "unknown-reference",
                     f"{expression!r} calls or names {undeclared.group(1)!r}, which CEL does "
                     "not define; see the functions listed at https://cel.dev")
    if "overload" in reason or "is not an object" in reason:
        return Issue(loc, "ill-typed-expression",
                     f"{expression!r} does not type-check: {friendly_reason(reason)}")
    return None


_OPERATORS = {
    "addition_add": "+", "addition_sub": "-", "multiplication_mul": "*",
    "multiplication_div": "/", "multiplication_mod": "%", "relation_eq": "==",
    "relation_ne": "!=", "relation_lt": "<", "relation_le": "<=", "relation_gt": ">",
    "relation_ge": ">=", "relation_in": "in", "unary_neg": "-", "unary_not": "!",
}
_OVERLOAD = re.compile(r"no matching overload for (?:Token\('RULE', '(\w+)'\)|(\S+)) applied to")
_CEL_TYPES = {
    "StringType": "text", "IntType": "integer", "UintType": "integer", "DoubleType": "number",
    "BoolType": "boolean", "ListType": "list", "MapType": "object", "NullType": "null",
    "BytesType": "bytes", "TimestampType": "timestamp", "DurationType": "duration",
}


def friendly_reason(reason: str) -> str:
    """cel-python's overload errors in the words of the definition language."""
    match = _OVERLOAD.search(reason)
    if not match:
        return reason
    operator = _OPERATORS.get(match.group(1) or "", match.group(1) or match.group(2))
    kinds = [_CEL_TYPES.get(name, name) for name in re.findall(r"celtypes\.(\w+)'", reason)]
    return f"the operator {operator} cannot be applied to {' and '.join(kinds) or 'these values'}"


def _walk_sample(path: tuple[str, ...], value: Any, start: int) -> tuple[str, str] | None:
    for depth in range(start, len(path)):
        here = ".".join(path[:depth])
        if isinstance(value, dict):
            if path[depth] not in value:
                close = difflib.get_close_matches(path[depth], list(value), n=1)
                guess = f"did you mean {close[0]!r}? " if close else ""
                return ("unknown-reference",
                        f"{here} has no field {path[depth]!r}; {guess}"
                        f"its fields are: {_listing(value)}")
            value = value[path[depth]]
        elif isinstance(value, list):
            return ("unknown-reference",
                    f"{here} is a list; read its items with `for_each` or a macro such as "
                    f"`{here}.map(x, x.{path[depth]})`")
        else:
            return ("unknown-reference",
                    f"{here} is {type_name(value)}, which has no field {path[depth]!r}")
    return None


def iter_expressions(service: ServiceDefinition) -> Iterator[tuple[Loc, str]]:
    """Every expression of a service with its location (for tools and tests)."""
    for index, step in enumerate(service.steps):
        loc: Loc = ("steps", index)
        if step.when:
            yield (*loc, "when"), step.when
        if isinstance(step, DecisionStep):
            for name, expression in step.show.items():
                yield (*loc, "show", name), expression
            continue
        if step.for_each:
            yield (*loc, "for_each"), step.for_each
        if step.item_key:
            yield (*loc, "item_key"), step.item_key
        for name, expression in step.input.items():
            yield (*loc, "input", name), expression
        if step.compensation:
            for name, expression in step.compensation.input.items():
                yield (*loc, "compensation", "input", name), expression
    if service.contact is not None:
        yield ("contact", "email"), service.contact.email
        if service.contact.language is not None:
            yield ("contact", "language"), service.contact.language
