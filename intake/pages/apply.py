"""From a service's start page to its confirmation, and answering a request for information.

Every page is built from the service definition alone (any service in ``definitions/``):

- ``GET /apply/{service}``: the start page — what the service does, what you will need (the
  form's fields) and which agencies are told and what each receives
  (:mod:`definitions.disclosure`);
- ``GET /apply/{service}/form``: the form generated from the service's ``input``
  (:mod:`.form_fields`); ``POST /apply/{service}/form``: the same form after "Add another",
  "Remove" or a "Change" link of the check page (nothing is checked or sent);
- ``POST /apply/{service}/check``: the answers validated as ``POST /requests`` validates them
  (errors: the form again, ``422``, an error summary linking to each field); valid: the
  check-your-answers page, the answers sealed into a draft (:mod:`.drafts`);
- ``POST /apply/{service}/submit``: the draft submitted with ``Submissions.submit``, as the
  API submits (the page's language; the signed-in visitor owns it, else an access code is
  granted and remembered in the session), then ``303`` to the confirmation;
- ``GET /apply/{service}/confirmation/{reference}``: the reference, the access code (when not
  signed in) and what happens next;
- ``GET|POST /track/{reference}/information/{step_id}[?item=KEY]``: the fields an agency asked
  for, answered through the API's own update (:func:`intake.interactions.send`).

Every POST carries the session's CSRF token (else ``403``, nothing done). A page that cannot
be opened by this visitor answers exactly as a missing one (``404``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from babel.dates import format_date
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from definitions.disclosure import Disclosure, asked_fields, disclosures, humanise
from definitions.errors import UnknownService
from definitions.models import DataSchema, FieldSpec, ServiceDefinition
from definitions.submission import (
    FieldError,
    FieldLoc,
    SubmissionInvalid,
    validate_submission,
)
from i18n import catalogs, languages
from intake import errors, interactions
from intake.pages import access as page_access
from intake.pages import form_fields as ff
from intake.pages import refusals, session
from intake.pages.deps import PageDeps
from intake.pages.drafts import DRAFT_FIELD, DraftRefused, Drafts
from intake.pages.forms import Form, first
from intake.pages.render import ENVIRONMENT, language_of, local, page
from intake.status import live_view
from intake.submissions import IdempotencyConflict
from runtime.messages import InformationAnswer, ItemOutcome
from workflows.call_steps import information_schema
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)

ACTION_FIELD = "_action"
CHANGE_FIELD = "_change"


def _field_error(widget: ff.Widget) -> str:
    assert widget.error is not None
    return ff.error_message(widget.error, local(widget.label), widget.kind)


ENVIRONMENT.globals["field_error"] = _field_error


@contextmanager
def _language(request: Request) -> Iterator[str]:
    """The page's language for text built in Python (address labels, answers)."""
    tag = language_of(request)
    with catalogs.use(tag):
        yield tag


# --------------------------------------------------------------------------- answers shown


def _babel_locale(tag: str) -> str:
    return languages.to_identifier(tag)


def answer_text(spec: FieldSpec, value: Any, tag: str) -> list[str]:
    """A valid value as the check page shows it, in lines (an address has several)."""
    _ = catalogs.gettext
    if value is None:
        return [_("Not given")]
    if spec.type == "boolean":
        return [_("Yes") if value else _("No")]
    if spec.type == "enum":
        texts = dict(ff.option_texts(spec))
        return [local(texts.get(value, value))]
    if spec.type == "date":
        try:
            day = datetime.date.fromisoformat(value)
            return [format_date(day, format="long", locale=_babel_locale(tag))]
        except (ValueError, LookupError):
            return [str(value)]
    if spec.type == "address":
        parts = [value.get(part) for part in ff.ADDRESS_PARTS]
        return [str(part) for part in parts if part]
    if ff.checkboxes(spec) and spec.items is not None:
        texts = dict(ff.option_texts(spec.items))
        return [local(texts.get(one, one)) for one in value]
    if isinstance(value, float) and value.is_integer():
        return [str(int(value))]
    return [str(value)]


def answer_rows(fields: Mapping[str, FieldSpec], data: Mapping[str, Any], tag: str,
                loc: FieldLoc = (), depth: int = 0) -> list[dict[str, Any]]:
    """The check page's rows: a heading row for each object and list item, an answer row
    (label, lines, the input name a "Change" button focuses) for everything else."""
    rows: list[dict[str, Any]] = []
    for name, spec in fields.items():
        here = (*loc, name)
        label = local(spec.label) or humanise(name)
        value = data.get(name)
        if spec.type == "object":
            rows.append({"kind": "group", "label": label, "depth": depth})
            rows += answer_rows(spec.fields or {}, value or {}, tag, here, depth + 1)
        elif spec.type == "list" and not ff.checkboxes(spec) and spec.items is not None:
            items = value or []
            if not items:
                rows.append({"kind": "answer", "label": label, "lines": answer_text(
                    spec, None, tag), "change": ff.name_of(here), "depth": depth})
            for index, item in enumerate(items):
                item_loc = (*here, index)
                rows.append({"kind": "group", "label": f"{label} {index + 1}", "depth": depth})
                inner = ff.children_of(spec.items)
                if spec.items.type == "object" and inner is not None:
                    rows += answer_rows(inner, item, tag, item_loc, depth + 1)
                else:
                    rows.append({"kind": "answer", "label": label, "depth": depth + 1,
                                 "lines": answer_text(spec.items, item, tag),
                                 "change": ff.name_of(item_loc)})
        else:
            rows.append({"kind": "answer", "label": label, "lines": answer_text(
                spec, value, tag), "change": ff.name_of(here), "depth": depth})
    return rows


def _focus_loc(fields: Mapping[str, FieldSpec], loc: FieldLoc | None) -> FieldLoc | None:
    """The input a "Change" button asked for: a container's first field."""
    if loc is None:
        return None
    current: Mapping[str, FieldSpec] | None = fields
    spec: FieldSpec | None = None
    for part in loc:
        if isinstance(part, int):
            spec = spec.items if spec is not None else None
        elif current is not None and part in current:
            spec = current[part]
        else:
            return None
        current = ff.children_of(spec) if spec is not None else None
    while spec is not None:
        inner = ff.children_of(spec)
        if spec.type == "list" and not ff.checkboxes(spec) and spec.items is not None:
            loc, spec = (*loc, 0), spec.items
            continue
        if not inner:
            break
        name, spec = next(iter(inner.items()))
        loc = (*loc, name)
    return loc


# --------------------------------------------------------------------------- the router


def router(deps: PageDeps) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    drafts = Drafts(deps.settings.reference_secret())
    catalog = deps.catalog

    def problem(request: Request, status: int, title: str, message: str,
                **context: Any) -> Response:
        return page(request, "apply/problem.html", {"title": title, "message": message,
                                                     **context}, status_code=status)

    def not_found(request: Request) -> Response:
        with _language(request):
            return problem(request, 404, catalogs.gettext("Page not found"), catalogs.gettext(
                "There is no page at this address, or it is not yours to open. Check the "
                "address, or sign in with the account you used."))

    def refused(request: Request, answer: JSONResponse) -> Response:
        _ = catalogs.gettext
        with _language(request):
            if answer.status_code == 404:
                return not_found(request)
            if answer.status_code == 429:
                return problem(request, 429, _("Too many attempts"), _(
                    "There have been too many attempts to open this request. Wait a few "
                    "minutes and try again."), headers_note=answer.headers.get("retry-after"))
            if answer.status_code == 401:
                return problem(request, 401, _("Sign in again"), _(
                    "Your sign-in has expired. Sign in again to continue."))
            return unavailable(request)

    def unavailable(request: Request) -> Response:
        _ = catalogs.gettext
        with _language(request):
            response = problem(request, 503, _("Sorry, the service is unavailable"), _(
                "We could not do this just now. Nothing was lost: try again in a minute."))
        response.headers["Retry-After"] = str(errors.RETRY_AFTER_S)
        return response

    def csrf_refused(request: Request) -> Response:
        _ = catalogs.gettext
        with _language(request):
            return problem(request, 403, _("This form has expired"), _(
                "For your security this form could not be accepted (it was open too long, "
                "or came from another site). Nothing was sent. Go back, reload the page and "
                "try again."))

    async def posted(request: Request) -> Form | Response:
        return await refusals.posted(request, forged=csrf_refused)

    def service_of(service_id: str) -> ServiceDefinition | None:
        return catalog.services.get(service_id)

    def steps_view(service: ServiceDefinition) -> list[Disclosure]:
        return disclosures(service, catalog.agencies)

    # ------------------------------------------------------------------ the start page

    @routes.get("/apply/{service_id}")
    async def start(request: Request, service_id: str) -> Response:
        service = service_of(service_id)
        if service is None:
            return not_found(request)
        return page(request, "apply/start.html", {
            "service": service, "needed": asked_fields(service.input),
            "steps": steps_view(service)})

    # ------------------------------------------------------------------ the form

    def form_page(request: Request, service: ServiceDefinition, raw: Mapping[str, Any], *,
                  errors_at: Mapping[FieldLoc, FieldError] | None = None,
                  focus: FieldLoc | None = None, alert: str | None = None,
                  status: int = 200) -> Response:
        with _language(request):
            shown = ff.widgets(service.input.fields, raw, errors_at, focus=focus)
        problems = [w for one in shown for w in one.errors()]
        return page(request, "apply/form.html", {
            "service": service, "widgets": shown, "problems": problems, "alert": alert,
            "form_action": f"/apply/{service.service}/form",
            "action": f"/apply/{service.service}/check"}, status_code=status)

    @routes.get("/apply/{service_id}/form")
    async def blank_form(request: Request, service_id: str) -> Response:
        service = service_of(service_id)
        if service is None:
            return not_found(request)
        return form_page(request, service, {})

    @routes.post("/apply/{service_id}/form")
    async def rework_form(request: Request, service_id: str) -> Response:
        service = service_of(service_id)
        if service is None:
            return not_found(request)
        form = await posted(request)
        if isinstance(form, Response):
            return form
        fields = service.input.fields
        if first(form, CHANGE_FIELD) and first(form, DRAFT_FIELD):
            try:
                draft = drafts.open(first(form, DRAFT_FIELD), service.service)
            except DraftRefused:
                return expired_draft(request, service)
            return form_page(request, service, ff.raw_from_submission(fields, draft.submission),
                             focus=_focus_loc(fields, ff.loc_of(first(form, CHANGE_FIELD))))
        raw = ff.raw_from_form(fields, form)
        action = first(form, ACTION_FIELD)
        focus = None
        if action and ff.apply_action(fields, raw, action):
            target = ff.loc_of(action.partition(":")[2]) or ()
            focus = target if action.startswith("add:") else None
            if focus is not None:
                holder, _ = ff.find(fields, raw, focus)
                count = len(holder) if isinstance(holder, list) else 1
                focus = _focus_loc(fields, (*focus, count - 1))
        return form_page(request, service, raw, focus=focus)

    def expired_draft(request: Request, service: ServiceDefinition) -> Response:
        with _language(request):
            message = catalogs.gettext(
                "Your answers were kept for 2 hours and that time has passed (or they could "
                "not be read). Nothing was sent. Please fill in the form again.")
        return form_page(request, service, {}, alert=message, status=400)

    # ------------------------------------------------------------------ check your answers

    @routes.post("/apply/{service_id}/check")
    async def check(request: Request, service_id: str) -> Response:
        service = service_of(service_id)
        if service is None:
            return not_found(request)
        form = await posted(request)
        if isinstance(form, Response):
            return form
        fields = service.input.fields
        raw = ff.raw_from_form(fields, form)
        parsed = ff.to_submission(fields, raw)
        try:
            submission = validate_submission(service.input, parsed.data)
        except SubmissionInvalid as exc:
            log.info("page_form_invalid", service=service.service, errors=len(exc.errors))
            return form_page(request, service, raw,
                             errors_at=ff.errors_by_loc(exc.errors, parsed), status=422)
        draft = drafts.new(service.service, submission)
        with _language(request) as tag:
            rows = answer_rows(fields, submission, tag)
        return page(request, "apply/check.html", {
            "service": service, "rows": rows, "draft": drafts.seal(draft),
            "steps": steps_view(service)})

    # ------------------------------------------------------------------ submit

    @routes.post("/apply/{service_id}/submit")
    async def submit(request: Request, service_id: str) -> Response:
        service = service_of(service_id)
        if service is None:
            return not_found(request)
        form = await posted(request)
        if isinstance(form, Response):
            return form
        try:
            draft = drafts.open(first(form, DRAFT_FIELD), service.service)
        except DraftRefused:
            log.info("page_draft_refused", service=service.service)
            return expired_draft(request, service)
        owner = None
        if deps.access is not None:
            who = await page_access.principal(deps.access, request)
            if isinstance(who, JSONResponse):
                return refused(request, who)
            owner = who
        try:
            submitted = await deps.submissions.submit(
                service.service, draft.submission, idempotency_key=draft.idempotency_key,
                language=language_of(request), owner=owner)
        except UnknownService:
            return not_found(request)
        except SubmissionInvalid as exc:  # the service changed since the check page
            raw = ff.raw_from_submission(service.input.fields, draft.submission)
            return form_page(request, service, raw, errors_at=ff.errors_by_loc(exc.errors),
                             status=422)
        except IdempotencyConflict:
            _ = catalogs.gettext
            with _language(request):
                return problem(request, 409, _("These answers were already sent"), _(
                    "This request was already submitted with other answers. Check your "
                    "requests, or start again to make a new one."))
        except Exception as exc:
            cause = errors.unavailable_cause(exc)
            if cause is None:
                raise
            log.warning("page_submission_unavailable", service=service.service, cause=cause)
            return unavailable(request)
        log.info("page_request_submitted", reference=submitted.reference,
                 service=service.service, created=submitted.created)
        if submitted.access_code is not None:
            session.remember_code(request, submitted.reference, submitted.access_code)
        return RedirectResponse(
            f"/apply/{service.service}/confirmation/{submitted.reference}", status_code=303)

    # ------------------------------------------------------------------ confirmation

    @routes.get("/apply/{service_id}/confirmation/{reference}")
    async def confirmation(request: Request, service_id: str, reference: str) -> Response:
        service = service_of(service_id)
        if service is None or deps.access is None:
            return not_found(request)
        refusal = await page_access.check(deps.access, request, reference)
        if refusal is not None:
            return refused(request, refusal)
        return page(request, "apply/confirmation.html", {
            "service": service, "reference": reference,
            "access_code": None if session.bearer(request) else session.access_code(
                request, reference),
            "steps": steps_view(service)})

    # ------------------------------------------------------------------ information

    async def waiting_item(request: Request, reference: str, step_id: str, item_key: str | None
                           ) -> tuple[str, Any, ItemOutcome | None] | Response:
        """The request's service, its live step and the item asking for information (None when
        nothing is asked), or a page."""
        if deps.access is None:
            return not_found(request)
        refusal = await page_access.check(deps.access, request, reference)
        if refusal is not None:
            return refused(request, refusal)
        live, problem_ = await live_view(deps.submissions, reference)
        if live is None:
            return unavailable(request) if problem_ is not None else not_found(request)
        step = next((s for s in live.steps if s.step_id == step_id), None)
        if step is None:
            return not_found(request)
        item = next((i for i in step.items if (item_key is None and len(step.items) == 1)
                     or i.key == item_key), None)
        if item is None or item.waiting_for != "information" or not item.information_fields:
            return live.service, step, None
        return live.service, step, item

    def not_waiting(request: Request, reference: str) -> Response:
        _ = catalogs.gettext
        with _language(request):
            return problem(request, 409, _("Nothing to answer"), _(
                "This request is not waiting for information from you at the moment, so "
                "nothing was sent."), back=f"/track/{reference}")

    def information_page(request: Request, reference: str, service_id: str, step: Any,
                         item: ItemOutcome,
                         schema: DataSchema, raw: Mapping[str, Any], *,
                         errors_at: Mapping[FieldLoc, FieldError] | None = None,
                         alert: str | None = None, status: int = 200) -> Response:
        query = f"?item={item.key}" if item.key is not None else ""
        action = f"/track/{reference}/information/{step.step_id}{query}"
        with _language(request):
            shown = ff.widgets(schema.fields, raw, errors_at)
        service = service_of(service_id)
        step_title = None
        agency_name = None
        if service is not None:
            definition = service.step(step.step_id)
            step_title = definition.title if definition is not None else None
        if step.agency is not None and step.agency in catalog.agencies:
            agency_name = catalog.agencies[step.agency].name
        return page(request, "apply/information.html", {
            "reference": reference, "step": step, "item": item, "widgets": shown,
            "problems": [w for one in shown for w in one.errors()], "alert": alert,
            "message": item.information_message, "action": action, "form_action": action,
            "step_title": step_title, "agency_name": agency_name}, status_code=status)

    @routes.get("/track/{reference}/information/{step_id}")
    async def information_form(request: Request, reference: str, step_id: str,
                               item: str | None = None) -> Response:
        found = await waiting_item(request, reference, step_id, item)
        if isinstance(found, Response):
            return found
        service_id, step, waiting = found
        if waiting is None:
            return not_waiting(request, reference)
        assert waiting.information_fields is not None
        schema = information_schema(waiting.information_fields)
        return information_page(request, reference, service_id, step, waiting, schema, {})

    @routes.post("/track/{reference}/information/{step_id}")
    async def answer_information(request: Request, reference: str, step_id: str,
                                 item: str | None = None) -> Response:
        form = await posted(request)
        if isinstance(form, Response):
            return form
        found = await waiting_item(request, reference, step_id, item)
        if isinstance(found, Response):
            return found
        service_id, step, waiting = found
        if waiting is None:
            return not_waiting(request, reference)
        assert waiting.information_fields is not None
        schema = information_schema(waiting.information_fields)
        raw = ff.raw_from_form(schema.fields, form)
        action = first(form, ACTION_FIELD)
        if action:
            ff.apply_action(schema.fields, raw, action)
            return information_page(request, reference, service_id, step, waiting, schema, raw)
        parsed = ff.to_submission(schema.fields, raw)
        try:
            answers = validate_submission(schema, parsed.data)
        except SubmissionInvalid as exc:
            return information_page(request, reference, service_id, step, waiting, schema, raw,
                                    errors_at=ff.errors_by_loc(exc.errors, parsed), status=422)
        outcome = await interactions.send(
            deps.client, reference, CitizenRequestWorkflow.answer_information,
            InformationAnswer(step_id=step_id, item_key=waiting.key, answers=answers))
        log.info("page_information_answered", reference=reference, step=step_id,
                 outcome=outcome.code, status=outcome.status)
        if outcome.ok:
            return RedirectResponse(f"/track/{reference}", status_code=303)
        if outcome.status == 422:
            found_errors = [FieldError(tuple(e.get("loc", ())), str(e.get("msg", "")))
                            for e in outcome.errors]
            return information_page(request, reference, service_id, step, waiting, schema, raw,
                                    errors_at=ff.errors_by_loc(found_errors), status=422)
        if outcome.status in (409, 410):
            return not_waiting(request, reference)
        if outcome.status == 404:
            return not_found(request)
        return unavailable(request)

    return routes
