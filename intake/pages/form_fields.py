"""Forms generated from a :class:`~definitions.models.DataSchema`: widgets, parsing, errors.

One generator serves every form a citizen fills in — a service's ``input`` and an agency's
request for information — so no page is written for one service. Three steps, each pure:

1. :func:`raw_from_form` reads a posted form into a **raw tree** (what was typed, as text:
   a date is its ``day``/``month``/``year``, a list its items, checkboxes their values), or
   :func:`raw_from_submission` turns a valid submission back into one (a "Change" link);
   :func:`apply_action` adds or removes a list item ("Add another", "Remove": submit buttons,
   no JavaScript);
2. :func:`to_submission` coerces the raw tree into the nested submission (``"42"`` → ``42``,
   ``"true"`` → ``True``, a date's parts → ``2026-03-01``) leaving blank optional fields
   (and blank list items) out, for :func:`definitions.submission.validate_submission` to judge;
   :meth:`Parsed.form_loc` maps an error's path back to the form (a list item left blank and
   dropped shifts the items after it);
3. :func:`widgets` builds what the template draws: one :class:`Widget` per field with its
   input name (a path: ``benefits[0].programme``), an id derived from it, its value, label,
   hint and error.

Input names are paths: ``full_name``, ``deceased.address.city``, ``benefits[0].case_number``,
``moved_on.day``; a list's item count travels in ``<list>.count``; checkboxes (a list of
enum values) repeat their name.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from definitions.disclosure import humanise
from definitions.field_types import FIELD_TYPES, AddressKind
from definitions.models import FieldSpec
from definitions.submission import FieldError, FieldLoc

Raw = Any
"""A raw value: text for a scalar, ``{"day", "month", "year"}`` for a date, a list of
values for checkboxes, a dict for an object or address, a list for a list."""

RADIOS_UP_TO = 6
"""An enum with at most this many values is radios; above it, a select."""
MAX_LIST_ITEMS = 50
"""Most items a list shows when its spec sets no ``max_items`` (a form, not a spreadsheet)."""
ADDRESS_PARTS = ("line1", "line2", "city", "region", "postcode", "country")

_address = FIELD_TYPES["address"]
assert isinstance(_address, AddressKind)
ADDRESS: Mapping[str, FieldSpec] = _address.parts


def checkboxes(spec: FieldSpec) -> bool:
    """A list of enum values is drawn as checkboxes (one name, repeated), not as items."""
    return spec.type == "list" and spec.items is not None and spec.items.type == "enum"


def children_of(spec: FieldSpec) -> Mapping[str, FieldSpec] | None:
    if spec.type == "address":
        return ADDRESS
    if spec.type == "object":
        return spec.fields or {}
    return None


def list_limit(spec: FieldSpec) -> int:
    return min(spec.max_items or MAX_LIST_ITEMS, MAX_LIST_ITEMS)


# --------------------------------------------------------------------------- names and ids


def name_of(loc: FieldLoc) -> str:
    """The input name of a path: ``("benefits", 0, "programme")`` → ``benefits[0].programme``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_NAME_PART = re.compile(r"([a-z][a-z0-9_]*)|\[([0-9]{1,4})\]|\.")


def loc_of(name: str) -> FieldLoc | None:
    """The path of an input name (the inverse of :func:`name_of`); None if it is not one."""
    loc: list[str | int] = []
    position = 0
    while position < len(name):
        match = _NAME_PART.match(name, position)
        if match is None:
            return None
        if match.group(1) is not None:
            loc.append(match.group(1))
        elif match.group(2) is not None:
            loc.append(int(match.group(2)))
        position = match.end()
    return tuple(loc)


def id_of(loc: FieldLoc, suffix: str = "") -> str:
    """An element id from a path: ``f-benefits-0-programme`` (ids cannot hold ``[`` or ``.``)."""
    parts = [str(part) for part in loc] + ([suffix] if suffix else [])
    return "f-" + "-".join(parts)


# --------------------------------------------------------------------------- raw trees


def raw_from_form(fields: Mapping[str, FieldSpec], form: Mapping[str, Sequence[str]],
                  loc: FieldLoc = ()) -> dict[str, Raw]:
    """What a posted form holds for ``fields``, as text (see the module docstring)."""
    return {name: _raw_field(spec, form, (*loc, name)) for name, spec in fields.items()}


def _first(form: Mapping[str, Sequence[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def _raw_field(spec: FieldSpec, form: Mapping[str, Sequence[str]], loc: FieldLoc) -> Raw:
    name = name_of(loc)
    if spec.type == "date":
        return {part: _first(form, f"{name}.{part}") for part in ("day", "month", "year")}
    if checkboxes(spec):
        allowed = spec.items.values or () if spec.items is not None else ()
        chosen = [value for value in form.get(name, ()) if value in allowed]
        return list(dict.fromkeys(chosen))
    inner = children_of(spec)
    if inner is not None:
        return raw_from_form(inner, form, loc)
    if spec.type == "list" and spec.items is not None:
        try:
            count = int(_first(form, f"{name}.count") or 0)
        except ValueError:
            count = 0
        count = max(0, min(count, list_limit(spec)))
        return [_raw_field(spec.items, form, (*loc, index)) for index in range(count)]
    return _first(form, name)


def raw_from_submission(fields: Mapping[str, FieldSpec], data: Mapping[str, Any]) -> dict[
        str, Raw]:
    """A valid submission as the raw tree a form shows (to change an answer)."""
    return {name: _raw_value(spec, data.get(name)) for name, spec in fields.items()}


def _raw_value(spec: FieldSpec, value: Any) -> Raw:
    if spec.type == "date":
        if isinstance(value, str):
            try:
                day = datetime.date.fromisoformat(value)
            except ValueError:
                return {"day": "", "month": "", "year": ""}
            return {"day": str(day.day), "month": str(day.month), "year": str(day.year)}
        return {"day": "", "month": "", "year": ""}
    if checkboxes(spec):
        return [str(one) for one in value] if isinstance(value, list) else []
    inner = children_of(spec)
    if inner is not None:
        return raw_from_submission(inner, value if isinstance(value, Mapping) else {})
    if spec.type == "list" and spec.items is not None:
        items = spec.items
        return [_raw_value(items, one) for one in value] if isinstance(value, list) else []
    if value is None:
        return ""
    if spec.type == "boolean":
        return "true" if value is True else "false" if value is False else ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def apply_action(fields: Mapping[str, FieldSpec], raw: dict[str, Raw], action: str) -> bool:
    """Apply ``add:<list name>`` or ``remove:<item name>`` to ``raw`` in place; False when the
    action names no list (or item) of these fields, or the list is at its limit."""
    verb, _, target = action.partition(":")
    loc = loc_of(target)
    if verb not in ("add", "remove") or not loc:
        return False
    if verb == "remove":
        if not isinstance(loc[-1], int):
            return False
        holder, spec = find(fields, raw, loc[:-1])
        if spec is None or not isinstance(holder, list) or not 0 <= loc[-1] < len(holder):
            return False
        del holder[loc[-1]]
        return True
    holder, spec = find(fields, raw, loc)
    if spec is None or spec.items is None or not isinstance(holder, list) or checkboxes(spec):
        return False
    shown = max(len(holder), shown_items(spec, holder))
    if shown >= list_limit(spec):
        return False
    while len(holder) < shown:
        holder.append(_blank(spec.items))
    holder.append(_blank(spec.items))
    return True


def find(fields: Mapping[str, FieldSpec], raw: Raw, loc: FieldLoc) -> tuple[
        Raw, FieldSpec | None]:
    """The raw value and spec at ``loc`` (a list's spec for an int step's holder)."""
    spec: FieldSpec | None = None
    current: Mapping[str, FieldSpec] | None = fields
    value = raw
    for part in loc:
        if isinstance(part, int):
            if spec is None or spec.type != "list" or spec.items is None or \
                    not isinstance(value, list) or not 0 <= part < len(value):
                return None, None
            value = value[part]
            spec = spec.items
            current = children_of(spec)
            continue
        if current is None or part not in current or not isinstance(value, dict):
            return None, None
        spec = current[part]
        value = value.get(part)
        current = children_of(spec)
    return value, spec


def _blank(spec: FieldSpec) -> Raw:
    if spec.type == "date":
        return {"day": "", "month": "", "year": ""}
    inner = children_of(spec)
    if inner is not None:
        return {name: _blank(one) for name, one in inner.items()}
    if spec.type == "list":
        return []
    return ""


def shown_items(spec: FieldSpec, items: Sequence[Raw]) -> int:
    """How many items a list shows: those it has, and at least ``min_items`` (at least one)."""
    return max(len(items), spec.min_items or 0, 1)


# --------------------------------------------------------------------------- parsing


class _Blank:
    """Nothing was typed."""


BLANK = _Blank()


@dataclass
class Parsed:
    """A form read into a submission, and how its list positions map back to the form's."""

    data: dict[str, Any]
    positions: dict[FieldLoc, dict[int, int]] = field(default_factory=dict)
    """For each list (by its path in the form): submission position → form position."""

    def form_loc(self, loc: FieldLoc) -> FieldLoc:
        """The form's path of a submission's path (items left blank were dropped)."""
        out: list[str | int] = []
        for part in loc:
            if isinstance(part, int):
                part = self.positions.get(tuple(out), {}).get(part, part)
            out.append(part)
        return tuple(out)


def to_submission(fields: Mapping[str, FieldSpec], raw: Mapping[str, Raw]) -> Parsed:
    """The submission a raw tree stands for (see the module docstring)."""
    parsed = Parsed({})
    parsed.data = _object(fields, raw, (), parsed)
    return parsed


def _object(fields: Mapping[str, FieldSpec], raw: Mapping[str, Raw], loc: FieldLoc,
            parsed: Parsed) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in fields.items():
        value = _coerce(spec, raw.get(name), (*loc, name), parsed)
        if not isinstance(value, _Blank):
            out[name] = value
    return out


def _digits(text: str) -> str:
    return text.strip()


def _coerce(spec: FieldSpec, raw: Raw, loc: FieldLoc, parsed: Parsed) -> Any:
    if spec.type == "date":
        parts = raw if isinstance(raw, Mapping) else {}
        day, month, year = (str(parts.get(k, "")).strip() for k in ("day", "month", "year"))
        if not (day or month or year):
            return BLANK
        if day.isdigit() and month.isdigit() and year.isdigit() and len(year) == 4 and \
                len(day) <= 2 and len(month) <= 2:
            return f"{year}-{int(month):02d}-{int(day):02d}"
        return f"{year}-{month}-{day}"  # not a date: the validator says so (not_a_date)
    if checkboxes(spec):
        return list(raw) if isinstance(raw, list) and raw else BLANK
    inner = children_of(spec)
    if inner is not None:
        value = _object(inner, raw if isinstance(raw, Mapping) else {}, loc, parsed)
        return value if value else BLANK
    if spec.type == "list" and spec.items is not None:
        items: list[Any] = []
        positions: dict[int, int] = {}
        for index, one in enumerate(raw if isinstance(raw, list) else []):
            value = _coerce(spec.items, one, (*loc, index), parsed)
            if isinstance(value, _Blank):
                continue
            positions[len(items)] = index
            items.append(value)
        parsed.positions[loc] = positions
        return items if items else BLANK
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        return BLANK
    if spec.type == "boolean":
        return {"true": True, "false": False}.get(text, text)
    if spec.type in ("integer", "number"):
        plain = text.replace(",", "").replace(" ", "")
        try:
            return int(plain) if spec.type == "integer" else float(plain)
        except ValueError:
            try:
                number = float(plain)
            except ValueError:
                return text  # not a number: the validator says so
            return number if not number.is_integer() else int(number)
    return text


# --------------------------------------------------------------------------- widgets


@dataclass
class Widget:
    """One field as the template draws it."""

    kind: str
    """text, email, phone, integer, number, boolean, date, radios, select, checkboxes,
    address, object, list."""
    loc: FieldLoc
    spec: FieldSpec
    label: Mapping[str, str] | str
    value: Raw = ""
    error: FieldError | None = None
    children: list[Widget] = field(default_factory=list)
    items: list[Widget] = field(default_factory=list)
    """A list's items (each an ``item`` widget holding the item's fields in ``children``)."""
    options: list[tuple[str, Mapping[str, str] | str]] = field(default_factory=list)
    position: int = 0
    """An item's number (1, 2, ...)."""
    can_add: bool = False
    can_remove: bool = False
    focus: bool = False
    context: tuple[Mapping[str, str] | str, int] | None = None
    """The list item this field belongs to (its list's label, its number), so an error
    summary can say which item ("Benefits 2: Enter “Case number”")."""

    @property
    def name(self) -> str:
        return name_of(self.loc)

    @property
    def id(self) -> str:
        return id_of(self.loc)

    @property
    def hint(self) -> Mapping[str, str] | None:
        return self.spec.hint

    @property
    def required(self) -> bool:
        return self.spec.required

    @property
    def target(self) -> str:
        """The id an error summary links to: the first input of the field."""
        if self.kind in ("radios", "boolean", "checkboxes"):
            return id_of(self.loc, "0")
        for child in (self.children or [w for item in self.items for w in item.children]):
            return child.target
        if self.kind == "list":
            return id_of(self.loc, "add")
        return self.id

    def described_by(self) -> str:
        ids = []
        if self.hint:
            ids.append(f"{self.id}-hint")
        if self.error is not None:
            ids.append(f"{self.id}-error")
        return " ".join(ids)

    def errors(self) -> list[Widget]:
        """This widget and every one inside it that has an error, in the form's order."""
        found = [self] if self.error is not None else []
        for child in self.children:
            found += child.errors()
        for item in self.items:
            found += item.errors()
        return found


def option_texts(spec: FieldSpec) -> list[tuple[str, Mapping[str, str] | str]]:
    """An enum's values with what the citizen sees: its ``options``, else the value humanised."""
    texts = spec.options or {}
    return [(value, texts.get(value) or humanise(value)) for value in spec.values or ()]


def widgets(fields: Mapping[str, FieldSpec], raw: Mapping[str, Raw],
            errors: Mapping[FieldLoc, FieldError] | None = None, *, loc: FieldLoc = (),
            focus: FieldLoc | None = None,
            labels: Mapping[str, Mapping[str, str] | str] | None = None) -> list[Widget]:
    """The widgets of ``fields`` showing ``raw``, with ``errors`` by form path; ``focus``
    marks the field a "Change" link asked for; ``labels`` overrides labels by field name
    (the address parts' labels, in the page's language)."""
    errors = errors or {}
    return [_widget(name, spec, raw.get(name), errors, (*loc, name), focus, labels)
            for name, spec in fields.items()]


def _widget(name: str, spec: FieldSpec, raw: Raw, errors: Mapping[FieldLoc, FieldError],
            loc: FieldLoc, focus: FieldLoc | None,
            labels: Mapping[str, Mapping[str, str] | str] | None) -> Widget:
    label = spec.label or (labels or {}).get(name) or humanise(name)
    widget = Widget(kind=spec.type, loc=loc, spec=spec, label=label, error=errors.get(loc),
                    focus=focus == loc)
    if spec.type == "enum":
        widget.options = option_texts(spec)
        widget.kind = "radios" if len(widget.options) <= RADIOS_UP_TO else "select"
        widget.value = raw if isinstance(raw, str) else ""
    elif spec.type == "boolean":
        widget.options = [("true", ""), ("false", "")]
        widget.value = raw if isinstance(raw, str) else ""
    elif spec.type == "date":
        widget.value = raw if isinstance(raw, Mapping) else _blank(spec)
    elif checkboxes(spec):
        assert spec.items is not None
        widget.kind = "checkboxes"
        widget.options = option_texts(spec.items)
        widget.value = raw if isinstance(raw, list) else []
    elif spec.type in ("address", "object"):
        inner = children_of(spec) or {}
        widget.children = widgets(
            inner, raw if isinstance(raw, Mapping) else {}, errors, loc=loc, focus=focus,
            labels=address_labels() if spec.type == "address" else None)
    elif spec.type == "list" and spec.items is not None:
        items = list(raw) if isinstance(raw, list) else []
        shown = shown_items(spec, items)
        items += [_blank(spec.items)] * (shown - len(items))
        for index, one in enumerate(items):
            item = Widget(kind="item", loc=(*loc, index), spec=spec.items, label=label,
                          position=index + 1, error=errors.get((*loc, index)),
                          can_remove=shown > max(spec.min_items or 0, 1))
            item_loc = (*loc, index)
            item_fields = children_of(spec.items)
            if item_fields is not None:
                item.children = widgets(
                    item_fields, one if isinstance(one, Mapping) else {}, errors, loc=item_loc,
                    focus=focus, labels=address_labels() if spec.items.type == "address"
                    else None)
            else:
                item.children = [_widget(str(index), spec.items, one, errors, item_loc, focus,
                                         None)]
                item.children[0].label = spec.items.label or label
            for inner_widget in item.children:
                _set_context(inner_widget, (label, index + 1))
            widget.items.append(item)
        widget.can_add = shown < list_limit(spec)
    else:
        widget.value = raw if isinstance(raw, str) else ""
    return widget


def _set_context(widget: Widget, context: tuple[Mapping[str, str] | str, int]) -> None:
    if widget.context is None:
        widget.context = context
    for child in widget.children:
        _set_context(child, context)
    for item in widget.items:
        _set_context(item, context)


def address_labels() -> dict[str, str]:
    """The address parts' labels in the page's language (translated when the page renders)."""
    from i18n.catalogs import gettext as _

    return {
        "line1": _("Address line 1"), "line2": _("Address line 2"),
        "city": _("Town or city"), "region": _("State, county or region"),
        "postcode": _("Postal code"), "country": _("Country (2-letter code, e.g. US)"),
    }


def errors_by_loc(errors: Sequence[FieldError], parsed: Parsed | None = None) -> dict[
        FieldLoc, FieldError]:
    """The first error of each form path (a submission's paths mapped back by ``parsed``)."""
    found: dict[FieldLoc, FieldError] = {}
    for error in errors:
        loc = parsed.form_loc(error.loc) if parsed is not None else error.loc
        found.setdefault(loc, error)
    return found


# --------------------------------------------------------------------------- messages


def error_message(error: FieldError, label: str, kind: str = "text") -> str:
    """``error`` in the page's language, naming the field by ``label`` (its code and params:
    :data:`definitions.submission.ERROR_CODES`). Called while the page renders."""
    from i18n.catalogs import gettext as _

    params = error.params
    code = error.code
    if code == "required":
        if kind in ("radios", "select", "boolean", "checkboxes"):
            return _("Choose an answer for “%(label)s”.") % {"label": label}
        if kind in ("address", "object", "list"):
            return _("Fill in “%(label)s”.") % {"label": label}
        return _("Enter “%(label)s”.") % {"label": label}
    messages = {
        "too_short": _("“%(label)s” must be at least %(min)s characters long."),
        "too_long": _("“%(label)s” must be at most %(max)s characters long."),
        "pattern": _("“%(label)s” is not in the expected format."),
        "not_an_email": _("Enter “%(label)s” as an email address, like name@example.org."),
        "not_a_phone": _("Enter “%(label)s” as a phone number, like +1 555 010 0000."),
        "not_a_number": _("“%(label)s” must be a number."),
        "not_whole": _("“%(label)s” must be a whole number."),
        "too_small": _("“%(label)s” must be %(min)s or more."),
        "too_large": _("“%(label)s” must be %(max)s or less."),
        "not_boolean": _("Choose yes or no for “%(label)s”."),
        "not_a_date": _("“%(label)s” must be a real date: day, month and year in numbers."),
        "not_a_real_date": _("“%(label)s” must be a real date: day, month and year in numbers."),
        "not_one_of": _("Choose one of the answers for “%(label)s”."),
        "too_few_items": _("“%(label)s” needs at least %(min)s."),
        "too_many_items": _("“%(label)s” can have at most %(max)s."),
        "bad_text": _("“%(label)s” holds characters that cannot be kept; type it again."),
    }
    template = messages.get(code, _("Check “%(label)s”: %(message)s"))
    values = {"label": label, "message": error.message}
    for key in ("min", "max"):
        if key in params:
            number = params[key]
            values[key] = f"{number:g}" if isinstance(number, float) else str(number)
    return template % values
