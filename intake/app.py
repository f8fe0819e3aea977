"""The citizen front door: submit a request, follow it, and the agencies' callback endpoint.

Routes (every body and answer is typed in the OpenAPI document, ``GET /openapi.json``,
committed as ``docs/openapi/intake.json``; the prose is ``docs/api.md``):

- ``GET  /health``
- ``GET  /services`` and ``GET /services/{id}``: what can be asked for, and its input schema
- ``POST /requests`` (header ``Idempotency-Key``): 202 with the reference (and, without a
  bearer token, the one-time access code); 422 with field paths for invalid input; 404 for an
  unknown service; 413 for an oversized body; 401 for a bearer token that does not verify
- ``GET  /requests/{reference}``: status from the read model, live steps from the workflow, for
  the owner's token or the access code only (:mod:`intake.access`; anyone else: the 404 of
  a request that does not exist)
- ``GET  /metrics``: this process's Prometheus metrics (Temporal SDK + intake)
- ``POST /codec/encode``, ``POST /codec/decode``: the codec server the Temporal UI and CLI call
  to read encrypted payloads (``Authorization: Bearer <NWD_CODEC_TOKEN>``; CORS for the UI)
- the messages into a running request: :mod:`intake.interactions`

Bad input changes nothing: it is refused before any workflow starts or any row is written.
While Temporal or the read model is down, routes answer 503 with ``Retry-After`` and nothing is
half done (:mod:`intake.errors`).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf import json_format
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payloads as ProtoPayloads
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.common import MetricMeter
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError, RPCStatusCode

from definitions.catalog import Catalog
from definitions.errors import UnknownService
from definitions.models import DataSchema
from definitions.submission import SubmissionInvalid
from intake import errors, interactions
from intake.access import RequestAccess, unknown_request
from intake.bodies import BodyRefused, read_json, read_limited, validate_model
from intake.openapi import (
    DESCRIPTION,
    IntakeApp,
    answers,
    citizen_security,
    codec_security,
    json_body,
)
from intake.schemas import (
    IDEMPOTENCY_KEY_MAX,
    ErrorBody,
    Health,
    Payloads,
    RequestView,
    ServiceList,
    ServiceView,
    SubmissionEnvelope,
    Submitted,
)
from intake.submissions import Submissions, build_submissions
from readmodel.access import AccessStore
from readmodel.store import ReadModel, RequestRow
from runtime import metric_names
from runtime.callback_tokens import callback_key
from runtime.identity import TokenVerifier, verifier_for
from runtime.messages import RequestProgress
from runtime.settings import Settings, reveal
from runtime.temporal import converter_for
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)


CODEC_ORIGINS = frozenset({"http://127.0.0.1:8233", "http://localhost:8233"})
"""Browser origins (the Temporal UI) allowed to call the codec server."""
MAX_CODEC_BYTES = 8 * 1024 * 1024
LIVE_QUERY_TIMEOUT = timedelta(seconds=3)
"""How long ``GET /requests/{reference}`` waits for the workflow's live view: a worker answers
a query in milliseconds; without one (all stopped) the record is answered instead."""
_ROW = TypeAdapter(RequestRow)
_NO_OUTPUTS = {"steps": {"__all__": {"items": {"__all__": {"output"}}}}}
"""The live view leaves agency outputs out (they may hold personal data)."""

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX,
    pattern=r"^[\x20-\x7e]+$",
    description=("Any printable ASCII string: the same key gives the same request, running or "
                 "finished, and never a second one. Without it the intake makes a random one."),
)]


def build_app(
    settings: Settings,
    *,
    client: Client,
    catalog: Catalog,
    read_model: ReadModel | None,
    metrics: Callable[[], Awaitable[str]] | None = None,
    meter: MetricMeter | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    """The whole front door as ``python -m intake`` serves it: :func:`create_app` and the
    routes of the messages into running requests, wired from ``settings``.

    ``verifier`` checks bearer tokens (default: one for ``settings``' issuer); citizens'
    access needs the read model (without one, no request can be followed here).
    """
    verifier = verifier or verifier_for(settings)
    reference_key = settings.reference_secret()
    access = (RequestAccess(AccessStore(read_model.pool), verifier, reference_key)
              if read_model is not None else None)
    app = create_app(
        client=client,
        submissions=build_submissions(settings, client, catalog, read_model, access=access,
                                      reference_key=reference_key),
        read_model=read_model,
        access=access,
        ui_url=settings.temporal_ui_url,
        namespace=settings.temporal_namespace,
        codec=converter_for(settings).payload_codec,
        codec_token=reveal(settings.codec_token),
        metrics=metrics,
        meter=meter,
    )
    app.include_router(interactions.router(
        client, interactions.CallbackVerifier(callback_key(settings.payload_key()), catalog,
                                              settings.agency_env),
        access=access, caseworkers=interactions.Caseworkers(verifier)))
    return app


def create_app(
    *,
    client: Client,
    submissions: Submissions,
    read_model: ReadModel | None,
    ui_url: str,
    access: RequestAccess | None = None,
    namespace: str = "default",
    codec: PayloadCodec | None = None,
    codec_token: str | None = None,
    codec_origins: frozenset[str] = CODEC_ORIGINS,
    metrics: Callable[[], Awaitable[str]] | None = None,
    meter: MetricMeter | None = None,
) -> FastAPI:
    """The front door's ASGI app. Collaborators are owned by the caller (see intake.__main__).

    ``access`` decides who may follow a request (:mod:`intake.access`); without it nobody
    can here (every status is the unknown request's 404) and submissions carry no code.
    ``codec`` and ``codec_token`` enable the codec server (both needed); ``metrics`` returns this
    process's Prometheus text; ``meter`` counts submissions, and the requests they start when
    the front door records them (see :mod:`runtime.telemetry`).
    """
    app = IntakeApp(title="No Wrong Door — intake", version="1", description=DESCRIPTION)
    errors.install(app)
    # ---------------------------------------------------------- metrics and the codec server
    submissions_counter = (
        meter.create_counter(metric_names.SUBMISSIONS, "Submissions, by outcome", "1")
        if meter is not None else None
    )
    # The front door writes a new request's first row itself when it has the read model (its
    # Submissions get the same one), and the workflow then skips its start record — where the
    # worker counts starts. So such a request is counted here, once, when it is new; without
    # a read model the workflow's start record counts it instead.
    started_counter = (
        meter.create_counter(metric_names.REQUESTS_STARTED, "Requests started", "1")
        if meter is not None and read_model is not None else None
    )

    def count(service_id: str, outcome: str) -> None:
        if submissions_counter is not None:
            submissions_counter.add(1, {"service": service_id, "outcome": outcome})
        if outcome == "created" and started_counter is not None:
            started_counter.add(1, {"service": service_id})

    @app.get("/metrics", response_class=PlainTextResponse, responses={
        200: {"description": "Prometheus text format 0.0.4",
              "content": {"text/plain": {"schema": {"type": "string"}}}},
        **answers(404, descriptions={404: "This process exports no metrics (`metrics_disabled`)"}),
    })
    async def metrics_endpoint() -> Response:
        if metrics is None:
            return errors.error(404, "metrics_disabled", "this process exports no metrics")
        return PlainTextResponse(await metrics(), media_type="text/plain; version=0.0.4")

    preflight: dict[int | str, dict[str, Any]] = {
        204: {"description": "Allowed: the CORS headers for the Temporal UI's origin"},
        403: {"description": "The origin is not the Temporal UI's: no CORS headers"},
    }

    @app.options("/codec/{operation}", responses=preflight, status_code=204)
    async def codec_preflight(operation: str, request: Request) -> Response:
        origin = request.headers.get("origin", "")
        if origin not in codec_origins:
            return Response(status_code=403)
        return Response(status_code=204, headers={
            **_cors(origin),
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
            "Access-Control-Max-Age": "600",
        })

    @app.options("/codec/{path_token}/{operation}", responses=preflight, status_code=204)
    async def codec_preflight_with_path_token(
        path_token: str, operation: str, request: Request
    ) -> Response:
        return await codec_preflight(operation, request)

    codec_answers = answers(400, 401, 404, 413, ok={200: Payloads}, descriptions={
        401: "No or a wrong codec token (`unauthorized`)",
        404: "The codec server is not configured (`codec_disabled`) or no such operation",
    })
    codec_body = json_body(Payloads, "Payloads in proto3 JSON, as the Temporal UI sends them.")

    @app.post("/codec/{path_token}/{operation}", responses=codec_answers,
              openapi_extra=codec_body)
    async def codec_endpoint_with_path_token(
        path_token: str, operation: str, request: Request
    ) -> Response:
        # The Temporal UI cannot send a bearer token without single sign-on; the embedded
        # stack gives it an endpoint whose unguessable path carries the token instead.
        return await codec_call(operation, request, path_token)

    @app.post("/codec/{operation}", responses=codec_answers,
              openapi_extra={**codec_body, **codec_security()})
    async def codec_endpoint(operation: str, request: Request) -> Response:
        return await codec_call(operation, request, None)

    async def codec_call(operation: str, request: Request, path_token: str | None) -> Response:
        origin = request.headers.get("origin", "")
        cors = _cors(origin) if origin in codec_origins else {}
        if codec is None or not codec_token:
            return errors.error(404, "codec_disabled", "the codec server is not configured",
                                headers=cors)
        given = request.headers.get("authorization", "")
        if path_token is not None:
            given = f"Bearer {path_token}"
        if not hmac.compare_digest(given.encode(), f"Bearer {codec_token}".encode()):
            return errors.error(401, "unauthorized", "a valid codec bearer token is required",
                                headers={**cors, "WWW-Authenticate": "Bearer"})
        if operation not in ("encode", "decode"):
            return errors.error(404, "unknown_operation", "use /codec/encode or /codec/decode",
                                headers=cors)
        body = await read_limited(request, MAX_CODEC_BYTES)
        if body is None:
            return errors.error(413, "body_too_large", f"the body is over {MAX_CODEC_BYTES} bytes",
                                headers=cors)
        try:
            payloads = json_format.Parse(body or b"{}", ProtoPayloads())
        except json_format.ParseError:
            return errors.error(400, "malformed_payloads", 'expected {"payloads": [...]}',
                                headers=cors)
        try:
            if operation == "encode":
                result = await codec.encode(list(payloads.payloads))
            else:
                result = await codec.decode(list(payloads.payloads))
        except Exception:
            log.warning("codec_failed", operation=operation,
                        namespace=request.headers.get("x-namespace"))
            return errors.error(400, "codec_failed", f"the payloads could not be {operation}d",
                                headers=cors)
        return JSONResponse(json_format.MessageToDict(ProtoPayloads(payloads=result)),
                            headers=cors)

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/services", response_model=ServiceList)
    async def services() -> dict[str, Any]:
        catalog = submissions.catalog
        return {
            "services": [
                {"id": s.service, "version": s.version, "title": s.title,
                 "description": s.description}
                for s in catalog.services.values()
            ]
        }

    @app.get("/services/{service_id}", responses=answers(404, ok={200: ServiceView}, descriptions={
        404: "No such service (`unknown_service`; the message lists the known ones)"}))
    async def service(service_id: str) -> JSONResponse:
        try:
            definition = submissions.catalog.service(service_id)
        except UnknownService as exc:
            return errors.error(404, "unknown_service", str(exc))
        return JSONResponse({
            "id": definition.service, "version": definition.version,
            "title": definition.title, "description": definition.description,
            "input": _schema_view(definition.input),
            "content_hash": submissions.catalog.content_hash(service_id),
        })

    @app.post(
        "/requests", status_code=202,
        responses=answers(400, 401, 404, 413, 422, 503, ok={202: Submitted, 200: Submitted},
                          descriptions={
                              401: "A bearer token was sent and cannot be trusted "
                                   "(`invalid_token`); without one the answer carries an "
                                   "access code",
                              200: "The Idempotency-Key named an existing request",
                              404: "No such service (`unknown_service`)",
                              422: "The body is not an envelope, or the submission breaks the "
                                   "service's form (`invalid_submission`, paths under "
                                   "`submission`)",
                          }),
        openapi_extra=json_body(SubmissionEnvelope, "The service and the citizen's submission."),
    )
    async def submit(request: Request, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        try:
            envelope = validate_model(
                await read_json(request, invalid_code="invalid_submission"),
                SubmissionEnvelope, invalid_code="invalid_submission")
        except BodyRefused as exc:
            return errors.refused(exc)
        service_id = envelope.service
        key = idempotency_key or str(uuid.uuid4())
        owner = await access.principal(request) if access is not None else None
        if isinstance(owner, JSONResponse):
            return owner  # a bearer token that fails is refused, not ignored
        try:
            submitted = await submissions.submit(
                service_id, envelope.submission, idempotency_key=key, language=envelope.language,
                owner=owner,
            )
        except UnknownService as exc:
            return errors.error(404, "unknown_service", str(exc))
        except SubmissionInvalid as exc:
            count(service_id, "invalid")
            return errors.error(
                422, "invalid_submission", "the submission does not match the service's form",
                errors=[{"loc": ["submission", *e.loc], "msg": e.message} for e in exc.errors],
            )
        except Exception as exc:
            # Nothing was started, and the row written before the start was taken back.
            cause = errors.unavailable_cause(exc)
            if cause is None:
                raise
            count(service_id, "unavailable")
            log.warning("submission_unavailable", service=service_id, cause=cause,
                        error=type(exc).__name__)
            return errors.unavailable(cause)
        log.info("request_submitted", reference=submitted.reference, service=service_id,
                 created=submitted.created)
        count(service_id, "created" if submitted.created else "existing")
        content: dict[str, Any] = {
            "reference": submitted.reference,
            "created": submitted.created,
            "status_url": f"/requests/{submitted.reference}",
            "temporal_ui": f"{ui_url}/namespaces/{namespace}/workflows/{submitted.reference}",
        }
        if submitted.access_code is not None:
            content["access_code"] = submitted.access_code
        # the access code is shown once: no cache may keep the answer
        return JSONResponse(status_code=202 if submitted.created else 200, content=content,
                            headers={"Cache-Control": "no-store"})

    @app.get("/requests/{reference}", responses=answers(401, 404, 429, 503, ok={
        200: RequestView}, descriptions={
        401: "The bearer token cannot be trusted (`invalid_token`)",
        404: "No such request, or the caller is neither its owner nor holds its access code: "
             "the same answer (`unknown_request`)",
        503: "Neither could be asked (`temporarily_unavailable`): the request may exist",
    }), openapi_extra=citizen_security())
    async def status(reference: str, request: Request) -> JSONResponse:
        if access is None:
            return unknown_request(reference)
        refusal = await access.check(reference, request)
        if refusal is not None:
            return refusal
        row: RequestRow | None = None
        record_problem: ErrorBody | None = None
        if read_model is not None:
            try:
                row = await read_model.get_request(reference)
            except Exception as exc:
                if errors.unavailable_cause(exc) is None:
                    raise
                record_problem = errors.unavailable_body("the read model")
        live, live_problem = await _live(submissions, reference)
        if row is None and live is None:
            if record_problem is not None or live_problem is not None:
                return errors.unavailable("Temporal" if live_problem else "the read model")
            return unknown_request(reference)
        content: dict[str, Any] = {"reference": reference}
        if row is not None:
            content["record"] = _ROW.dump_python(row, mode="json")
        if live is not None:
            content["live"] = live.model_dump(mode="json", exclude=_NO_OUTPUTS)
        if live_problem is not None:
            content["live_unavailable"] = live_problem.model_dump(exclude_defaults=True)
        if record_problem is not None:
            content["record_unavailable"] = record_problem.model_dump(exclude_defaults=True)
        return JSONResponse(content)

    return app


async def _live(submissions: Submissions,
                reference: str) -> tuple[RequestProgress | None, ErrorBody | None]:
    """The workflow's live view, or why there is none: (None, None) when it does not exist."""
    try:
        return await submissions.handle(reference).query(
            CitizenRequestWorkflow.progress, rpc_timeout=LIVE_QUERY_TIMEOUT), None
    except RPCError as exc:
        if exc.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            return None, None  # no such workflow (or an id no workflow can have)
        if errors.unavailable_cause(exc) is not None:
            message = ("Temporal cannot be reached, or no worker answered in time; the record "
                       "may be behind the request")
        else:
            message = f"Temporal refused the live view ({exc.status.name})"
        return None, ErrorBody(code=errors.UNAVAILABLE, message=message)
    except (WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return None, ErrorBody(code=errors.UNAVAILABLE,
                               message="the workflow could not answer its live view")


def _schema_view(schema: DataSchema) -> dict[str, Any]:
    return schema.model_dump(mode="json", exclude_none=True)


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
