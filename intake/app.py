"""The citizen front door: submit a request, follow it, and the agencies' callback endpoint.

Routes:
- ``GET  /health``
- ``GET  /services`` and ``GET /services/{id}``: what can be asked for, and its input schema
- ``POST /requests`` (header ``Idempotency-Key``): 202 with the reference; 422 with field paths
  for invalid input; 404 for an unknown service; 413 for an oversized body
- ``GET  /requests/{reference}``: status from the read model, live steps from the workflow
- ``GET  /metrics``: this process's Prometheus metrics (Temporal SDK + intake)
- ``POST /codec/encode``, ``POST /codec/decode``: the codec server the Temporal UI and CLI call
  to read encrypted payloads (``Authorization: Bearer <NWD_CODEC_TOKEN>``; CORS for the UI)
Bad input changes nothing: it is refused before any workflow starts or any row is written.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.client import Client
from temporalio.common import MetricMeter
from temporalio.converter import PayloadCodec
from temporalio.service import RPCError

from definitions.errors import UnknownService
from definitions.models import DataSchema
from definitions.submission import SubmissionInvalid
from intake.bodies import MAX_BODY_BYTES, read_limited
from intake.submissions import Submissions
from readmodel.store import ReadModel
from runtime import metric_names
from runtime.messages import RequestProgress
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)


CODEC_ORIGINS = frozenset({"http://127.0.0.1:8233", "http://localhost:8233"})
"""Browser origins (the Temporal UI) allowed to call the codec server."""
MAX_CODEC_BYTES = 8 * 1024 * 1024


def create_app(
    *,
    client: Client,
    submissions: Submissions,
    read_model: ReadModel | None,
    ui_url: str,
    namespace: str = "default",
    codec: PayloadCodec | None = None,
    codec_token: str | None = None,
    codec_origins: frozenset[str] = CODEC_ORIGINS,
    metrics: Callable[[], Awaitable[str]] | None = None,
    meter: MetricMeter | None = None,
) -> FastAPI:
    """The front door's ASGI app. Collaborators are owned by the caller (see intake.__main__).

    ``codec`` and ``codec_token`` enable the codec server (both needed); ``metrics`` returns this
    process's Prometheus text; ``meter`` counts submissions, and the requests they start when
    the front door records them (see :mod:`runtime.telemetry`).
    """
    app = FastAPI(title="No Wrong Door — intake", version="1")
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

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        if metrics is None:
            return _error(404, "metrics_disabled", "this process exports no metrics")
        return PlainTextResponse(await metrics(), media_type="text/plain; version=0.0.4")

    @app.options("/codec/{operation}")
    @app.options("/codec/{path_token}/{operation}")
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

    @app.post("/codec/{path_token}/{operation}")
    async def codec_endpoint_with_path_token(
        path_token: str, operation: str, request: Request
    ) -> Response:
        # The Temporal UI cannot send a bearer token without single sign-on; the embedded
        # stack gives it an endpoint whose unguessable path carries the token instead.
        return await codec_endpoint(operation, request, path_token)

    @app.post("/codec/{operation}")
    async def codec_endpoint(
        operation: str, request: Request, path_token: str | None = None
    ) -> Response:
        origin = request.headers.get("origin", "")
        cors = _cors(origin) if origin in codec_origins else {}
        if codec is None or not codec_token:
            return _error(404, "codec_disabled", "the codec server is not configured",
                          headers=cors)
        given = request.headers.get("authorization", "")
        if path_token is not None:
            given = f"Bearer {path_token}"
        if not hmac.compare_digest(given.encode(), f"Bearer {codec_token}".encode()):
            return _error(401, "unauthorized", "a valid codec bearer token is required",
                          headers={**cors, "WWW-Authenticate": "Bearer"})
        if operation not in ("encode", "decode"):
            return _error(404, "unknown_operation", "use /codec/encode or /codec/decode",
                          headers=cors)
        body = await request.body()
        if len(body) > MAX_CODEC_BYTES:
            return _error(413, "body_too_large", f"the body is over {MAX_CODEC_BYTES} bytes",
                          headers=cors)
        try:
            payloads = json_format.Parse(body or b"{}", Payloads())
        except json_format.ParseError:
            return _error(400, "malformed_payloads", 'expected {"payloads": [...]}',
                          headers=cors)
        try:
            if operation == "encode":
                result = await codec.encode(list(payloads.payloads))
            else:
                result = await codec.decode(list(payloads.payloads))
        except Exception:
            log.warning("codec_failed", operation=operation,
                        namespace=request.headers.get("x-namespace"))
            return _error(400, "codec_failed", f"the payloads could not be {operation}d",
                          headers=cors)
        return JSONResponse(json_format.MessageToDict(Payloads(payloads=result)),
                            headers=cors)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/services")
    async def services() -> dict[str, Any]:
        catalog = submissions.catalog
        return {
            "services": [
                {"id": s.service, "version": s.version, "title": s.title,
                 "description": s.description}
                for s in catalog.services.values()
            ]
        }

    @app.get("/services/{service_id}")
    async def service(service_id: str) -> JSONResponse:
        try:
            definition = submissions.catalog.service(service_id)
        except UnknownService as exc:
            return _error(404, "unknown_service", str(exc))
        return JSONResponse({
            "id": definition.service, "version": definition.version,
            "title": definition.title, "description": definition.description,
            "input": _schema_view(definition.input),
            "content_hash": submissions.catalog.content_hash(service_id),
        })

    @app.post("/requests")
    async def submit(request: Request) -> JSONResponse:
        body = await read_limited(request)
        if body is None:
            return _error(413, "body_too_large", f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError:
            return _error(400, "malformed_json", "the body is not valid JSON")
        if not isinstance(data, dict):
            return _error(422, "invalid_submission", "the body must be a JSON object",
                          errors=[{"loc": [], "msg": "expected an object"}])
        service_id = data.get("service")
        if not isinstance(service_id, str):
            return _error(422, "invalid_submission", "'service' is required",
                          errors=[{"loc": ["service"], "msg": "a service id is required"}])
        key = request.headers.get("Idempotency-Key") or str(uuid.uuid4())
        language = str(data.get("language") or "en")
        try:
            submitted = await submissions.submit(
                service_id, data.get("submission"), idempotency_key=key, language=language
            )
        except UnknownService as exc:
            return _error(404, "unknown_service", str(exc))
        except SubmissionInvalid as exc:
            count(service_id, "invalid")
            return _error(
                422, "invalid_submission", "the submission does not match the service's form",
                errors=[{"loc": ["submission", *e.loc], "msg": e.message} for e in exc.errors],
            )
        log.info("request_submitted", reference=submitted.reference, service=service_id,
                 created=submitted.created)
        count(service_id, "created" if submitted.created else "existing")
        return JSONResponse(
            status_code=202 if submitted.created else 200,
            content={
                "reference": submitted.reference,
                "created": submitted.created,
                "status_url": f"/requests/{submitted.reference}",
                "temporal_ui": f"{ui_url}/namespaces/{namespace}/workflows/{submitted.reference}",
            },
        )

    @app.get("/requests/{reference}")
    async def status(reference: str) -> JSONResponse:
        row = await read_model.get_request(reference) if read_model is not None else None
        live: RequestProgress | None = None
        try:
            live = await submissions.handle(reference).query(CitizenRequestWorkflow.progress)
        except RPCError:
            live = None
        if row is None and live is None:
            return _error(404, "unknown_request", f"no request {reference!r}")
        content: dict[str, Any] = {"reference": reference}
        if row is not None:
            content["record"] = json.loads(json.dumps(asdict(row), default=str))
        if live is not None:
            content["live"] = live.model_dump(mode="json", exclude={"steps": {"__all__": {
                "items": {"__all__": {"output"}}}}})
        return JSONResponse(content)

    return app


def _schema_view(schema: DataSchema) -> dict[str, Any]:
    return schema.model_dump(mode="json", exclude_none=True)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message, **extra},
                        headers=headers)


def _cors(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
