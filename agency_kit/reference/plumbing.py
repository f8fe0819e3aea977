"""HTTP plumbing of the reference agencies: refusals, canonical answers, and the request prelude.

Every contract route starts with :func:`prelude`, which checks in this order — unknown agency
(404), body over :data:`~agency_kit.contract.MAX_BODY_BYTES` (413), signature (401), unknown
operation (404), body not a JSON object (400) — so a refused request has touched nothing: the
signature is checked before anything is parsed, on the raw bytes that were signed. A refusal
is raised as :class:`Refusal` and answered by the app's exception handler in the contract's
``{"status": "rejected", "code", "reason"[, "errors"]}`` shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from agency_kit.contract import (
    IDEMPOTENCY_HEADER,
    MAX_BODY_BYTES,
    RETRY_AFTER_HEADER,
    FieldError,
    Rejected,
    Reply,
)
from agency_kit.hardening import JsonRefused, loads_bounded
from agency_kit.keys import KeysUnavailable, verify_request
from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.signing import CALL_TAG, SignatureError
from definitions.models import Agency, Operation

log = structlog.get_logger("agency_kit.reference")
_M = TypeVar("_M", bound=BaseModel)

REPLAY_HEADER = "X-NWD-Idempotent-Replay"
"""Set on an answer replayed from the idempotency store (for logs and tests, not the engine)."""


class Refusal(Exception):  # noqa: N818 - an answer, not a failure
    """A contract error answer: ``{"status": "rejected", "code", "reason"[, "errors"]}``."""

    def __init__(
        self,
        status_code: int,
        code: str,
        reason: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.body = Rejected(code=code, reason=reason, errors=errors)
        self.headers = dict(headers or {})

    def response(self) -> CanonicalJSONResponse:
        return CanonicalJSONResponse(
            self.body.model_dump(mode="json", exclude_none=True),
            status_code=self.status_code,
            headers=self.headers,
        )


class CanonicalJSONResponse(JSONResponse):
    """Sorted keys, no spaces: a replayed response is byte-for-byte the first one."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()


def dump(reply: Reply) -> dict[str, Any]:
    """A reply as its JSON body; a rejection leaves out ``errors`` when it has none."""
    return reply.model_dump(mode="json", exclude_none=isinstance(reply, Rejected))


def field_errors(exc: ValidationError) -> list[FieldError]:
    """A pydantic error as the contract's field errors (dotted paths, messages)."""
    return [
        FieldError(path=".".join(str(part) for part in err["loc"]) or "body", message=err["msg"])
        for err in exc.errors()
    ]


def known_agency(agencies: Mapping[str, Agency], agency_id: str) -> Agency:
    """The hosted agency ``agency_id``, or a 404 naming the ones there are."""
    agency = agencies.get(agency_id)
    if agency is None:
        raise Refusal(
            404,
            "unknown_agency",
            f"no agency {agency_id!r} here; known: {', '.join(sorted(agencies))}",
        )
    return agency


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 413 as soon as it passes the limit (declared or streamed)."""
    declared = request.headers.get("content-length")
    too_large = Refusal(
        413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes (1 MiB)"
    )
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise too_large
    return bytes(body)


async def check_signature(
    agency: Agency, credentials: AgencyCredentials, body: bytes, request: Request
) -> None:
    """401 unless the call is signed by the engine (RFC 9421) for this URL, body and key.

    An agency without ``keys`` in the registry takes unsigned calls. One that has keys but
    was not given its private key or the engine's keys refuses everything, and says why in the
    log: accepting unverified calls instead would fail open.
    """
    if agency.keys is None:
        return
    if credentials.engine_keys is None or agency.id not in credentials.keyrings:
        log.error("agency.keys_missing", agency=agency.id, effect="request refused with 401")
        raise Refusal(401, "bad_signature",
                      "the agency cannot verify signatures: its keys are not configured")
    try:
        await verify_request(credentials.engine_keys, request.method, str(request.url), body,
                             request.headers, tag=CALL_TAG)
    except SignatureError as exc:
        log.warning("agency.bad_signature", agency=agency.id, reason=exc.reason)
        raise Refusal(401, "bad_signature", exc.reason) from exc
    except KeysUnavailable as exc:  # not known to be bad: the engine's retry is safe
        log.warning("agency.engine_keys_unavailable", agency=agency.id)
        raise Refusal(503, "unavailable", f"{exc}; nothing was done",
                      headers={RETRY_AFTER_HEADER: "1"}) from exc


async def prelude(
    agencies: Mapping[str, Agency],
    credentials: AgencyCredentials,
    agency_id: str,
    operation_id: str,
    request: Request,
) -> tuple[Agency, Operation, dict[str, Any]]:
    """404 agency, 413 size, 401 signature, 404 operation, 400 JSON — in that order."""
    agency = known_agency(agencies, agency_id)
    body = await read_body(request)
    await check_signature(agency, credentials, body, request)
    operation = agency.operation(operation_id)
    if operation is None:
        known = ", ".join(op.id for op in agency.operations)
        raise Refusal(
            404,
            "unknown_operation",
            f"agency {agency.id!r} has no operation {operation_id!r}; known: {known}",
        )
    data = parse_body(body)
    if not isinstance(data, dict):
        raise Refusal(400, "malformed_json", "the body must be a JSON object")
    return agency, operation, data


def parse_body(body: bytes) -> Any:
    """The body as JSON within :mod:`agency_kit.hardening`'s bounds: 400 if it is not JSON,
    422 ``too_deep`` or 413 ``string_too_long`` past the bounds (never a RecursionError)."""
    try:
        return loads_bounded(body)
    except JsonRefused as exc:
        errors = [FieldError(path=".".join(str(p) for p in exc.loc) or "body",
                             message=exc.message)] if exc.loc is not None else None
        raise Refusal(exc.status, exc.code, exc.message, errors=errors) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise Refusal(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def envelope(model: type[_M], data: dict[str, Any]) -> _M:
    """The request envelope, or 422 ``invalid_request`` with the paths that do not fit."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Refusal(
            422, "invalid_request", "the request body does not follow the contract",
            errors=field_errors(exc),
        ) from exc


def required_key(request: Request) -> str:
    """The ``Idempotency-Key`` header, or 400: without it a retry could act twice."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        raise Refusal(
            400,
            "missing_idempotency_key",
            f"the {IDEMPOTENCY_HEADER} header is required:"
            " {reference}:{step}:{item or -}",
        )
    return key
