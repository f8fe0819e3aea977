"""``GET /docs``: the API reference in Swagger UI, served by the intake itself — no CDN.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a CDN, and its
``/redoc`` another; a page of the front door must load nothing from elsewhere (the CSP of
:mod:`agency_kit.hardening` allows only this origin). Swagger UI comes vendored in the PyPI
package ``swagger-ui-bundle``; the page and its start-up script are served here, with no
inline script. Not served in production (``NWD_DEPLOYMENT=production``), nor is
``/openapi.json``; ``/redoc`` is never served.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from intake import errors

ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}
"""The files of the bundle the page needs (nothing else of the package is served)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>No Wrong Door — intake API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""

START = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
                               deepLinking: true, validatorUrl: null});
});
"""
"""``validatorUrl: null``: Swagger UI would otherwise send the document to a public validator."""


def router() -> APIRouter:
    routes = APIRouter(include_in_schema=False)

    @routes.get("/docs")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @routes.get("/docs/start.js")
    async def start() -> Response:
        return Response(START, media_type="text/javascript")

    @routes.get("/docs/{asset}")
    async def asset(asset: str) -> Response:
        media_type = ASSETS.get(asset)
        if media_type is None:
            return errors.error(404, "not_found", f"no file {asset!r} under /docs")
        return FileResponse(str(swagger_ui_path / asset), media_type=media_type)

    return routes
