"""Messages into a running request: agency callbacks, citizens' answers, decisions, cancel.

Each is a Temporal update with a validator: the workflow itself decides whether the message
is expected *now* (single use, not late, well formed), and a refused update never enters
history. This module turns the outcome into one clear answer for HTTP callers and the CLI.

Routes (added to the intake app):
- ``POST /callbacks/{token}``: an agency's asynchronous answer (signed like every call)
- ``POST /requests/{reference}/information``: the citizen answers a request for information
- ``POST /requests/{reference}/decisions``: a caseworker approves or rejects a step
- ``POST /requests/{reference}/cancel``: the citizen withdraws the request
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from agency_kit.signing import SignatureError, verify_headers
from definitions.catalog import Catalog
from intake.bodies import read_limited
from runtime import callback_tokens as tokens
from runtime.messages import (
    INVALID_ANSWER,
    AgencyCallback,
    CancelRequest,
    CaseworkerDecision,
    InformationAnswer,
)
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Outcome:
    """How a message into a request ended: an HTTP status and a body to show."""

    status: int
    code: str
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status < 300

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return JSONResponse(status_code=self.status, content=body)


async def send(
    client: Client,
    reference: str,
    update: UpdateMethodMultiParam[[CitizenRequestWorkflow, M], str],
    message: M,
) -> Outcome:
    """Deliver one update to a request; map every refusal to a status a caller understands.

    ``update`` is one of the workflow's update methods (``CitizenRequestWorkflow.decide``),
    so the message type is checked against the handler's.
    """
    handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    try:
        answer = await handle.execute_update(update, message)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) \
                else {}
            if cause.type == INVALID_ANSWER:
                return Outcome(422, "invalid", cause.message, list(details.get("errors", [])))
            return Outcome(409, "not_expected", cause.message)
        return Outcome(409, "refused", str(cause or exc))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            if "completed" in exc.message or "closed" in exc.message:
                return Outcome(410, "request_finished", f"request {reference} has finished")
            return Outcome(404, "unknown_request", f"no request {reference!r}")
        if exc.status == RPCStatusCode.FAILED_PRECONDITION:
            return Outcome(410, "request_finished", f"request {reference} has finished")
        raise
    # an update method's name is its registered name (agency_callback, decide, ...)
    label = str(getattr(update, "__name__", "update")).replace("_", " ")
    return Outcome(200, answer, f"{label}: {answer}")


class CallbackVerifier:
    """Checks a callback's token (issued by us) and its signature (made by the agency)."""

    def __init__(self, key: bytes, catalog: Catalog, env: Mapping[str, str]) -> None:
        self._key = key
        self._catalog = catalog
        self._env = env

    def target(self, token: str) -> tokens.CallbackTarget:
        return tokens.verify(self._key, token)

    def signature_ok(self, agency_id: str, body: bytes, headers: Mapping[str, str]) -> bool:
        agency = self._catalog.agencies.get(agency_id)
        if agency is None:
            return False
        if not agency.auth_secret:
            return True
        secret = self._env.get(agency.auth_secret)
        if not secret:
            return False
        try:
            verify_headers(secret, body, headers)
        except SignatureError:
            return False
        return True


def router(client: Client, verifier: CallbackVerifier) -> APIRouter:
    routes = APIRouter()

    @routes.post("/callbacks/{token}")
    async def agency_callback(token: str, request: Request) -> JSONResponse:
        body = await read_limited(request)
        if body is None:
            return Outcome(413, "body_too_large", "the callback body is too large").response()
        try:
            target = verifier.target(token)
        except tokens.InvalidCallbackToken as exc:
            log.warning("callback_refused", reason="bad_token")
            return Outcome(401, "bad_token", str(exc)).response()
        bound = log.bind(reference=target.reference, step=target.step_id,
                         item=target.item_key, agency=target.agency_id)
        if not verifier.signature_ok(target.agency_id, body, request.headers):
            bound.warning("callback_refused", reason="bad_signature")
            return Outcome(401, "bad_signature",
                           "the callback is not signed with the agency's secret").response()
        try:
            data = json.loads(body)
            callback = AgencyCallback.model_validate(
                {**data, "step_id": target.step_id, "item_key": target.item_key}
            )
        except (ValueError, ValidationError) as exc:
            return Outcome(422, "invalid", f"the callback body is not valid: {exc}").response()
        outcome = await send(client, target.reference, CitizenRequestWorkflow.agency_callback,
                             callback)
        bound.info("callback", outcome=outcome.code, status=outcome.status)
        return outcome.response()

    @routes.post("/requests/{reference}/information")
    async def answer(reference: str, request: Request) -> JSONResponse:
        parsed = await _model(request, InformationAnswer)
        if isinstance(parsed, Outcome):
            return parsed.response()
        return (await send(client, reference, CitizenRequestWorkflow.answer_information,
                             parsed)).response()

    @routes.post("/requests/{reference}/decisions")
    async def decide(reference: str, request: Request) -> JSONResponse:
        parsed = await _model(request, CaseworkerDecision)
        if isinstance(parsed, Outcome):
            return parsed.response()
        return (await send(client, reference, CitizenRequestWorkflow.decide, parsed)).response()

    @routes.post("/requests/{reference}/cancel")
    async def cancel(reference: str, request: Request) -> JSONResponse:
        parsed = await _model(request, CancelRequest)
        if isinstance(parsed, Outcome):
            return parsed.response()
        return (await send(client, reference, CitizenRequestWorkflow.cancel, parsed)).response()

    return routes


async def _model(request: Request, model: type[M]) -> M | Outcome:
    body = await read_limited(request)
    if body is None:
        return Outcome(413, "body_too_large", "the body is too large")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        return Outcome(422, "invalid", "the body is not valid",
                       [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])
