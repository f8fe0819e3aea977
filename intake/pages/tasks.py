"""The caseworkers' task list: the decisions waiting for the signed-in caseworker's roles.

- ``GET /tasks``: the decision steps waiting for one of the caseworker's roles (their verified
  token's roles claim), oldest first, with due dates and escalations. Read from the read
  model (a decision step's row is written when it starts waiting,
  ``readmodel/sql/0007_step_kind_and_owner.sql``); which role decides a step is the service
  definition's (the catalog). A visitor whose token holds no role gets the 404 page: like the
  API, nothing says tasks exist.
- ``GET /tasks/{reference}/{step}``: the decision, with only what the step's ``show``
  expressions give (the workflow's ``decision_view`` query; personal data, so only after the
  request's own definition — the ``decision_role`` query — names a role the caseworker holds).
- ``POST /tasks/{reference}/{step}`` (CSRF): approve, or reject with a reason, through the very
  ``decide`` update ``POST /requests/{reference}/decisions`` sends
  (:class:`intake.interactions.Caseworkers`, :func:`intake.interactions.send`); who decided is
  the token's subject. Then back to the list with a banner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from definitions.models import DecisionStep
from i18n import catalogs
from i18n.catalogs import gettext as _
from intake import errors, interactions
from intake.pages import refusals, session, timeline
from intake.pages.deps import PageDeps
from intake.pages.forms import first
from intake.pages.render import language_of, local, page
from runtime.identity import InvalidToken, IssuerUnavailable, Principal
from runtime.messages import CaseworkerDecision, DecisionView
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)

FLASH = "tasks_flash"
MAX_REASON = 2_000


def router(deps: PageDeps) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    caseworkers = interactions.Caseworkers(deps.verifier)

    async def caseworker(request: Request) -> Principal | Response:
        """The signed-in caseworker's verified principal, or the page to answer instead:
        sign in (no session), sign in again (expired), 404 (a token without any role)."""
        token = session.bearer(request)
        if token is None:
            return RedirectResponse(refusals.sign_in_url(request), status_code=303)
        try:
            principal = await deps.verifier.verify(token)
        except InvalidToken:
            return refusals.for_status(request, 401)
        except IssuerUnavailable:
            return refusals.for_status(request, 503)
        if not principal.roles:
            log.info("tasks_refused", reason="no_role")
            return refusals.for_status(request, 404)
        return principal

    def decidable(principal: Principal) -> list[tuple[str, str]]:
        """(service, step) of every decision step of the catalog one of the roles decides."""
        return [(service.service, step.id) for service in deps.catalog.services.values()
                for step in service.steps
                if isinstance(step, DecisionStep) and principal.has_role(step.role)]

    async def opened(request: Request, principal: Principal, reference: str,
                     step_id: str) -> tuple[str, DecisionView] | Response:
        """The step's role and what it shows, once the request's own definition says this
        caseworker may decide it; else the page to answer (404 reveals nothing)."""
        role = await caseworkers.role(deps.client, reference, step_id)
        if isinstance(role, interactions.Outcome):
            return refusals.for_status(request, role.status)
        if role is None or not principal.has_role(role):
            log.info("task_refused", reference=reference, step=step_id, reason="role")
            return refusals.for_status(request, 404)
        try:
            view = await deps.client.get_workflow_handle_for(
                CitizenRequestWorkflow.run, reference).query(
                CitizenRequestWorkflow.decision_view, step_id,
                rpc_timeout=interactions.UPDATE_TIMEOUT)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return refusals.for_status(request, 404)
            if errors.unavailable_cause(exc) is None:
                raise
            return refusals.for_status(request, 503)
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError):
            return refusals.for_status(request, 503)
        if view is None:
            return refusals.for_status(request, 404)
        return role, view

    def task_context(reference: str, step_id: str, view: DecisionView) -> dict[str, Any]:
        definition = timeline.definition_of(deps.catalog, view.service)
        step = definition.step(step_id) if definition is not None else None
        labels = _labels(definition)
        return {
            "reference": reference, "step_id": step_id,
            "title": local(step.title) if step is not None and step.title else step_id,
            "service_title": local(definition.title) if definition is not None else "",
            "waiting": view.status == "waiting",
            "shown": [{"name": labels.get(name, name), "value": _shown(value)}
                      for name, value in view.show.items()],
            "unavailable": sorted(view.unavailable),
        }

    @routes.get("/tasks")
    async def task_list(request: Request) -> Response:
        principal = await caseworker(request)
        if isinstance(principal, Response):
            return principal
        if deps.read_model is None:
            return refusals.for_status(request, 503)
        waiting = await deps.read_model.waiting_decisions(decidable(principal))
        now = datetime.now(UTC)
        with catalogs.use(language_of(request)):
            rows = []
            for task in waiting:
                definition = timeline.definition_of(deps.catalog, task.service)
                step = definition.step(task.step_id) if definition is not None else None
                rows.append({
                    "reference": task.reference, "step_id": task.step_id,
                    "service_title": local(definition.title) if definition else task.service,
                    "title": local(step.title) if step is not None and step.title
                    else task.step_id,
                    "waiting_since": timeline.when(task.waiting_since),
                    "due": timeline.when(task.due_at),
                    "overdue": task.due_at is not None and task.due_at < now,
                    "escalated": task.escalated,
                })
        flash = request.session.pop(FLASH, None)
        return page(request, "tasks/list.html", {"tasks": rows, "flash": flash},
                    headers={"Cache-Control": "no-store"})

    @routes.get("/tasks/{reference}/{step_id}")
    async def task(reference: str, step_id: str, request: Request) -> Response:
        principal = await caseworker(request)
        if isinstance(principal, Response):
            return principal
        found = await opened(request, principal, reference, step_id)
        if isinstance(found, Response):
            return found
        _role, view = found
        with catalogs.use(language_of(request)):
            context = task_context(reference, step_id, view)
        return page(request, "tasks/decide.html", {**context, "errors": {}, "reason": "",
                                                    "choice": ""},
                    headers={"Cache-Control": "no-store"})

    @routes.post("/tasks/{reference}/{step_id}")
    async def decide(reference: str, step_id: str, request: Request) -> Response:
        form = await refusals.posted(request)
        if isinstance(form, Response):
            return form
        principal = await caseworker(request)
        if isinstance(principal, Response):
            return principal
        found = await opened(request, principal, reference, step_id)
        if isinstance(found, Response):
            return found
        role, view = found
        choice = first(form, "decision")
        reason = first(form, "reason").strip()[:MAX_REASON]
        with catalogs.use(language_of(request)):
            problems: dict[str, str] = {}
            if choice not in ("approve", "reject"):
                problems["decision"] = _("Choose whether to approve or reject")
            elif choice == "reject" and not reason:
                problems["reason"] = _("Give the reason for rejecting it")
            context = task_context(reference, step_id, view)
        if problems:
            return page(request, "tasks/decide.html", {
                **context, "errors": problems, "reason": reason, "choice": choice},
                status_code=422)
        decision = CaseworkerDecision(step_id=step_id, approve=choice == "approve",
                                      reason=reason or None, decided_by=principal.subject,
                                      role=role)
        outcome = await interactions.send(deps.client, reference, CitizenRequestWorkflow.decide,
                                          decision)
        log.info("decision_from_page", reference=reference, step=step_id,
                 outcome=outcome.code)
        if outcome.ok:
            request.session[FLASH] = {"reference": reference, "approved": decision.approve}
            return RedirectResponse("/tasks", status_code=303)
        with catalogs.use(language_of(request)):
            if outcome.status in (409, 410):
                return refusals.message(
                    request, outcome.status, _("This decision is no longer waiting"),
                    _("It was decided already, or the request has finished or been "
                      "cancelled."), link=("/tasks", _("Back to your tasks")))
            if outcome.status == 422:
                return page(request, "tasks/decide.html", {
                    **context, "errors": {"reason": outcome.message}, "reason": reason,
                    "choice": choice}, status_code=422)
        return refusals.for_status(request, 503)

    return routes


def _labels(definition: Any) -> dict[str, str]:
    """The submission's field labels by name (a ``show`` name that is a field's gets its
    label)."""
    if definition is None:
        return {}
    fields = getattr(definition.input, "fields", None) or {}
    return {name: local(getattr(f, "label", None)) or name for name, f in fields.items()}


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, bool):
        return _("Yes") if value else _("No")
    return str(value)
