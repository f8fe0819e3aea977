"""The reference agency systems: one FastAPI app hosting every agency of a registry.

Agency ``dmv`` lives under ``/agencies/dmv`` (so its base URL is
``http://127.0.0.1:8090/agencies/dmv``) and speaks the contract of ``docs/agency-contract.md``:

- ``POST /agencies/{agency}/operations/{operation}`` — do an operation (once per key);
- ``POST /agencies/{agency}/operations/{operation}/information`` — answers to needs_information;
- ``POST /agencies/{agency}/operations/{operation}/cancel`` — withdraw an accepted call;
- ``GET /agencies/{agency}/health``.

Each agency keeps its own PostgreSQL schema (:mod:`agency_kit.reference.hosted`). Behaviour
(latency, errors, outages, callback mode, needs-information, rejections) is injected per
agency and operation (:mod:`agency_kit.reference.behaviour`) at start-up and through an admin
API that is *not* part of the contract (:mod:`agency_kit.reference.admin`).

This module only wires the parts: the request prelude and refusals
(:mod:`~agency_kit.reference.plumbing`), what each call does
(:mod:`~agency_kit.reference.operations`), the accepted calls finished when due
(:mod:`~agency_kit.reference.callbacks`) and the outbox sender delivering their callbacks
(:mod:`agency_kit.outbox`). While the database is down a call answers 503 with
``Retry-After`` (it did nothing, so the engine's retry is safe) and the loops wait for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from http_message_signatures import HTTPMessageSignaturesException
from pydantic import BaseModel

from agency_kit.contract import RETRY_AFTER_HEADER, Rejected
from agency_kit.hardening import harden
from agency_kit.keys import jwks
from agency_kit.outbox import OutboxSender, RetryPolicy
from agency_kit.reference.admin import admin_router
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourBook, parse_behaviours
from agency_kit.reference.callbacks import DueOutcomes
from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.reference.hosted import DATABASE_UNAVAILABLE, HostedAgencies
from agency_kit.reference.operations import Operations
from agency_kit.reference.plumbing import Refusal
from definitions.models import AgencyRegistry

log = structlog.get_logger("agency_kit.reference")


class ReferenceAgencies:
    """The hosted agencies, their behaviour, operations and callbacks, with one life cycle.

    Args:
        registry: The agencies to host.
        database_url: PostgreSQL DSN; each agency gets its own schema in that database.
        credentials: Each agency's private keys and the engine's public keys.
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour.
        callback_retry: Backoff between callback attempts (default :class:`RetryPolicy()`:
            0.5 s doubling to 60 s, no attempt limit).
        callback_timeout_s: The HTTP timeout of one callback attempt.
        poll_interval_s: The safety-net poll of the due work and of the outbox.
    """

    def __init__(
        self,
        registry: AgencyRegistry,
        database_url: str,
        credentials: AgencyCredentials,
        behaviour: Mapping[str, AgencyBehaviour] | None = None,
        *,
        callback_retry: RetryPolicy | None = None,
        callback_timeout_s: float = 10.0,
        poll_interval_s: float = 5.0,
    ) -> None:
        self.hosted = HostedAgencies(registry, database_url, credentials)
        for agency_id in dict(behaviour or {}):
            if agency_id != "*" and agency_id not in self.hosted.agencies:
                raise ValueError(f"behaviour names unknown agency {agency_id!r}")
        self.book = BehaviourBook(dict(behaviour or {}))
        self.callback_retry = callback_retry or RetryPolicy()
        self.callback_timeout_s = callback_timeout_s
        self.poll_interval_s = poll_interval_s
        self.due = DueOutcomes(self.hosted, poll_interval_s=poll_interval_s)
        self.sender: OutboxSender | None = None
        self.operations = Operations(self.hosted, self.book)

    async def start(self) -> None:
        """Open the database, then start delivering owed callbacks and finishing due work."""
        adopted = await self.hosted.open()
        self.sender = OutboxSender(
            self.hosted.pool,
            [store.outbox for store in self.hosted.stores.values()],
            policy=self.callback_retry,
            timeout_s=self.callback_timeout_s,
            poll_interval_s=self.poll_interval_s,
        )
        await self.sender.start()
        await self.due.start()
        log.info("agencies.started", agencies=sorted(self.hosted.agencies),
                 adopted_callbacks=adopted)

    async def stop(self) -> None:
        """Stop the loops (what is owed stays in the tables), then close the pool."""
        await self.due.stop()
        if self.sender is not None:
            await self.sender.stop()
        await self.hosted.close()

    @property
    def healthy(self) -> bool:
        """Whether both loops are alive (they end only when stopped)."""
        return self.due.running and self.sender is not None and self.sender.running

    async def reset(self) -> None:
        """Drop callbacks under way, empty every table, restore start-up behaviour."""
        if self.sender is not None:
            await self.sender.drop_in_flight()
        await self.hosted.empty_tables()
        self.book.reset()
        log.info("agencies.reset")


def create_app(
    registry: AgencyRegistry,
    database_url: str,
    credentials: AgencyCredentials,
    behaviour: Mapping[str, AgencyBehaviour | Mapping[str, Any]] | None = None,
    *,
    callback_retry: RetryPolicy | None = None,
    callback_timeout_s: float = 10.0,
    poll_interval_s: float = 5.0,
    admin: bool = True,
) -> FastAPI:
    """The reference agencies as one ASGI app (it owns its pool and HTTP client via lifespan).

    Args:
        registry: Every agency to host, each under ``/agencies/{id}``.
        database_url: PostgreSQL DSN; schemas ``agency_<id>`` are created on start-up.
        credentials: Each agency's private keys and the engine's public keys. An agency with
            ``keys`` in the registry but no private key here, or without the engine's keys,
            refuses every call with 401 (and logs why).
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour (models or JSON).
        callback_retry: Backoff between callback attempts; no attempt limit unless it sets
            ``max_age_s``.
        callback_timeout_s: The HTTP timeout of one callback attempt.
        poll_interval_s: The safety-net poll of the due work and of the outbox (a commit
            wakes both at once; the poll only matters when a notification was missed).
        admin: Serve the admin API (:mod:`agency_kit.reference.admin`); off in production.

    Every response carries the security headers, and a body must be JSON
    (:mod:`agency_kit.hardening`).
    """
    parsed = parse_behaviours(
        {
            k: v.model_dump(exclude_unset=True) if isinstance(v, BaseModel) else dict(v)
            for k, v in (behaviour or {}).items()
        }
    )
    agencies = ReferenceAgencies(
        registry,
        database_url,
        credentials,
        parsed,
        callback_retry=callback_retry,
        callback_timeout_s=callback_timeout_s,
        poll_interval_s=poll_interval_s,
    )
    operations = agencies.operations

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await agencies.start()
        try:
            yield
        finally:
            await agencies.stop()

    app = FastAPI(
        title="No Wrong Door reference agencies",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.agencies = agencies

    @app.exception_handler(Refusal)
    async def _refusal(_: Request, exc: Refusal) -> Response:
        return exc.response()

    async def _database_down(_: Request, exc: Exception) -> Response:
        log.warning("agency.database_unavailable", error=type(exc).__name__)
        return Refusal(
            503, "unavailable", "the agency's database is unavailable; nothing was done",
            headers={RETRY_AFTER_HEADER: "1"},
        ).response()

    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_down)

    @app.middleware("http")
    async def sign_answers(request: Request, call_next: Any) -> Response:
        """Every answer of a contract route is signed by its agency, bound to the request."""
        response: Response = await call_next(request)
        parts = request.url.path.split("/")
        if len(parts) < 5 or parts[1] != "agencies" or parts[3] != "operations":
            return response
        agency = agencies.hosted.agencies.get(parts[2])
        signer = agencies.hosted.signer(agency) if agency is not None else None
        if signer is None:
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        try:
            signed = signer.answer_headers(
                response.status_code, body, headers, request_method=request.method,
                request_url=str(request.url), request_headers=dict(request.headers.items()))
        except (HTTPMessageSignaturesException, ValueError) as exc:
            # a request whose own headers cannot be covered (garbled): answered unsigned,
            # which the engine never acts on
            log.warning("agency.answer_unsigned", error=type(exc).__name__)
            signed = headers
        return Response(body, status_code=response.status_code, headers=signed)

    @app.get("/.well-known/jwks.json")
    async def all_jwks() -> Response:
        """Every hosted agency's public keys (each also at ``/agencies/{id}/...``)."""
        return JSONResponse(jwks({
            kid: key for ring in agencies.hosted.credentials.keyrings.values()
            for kid, key in ring.public().items()}))

    @app.get("/agencies/{agency_id}/.well-known/jwks.json")
    async def agency_jwks(agency_id: str) -> Response:
        """The agency's public keys (JWKS), which verify its answers and callbacks."""
        agency = agencies.hosted.agency(agency_id)
        ring = agencies.hosted.credentials.keyrings.get(agency.id)
        return JSONResponse(jwks(ring.public() if ring is not None else {}),
                            headers={"Cache-Control": "max-age=300"})

    @app.get("/health")
    async def health() -> Response:
        """200 while the agencies and their loops run; 503 if a loop has died."""
        body = {"status": "ok" if agencies.healthy else "degraded",
                "agencies": sorted(agencies.hosted.agencies)}
        return JSONResponse(body, status_code=200 if agencies.healthy else 503)

    @app.get("/agencies/{agency_id}/health")
    async def agency_health(agency_id: str) -> dict[str, Any]:
        agency = agencies.hosted.agency(agency_id)
        return {"status": "ok", "agency": agency.id}

    @app.post("/agencies/{agency_id}/operations/{operation_id}")
    async def operation(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await operations.perform(agency_id, operation_id, request)

    @app.post("/agencies/{agency_id}/operations/{operation_id}/information")
    async def information(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await operations.information(agency_id, operation_id, request)

    @app.post("/agencies/{agency_id}/operations/{operation_id}/cancel")
    async def cancel(agency_id: str, operation_id: str, request: Request) -> Response:
        with structlog.contextvars.bound_contextvars(agency=agency_id, operation=operation_id):
            return await operations.cancel(agency_id, operation_id, request)

    if admin:
        app.include_router(admin_router(agencies.hosted, agencies.book, agencies.reset))
    harden(app, error_body=lambda code, message: Rejected(code=code, reason=message).model_dump(
        mode="json", exclude_none=True))
    return app
