"""Every refusal in one shape, and outages answered 503 with ``Retry-After``.

The body is always ``{"code", "message", "errors"?}`` (:class:`intake.schemas.ErrorBody`):
the intake's own refusals, FastAPI's parameter validation (a bad ``Idempotency-Key``), the
router's 404 and 405 and an unexpected error all use it, so a client parses one shape.

**Outages.** When Temporal or the read model cannot be reached, a route answers
``503 temporarily_unavailable`` with ``Retry-After: RETRY_AFTER_S``, and nothing is half done:
a submission takes back the row it wrote before the start (:mod:`intake.submissions`) and no
metric counts it as created; a message into a request is sent with an update id derived from
its content (:mod:`intake.interactions`), so sending it again once Temporal is back cannot
apply it twice. :func:`unavailable_cause` says which failures are outages: the SDK's
``RPCError`` with ``UNAVAILABLE`` (no connection: the SDK has already retried it for ~10 s),
``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED`` or ``CANCELLED`` (the call's own deadline
passed: nobody answered in time), an update call that timed out, and the connection failures
of PostgreSQL. Anything else is a bug and stays a 500, in the same shape.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from intake.bodies import BodyRefused
from intake.schemas import ErrorBody

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 5
"""Seconds a client waits before sending again: a dev server restarts in ~2 s; a cluster
failover or a PostgreSQL restart takes a few more."""
UNAVAILABLE = "temporarily_unavailable"

_OUTAGE_STATUSES = frozenset({
    RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,  # the SDK's own deadline (``rpc_timeout``): "Timeout expired"
})
_POSTGRES_DOWN: tuple[type[Exception], ...] = (
    OSError,  # refused or reset connections (ConnectionError is one)
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.InterfaceError,  # a pooled connection that was closed under us
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,  # the server is stopping: "terminating connection"
)
_INVALID_CODES = {"/requests": "invalid_submission"}
"""A route's code for a 422 from FastAPI's own parameter checks (docs/api.md names them)."""
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error(status: int, code: str, message: str, *, errors: list[dict[str, Any]] | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal in the one shape; ``errors`` only when fields are at fault."""
    body: dict[str, Any] = {"code": code, "message": message}
    if errors:
        body["errors"] = errors
    return JSONResponse(status_code=status, content=body, headers=headers)


def refused(exc: BodyRefused) -> JSONResponse:
    return error(exc.status, exc.code, exc.message, errors=exc.errors)


def unavailable(what: str = "the engine's services") -> JSONResponse:
    """``503 temporarily_unavailable`` with ``Retry-After``: nothing was done, send it again."""
    return error(503, UNAVAILABLE, unavailable_message(what),
                 headers={"Retry-After": str(RETRY_AFTER_S)})


def unavailable_message(what: str) -> str:
    return (f"{what} cannot be reached just now; nothing was done. Send the same request again "
            f"in {RETRY_AFTER_S} s (with the same Idempotency-Key for a submission).")


def unavailable_cause(exc: BaseException) -> str | None:
    """Which service an outage-like failure is of (``Temporal``, ``the read model``), or None."""
    if isinstance(exc, RPCTimeoutOrCancelledError):
        return "Temporal"
    if isinstance(exc, RPCError):
        return "Temporal" if exc.status in _OUTAGE_STATUSES else None
    if isinstance(exc, _POSTGRES_DOWN):
        return "the read model"
    return None


def unavailable_body(what: str) -> ErrorBody:
    return ErrorBody(code=UNAVAILABLE, message=unavailable_message(what))


def install(app: FastAPI) -> None:
    """Answer FastAPI's and Starlette's own refusals, outages and bugs in the one shape."""

    async def validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        route = request.scope.get("route")
        code = _INVALID_CODES.get(getattr(route, "path", ""), "invalid")
        return error(422, code, "the request is not valid", errors=[
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ])

    async def http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error(exc.status_code, code, str(exc.detail),
                     headers=dict(exc.headers) if exc.headers else None)

    async def outage_or_bug(request: Request, exc: Exception) -> JSONResponse:
        cause = unavailable_cause(exc)
        if cause is not None:
            log.warning("temporarily_unavailable", cause=cause, error=type(exc).__name__,
                        path=request.url.path)
            return unavailable(cause)
        log.error("intake_failed", error=type(exc).__name__, path=request.url.path)
        return error(500, "internal_error", "the intake failed; the error is logged")

    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RPCError, outage_or_bug)
    app.add_exception_handler(RPCTimeoutOrCancelledError, outage_or_bug)
    for kind in _POSTGRES_DOWN:
        app.add_exception_handler(kind, outage_or_bug)
    app.add_exception_handler(Exception, outage_or_bug)
