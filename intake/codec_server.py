"""The codec server: operators read a request's encrypted payloads in the Temporal UI, audited.

The Temporal UI (and ``temporal workflow show --codec-endpoint``) calls ``POST /codec/decode``
with the payloads it shows, in proto3 JSON, and the header ``X-Namespace``. Two doors, one
rule — no plaintext leaves without a row in the audit log:

- ``POST /codec/{decode,encode}`` with ``Authorization: Bearer <access token>``: the
  operator's own OIDC access token, as a UI with single sign-on passes it
  (``codec.passAccessToken``). The token is verified against the configured issuer, and must
  hold the operator role (``NWD_OPERATOR_ROLE``): ``401 unauthorized`` without a token or
  with one that fails verification (expired, forged, another issuer's), ``403 forbidden``
  without the role (a citizen's token), ``503`` while the issuer's keys cannot be fetched.
- ``POST /codec/{token}/{decode,encode}``, development only: the embedded dev UI cannot sign
  in, so the stack gives it an endpoint whose unguessable path carries ``NWD_CODEC_TOKEN``.
  **The dev UI publishes its codec endpoint to anyone who can reach the UI**
  (``GET /api/v1/settings``): whoever reaches the dev UI can decrypt. ``NWD_DEPLOYMENT=
  production`` removes this door (404).

**Audit.** Each decode that opens at least one sealed payload writes, before answering, one
row per workflow in ``codec_audit`` (:mod:`readmodel.codec_audit`): the subject (or
``development-codec-token``), the door, the namespace, the workflow id, how many payloads, the
browser origin; and one structlog line ``codec.decrypted``. The workflow id comes from each
payload's ``nwd-workflow-id`` metadata, which the codec authenticates (:mod:`runtime.codec`):
a row cannot be made to name another workflow. If the row cannot be written, nothing is
decrypted (503). A refused call decrypts nothing and writes no row.

**CORS.** A browser calls from the UI's origin: the origin of the configured UI URL
(``TEMPORAL_UI_URL``; on a loopback host both ``127.0.0.1`` and ``localhost`` spellings), so
a UI on another port decodes as well; any other origin gets no CORS headers (preflight 403).
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.api.common.v1 import Payloads as ProtoPayloads
from temporalio.converter import PayloadCodec

from intake import errors
from intake.bodies import read_limited
from intake.openapi import answers, codec_security, json_body
from intake.schemas import Payloads
from readmodel.codec_audit import CodecAuditLog
from runtime.codec import ENCODING, PayloadDecryptionError, bound_workflow
from runtime.identity import InvalidToken, IssuerUnavailable

log = structlog.get_logger(__name__)

MAX_CODEC_BYTES = 8 * 1024 * 1024
"""A page of history the UI decodes at once can be large; still bounded."""
PATH_TOKEN_SUBJECT = "development-codec-token"
"""The audit log's subject for the dev UI's token-in-path door (it names no person)."""
LOOPBACK = ("127.0.0.1", "localhost")


class OperatorPrincipal(Protocol):
    """Who a verified access token speaks for (``runtime.identity.Principal`` fits)."""

    @property
    def subject(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


class OperatorTokens(Protocol):
    """Verifies an access token (``runtime.identity.TokenVerifier`` fits).

    ``verify`` raises :class:`InvalidToken` for a token that cannot be trusted and
    :class:`IssuerUnavailable` while the issuer cannot be asked."""

    async def verify(self, token: str) -> OperatorPrincipal: ...


def ui_origins(ui_url: str) -> frozenset[str]:
    """The browser origins of the Temporal UI at ``ui_url`` (both loopback spellings)."""
    parts = urlsplit(ui_url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    hosts = LOOPBACK if host in LOOPBACK else (host,)
    return frozenset(f"{parts.scheme}://{h}{port}" for h in hosts)


class CodecServer:
    """The codec routes over one payload codec.

    Args:
        codec: The engine's payload codec (the key holder).
        audit: Where each decrypt is written; None: the server decrypts nothing (404).
        origins: Browser origins allowed to call (:func:`ui_origins` of the UI's URL).
        operator_tokens: Verifies operators' access tokens; None: no bearer door (401).
        operator_role: The role a token must hold.
        path_token: The dev UI's token-in-path door; None (always in production): no door.
    """

    def __init__(
        self,
        codec: PayloadCodec,
        *,
        audit: CodecAuditLog | None,
        origins: Iterable[str],
        operator_tokens: OperatorTokens | None = None,
        operator_role: str = "operator",
        path_token: str | None = None,
    ) -> None:
        self.codec = codec
        self.audit = audit
        self.origins = frozenset(origins)
        self.operator_tokens = operator_tokens
        self.operator_role = operator_role
        self.path_token = path_token or None

    def router(self) -> APIRouter:
        routes = APIRouter()
        preflight: dict[int | str, dict[str, Any]] = {
            204: {"description": "Allowed: the CORS headers for the Temporal UI's origin"},
            403: {"description": "The origin is not the Temporal UI's: no CORS headers"},
        }
        codec_answers = answers(400, 401, 403, 404, 413, 503, ok={200: Payloads}, descriptions={
            401: "No token, or one that fails verification (`unauthorized`)",
            403: "The token does not hold the operator role (`forbidden`)",
            404: "The codec server is not configured (`codec_disabled`) or no such operation",
            503: "The issuer or the audit log cannot be reached (`temporarily_unavailable`); "
                 "nothing was decrypted",
        })
        codec_body = json_body(Payloads, "Payloads in proto3 JSON, as the Temporal UI sends them.")

        @routes.options("/codec/{operation}", responses=preflight, status_code=204)
        async def codec_preflight(operation: str, request: Request) -> Response:
            return self._preflight(request)

        @routes.post("/codec/{operation}", responses=codec_answers,
                     openapi_extra={**codec_body, **codec_security()})
        async def codec_endpoint(operation: str, request: Request) -> Response:
            return await self._call(operation, request, path_token=None)

        if self.path_token is not None:
            @routes.options("/codec/{path_token}/{operation}", responses=preflight,
                            status_code=204)
            async def codec_preflight_with_path_token(
                path_token: str, operation: str, request: Request
            ) -> Response:
                return self._preflight(request)

            @routes.post("/codec/{path_token}/{operation}", responses=codec_answers,
                         openapi_extra=codec_body)
            async def codec_endpoint_with_path_token(
                path_token: str, operation: str, request: Request
            ) -> Response:
                # Development only: the dev UI cannot sign in (see the module docstring).
                return await self._call(operation, request, path_token=path_token)

        return routes

    def _cors(self, request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "")
        if origin not in self.origins:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def _preflight(self, request: Request) -> Response:
        cors = self._cors(request)
        if not cors:
            return Response(status_code=403)
        return Response(status_code=204, headers={
            **cors,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Namespace",
            "Access-Control-Max-Age": "600",
        })

    async def _caller(self, request: Request, path_token: str | None,
                      cors: dict[str, str]) -> tuple[str, str] | Response:
        """(subject, door) of an authorised caller, or the refusal to answer."""
        challenge = {**cors, "WWW-Authenticate": "Bearer"}
        if path_token is not None:
            assert self.path_token is not None
            if not hmac.compare_digest(path_token.encode(), self.path_token.encode()):
                return errors.error(401, "unauthorized", "this codec endpoint does not exist "
                                    "or its token is wrong", headers=challenge)
            return PATH_TOKEN_SUBJECT, "path_token"
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return errors.error(401, "unauthorized", "an operator's access token is required "
                                "(Authorization: Bearer <token>)", headers=challenge)
        if self.operator_tokens is None:
            return errors.error(401, "unauthorized", "this codec server accepts no access "
                                "tokens: no OIDC issuer is configured", headers=challenge)
        try:
            principal = await self.operator_tokens.verify(token.strip())
        except InvalidToken as exc:
            log.warning("codec.refused", reason="invalid_token", detail=str(exc))
            return errors.error(401, "unauthorized", f"the access token is not valid: {exc}",
                                headers={**cors, "WWW-Authenticate":
                                         'Bearer error="invalid_token"'})
        except IssuerUnavailable:
            log.warning("codec.refused", reason="issuer_unavailable")
            response = errors.unavailable("the identity provider")
            response.headers.update(cors)
            return response
        if self.operator_role not in principal.roles:
            log.warning("codec.refused", reason="not_operator", subject=principal.subject)
            return errors.error(403, "forbidden", "the token does not hold the operator role "
                                f"{self.operator_role!r}", headers=cors)
        return principal.subject, "operator_token"

    async def _call(self, operation: str, request: Request, *,
                    path_token: str | None) -> Response:
        cors = self._cors(request)
        if self.audit is None:
            return errors.error(404, "codec_disabled", "the codec server is not configured "
                                "(it decrypts nothing without its audit log)", headers=cors)
        caller = await self._caller(request, path_token, cors)
        if isinstance(caller, Response):
            return caller
        subject, via = caller
        if operation not in ("encode", "decode"):
            return errors.error(404, "unknown_operation", "use /codec/encode or /codec/decode",
                                headers=cors)
        body = await read_limited(request, MAX_CODEC_BYTES)
        if body is None:
            return errors.error(413, "body_too_large", f"the body is over {MAX_CODEC_BYTES} bytes",
                                headers=cors)
        try:
            payloads = list(json_format.Parse(body or b"{}", ProtoPayloads()).payloads)
        except json_format.ParseError:
            return errors.error(400, "malformed_payloads", 'expected {"payloads": [...]}',
                                headers=cors)
        namespace = request.headers.get("x-namespace")
        try:
            if operation == "encode":
                result = await self.codec.encode(payloads)
            else:
                bound = _bound_workflows(payloads)
                result = await self.codec.decode(payloads)
        except PayloadDecryptionError:
            log.warning("codec.failed", operation=operation, namespace=namespace, via=via)
            return errors.error(400, "codec_failed", f"the payloads could not be {operation}d",
                                headers=cors)
        if operation == "decode" and bound:
            origin = request.headers.get("origin")
            try:
                await self.audit.record(subject=subject, via=via, namespace=namespace,
                                        origin=origin, payloads_by_workflow=bound)
            except Exception as exc:
                if errors.unavailable_cause(exc) is None:
                    raise
                log.warning("codec.audit_unavailable", error=type(exc).__name__)
                response = errors.unavailable("the audit log")
                response.headers.update(cors)
                return response
            log.info("codec.decrypted", subject=subject, via=via, namespace=namespace,
                     workflows=sorted(w or "" for w in bound), payloads=sum(bound.values()))
        return JSONResponse(json_format.MessageToDict(ProtoPayloads(payloads=result)),
                            headers=cors)


def _bound_workflows(payloads: list[Payload]) -> Counter[str | None]:
    """How many sealed payloads belong to each workflow (None: sealed before binding)."""
    return Counter(bound_workflow(p) for p in payloads
                   if p.metadata.get("encoding") == ENCODING)
