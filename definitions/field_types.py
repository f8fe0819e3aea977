"""The field types of the definition language: one object per type, in one registry.

A field type is everything the engine knows about a schema field's ``type:`` beyond its name.
Each type is one :class:`FieldKind` in :data:`FIELD_TYPES`, and every other module asks it:

=====================  =====================================================  ===================
question               method / attribute                                     asked by
=====================  =====================================================  ===================
which rules it takes   :attr:`~FieldKind.rules`, :attr:`~FieldKind.needs`,    ``FieldSpec``
                       :meth:`~FieldKind.spec_problem`
its JSON Schema        :meth:`~FieldKind.json_schema`                         ``schema.json``
a value, normalised    :meth:`~FieldKind.check`                               ``submission``
what it holds          :meth:`~FieldKind.item`, :meth:`~FieldKind.fields`     validation, redaction
a sample value         :meth:`~FieldKind.sample`, :meth:`~FieldKind.fits`     expression checks
a generated value      :meth:`~FieldKind.generate`                            reference agencies
=====================  =====================================================  ===================

Samples are built from schemas before any request exists, so expressions can be evaluated once
at load time and type errors (``submission.moved_on + 1``) reported with a position. A type's
CEL type is the type of its sample once converted (``celpy.adapter.json_to_cel``): text-like
types and dates are CEL strings, ``integer`` an int, ``number`` a double, ``list`` a list,
``object`` and ``address`` maps. Optional fields are included in samples: an expression that
reads them must type-check for the day they are present.

The registry is **closed by design**. A definition snapshot travels inside workflow histories
and must mean the same in the intake, in every worker and in a replay years later, so a type is
code in this module, not a plug-in registered at run time. To add one: write its
:class:`FieldKind` subclass here, add an instance to :data:`FIELD_TYPES` and its name to
:data:`FieldType` (this module refuses to import while the two disagree), and a row to the
field-type table of ``docs/definitions.md``; then regenerate ``definitions/schema.json``.
"""

from __future__ import annotations

import datetime
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

if TYPE_CHECKING:
    from definitions.models import DataSchema, FieldSpec

FieldType = Literal[
    "text", "integer", "number", "boolean", "date", "email", "phone", "address", "enum",
    "list", "object",
]
"""The names a field's ``type:`` may take: exactly the keys of :data:`FIELD_TYPES`, in order."""

Rule = Literal[
    "values", "options", "items", "min_items", "max_items", "fields", "min_length", "max_length",
    "pattern", "minimum", "maximum",
]
"""The keys of a field spec that constrain its values; each type accepts some of them."""


@dataclass(frozen=True)
class RuleGroup:
    """Rules that belong together, and what a spec is told when it gives them to another type."""

    rules: tuple[Rule, ...]
    misplaced: str
    """The message when a type that accepts none of them is given one (``{type}``: its name)."""


RULE_GROUPS: tuple[RuleGroup, ...] = (
    RuleGroup(("values", "options"), "'values' and 'options' apply to enum fields, not {type}"),
    RuleGroup(("items", "min_items", "max_items"),
              "'items', 'min_items' and 'max_items' apply to lists, not {type}"),
    RuleGroup(("fields",), "'fields' applies to object fields, not {type}"),
    RuleGroup(("min_length", "max_length", "pattern"),
              "'min_length', 'max_length' and 'pattern' apply to text, not {type}"),
    RuleGroup(("minimum", "maximum"), "'minimum' and 'maximum' apply to numbers, not {type}"),
)
"""Every rule, in the order :func:`rule_problem` checks them (so the first problem is stable)."""


class InvalidValue(ValueError):  # noqa: N818 (reads as what the value is)
    """A value a field type refuses; ``message`` is written for the citizen-facing form.

    ``code`` names the rule broken, stably (``too_short``, ``not_a_date``: the codes of
    :data:`definitions.submission.ERROR_CODES`), and ``params`` its figures (``{"min": 4}``),
    so a page can say it in the citizen's language; ``message`` stays the English the API
    answers. Raised by :meth:`FieldKind.check` and caught by the submission walker, which
    records it at the field's path; it never leaves :mod:`definitions.submission`.
    """

    def __init__(self, message: str, code: str = "invalid", **params: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.params: dict[str, Any] = params


@dataclass(frozen=True)
class Seed:
    """What a generated value is made from: the field's name and the record it belongs to.

    Generated values are deterministic: one record always gives the same output, and records
    differ by ``number`` (the agency's sequence number for the record).
    """

    field: str
    """The field's name (``registration_number``); items of a list share their list's name."""
    agency_id: str
    agency_prefix: str
    """The agency's reference prefix, ``DRIVER-LICENSING`` for ``driver-licensing``."""
    number: int
    day: datetime.date
    """The day dates are generated for (the caller's today: this module reads no clock)."""

    def inner(self, field: str) -> Seed:
        """The seed of a field inside an object."""
        return Seed(field, self.agency_id, self.agency_prefix, self.number, self.day)


class FieldKind(ABC):
    """One field type: the rules its specs take, and what its values are.

    The registry holds one instance per type. Methods take the field's spec because most answers
    depend on its rules (an enum's sample is its first value, a list's its item's).
    """

    name: ClassVar[FieldType]
    rules: ClassVar[frozenset[Rule]] = frozenset()
    """Rules a spec of this type may give; any other rule is a definition error."""
    needs: ClassVar[Mapping[Rule, str]] = MappingProxyType({})
    """Rules a spec of this type must give (not empty), with the message when one is missing."""

    def spec_problem(self, spec: FieldSpec) -> str | None:
        """What is wrong with the value of an accepted rule (a pattern that does not compile)."""
        return None

    def json_schema(self) -> dict[str, Any] | None:
        """What the JSON Schema requires of a spec of this type (its :attr:`needs`), or None.

        "Not empty" as the model means it: present, not null, and neither an empty list nor an
        empty mapping (``minItems``/``minProperties`` only constrain values of those kinds).
        """
        if not self.needs:
            return None
        non_empty = {"not": {"type": "null"}, "minItems": 1, "minProperties": 1}
        return {"required": list(self.needs), "properties": dict.fromkeys(self.needs, non_empty)}

    @abstractmethod
    def check(self, spec: FieldSpec, value: Any) -> Any:
        """The value normalised (a ``datetime.date`` becomes ISO text, ``2.0`` an integer ``2``).

        Only this type's own level is checked; what it holds (:meth:`item`, :meth:`fields`) is
        checked field by field by the submission walker, so every bad field has its own path.

        Raises:
            InvalidValue: the value breaks the type or one of the spec's rules.
        """

    def item(self, spec: FieldSpec) -> FieldSpec | None:
        """The spec of each item, for a type holding a list of values; otherwise None."""
        return None

    def fields(self, spec: FieldSpec) -> Mapping[str, FieldSpec] | None:
        """The named fields, for a type holding a mapping (no other keys); otherwise None."""
        return None

    @abstractmethod
    def sample(self, spec: FieldSpec) -> Any:
        """A value of the type (JSON-like), for evaluating expressions at load time."""

    @abstractmethod
    def fits(self, spec: FieldSpec, value: Any) -> bool:
        """Whether a non-null (sample) value can be sent as a field of this type."""

    @abstractmethod
    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        """A valid value for a reference agency's output, the same for the same seed."""


# --------------------------------------------------------------------------- text-like


class TextKind(FieldKind):
    """Free text: bounded in length, valid Unicode without NUL, and ``pattern`` matches it whole.

    Every text value has a length bound: the spec's ``max_length``, or
    :attr:`default_max_length` when it declares none, so no field takes megabytes. A value
    holding NUL (``\\u0000``) or an unpaired surrogate (``"\\ud800"``) is refused: PostgreSQL
    cannot store the first in ``jsonb`` or ``text``, and the second is not Unicode text at all
    (it cannot even be written as UTF-8). ``pattern`` must match the **whole** value, as JSON
    Schema's ``^…$`` means it: Python's ``$`` also matches before a final newline, so a
    searched ``^[A-Z0-9]{8,12}$`` would let ``"TX12345678\\n"`` through.
    """

    name: ClassVar[FieldType] = "text"
    rules = frozenset({"min_length", "max_length", "pattern"})
    example: ClassVar[str] = "text"
    format: ClassVar[re.Pattern[str] | None] = None
    """A format every value has on top of the spec's rules (emails, phone numbers)."""
    format_message: ClassVar[str] = ""
    format_code: ClassVar[str] = "invalid"
    """The :class:`InvalidValue` code of a value breaking :attr:`format`."""
    default_max_length: ClassVar[int] = 1000
    """The longest value when the spec gives no ``max_length``: a form field, not a document."""

    def spec_problem(self, spec: FieldSpec) -> str | None:
        if spec.pattern is not None:
            try:
                re.compile(spec.pattern)
            except re.error as exc:
                return f"'pattern' is not a valid regular expression: {exc}"
        return None

    def max_length(self, spec: FieldSpec) -> int:
        """The longest value a spec of this type accepts: its own bound, or the type's default."""
        return spec.max_length if spec.max_length is not None else self.default_max_length

    def check(self, spec: FieldSpec, value: Any) -> Any:
        if not isinstance(value, str):
            raise InvalidValue("must be text", "not_text")
        problem = text_problem(value)
        if problem is not None:
            raise InvalidValue(problem, "bad_text")
        if spec.min_length is not None and len(value) < spec.min_length:
            raise InvalidValue(f"must be at least {spec.min_length} characters long",
                               "too_short", min=spec.min_length)
        longest = self.max_length(spec)
        if len(value) > longest:
            raise InvalidValue(f"must be at most {longest} characters long", "too_long",
                               max=longest)
        if spec.pattern is not None and not _compiled(spec.pattern).fullmatch(value):
            raise InvalidValue(f"does not have the expected format ({spec.pattern})",
                               "pattern", pattern=spec.pattern)
        if self.format is not None and not self.format.fullmatch(value):
            raise InvalidValue(self.format_message, self.format_code)
        return value

    def sample(self, spec: FieldSpec) -> Any:
        return self.example

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, str)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        """An id for id-like names (``*_reference``, ``*_id``, ``*number*``), else name and n.

        ``registration_number`` of agency ``business-registry``, record 42:
        ``BUSINESS-REGISTRY-RN-000042``; ``note``: ``note 42``. Padded to ``min_length`` and cut
        to ``max_length``; ``pattern`` is not honoured.
        """
        name = seed.field
        if name.endswith(("_reference", "_id")) or "number" in name:
            initials = "".join(part[0] for part in name.split("_") if part).upper() or "ID"
            text = f"{seed.agency_prefix}-{initials}-{seed.number:06d}"
        else:
            text = f"{name.replace('_', ' ')} {seed.number}"
        if spec.min_length is not None and len(text) < spec.min_length:
            text = text.ljust(spec.min_length, "0")
        return text[: spec.max_length] if spec.max_length else text


class EmailKind(TextKind):
    """An email address: text with an ``@`` and a dotted domain."""

    name = "email"
    example = "a@example.org"
    format = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
    format_message = "must be an email address such as name@example.org"
    format_code = "not_an_email"
    default_max_length = 254
    """The longest address SMTP can carry (RFC 5321's 256-octet path, less its brackets)."""

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return f"case-{seed.number}@{seed.agency_id}.example.gov"


class PhoneKind(TextKind):
    """A phone number: digits with an optional ``+``, spaces, brackets and dashes."""

    name = "phone"
    example = "+15550100"
    format = re.compile(r"\+?[0-9][0-9 ()-]{5,19}")
    format_message = "must be a phone number such as +44 20 7946 0000"
    format_code = "not_a_phone"
    default_max_length = 21
    """What the format allows anyway: a ``+`` and at most 20 digits, spaces and signs."""

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return f"+1555{seed.number:07d}"


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as text (a NUL, an unpaired surrogate), or None.

    The one rule for every text the engine keeps, in a field value or anywhere in a JSON body
    (the intake refuses such bodies as it parses them, keys included).
    """
    if "\x00" in text:
        return "must not contain the NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it holds an unpaired surrogate such as \\ud800)"
    return None


# --------------------------------------------------------------------------- numbers


class NumberKind(FieldKind):
    """Any JSON number (never a boolean, although Python counts ``True`` as 1)."""

    name: ClassVar[FieldType] = "number"
    rules = frozenset({"minimum", "maximum"})
    expected: ClassVar[str] = "a number"
    expected_code: ClassVar[str] = "not_a_number"

    def check(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidValue(f"must be {self.expected}", self.expected_code)
        value = self._normalise(value)
        if spec.minimum is not None and value < spec.minimum:
            raise InvalidValue(f"must be at least {spec.minimum:g}", "too_small",
                               min=spec.minimum)
        if spec.maximum is not None and value > spec.maximum:
            raise InvalidValue(f"must be at most {spec.maximum:g}", "too_large",
                               max=spec.maximum)
        return value

    def _normalise(self, value: float) -> float:
        return value

    def sample(self, spec: FieldSpec) -> Any:
        return 1.5

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        """The record's number, clamped into ``minimum``..``maximum``."""
        return float(self._clamped(spec, seed.number))

    @staticmethod
    def _clamped(spec: FieldSpec, number: float) -> float:
        if spec.minimum is not None:
            number = max(number, spec.minimum)
        if spec.maximum is not None:
            number = min(number, spec.maximum)
        return number


class IntegerKind(NumberKind):
    """A whole number; ``2.0`` is accepted as ``2`` (JSON numbers carry no int/float mark)."""

    name = "integer"
    expected = "a whole number"
    expected_code = "not_whole"

    def _normalise(self, value: float) -> float:
        if isinstance(value, float):
            if not value.is_integer():
                raise InvalidValue("must be a whole number", "not_whole")
            return int(value)
        return value

    def sample(self, spec: FieldSpec) -> Any:
        return 1

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        """The record's number, clamped into ``minimum``..``maximum`` and truncated."""
        return int(self._clamped(spec, seed.number))


# --------------------------------------------------------------------------- other scalars


class BooleanKind(FieldKind):
    """``true`` or ``false``; not ``"yes"``, not ``1``."""

    name = "boolean"

    def check(self, spec: FieldSpec, value: Any) -> Any:
        if not isinstance(value, bool):
            raise InvalidValue("must be true or false", "not_boolean")
        return value

    def sample(self, spec: FieldSpec) -> Any:
        return True

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, bool)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return True


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""Matched whole (``fullmatch``): ``$`` would let a final newline through, ``\\d`` other digits."""


class DateKind(FieldKind):
    """A calendar date written ``YYYY-MM-DD`` (a ``datetime.date`` is accepted and written so)."""

    name = "date"

    def check(self, spec: FieldSpec, value: Any) -> Any:
        if isinstance(value, datetime.datetime):
            raise InvalidValue("must be a date (YYYY-MM-DD), without a time", "not_a_date")
        if isinstance(value, datetime.date):
            return value.isoformat()
        if not isinstance(value, str) or not _DATE.fullmatch(value):
            raise InvalidValue("must be a date written YYYY-MM-DD", "not_a_date")
        try:
            return datetime.date.fromisoformat(value).isoformat()
        except ValueError:
            raise InvalidValue("is not a real date", "not_a_real_date") from None

    def sample(self, spec: FieldSpec) -> Any:
        return "2026-01-01"

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, str)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return seed.day.isoformat()


class EnumKind(FieldKind):
    """One of the spec's ``values`` (text)."""

    name = "enum"
    rules = frozenset({"values", "options"})
    needs = MappingProxyType({"values": "an enum field needs 'values'"})

    def spec_problem(self, spec: FieldSpec) -> str | None:
        unknown = sorted(set(spec.options or ()) - set(spec.values or ()))
        if unknown:
            return (f"'options' names {', '.join(map(repr, unknown))}, not among 'values' "
                    f"({', '.join(spec.values or ())}): give a text for each value it has")
        return None

    def check(self, spec: FieldSpec, value: Any) -> Any:
        allowed = spec.values or ()
        if not isinstance(value, str) or value not in allowed:
            raise InvalidValue(f"must be one of: {', '.join(allowed)}", "not_one_of",
                               values=list(allowed))
        return value

    def sample(self, spec: FieldSpec) -> Any:
        return _first_value(spec)

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, str)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return _first_value(spec)


def _first_value(spec: FieldSpec) -> str:
    assert spec.values, "an enum spec has values (EnumKind.needs)"
    return spec.values[0]


# --------------------------------------------------------------------------- containers


class ListKind(FieldKind):
    """A JSON array whose items are all of the spec's ``items`` type."""

    name = "list"
    rules = frozenset({"items", "min_items", "max_items"})
    needs = MappingProxyType({"items": "a list field needs 'items' (the type of each item)"})

    def check(self, spec: FieldSpec, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise InvalidValue("must be a list", "not_a_list")
        if spec.min_items is not None and len(value) < spec.min_items:
            raise InvalidValue(f"must have at least {spec.min_items} item(s)",
                               "too_few_items", min=spec.min_items)
        if spec.max_items is not None and len(value) > spec.max_items:
            raise InvalidValue(f"must have at most {spec.max_items} item(s)",
                               "too_many_items", max=spec.max_items)
        return value

    def item(self, spec: FieldSpec) -> FieldSpec | None:
        return spec.items

    def sample(self, spec: FieldSpec) -> Any:
        return [sample_for(self._items(spec))]

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, list) and (not value or fits(self._items(spec), value[0]))

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        """``min_items`` items (at least one, at most ``max_items``), all of the same seed."""
        count = max(spec.min_items or 1, 1)
        if spec.max_items is not None:
            count = min(count, spec.max_items)
        items = self._items(spec)
        return [generate(items, seed) for _ in range(count)]

    @staticmethod
    def _items(spec: FieldSpec) -> FieldSpec:
        assert spec.items is not None, "a list spec has items (ListKind.needs)"
        return spec.items


class ObjectKind(FieldKind):
    """A mapping with exactly the spec's ``fields``."""

    name = "object"
    rules = frozenset({"fields"})
    needs = MappingProxyType({"fields": "an object field needs 'fields'"})

    def check(self, spec: FieldSpec, value: Any) -> Any:
        return value  # the walker checks the mapping against fields(): one path per field

    def fields(self, spec: FieldSpec) -> Mapping[str, FieldSpec] | None:
        return spec.fields or {}

    def sample(self, spec: FieldSpec) -> Any:
        return {name: sample_for(inner) for name, inner in (spec.fields or {}).items()}

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, dict)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return {
            name: generate(inner, seed.inner(name)) for name, inner in (spec.fields or {}).items()
        }


class AddressKind(FieldKind):
    """A postal address: a mapping with exactly the fields of :attr:`parts` (no other keys)."""

    name = "address"

    @cached_property
    def parts(self) -> Mapping[str, FieldSpec]:
        """``line1``, ``line2``, ``city``, ``region``, ``postcode`` and ``country`` (ISO code).

        Built on first use: the parts are field specs, and ``FieldSpec`` asks this registry
        which rules its type takes, so :mod:`definitions.models` imports this module first.
        """
        from definitions.models import FieldSpec

        return MappingProxyType({
            "line1": FieldSpec(type="text", min_length=1, max_length=200),
            "line2": FieldSpec(type="text", required=False, max_length=200),
            "city": FieldSpec(type="text", min_length=1, max_length=100),
            "region": FieldSpec(type="text", required=False, max_length=100),
            "postcode": FieldSpec(type="text", min_length=1, max_length=20),
            "country": FieldSpec(
                type="text", pattern=r"^[A-Z]{2}$",
                description="ISO 3166-1 alpha-2 code, e.g. 'GB'.",
            ),
        })

    def check(self, spec: FieldSpec, value: Any) -> Any:
        return value  # the walker checks the mapping against fields(): one path per part

    def fields(self, spec: FieldSpec) -> Mapping[str, FieldSpec] | None:
        return self.parts

    def sample(self, spec: FieldSpec) -> Any:
        return {
            "line1": "1 High Street", "line2": "Flat 2", "city": "Springfield",
            "region": "Shire", "postcode": "AB1 2CD", "country": "GB",
        }

    def fits(self, spec: FieldSpec, value: Any) -> bool:
        return isinstance(value, dict)

    def generate(self, spec: FieldSpec, seed: Seed) -> Any:
        return {
            "line1": f"{seed.number} Reference Street",
            "city": "Springfield",
            "postcode": f"RF{seed.number % 100} 1AA",
            "country": "GB",
        }


# --------------------------------------------------------------------------- the registry

FIELD_TYPES: Mapping[FieldType, FieldKind] = MappingProxyType({
    kind.name: kind
    for kind in (
        TextKind(), IntegerKind(), NumberKind(), BooleanKind(), DateKind(), EmailKind(),
        PhoneKind(), AddressKind(), EnumKind(), ListKind(), ObjectKind(),
    )
})
"""Every field type by name; :data:`FieldType` lists the same names in the same order."""

if tuple(FIELD_TYPES) != get_args(FieldType):  # pragma: no cover (a developer's slip)
    raise ImportError(
        f"FieldType {get_args(FieldType)} and FIELD_TYPES {tuple(FIELD_TYPES)} disagree: "
        "list every registered type in FieldType, in the registry's order"
    )


def kind_of(spec: FieldSpec) -> FieldKind:
    """The field type of a spec."""
    return FIELD_TYPES[spec.type]


def _rule_checks(kind: FieldKind) -> tuple[tuple[bool, tuple[Rule, ...], str], ...]:
    """A type's rule checks in order: (needed?, rules, message), one per needed rule or group."""
    checks: list[tuple[bool, tuple[Rule, ...], str]] = []
    for group in RULE_GROUPS:
        checks += [(True, (rule,), kind.needs[rule]) for rule in group.rules if rule in kind.needs]
        misplaced = tuple(rule for rule in group.rules if rule not in kind.rules)
        if misplaced:
            checks.append((False, misplaced, group.misplaced.format(type=kind.name)))
    return tuple(checks)


_RULE_CHECKS = {name: _rule_checks(kind) for name, kind in FIELD_TYPES.items()}
"""Worked out once: every spec of every snapshot a workflow decodes runs them."""


def rule_problem(spec: FieldSpec) -> str | None:
    """The first rule of a spec that does not fit its type, as a message; None when all fit.

    A rule is given when it is not null; a needed rule must also not be empty. Groups are
    checked in :data:`RULE_GROUPS` order, a needed rule of a group before the group's misplaced
    rules, so one spec always reports the same problem.
    """
    for needed, rules, message in _RULE_CHECKS[spec.type]:
        if needed:
            if not getattr(spec, rules[0]):
                return message
            continue
        for rule in rules:  # a loop, not any(): this runs for every spec of every snapshot
            if getattr(spec, rule) is not None:
                return message
    return kind_of(spec).spec_problem(spec)


def rules_json_schema(schema: dict[str, Any]) -> None:
    """Add :func:`rule_problem`'s rules to ``FieldSpec``'s JSON Schema, for editors.

    Each given rule limits ``type`` to the types that take it (an editor then says
    ``'date' is not one of ['text', 'email', 'phone']`` under ``pattern: …``), and each type's
    :meth:`FieldKind.json_schema` says what it needs; ``max_length`` names the text types'
    default bounds. Used as ``json_schema_extra``.
    """
    conditions: list[dict[str, Any]] = []
    for group in RULE_GROUPS:
        for rule in group.rules:
            takers = [name for name, kind in FIELD_TYPES.items() if rule in kind.rules]
            conditions.append({
                "if": {"required": [rule], "properties": {rule: {"not": {"type": "null"}}}},
                "then": {"properties": {"type": {"enum": takers}}},
            })
    for name, kind in FIELD_TYPES.items():
        needs = kind.json_schema()
        if needs is not None:
            conditions.append({
                "if": {"required": ["type"], "properties": {"type": {"const": name}}},
                "then": needs,
            })
    schema["allOf"] = conditions
    max_length = schema.get("properties", {}).get("max_length")
    if max_length is not None:
        defaults = ", ".join(
            f"{name} {kind.default_max_length}" for name, kind in FIELD_TYPES.items()
            if isinstance(kind, TextKind)
        )
        max_length["description"] = (
            f"{max_length.get('description', '')} Without it a value is bounded all the same: "
            f"{defaults} characters."
        ).strip()


def sample_for(spec: FieldSpec) -> Any:
    """A value of the field's type (enum: its first value; list: one sample item)."""
    return kind_of(spec).sample(spec)


def sample_data(schema: DataSchema) -> dict[str, Any]:
    """A sample document for a schema, every field (optional ones too) filled in."""
    return {name: sample_for(field) for name, field in schema.fields.items()}


def fits(spec: FieldSpec, value: Any) -> bool:
    """Whether a (sample) value can be sent as a field of this type; None is not judged."""
    return value is None or kind_of(spec).fits(spec, value)


def generate(spec: FieldSpec, seed: Seed) -> Any:
    """A generated value of the field's type (see each type's ``generate``)."""
    return kind_of(spec).generate(spec, seed)


def type_name(value: Any) -> str:
    """How a sample value's type is named in messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"
