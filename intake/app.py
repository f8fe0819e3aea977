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
- ``GET  /metrics``: this process's Prometheus metrics (Temporal SDK + intake); with
  ``NWD_METRICS_TOKEN`` (always in production) only for ``Authorization: Bearer <token>``
- ``POST /codec/encode``, ``POST /codec/decode``: the codec server the Temporal UI and CLI call
  to read encrypted payloads, for operators only and audited (:mod:`intake.codec_server`)
- ``GET  /docs``: the API reference (Swagger UI served from this process, no CDN); with
  ``/openapi.json``, not served in production (:mod:`intake.docs`)
- the messages into a running request: :mod:`intake.interactions`
- the pages for people (HTML, any language, no JavaScript needed): :mod:`intake.pages`

Bad input changes nothing: it is refused before any workflow starts or any row is written.
While Temporal or the read model is down, routes answer 503 with ``Retry-After`` and nothing is
half done (:mod:`intake.errors`).
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import TypeAdapter
from temporalio.client import Client
from temporalio.common import MetricMeter

from agency_kit.hardening import harden
from agency_kit.keys import Jwks
from definitions.catalog import Catalog
from definitions.errors import UnknownService
from definitions.models import DataSchema
from definitions.submission import SubmissionInvalid
from intake import docs, errors, interactions
from intake.access import RequestAccess, unknown_request
from intake.bodies import BodyRefused, read_json, validate_model
from intake.codec_server import CodecServer, OperatorTokens, ui_origins
from intake.openapi import (
    DESCRIPTION,
    METRICS_SECURITY,
    IntakeApp,
    answers,
    citizen_security,
    json_body,
)
from intake.pages import apply, session, signin, tasks, track
from intake.pages import router as pages
from intake.pages.deps import PageDeps
from intake.pages.forms import FORM_PATHS
from intake.schemas import (
    IDEMPOTENCY_KEY_MAX,
    Health,
    RequestView,
    ServiceList,
    ServiceView,
    SubmissionEnvelope,
    Submitted,
)
from intake.status import NO_OUTPUTS, request_status
from intake.submissions import IdempotencyConflict, Submissions, build_submissions
from readmodel.access import AccessStore
from readmodel.codec_audit import CodecAuditLog
from readmodel.nonces import NonceCache
from readmodel.store import ReadModel, RequestRow
from runtime import metric_names
from runtime.callback_tokens import callback_key
from runtime.identity import TokenVerifier, verifier_for
from runtime.settings import Settings, reveal
from runtime.temporal import converter_for

log = structlog.get_logger(__name__)


_ROW = TypeAdapter(RequestRow)

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
    operator_tokens: OperatorTokens | None = None,
    verifier: TokenVerifier | None = None,
) -> FastAPI:
    """The whole front door as ``python -m intake`` serves it: :func:`create_app` and the
    routes of the messages into running requests, wired from ``settings``.

    ``verifier`` checks bearer tokens (default: one for ``settings``' issuer): citizens' and
    caseworkers' and, unless ``operator_tokens`` is given, operators' for the codec server.
    Citizens' access needs the read model (without one, no request can be followed here)."""
    if settings.production and settings.metrics_token is None and metrics is not None:
        log.warning("metrics_locked", reason="NWD_DEPLOYMENT=production without "
                    "NWD_METRICS_TOKEN: GET /metrics answers 401 to everyone")
    codec = converter_for(settings).payload_codec
    assert codec is not None
    verifier = verifier or verifier_for(settings)
    reference_key = settings.reference_secret()
    access = (RequestAccess(AccessStore(read_model.pool), verifier, reference_key)
              if read_model is not None else None)
    submissions = build_submissions(settings, client, catalog, read_model, access=access,
                                    reference_key=reference_key)
    app = create_app(
        client=client,
        submissions=submissions,
        read_model=read_model,
        access=access,
        ui_url=settings.temporal_ui_url,
        namespace=settings.temporal_namespace,
        codec_server=CodecServer(
            codec,
            audit=CodecAuditLog(read_model.pool) if read_model is not None else None,
            origins=ui_origins(settings.temporal_ui_url),
            operator_tokens=operator_tokens or verifier,
            operator_role=settings.operator_role,
            path_token=None if settings.production else reveal(settings.codec_token),
        ),
        metrics=metrics,
        metrics_token=reveal(settings.metrics_token),
        meter=meter,
        production=settings.production,
    )
    # ------------------------------------------------------------------------- the pages
    page_deps = PageDeps(settings=settings, catalog=catalog, client=client,
                         submissions=submissions, verifier=verifier, access=access,
                         read_model=read_model)
    session.install(app, reference_key, https_only=settings.production)
    app.include_router(pages.router(page_deps.catalog))
    app.include_router(apply.router(page_deps))
    app.include_router(signin.router(page_deps))
    app.include_router(track.router(page_deps))
    app.include_router(tasks.router(page_deps))
    app.mount("/static", pages.static_files(), name="static")
    nonces = NonceCache(read_model.pool) if read_model is not None else None
    app.include_router(interactions.router(
        client, interactions.CallbackVerifier(callback_key(settings.payload_key()), catalog,
                                              settings.agency_env, nonces,
                                              production=settings.production),
        access=access, caseworkers=interactions.Caseworkers(verifier)))
    engine_keys = Jwks.model_validate(settings.engine_jwks())

    @app.get("/.well-known/jwks.json", response_model=Jwks)
    async def engine_jwks() -> JSONResponse:
        """The engine's public Ed25519 keys (a JWKS, RFC 7517/8037): agencies verify the
        engine's RFC 9421-signed calls with them (docs/agency-contract.md). During a key
        rotation it holds both keys. Never a private key."""
        return JSONResponse(engine_keys.model_dump(), headers={"Cache-Control": "max-age=300"})

    return app


def create_app(
    *,
    client: Client,
    submissions: Submissions,
    read_model: ReadModel | None,
    ui_url: str,
    access: RequestAccess | None = None,
    namespace: str = "default",
    codec_server: CodecServer | None = None,
    metrics: Callable[[], Awaitable[str]] | None = None,
    metrics_token: str | None = None,
    meter: MetricMeter | None = None,
    production: bool = False,
) -> FastAPI:
    """The front door's ASGI app. Collaborators are owned by the caller (see intake.__main__).

    ``access`` decides who may follow a request (:mod:`intake.access`); without it nobody
    can here (every status is the unknown request's 404) and submissions carry no code.
    ``codec_server`` serves ``/codec`` (:mod:`intake.codec_server`); ``metrics`` returns this
    process's Prometheus text, behind ``Authorization: Bearer <metrics_token>`` when that is
    given; ``meter`` counts submissions, and the requests they start when the front door
    records them (see :mod:`runtime.telemetry`). ``production`` serves no ``/docs`` and no
    ``/openapi.json``. Every answer carries the security headers and a body must be JSON
    (:mod:`agency_kit.hardening`).
    """
    app = IntakeApp(title="No Wrong Door — intake", version="1", description=DESCRIPTION,
                    docs_url=None, redoc_url=None,
                    openapi_url=None if production else "/openapi.json")
    errors.install(app)
    harden(app, error_body=lambda code, message: {"code": code, "message": message},
           form_paths=FORM_PATHS)
    if not production:
        app.include_router(docs.router())
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
        **answers(401, 404, descriptions={
            401: "`NWD_METRICS_TOKEN` is required and was not sent (`unauthorized`)",
            404: "This process exports no metrics (`metrics_disabled`)"}),
    }, openapi_extra={"security": [{METRICS_SECURITY: []}, {}]})
    async def metrics_endpoint(request: Request) -> Response:
        if metrics is None:
            return errors.error(404, "metrics_disabled", "this process exports no metrics")
        if metrics_token is not None or production:
            # production without a token: nobody may scrape (no header can match)
            given = request.headers.get("authorization", "").encode()
            if metrics_token is None or not hmac.compare_digest(
                    given, f"Bearer {metrics_token}".encode()):
                return errors.error(401, "unauthorized", "GET /metrics needs Authorization: "
                                    "Bearer <NWD_METRICS_TOKEN>",
                                    headers={"WWW-Authenticate": "Bearer"})
        return PlainTextResponse(await metrics(), media_type="text/plain; version=0.0.4")

    if codec_server is not None:
        app.include_router(codec_server.router())

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
        responses=answers(400, 401, 404, 409, 413, 415, 422, 503,
                          ok={202: Submitted, 200: Submitted},
                          descriptions={
                              401: "A bearer token was sent and cannot be trusted "
                                   "(`invalid_token`); without one the answer carries an "
                                   "access code",
                              200: "The Idempotency-Key named an existing request",
                              404: "No such service (`unknown_service`)",
                              409: "The Idempotency-Key was first used with another body "
                                   "(`idempotency_conflict`); nothing was done",
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
        except IdempotencyConflict as exc:
            count(service_id, "conflict")
            return errors.error(409, "idempotency_conflict", str(exc))
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
        found = await request_status(submissions, read_model, reference)
        if not found.found:
            if found.unavailable is not None:
                return errors.unavailable(found.unavailable)
            return unknown_request(reference)
        row, live = found.record, found.live
        live_problem, record_problem = found.live_problem, found.record_problem
        content: dict[str, Any] = {"reference": reference}
        if row is not None:
            content["record"] = _ROW.dump_python(row, mode="json")
        if live is not None:
            content["live"] = live.model_dump(mode="json", exclude=NO_OUTPUTS)
        if live_problem is not None:
            content["live_unavailable"] = live_problem.model_dump(exclude_defaults=True)
        if record_problem is not None:
            content["record_unavailable"] = record_problem.model_dump(exclude_defaults=True)
        return JSONResponse(content)

    return app


def _schema_view(schema: DataSchema) -> dict[str, Any]:
    return schema.model_dump(mode="json", exclude_none=True)


