"""What each agency will receive: the submission fields a service's steps send, by step.

A citizen is told, before they start, which agencies a service tells and what each one gets
(the start page), and issue 15's per-submission preview asks the same question of one
submission. Both read it from here: a pure function of the definition, found from the CEL
expressions of each step's ``input`` mapping (and its compensation's), with
:func:`definitions.expressions.references` — never a list written beside the definition
that could drift from it.

- a path ``submission.a.b`` names the field ``b`` inside the object ``a``; a path into an
  address (``submission.new_address.city``) is the address itself, since its parts are not
  fields of their own to the citizen;
- inside a ``for_each`` step over a submission list, ``item.z`` names the field ``z`` of each
  item, and the step is described as "for each <list>: <item fields>";
- ``steps.<id>.output...`` is what an earlier step's agency answered, not the citizen's data:
  it is listed as that step (:attr:`Disclosure.from_steps`);
- a decision step is a caseworker's review; what it shows (``show``) is listed the same way.

Labels are the fields' own ``label`` (a :data:`~definitions.models.LocalizedText`); a field
without one gets its name in plain words (``moved_on`` → "Moved on").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from definitions.expressions import references
from definitions.field_types import kind_of

if TYPE_CHECKING:
    from definitions.models import Agency, DataSchema, FieldSpec, ServiceDefinition

Text = Mapping[str, str]
"""A text by language (a LocalizedText), always with English."""


@dataclass(frozen=True)
class DisclosedField:
    """One submission field a step sends: its path from the submission (or the item) and its
    label."""

    path: tuple[str, ...]
    label: Text
    personal: bool = False


@dataclass(frozen=True)
class ForEach:
    """A ``for_each`` step over a submission list: one call per item."""

    list_path: tuple[str, ...]
    list_label: Text
    item_fields: tuple[DisclosedField, ...]
    """The fields of each item the call sends (``item.z``)."""


@dataclass(frozen=True)
class Disclosure:
    """What one step tells whom."""

    step_id: str
    kind: str
    """``call`` (an agency is told) or ``decision`` (a caseworker reviews it)."""
    title: Text | None
    agency_id: str | None
    agency_name: Text | None
    conditional: bool
    """The step has a ``when``: it only happens if it applies to the citizen."""
    fields: tuple[DisclosedField, ...]
    """Submission fields sent (or shown, for a decision), in the order the mapping names
    them, each once."""
    for_each: ForEach | None = None
    from_steps: tuple[str, ...] = ()
    """Earlier steps whose agencies' answers are passed on (``steps.<id>.output``)."""
    role: str | None = None
    """The role that decides, for a decision step."""
    extra: tuple[str, ...] = field(default=())
    """Paths read that are not fields of the schema (none in a valid definition)."""


def humanise(name: str) -> str:
    """``moved_on`` → ``Moved on``: a field's name in plain words, when it has no label."""
    words = name.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def label_of(spec: FieldSpec | None, name: str) -> Text:
    if spec is not None and spec.label:
        return spec.label
    return {"en": humanise(name)}


def resolve(fields: Mapping[str, FieldSpec], path: Iterable[str]) -> tuple[
        tuple[str, ...], FieldSpec] | None:
    """The field a path names in ``fields``, as (its path, its spec): the path is cut at the
    first field that is not an object (an address, a list, a scalar); None if unknown."""
    parts = list(path)
    taken: list[str] = []
    current: Mapping[str, FieldSpec] | None = fields
    spec: FieldSpec | None = None
    for part in parts:
        if current is None or part not in current:
            break
        spec = current[part]
        taken.append(part)
        current = spec.fields if spec.type == "object" else None
        if current is None:
            break
    if spec is None:
        return None
    return tuple(taken), spec


def _expressions(step: object) -> list[str]:
    from definitions.models import CallStep, DecisionStep

    if isinstance(step, CallStep):
        found = list(step.input.values())
        if step.compensation is not None:
            found += list(step.compensation.input.values())
        return found
    if isinstance(step, DecisionStep):
        return list(step.show.values())
    return []


def step_disclosure(schema: DataSchema, step: object,
                    agencies: Mapping[str, Agency] | None = None) -> Disclosure:
    """What ``step`` of a service whose input is ``schema`` sends (see the module docstring)."""
    from definitions.models import CallStep, DecisionStep

    assert isinstance(step, CallStep | DecisionStep)
    item_fields: Mapping[str, FieldSpec] | None = None
    for_each_path: tuple[str, ...] | None = None
    for_each_spec: FieldSpec | None = None
    if isinstance(step, CallStep) and step.for_each is not None:
        for path in references(step.for_each):
            if path[0] == "submission":
                found = resolve(schema.fields, path[1:])
                if found is not None and found[1].type == "list":
                    for_each_path, for_each_spec = found
                    items = kind_of(for_each_spec).item(for_each_spec)
                    item_fields = (items.fields if items is not None and items.type == "object"
                                   else None)
                    break
    sent: dict[tuple[str, ...], DisclosedField] = {}
    per_item: dict[tuple[str, ...], DisclosedField] = {}
    from_steps: list[str] = []
    extra: list[str] = []
    for expression in _expressions(step):
        for path in references(expression):
            head = path[0]
            if head == "submission":
                found = resolve(schema.fields, path[1:])
                if found is None:
                    extra.append(".".join(path))
                    continue
                where, spec = found
                if where != for_each_path:  # the list itself is described by for_each
                    sent.setdefault(where, DisclosedField(where, label_of(spec, where[-1]),
                                                          spec.personal))
            elif head == "item" and item_fields is not None and len(path) > 1:
                found = resolve(item_fields, path[1:])
                if found is None:
                    extra.append(".".join(path))
                    continue
                where, spec = found
                per_item.setdefault(where, DisclosedField(where, label_of(spec, where[-1]),
                                                          spec.personal))
            elif head == "steps" and len(path) > 1 and path[1] not in from_steps:
                from_steps.append(path[1])
    for_each = None
    if for_each_path is not None and for_each_spec is not None:
        for_each = ForEach(for_each_path, label_of(for_each_spec, for_each_path[-1]),
                           tuple(per_item.values()))
    agency = None
    if isinstance(step, CallStep) and agencies is not None:
        agency = agencies.get(step.agency)
    return Disclosure(
        step_id=step.id, kind=step.kind, title=step.title,
        agency_id=step.agency if isinstance(step, CallStep) else None,
        agency_name=agency.name if agency is not None else None,
        conditional=step.when is not None, fields=tuple(sent.values()), for_each=for_each,
        from_steps=tuple(from_steps),
        role=step.role if isinstance(step, DecisionStep) else None, extra=tuple(extra))


def disclosures(service: ServiceDefinition,
                agencies: Mapping[str, Agency] | None = None) -> list[Disclosure]:
    """What every step of ``service`` sends, in the definition's order; ``agencies`` (the
    registry, by id) gives each agency's name."""
    return [step_disclosure(service.input, step, agencies) for step in service.steps]


def asked_fields(schema: DataSchema) -> list[DisclosedField]:
    """The top-level fields a form asks for, with labels: "what you will need"."""
    return [DisclosedField((name, ), label_of(spec, name), spec.personal)
            for name, spec in schema.fields.items()]
