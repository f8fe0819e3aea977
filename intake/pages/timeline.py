"""A request's status in plain words: the timeline per agency and the history of events.

The status page (``/track/{reference}``) and its live updates (server-sent events) render
the same view, built here from :class:`intake.status.RequestStatus` — the read model's record
and the workflow's live view, the same data as ``GET /requests/{reference}`` — and the
catalog's definition of the service (step titles, agency names; in the page's language).
Nothing personal is shown: statuses, agency references, deadlines, reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime

from definitions.catalog import Catalog
from definitions.models import CallStep, DecisionStep, ServiceDefinition
from i18n import catalogs, languages
from i18n.catalogs import gettext as _
from intake.pages.render import local
from intake.status import RequestStatus
from readmodel.store import EventRow
from runtime.messages import ItemOutcome, StepOutcome

CASEWORKER = "caseworker"
"""The group of a request's decision steps: decided by a caseworker, not by an agency."""


def when(moment: datetime | None) -> str:
    """``moment`` in the page's language (Babel, CLDR), in UTC."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        locale = Locale.parse(languages.to_identifier(catalogs.current()))
    except (UnknownLocaleError, ValueError):
        locale = Locale.parse("en")
    return format_datetime(moment, "medium", tzinfo=UTC, locale=locale) + " UTC"


def request_status_words(status: str | None) -> str:
    return {
        "running": _("In progress"),
        "completed": _("Completed"),
        "partially_completed": _("Partly completed"),
        "failed": _("Could not be completed"),
        "cancelled": _("Cancelled"),
    }.get(status or "", _("Unknown"))


def _status_words(status: str, waiting_for: str | None, kind: str, agency: str) -> str:
    if status == "waiting" or (status == "running" and waiting_for):
        if kind == "decision" or waiting_for == "decision":
            return _("Waiting for a caseworker")
        if waiting_for == "information":
            return _("Waiting for you")
        return _("Waiting for %(agency)s") % {"agency": agency}
    return {
        "pending": _("Not started yet"),
        "running": _("In progress"),
        "waiting": _("Waiting"),
        "completed": _("Done"),
        "failed": _("Could not be done"),
        "skipped": _("Not needed"),
        "cancelled": _("Cancelled"),
        "compensated": _("Undone"),
    }.get(status, status)


TAG_CLASSES = {
    "completed": "bg-green",
    "failed": "bg-secondary-dark",
    "waiting": "bg-accent-cool-darker",
    "running": "bg-accent-cool-darker",
    "cancelled": "bg-base-darker",
    "compensated": "bg-base-darker",
}


@dataclass
class ItemView:
    key: str | None
    status: str
    words: str
    tag: str
    agency_reference: str | None = None
    awaited_from: str | None = None
    """Who the item waits for, in words (the agency, you, a caseworker), while it waits."""
    information_link: str | None = None
    escalated: bool = False
    reason: str | None = None


@dataclass
class StepView:
    step_id: str
    title: str
    kind: str
    status: str
    words: str
    tag: str
    deadline: str = ""
    escalated: bool = False
    reason: str | None = None
    items: list[ItemView] = field(default_factory=list)


@dataclass
class GroupView:
    """The steps of one agency (or of the caseworkers), in the order they appear."""

    who: str
    name: str
    steps: list[StepView] = field(default_factory=list)


def definition_of(catalog: Catalog, service: str) -> ServiceDefinition | None:
    return catalog.services.get(service)


def _title(definition: ServiceDefinition | None, step_id: str) -> str:
    step = definition.step(step_id) if definition is not None else None
    if step is not None and step.title:
        return local(step.title)
    return step_id.replace("_", " ").replace("-", " ").capitalize()


def agency_name(catalog: Catalog, agency: str | None) -> str:
    if agency is None:
        return _("A caseworker")
    known = catalog.agencies.get(agency)
    return local(known.name) if known is not None else agency


def _live_steps(status: RequestStatus) -> list[StepOutcome]:
    if status.live is not None:
        return list(status.live.steps)
    if status.record is None:
        return []
    steps: dict[str, StepOutcome] = {}
    for row in status.record.steps:  # one row per item of a call step
        step = steps.setdefault(row.step_id, StepOutcome(
            step_id=row.step_id, kind="decision" if row.kind == "decision" else "call",
            agency=row.agency, operation=row.operation, status=row.status,
            reason=row.reason, escalated=row.escalated, deadline_at=row.due_at))
        if step.kind == "call":
            step.items.append(ItemOutcome(
                key=row.item_key, status=row.status,
                agency_reference=row.agency_reference, attempts=row.attempts,
                reason=row.reason, escalated=row.escalated))
    return list(steps.values())


def groups(catalog: Catalog, status: RequestStatus) -> list[GroupView]:
    """The timeline: each agency's steps (the caseworkers' decisions as one more group)."""
    service = status.live.service if status.live is not None else (
        status.record.service if status.record is not None else "")
    definition = definition_of(catalog, service)
    found: dict[str, GroupView] = {}
    for step in _live_steps(status):
        defined = definition.step(step.step_id) if definition is not None else None
        kind = "decision" if isinstance(defined, DecisionStep) or step.kind == "decision" \
            else "call"
        agency = step.agency or (defined.agency if isinstance(defined, CallStep) else None)
        who = CASEWORKER if kind == "decision" else (agency or "")
        name = agency_name(catalog, None if kind == "decision" else agency)
        group = found.setdefault(who, GroupView(who, name))
        waiting_for = next((i.waiting_for for i in step.items if i.waiting_for), None)
        view = StepView(
            step_id=step.step_id, title=_title(definition, step.step_id), kind=kind,
            status=step.status, words=_status_words(step.status, waiting_for, kind, name),
            tag=TAG_CLASSES.get(step.status, ""),
            deadline=when(step.deadline_at) if step.status in ("running", "waiting",
                                                               "pending") else "",
            escalated=step.escalated or any(i.escalated for i in step.items),
            reason=step.reason)
        if kind == "call":
            view.items = [_item(status.reference, step, item, name) for item in step.items]
        group.steps.append(view)
    return list(found.values())


def _item(reference: str, step: StepOutcome, item: ItemOutcome, agency: str) -> ItemView:
    waiting = item.status in ("running", "waiting") and item.waiting_for is not None
    awaited = None
    link = None
    if waiting:
        awaited = {"information": _("you"), "decision": _("a caseworker")}.get(
            item.waiting_for or "", agency)
        if item.waiting_for == "information":
            link = f"/track/{reference}/information/{step.step_id}" + (
                f"?item={item.key}" if item.key is not None else "")
    return ItemView(
        key=item.key, status=item.status,
        words=_status_words(item.status, item.waiting_for, "call", agency),
        tag=TAG_CLASSES.get(item.status, ""), agency_reference=item.agency_reference,
        awaited_from=awaited, information_link=link, escalated=item.escalated,
        reason=item.reason)


def history(catalog: Catalog, status: RequestStatus,
            events: list[EventRow]) -> list[dict[str, Any]]:
    """The events of the read model's audit log, newest first, each in plain words."""
    service = status.record.service if status.record is not None else (
        status.live.service if status.live is not None else "")
    definition = definition_of(catalog, service)
    agencies = {s.step_id: s.agency for s in _live_steps(status)}
    described = []
    for event in events:
        step = _title(definition, event.step_id) if event.step_id else ""
        agency = agency_name(catalog, agencies.get(event.step_id or "")) if event.step_id \
            else ""
        described.append({
            "at": when(event.at), "words": _event_words(event, step, agency),
            "item": event.item_key,
            "agency_reference": event.detail.get("agency_reference"),
        })
    return list(reversed(described))


def _event_words(event: EventRow, step: str, agency: str) -> str:
    kind = event.kind
    words = {"step": step, "agency": agency}
    if kind == "request_started":
        return _("We received your request")
    if kind == "request_finished":
        return _("Your request finished: %(status)s") % {
            "status": request_status_words(str(event.detail.get("status")))}
    if kind.startswith("agency_operation_"):
        outcome = kind.removeprefix("agency_operation_")
        return {
            "completed": _("%(agency)s completed “%(step)s”"),
            "waiting": _("%(agency)s received “%(step)s” and is working on it"),
            "retrying": _("%(agency)s could not be reached for “%(step)s”; trying again"),
            "failed": _("%(agency)s could not do “%(step)s”"),
        }.get(outcome, _("%(agency)s: update on “%(step)s”")) % words
    if kind.startswith("agency_information_"):
        return _("Your answers were sent to %(agency)s") % words
    if kind.startswith("agency_cancel_"):
        return _("%(agency)s was asked to withdraw or undo “%(step)s”") % words
    return {
        "callback_completed": _("%(agency)s finished “%(step)s”"),
        "callback_rejected": _("%(agency)s turned down “%(step)s”"),
        "callback_needs_information": _("%(agency)s needs more information from you"),
        "information_answered": _("You answered the questions for “%(step)s”"),
        "decision_awaited": _("A caseworker will decide “%(step)s”"),
        "decision_approved": _("A caseworker approved “%(step)s”"),
        "decision_rejected": _("A caseworker turned down “%(step)s”"),
        "escalated": _("“%(step)s” is overdue: it has been escalated"),
    }.get(kind, _("Update on “%(step)s”")) % words
