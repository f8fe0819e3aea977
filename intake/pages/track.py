"""Following a request: check it with a reference and access code, its status page with a
timeline per agency (updated live by server-sent events), cancelling it, "my requests".

- ``GET/POST /track``: the reference and access code form; checked with the API's rule and
  rate limit (:func:`intake.pages.access.check`), the code is remembered in the session and
  the visitor goes on to the status page. A wrong code and an unknown reference get the same
  message, and nothing is remembered.
- ``GET /track/{reference}``: the status page (the owner signed in, or the holder of the
  code; anyone else gets the 404 page of a reference that does not exist).
- ``GET /track/{reference}/events``: ``text/event-stream`` of the re-rendered timeline
  whenever it changes (polled every :data:`POLL_S`), heartbeat comments, ended when the
  request finishes, the visitor leaves, or after :data:`STREAM_LIFETIME_S`.
- ``GET/POST /track/{reference}/cancel``: "are you sure, and what will be undone", then the
  same ``cancel`` update the API sends (:func:`intake.interactions.send`).
- ``GET /my-requests``: a signed-in citizen's requests, newest first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from definitions.models import CallStep
from i18n import catalogs
from i18n.catalogs import gettext as _
from intake import errors, interactions
from intake.pages import access as page_access
from intake.pages import refusals, session, timeline
from intake.pages.deps import PageDeps
from intake.pages.forms import first
from intake.pages.render import ENVIRONMENT, language_of, local, page
from intake.status import RequestStatus, request_status
from runtime.messages import CancelRequest
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)

POLL_S = 2.0
"""How often the live stream reads the request again (read model and live view)."""
HEARTBEAT_S = 15.0
"""A comment line at least this often keeps proxies from closing a quiet stream."""
STREAM_LIFETIME_S = 600.0
"""A stream ends after this long; the browser's EventSource then reconnects if it wants."""
FLASH = "track_flash"
MAX_REFERENCE = 200


def router(deps: PageDeps) -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    async def refused(request: Request, reference: str) -> Response | None:
        """None when the visitor may see ``reference``; else the refusal's page."""
        if deps.access is None:
            return refusals.for_status(request, 404)
        refusal = await page_access.check(deps.access, request, reference)
        return refusals.page_for(request, refusal) if refusal is not None else None

    def status_context(request: Request, found: RequestStatus,
                       events: list[Any]) -> dict[str, Any]:
        return {
            "reference": found.reference,
            "status": found.status,
            "status_words": timeline.request_status_words(found.status),
            "finished": found.finished,
            "groups": timeline.groups(deps.catalog, found),
            "history": timeline.history(deps.catalog, found, events),
            "service_title": _service_title(deps, found),
            "submitted": timeline.when(found.record.submitted_at if found.record else None),
            "live_unavailable": found.live_problem is not None,
        }

    async def read(reference: str) -> tuple[RequestStatus, list[Any]]:
        found = await request_status(deps.submissions, deps.read_model, reference)
        events = []
        if deps.read_model is not None and found.record is not None:
            try:
                events = await deps.read_model.get_events(reference)
            except Exception as exc:
                if errors.unavailable_cause(exc) is None:
                    raise
        return found, events

    # ------------------------------------------------------------------ check a request

    @routes.get("/track")
    async def track_form(request: Request) -> Response:
        return page(request, "track/check.html", {"errors": {}, "reference": ""})

    @routes.post("/track")
    async def track_check(request: Request) -> Response:
        form = await refusals.posted(request)
        if isinstance(form, Response):
            return form
        reference = first(form, "reference").strip().upper()[:MAX_REFERENCE]
        code = first(form, "access_code").strip()
        with catalogs.use(language_of(request)):
            problems: dict[str, str] = {}
            if not reference:
                problems["reference"] = _("Enter the reference of your request")
            if not code:
                problems["access_code"] = _("Enter the access code you were given")
        if problems or deps.access is None:
            return page(request, "track/check.html", {
                "errors": problems, "reference": reference}, status_code=422 if problems
                else 404)
        refusal = await page_access.check(deps.access, request, reference, code=code)
        if refusal is None:
            session.remember_code(request, reference, code)
            return RedirectResponse(f"/track/{reference}", status_code=303)
        if refusal.status_code == 404:
            with catalogs.use(language_of(request)):
                wrong = _("We could not find a request with that reference and access code. "
                          "Check both and try again.")
            return page(request, "track/check.html", {
                "errors": {"reference": wrong}, "reference": reference, "not_found": True},
                status_code=404)
        return refusals.page_for(request, refusal)

    # ------------------------------------------------------------------ status

    @routes.get("/track/{reference}")
    async def status_page(reference: str, request: Request) -> Response:
        refusal = await refused(request, reference)
        if refusal is not None:
            return refusal
        found, events = await read(reference)
        if not found.found:
            if found.unavailable is not None:
                return refusals.for_status(request, 503)
            return refusals.for_status(request, 404)
        flash = request.session.pop(FLASH, None) if "session" in request.scope else None
        with catalogs.use(language_of(request)):
            context = status_context(request, found, events)
        return page(request, "track/status.html", {**context, "flash": flash},
                    headers={"Cache-Control": "no-store"})

    @routes.get("/track/{reference}/events")
    async def status_events(reference: str, request: Request) -> Response:
        refusal = await refused(request, reference)
        if refusal is not None:
            return refusal
        tag = language_of(request)
        bound = log.bind(reference=reference)

        async def stream() -> AsyncIterator[str]:
            yield "retry: 5000\n\n"
            started = last_sent = time.monotonic()
            last: str | None = None
            while True:
                if await request.is_disconnected():
                    return
                found, events = await read(reference)
                with catalogs.use(tag):
                    html = ENVIRONMENT.get_template("track/_timeline.html").render(
                        **status_context(request, found, events))
                now = time.monotonic()
                if html != last:
                    last, last_sent = html, now
                    yield _event("timeline", html)
                elif now - last_sent >= HEARTBEAT_S:
                    last_sent = now
                    yield ": still here\n\n"
                if found.finished:
                    yield _event("finished", found.status or "")
                    return
                if now - started >= STREAM_LIFETIME_S:
                    yield _event("timeout", "")
                    return
                await asyncio.sleep(POLL_S)

        bound.info("status_stream_opened")
        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ cancel

    @routes.get("/track/{reference}/cancel")
    async def cancel_form(reference: str, request: Request) -> Response:
        refusal = await refused(request, reference)
        if refusal is not None:
            return refusal
        found, _events = await read(reference)
        if not found.found:
            return refusals.for_status(request, 404)
        if found.finished:
            return _finished(request, reference)
        with catalogs.use(language_of(request)):
            undo = _what_is_undone(deps, found)
        return page(request, "track/cancel.html", {
            "reference": reference, **undo, "service_title": _service_title(deps, found)})

    @routes.post("/track/{reference}/cancel")
    async def cancel(reference: str, request: Request) -> Response:
        form = await refusals.posted(request)
        if isinstance(form, Response):
            return form
        refusal = await refused(request, reference)
        if refusal is not None:
            return refusal
        outcome = await interactions.send(deps.client, reference, CitizenRequestWorkflow.cancel,
                                          CancelRequest())
        log.info("cancel_from_page", reference=reference, outcome=outcome.code)
        if outcome.ok:
            request.session[FLASH] = "cancelling"
            return RedirectResponse(f"/track/{reference}", status_code=303)
        if outcome.status in (409, 410):
            return _finished(request, reference)
        if outcome.status == 404:
            return refusals.for_status(request, 404)
        return refusals.for_status(request, 503)

    # ------------------------------------------------------------------ my requests

    @routes.get("/my-requests")
    async def my_requests(request: Request) -> Response:
        if deps.access is None:
            return refusals.for_status(request, 404)
        who = await page_access.principal(deps.access, request)
        if who is None:
            return RedirectResponse(refusals.sign_in_url(request), status_code=303)
        if isinstance(who, JSONResponse):
            return refusals.page_for(request, who)
        owned = await deps.access.store.owned(
            deps.access.keys.owner(deps.access.verifier.issuer, who.subject))
        with catalogs.use(language_of(request)):
            rows = [{
                "reference": r.reference,
                "title": _title_of(deps, r.service),
                "submitted": timeline.when(r.submitted_at),
                "status": r.status,
                "status_words": timeline.request_status_words(r.status),
            } for r in owned]
        return page(request, "track/my_requests.html", {"requests": rows},
                    headers={"Cache-Control": "no-store"})

    return routes


def _event(name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


def _title_of(deps: PageDeps, service: str) -> str:
    definition = timeline.definition_of(deps.catalog, service)
    return local(definition.title) if definition is not None else service


def _service_title(deps: PageDeps, found: RequestStatus) -> str:
    service = found.record.service if found.record is not None else (
        found.live.service if found.live is not None else "")
    return _title_of(deps, service)


def _what_is_undone(deps: PageDeps, found: RequestStatus) -> dict[str, list[str]]:
    """What a cancel does: completed steps with an undo are undone, those without stay done,
    steps still running or waiting are withdrawn."""
    service = found.record.service if found.record is not None else (
        found.live.service if found.live is not None else "")
    definition = timeline.definition_of(deps.catalog, service)
    undone: list[str] = []
    kept: list[str] = []
    withdrawn: list[str] = []
    for group in timeline.groups(deps.catalog, found):
        for step in group.steps:
            label = f"{group.name}: {step.title}"
            defined = definition.step(step.step_id) if definition is not None else None
            if step.status == "completed":
                has_undo = isinstance(defined, CallStep) and defined.compensation is not None
                (undone if has_undo else kept).append(label)
            elif step.status in ("running", "waiting"):
                withdrawn.append(label)
    return {"undone": undone, "kept": kept, "withdrawn": withdrawn}


def _finished(request: Request, reference: str) -> Response:
    with catalogs.use(language_of(request)):
        return refusals.message(
            request, 409, _("This request has finished"),
            _("It can no longer be cancelled: every agency involved has already given its "
              "answer."), link=(f"/track/{reference}", _("See its status")))

