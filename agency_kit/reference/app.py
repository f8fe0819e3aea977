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
(:mod:`~agency_kit.reference.operations`) and the callbacks it owes
(:mod:`~agency_kit.reference.callbacks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from agency_kit.reference.admin import admin_router
from agency_kit.reference.behaviour import AgencyBehaviour, BehaviourBook, parse_behaviours
from agency_kit.reference.callbacks import CallbackSender
from agency_kit.reference.hosted import HostedAgencies
from agency_kit.reference.operations import Operations
from agency_kit.reference.plumbing import Refusal
from definitions.models import AgencyRegistry

log = structlog.get_logger("agency_kit.reference")


class ReferenceAgencies:
    """The hosted agencies, their behaviour, operations and callbacks, with one life cycle.

    Args:
        registry: The agencies to host.
        database_url: PostgreSQL DSN; each agency gets its own schema in that database.
        secrets: Agency id -> signing secret.
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour.
        callback_max_attempts: Attempts to deliver one callback (5xx/connection errors retry).
        callback_initial_backoff_s: First wait between attempts; it doubles, up to 30 s.
    """

    def __init__(
        self,
        registry: AgencyRegistry,
        database_url: str,
        secrets: Mapping[str, str],
        behaviour: Mapping[str, AgencyBehaviour] | None = None,
        *,
        callback_max_attempts: int = 8,
        callback_initial_backoff_s: float = 0.2,
    ) -> None:
        self.hosted = HostedAgencies(registry, database_url, secrets)
        for agency_id in dict(behaviour or {}):
            if agency_id != "*" and agency_id not in self.hosted.agencies:
                raise ValueError(f"behaviour names unknown agency {agency_id!r}")
        self.book = BehaviourBook(dict(behaviour or {}))
        self.callbacks = CallbackSender(
            self.hosted,
            max_attempts=callback_max_attempts,
            initial_backoff_s=callback_initial_backoff_s,
        )
        self.operations = Operations(self.hosted, self.book, self.callbacks)

    async def start(self) -> None:
        pending = await self.hosted.open()
        await self.callbacks.start(pending)
        log.info("agencies.started", agencies=sorted(self.hosted.agencies),
                 resumed_callbacks=len(pending))

    async def stop(self) -> None:
        await self.callbacks.stop()
        await self.hosted.close()

    async def reset(self) -> None:
        """Drop scheduled callbacks, empty every table, restore start-up behaviour."""
        await self.callbacks.cancel_all()
        await self.hosted.empty_tables()
        self.book.reset()
        log.info("agencies.reset")


def create_app(
    registry: AgencyRegistry,
    database_url: str,
    secrets: Mapping[str, str],
    behaviour: Mapping[str, AgencyBehaviour | Mapping[str, Any]] | None = None,
    *,
    callback_max_attempts: int = 8,
    callback_initial_backoff_s: float = 0.2,
) -> FastAPI:
    """The reference agencies as one ASGI app (it owns its pool and HTTP client via lifespan).

    Args:
        registry: Every agency to host, each under ``/agencies/{id}``.
        database_url: PostgreSQL DSN; schemas ``agency_<id>`` are created on start-up.
        secrets: Agency id -> signing secret. An agency that declares ``auth_secret`` but has
            no secret here refuses every call with 401 (and logs why).
        behaviour: Start-up behaviour, agency id (or ``*``) -> behaviour (models or JSON).
        callback_max_attempts: Attempts to deliver one callback.
        callback_initial_backoff_s: First wait between callback attempts (doubles, max 30 s).
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
        secrets,
        parsed,
        callback_max_attempts=callback_max_attempts,
        callback_initial_backoff_s=callback_initial_backoff_s,
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

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "agencies": sorted(agencies.hosted.agencies)}

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

    app.include_router(admin_router(agencies.hosted, agencies.book, agencies.reset))
    return app
