"""Messages into a running request: agency callbacks, citizens' answers, decisions, cancel.

Each is a Temporal update with a validator: the workflow itself decides whether the message
is expected *now* (single use, not late, well formed), and a refused update never enters
history. This module turns the outcome into one clear answer for HTTP callers and the CLI.

Each update carries an id derived from the message (:func:`update_id`): the same message sent
again — a client retrying after a lost answer, a ``503`` or a timeout — is the same update to
Temporal, which answers it with the first one's outcome instead of applying it twice, while
the request's run remembers it. While Temporal cannot be reached, or the request does not take
the message in time (no worker running), the answer is ``503 temporarily_unavailable`` with
``Retry-After``: sending the same message again is safe.

Routes (added to the intake app):
- ``POST /callbacks/{token}``: an agency's asynchronous answer (signed like every call)
- ``POST /requests/{reference}/information``: the citizen answers a request for information
  (the owner's token or the access code, :mod:`intake.access`)
- ``POST /requests/{reference}/decisions``: a caseworker approves or rejects a step (a token
  with the step's role, :class:`Caseworkers`)
- ``POST /requests/{reference}/cancel``: the citizen withdraws the request (as answers)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from agency_kit.contract import Callback
from agency_kit.keys import InvalidKeyError, KeysUnavailable, RegistryKeys, verify_request
from agency_kit.signing import CALLBACK_TAG, SignatureError
from definitions.catalog import Catalog
from intake import errors
from intake.access import (
    RequestAccess,
    invalid_token,
    issuer_unavailable,
    token_required,
    unknown_request,
)
from intake.bodies import BodyRefused, field_errors, parse_json, read_limited, read_model
from intake.openapi import answers, caseworker_security, citizen_security, json_body
from intake.schemas import CancelBody, DecisionBody, MessageOutcome
from readmodel.nonces import NonceCache
from runtime import callback_tokens as tokens
from runtime.identity import InvalidToken, IssuerUnavailable, TokenVerifier, bearer_token
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

UPDATE_TIMEOUT = timedelta(seconds=15)
"""How long a message waits for the request to take it: a running worker does it in
milliseconds; past this the caller is told to send it again (503), which is safe."""


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
        headers = {"Retry-After": str(errors.RETRY_AFTER_S)} if self.status == 503 else None
        return errors.error(self.status, self.code, self.message, errors=self.errors,
                            headers=headers)


def update_id(update_name: str, reference: str, message: BaseModel) -> str:
    """The id of the update carrying ``message``: the same message gives the same id."""
    digest = hashlib.sha256(
        f"{update_name}\x00{reference}\x00{message.model_dump_json()}".encode()
    ).hexdigest()
    return f"{update_name}-{digest[:32]}"


async def send(
    client: Client,
    reference: str,
    update: UpdateMethodMultiParam[[CitizenRequestWorkflow, M], str],
    message: M,
    *,
    wait: timedelta = UPDATE_TIMEOUT,
) -> Outcome:
    """Deliver one update to a request; map every refusal to a status a caller understands.

    ``update`` is one of the workflow's update methods (``CitizenRequestWorkflow.decide``),
    so the message type is checked against the handler's. ``wait`` bounds the wait for the
    request to take it (then 503: send it again).
    """
    # an update method's name is its registered name (agency_callback, decide, ...)
    name = str(getattr(update, "__name__", "update"))
    handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
    try:
        answer = await handle.execute_update(update, message,
                                             id=update_id(name, reference, message),
                                             rpc_timeout=wait)
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
            return await _finished_or_not_ready(handle, reference, name, exc)
        if exc.status == RPCStatusCode.INVALID_ARGUMENT:
            return Outcome(404, "unknown_request", f"no request {reference!r}")
        if errors.unavailable_cause(exc) is None:
            raise
        return _unavailable(reference, name, exc)
    except Exception as exc:
        if errors.unavailable_cause(exc) is None:
            raise
        return _unavailable(reference, name, exc)
    label = name.replace("_", " ")
    return Outcome(200, answer, f"{label}: {answer}")


async def _finished_or_not_ready(
    handle: WorkflowHandle[Any, Any], reference: str, name: str, exc: RPCError
) -> Outcome:
    """``FAILED_PRECONDITION`` is not always "finished": Temporal also answers it to an update
    for a *running* workflow that cannot take updates now — its workflow task failed (a worker
    crashed or was replaced mid-task, a deploy), "workflow not ready". Answering ``410`` there
    would tell the agency's outbox to stop sending a callback the request still waits for
    (the soak found one such request, stuck). So ask Temporal: closed is ``410``; running,
    or not known just now, is ``503`` — send it again."""
    try:
        status = (await handle.describe(rpc_timeout=timedelta(seconds=5))).status
    except Exception as describe_exc:
        if errors.unavailable_cause(describe_exc) is None and not isinstance(
                describe_exc, RPCError):
            raise
        return _unavailable(reference, name, exc)
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        return Outcome(410, "request_finished", f"request {reference} has finished")
    log.warning("message_not_ready", reference=reference, update=name, rpc_status=exc.status.name)
    return _unavailable(reference, name, exc)


def _unavailable(reference: str, name: str, exc: BaseException) -> Outcome:
    log.warning("message_unavailable", reference=reference, update=name,
                error=type(exc).__name__)
    return Outcome(503, errors.UNAVAILABLE, (
        "the request could not take the message just now (Temporal cannot be reached, or no "
        "worker took it in time); send the same message again in "
        f"{errors.RETRY_AFTER_S} s: it will not be applied twice"))


class CallbackVerifier:
    """Checks a callback's token (issued by us) and its signature (made by the bound agency).

    Args:
        key: The callback-token key.
        catalog: The registry names each agency's public keys.
        env: Where the variables the registry names are set.
        nonces: The replay cache; None takes a captured callback again while it is valid
            (tests of the token alone).
        production: ``NWD_DEPLOYMENT=production``: refuse callbacks from an agency the
            registry names no keys for, and callback URLs that carry no expiry (issued before
            expiry existed); otherwise both are taken.
    """

    def __init__(self, key: bytes, catalog: Catalog, env: Mapping[str, str],
                 nonces: NonceCache | None = None, *, production: bool = False) -> None:
        self._key = key
        self._catalog = catalog
        self._keys = RegistryKeys(env)
        self._nonces = nonces
        self._production = production

    def target(self, token: str) -> tokens.CallbackTarget:
        if not token.isascii():  # no token we issue is anything else; hmac compares ASCII only
            raise tokens.InvalidCallbackToken("the callback token is not valid")
        target = tokens.verify(self._key, token)
        if target.expires is None and self._production:
            raise tokens.InvalidCallbackToken("the callback URL carries no expiry")
        return target

    async def check_signature(
        self, agency_id: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Raise :class:`SignatureError` unless the callback is signed by ``agency_id`` — the
        agency its token is bound to, never another — for this URL, body and key, and its
        nonce was not taken before; :class:`KeysUnavailable` when the agency's keys cannot be
        fetched just now."""
        agency = self._catalog.agencies.get(agency_id)
        if agency is None:
            raise SignatureError(f"agency {agency_id!r} is not in the registry")
        try:
            keys = self._keys.of(agency_id, agency.keys)
        except InvalidKeyError as exc:
            log.error("callback_keys_missing", agency=agency_id, error=str(exc))
            raise SignatureError("the engine cannot verify this agency's signatures") from None
        if keys is None:
            if self._production:
                log.error("callback_keys_missing", agency=agency_id, error="no keys")
                raise SignatureError(f"agency {agency_id!r} has no keys in the registry: "
                                     "production takes no unsigned callback")
            return  # development: an agency without keys in the registry sends unsigned ones
        verified = await verify_request(keys, "POST", url, body, headers, tag=CALLBACK_TAG,
                                        require_nonce=True)
        if self._nonces is not None and verified.nonce is not None and not \
                await self._nonces.take(f"{agency_id}/{verified.key_id}", verified.nonce,
                                        verified.expires):
            raise SignatureError("this signed callback was already received (its nonce is "
                                 "used); sign each attempt afresh")


class Caseworkers:
    """Who may decide a decision step: the bearer of a verified token whose roles claim holds
    the step's role. The decider recorded is the token's subject, never a name in the body.

    The step's role is the one of the definition the request runs (the workflow's
    ``decision_role`` query), so a request pinned to an older definition is decided by that
    definition's role; the workflow's own validator checks it again.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def role(self, client: Client, reference: str, step_id: str) -> str | Outcome | None:
        """The step's role; None when it is no decision step; an Outcome (404, 503) when the
        request cannot be asked."""
        handle = client.get_workflow_handle_for(CitizenRequestWorkflow.run, reference)
        try:
            return await handle.query(CitizenRequestWorkflow.decision_role, step_id,
                                      rpc_timeout=UPDATE_TIMEOUT)
        except RPCError as exc:
            if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                return Outcome(404, "unknown_request", f"no request {reference!r}")
            if errors.unavailable_cause(exc) is None:
                raise
            return _unavailable(reference, "decide", exc)
        except (WorkflowQueryFailedError, WorkflowQueryRejectedError) as exc:
            return _unavailable(reference, "decide", exc)


_MESSAGE_ANSWERS = answers(400, 401, 404, 409, 410, 413, 422, 429, 503,
                           ok={200: MessageOutcome}, descriptions={
    401: "The bearer token cannot be trusted (`invalid_token`)",
    404: "No such request, or the caller is neither its owner nor holds its access code: "
         "the same answer (`unknown_request`)",
    422: "The body does not fit, or the answers do not match the fields asked for (`invalid`, "
         "with `errors`)",
})
_DECISION_ANSWERS = answers(400, 401, 403, 404, 409, 410, 413, 422, 503,
                            ok={200: MessageOutcome}, descriptions={
    401: "No bearer token (`token_required`), or one that cannot be trusted (`invalid_token`)",
    403: "The token's roles do not include the step's role (`forbidden`)",
    404: "No such request, or a token without any role (a citizen's): the same answer "
         "(`unknown_request`)",
    422: "The body does not fit: it names who decides or the role (`invalid`, with `errors`)",
})
_CALLBACK_ANSWERS = answers(400, 401, 404, 409, 410, 413, 422, 503, ok={200: MessageOutcome},
                            descriptions={
    401: "The callback URL was not issued by this engine or has expired (`bad_token`), or "
         "the callback is not signed (RFC 9421) by the agency the URL was issued to, for this "
         "URL and body, or was sent before (`bad_signature`)",
    404: "The request no longer exists (`unknown_request`)",
})


def router(client: Client, verifier: CallbackVerifier, *, access: RequestAccess | None,
           caseworkers: Caseworkers) -> APIRouter:
    """The routes of the messages into running requests, delivering with ``client``.

    ``access`` guards the citizen's messages (answers, cancel; None: nobody may send them);
    ``caseworkers`` the decisions.
    """
    routes = APIRouter()

    async def owner_only(reference: str, request: Request) -> JSONResponse | None:
        if access is None:
            return unknown_request(reference)
        return await access.check(reference, request)

    @routes.post("/callbacks/{token}", responses=_CALLBACK_ANSWERS, openapi_extra=json_body(
        Callback, "The agency's outcome of an accepted call (docs/agency-contract.md). It must "
                  "carry an RFC 9421 HTTP Message Signature made with the agency's own Ed25519 "
                  "key (`Signature-Input` tag `nwd-callback`, covering `@method`, "
                  "`@target-uri`, `content-type`, `content-digest` and `idempotency-key`, with "
                  "`created`, `expires`, `keyid`, `alg` and a fresh `nonce`) and an RFC 9530 "
                  "`Content-Digest`. Keys the engine does not know are ignored."))
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
        try:
            await verifier.check_signature(target.agency_id, str(request.url), body,
                                           request.headers)
        except SignatureError as exc:
            bound.warning("callback_refused", reason="bad_signature", detail=exc.reason)
            return Outcome(401, "bad_signature", exc.reason).response()
        except KeysUnavailable as exc:  # not known to be bad: the agency sends it again
            bound.warning("callback_unverified", reason="keys_unavailable")
            return Outcome(503, errors.UNAVAILABLE, f"{exc}; send the callback again in "
                           f"{errors.RETRY_AFTER_S} s").response()
        try:
            data = parse_json(body)
            if not isinstance(data, dict):
                raise BodyRefused(422, "invalid", "the callback body must be a JSON object",
                                  [{"loc": [], "msg": "expected an object"}])
            # read tolerantly, as the contract says: unknown keys are ignored
            callback = AgencyCallback.model_validate(
                {**data, "step_id": target.step_id, "item_key": target.item_key}, strict=True)
        except BodyRefused as exc:
            return Outcome(exc.status, exc.code, exc.message, exc.errors).response()
        except ValidationError as exc:
            return Outcome(422, "invalid", "the callback body is not valid",
                           field_errors(exc)).response()
        outcome = await send(client, target.reference, CitizenRequestWorkflow.agency_callback,
                             callback)
        bound.info("callback", outcome=outcome.code, status=outcome.status)
        return outcome.response()

    @routes.post("/requests/{reference}/information", responses=_MESSAGE_ANSWERS,
                 openapi_extra={**json_body(InformationAnswer, (
                     "The citizen's answers to an agency's request for information: the step "
                     "(and item, for a for_each step) and the answers by field name.")),
                     **citizen_security()})
    async def answer(reference: str, request: Request) -> JSONResponse:
        refusal = await owner_only(reference, request)
        if refusal is not None:
            return refusal
        parsed = await _model(request, InformationAnswer)
        if isinstance(parsed, Outcome):
            return parsed.response()
        return (await send(client, reference, CitizenRequestWorkflow.answer_information,
                             parsed)).response()

    @routes.post("/requests/{reference}/decisions", responses=_DECISION_ANSWERS,
                 openapi_extra={**json_body(DecisionBody, (
                     "A caseworker's decision on a decision step; a rejection needs a reason. "
                     "Who decides is the bearer token's subject.")), **caseworker_security()})
    async def decide(reference: str, request: Request) -> JSONResponse:
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            return token_required("a decision")
        try:
            principal = await caseworkers.verifier.verify(token)
        except InvalidToken as exc:
            log.info("token_refused", reason=exc.reason, path=request.url.path)
            return invalid_token(exc.reason)
        except IssuerUnavailable:
            return issuer_unavailable()
        if not principal.roles:
            # a token without any role is a citizen's: it learns nothing a stranger could not
            # (not even whether the request exists), so it gets the same 404
            log.warning("decision_refused", reference=reference, reason="no_role")
            return unknown_request(reference)
        parsed = await _model(request, DecisionBody)
        if isinstance(parsed, Outcome):
            return parsed.response()
        role = await caseworkers.role(client, reference, parsed.step_id)
        if isinstance(role, Outcome):
            return role.response()
        if role is None:
            return Outcome(409, "not_expected",
                           f"step {parsed.step_id!r} is not waiting for a decision").response()
        if not principal.has_role(role):
            log.warning("decision_refused", reference=reference, step=parsed.step_id,
                        reason="role")
            return errors.error(403, "forbidden",
                                f"only the role {role!r} may decide {parsed.step_id!r}")
        decision = CaseworkerDecision(step_id=parsed.step_id, approve=parsed.approve,
                                      reason=parsed.reason, decided_by=principal.subject,
                                      role=role)
        return (await send(client, reference, CitizenRequestWorkflow.decide,
                           decision)).response()

    @routes.post("/requests/{reference}/cancel", responses=_MESSAGE_ANSWERS,
                 openapi_extra={**json_body(CancelBody, (
                     "The citizen withdraws the request; completed steps are undone. An empty "
                     "body is an empty object.")), **citizen_security()})
    async def cancel(reference: str, request: Request) -> JSONResponse:
        refusal = await owner_only(reference, request)
        if refusal is not None:
            return refusal
        parsed = await _model(request, CancelBody)
        if isinstance(parsed, Outcome):
            return parsed.response()
        return (await send(client, reference, CitizenRequestWorkflow.cancel,
                           CancelRequest(reason=parsed.reason))).response()

    return routes


async def _model(request: Request, model: type[M]) -> M | Outcome:
    try:
        return await read_model(request, model)
    except BodyRefused as exc:
        return Outcome(exc.status, exc.code, exc.message, exc.errors)
