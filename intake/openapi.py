"""The intake's OpenAPI document: complete, generated from the routes and their models.

FastAPI documents what it parses itself. The intake's routes read their bodies by hand (a size
limit and strict JSON come first, see :mod:`intake.bodies`), so each declares its body with
:func:`json_body` and its answers with :func:`answers`, and :class:`IntakeApp` adds what
FastAPI cannot know: the body models' schemas, the codec token's security scheme, and no
FastAPI-shaped 422 where the intake never answers one (its own 422s use
:class:`intake.schemas.ErrorBody`, see :mod:`intake.errors`).

The document is committed as ``docs/openapi/intake.json``; a test keeps it equal to what the
app serves at ``GET /openapi.json``. Regenerate it with ``python -m intake.openapi``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from intake.errors import RETRY_AFTER_S
from intake.schemas import REQUEST_BODIES, ErrorBody

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "docs" / "openapi" / "intake.json"
CODEC_SECURITY = "operatorToken"
METRICS_SECURITY = "metricsToken"
BEARER_SECURITY = "bearerToken"
ACCESS_CODE_SECURITY = "accessCode"

DESCRIPTION = """\
The front door of No Wrong Door: submit a citizen's request, follow it, send it answers,
decisions and agencies' callbacks, and (for operators) metrics and the codec server.

Every refusal has the shape `{"code", "message", "errors"?}` and changes nothing. Bodies are
strict JSON of at most 256 KiB (no `NaN`, no key twice, at most 32 levels deep), and no text in
them, value or key, may hold the NUL character or an unpaired surrogate (422, with its path).
While
Temporal or the read model cannot be reached, routes answer `503 temporarily_unavailable` with
`Retry-After`: send the same request again (the same `Idempotency-Key` for a submission).
The prose reference is docs/api.md."""

_REASONS: dict[int, str] = {
    200: "OK",
    202: "Accepted: a new request was started",
    204: "No content",
    400: "The body is not JSON (`malformed_json`, `malformed_payloads`, `codec_failed`)",
    401: "Not authenticated",
    403: "Not allowed: the token lacks the role (`forbidden`), or the origin is not the UI's",
    404: "Not found",
    409: "The request is not waiting for this message (`not_expected`)",
    415: "The body is not JSON (`unsupported_media_type`): send Content-Type: application/json",
    410: "The request has finished (`request_finished`)",
    413: "The body is larger than the limit (`body_too_large`)",
    422: "The body or a parameter does not fit, with the fields at fault (`errors`)",
    429: "Too many refused attempts (`too_many_attempts`): wait `Retry-After` seconds",
    503: "Temporal or the read model cannot be reached (`temporarily_unavailable`); "
         "nothing was done",
}

RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {
        "description": f"Seconds to wait before sending the same request again ({RETRY_AFTER_S}).",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def answers(*statuses: int, ok: dict[int, type[BaseModel] | None] | None = None,
            descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for a route: ``ok`` statuses with their model, refusals as
    :class:`ErrorBody`, 503 with ``Retry-After``."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status, model in (ok or {}).items():
        entry: dict[str, Any] = {"description": (descriptions or {}).get(status)
                                 or _REASONS[status]}
        if model is not None:
            entry["model"] = model
        declared[status] = entry
    for status in statuses:
        entry = {"model": ErrorBody,
                 "description": (descriptions or {}).get(status) or _REASONS[status]}
        if status == 503:
            entry["headers"] = RETRY_AFTER_HEADER
        declared[status] = entry
    return declared


def json_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """FastAPI ``openapi_extra=`` declaring a required JSON body of ``model``."""
    assert model in REQUEST_BODIES, f"add {model.__name__} to intake.schemas.REQUEST_BODIES"
    return {"requestBody": {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _ref(model)}}},
    }}


def codec_security() -> dict[str, Any]:
    """``openapi_extra=`` of a codec route that takes the operator's access token."""
    return {"security": [{CODEC_SECURITY: []}]}


def citizen_security() -> dict[str, Any]:
    """``openapi_extra=`` of a citizen's route: the owner's token or the access code."""
    return {"security": [{BEARER_SECURITY: []}, {ACCESS_CODE_SECURITY: []}]}


def caseworker_security() -> dict[str, Any]:
    """``openapi_extra=`` of a caseworker's route: a token with the step's role."""
    return {"security": [{BEARER_SECURITY: []}]}


def _ref(model: type[BaseModel]) -> str:
    return f"#/components/schemas/{model.__name__}"


class IntakeApp(FastAPI):
    """FastAPI with the intake's additions to the document (see the module docstring)."""

    _document: tuple[tuple[int, ...], dict[str, Any]] | None = None

    def openapi(self) -> dict[str, Any]:
        routes = tuple(id(route) for route in self.routes)
        if self._document is None or self._document[0] != routes:
            self.openapi_schema = None
            self._document = (routes, self._complete(super().openapi()))
        return self._document[1]

    def _complete(self, document: dict[str, Any]) -> dict[str, Any]:
        components = document.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        _, bodies = models_json_schema([(m, "validation") for m in REQUEST_BODIES],
                                       ref_template="#/components/schemas/{model}")
        for name, schema in bodies.get("$defs", {}).items():
            if name in schemas and schemas[name] != schema:
                raise AssertionError(f"two different schemas are named {name!r}")
            schemas[name] = schema
        components["securitySchemes"] = {
            CODEC_SECURITY: {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "The operator's OIDC access token; it must hold the operator "
                               "role (NWD_OPERATOR_ROLE). Every decrypt is audited.",
            },
            METRICS_SECURITY: {
                "type": "http", "scheme": "bearer",
                "description": "NWD_METRICS_TOKEN (required in production).",
            },
            BEARER_SECURITY: {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": ("An access token of the trusted OpenID Connect issuer "
                                "(NWD_OIDC_ISSUER, audience NWD_OIDC_AUDIENCE): a citizen's "
                                "owns the requests it submits; a caseworker's roles claim "
                                "(NWD_OIDC_ROLES_CLAIM) must hold the decision step's role."),
            },
            ACCESS_CODE_SECURITY: {
                "type": "apiKey", "in": "header", "name": "X-Access-Code",
                "description": ("The one-time access code of a request submitted without "
                                "an account (the 202 answer's `access_code`)."),
            },
        }
        for path in document.get("paths", {}).values():
            for operation in path.values():
                # FastAPI adds its own 422 to every route with parameters; where the route
                # declares none, a parameter cannot fail (a plain string in the path).
                responses = operation.get("responses", {})
                declared = responses.get("422", {})
                ref = declared.get("content", {}).get("application/json", {}).get(
                    "schema", {}).get("$ref", "")
                if ref.endswith("/HTTPValidationError"):
                    del responses["422"]
                # A refusal is JSON even where success is not (GET /metrics: text/plain).
                for status, answer in responses.items():
                    content = answer.get("content", {})
                    if status[0] in "45" and "application/json" not in content and content:
                        answer["content"] = {"application/json": next(iter(content.values()))}
        for unused in ("HTTPValidationError", "ValidationError"):
            if not _referenced(document, unused):
                schemas.pop(unused, None)
        return dict(sorted(document.items()))


def _referenced(document: dict[str, Any], name: str) -> bool:
    return f'"#/components/schemas/{name}"' in json.dumps(document.get("paths", {}))


def render(document: dict[str, Any]) -> str:
    """The document as the committed file holds it (stable key order, trailing newline)."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


async def document() -> dict[str, Any]:
    """The document of the app ``python -m intake`` serves (built without any server)."""
    from temporalio.client import Client

    from definitions.loader import load_catalog
    from intake.app import build_app
    from runtime.settings import DEFAULT_CATALOG_DIR, Settings

    # The document depends on no setting; a throwaway key only lets the codec be built.
    settings = Settings.build(encryption_key=base64.b64encode(bytes(32)).decode(),
                              codec_token="unused",  # development: every route is served
                              reference_key="unused" * 8)
    client = await Client.connect("127.0.0.1:1", lazy=True)  # never called: nothing runs
    app = build_app(settings, client=client, catalog=load_catalog(DEFAULT_CATALOG_DIR),
                    read_model=None)
    return app.openapi()


def main() -> None:
    """Write the document to ``docs/openapi/intake.json`` (``-`` as argument: to stdout)."""
    text = render(asyncio.run(document()))
    if sys.argv[1:] == ["-"]:
        sys.stdout.write(text)
        return
    OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
    OPENAPI_FILE.write_text(text)
    print(f"wrote {OPENAPI_FILE}")


if __name__ == "__main__":
    main()
