"""Signing in and out: the OpenID Connect authorization-code flow, for citizens and caseworkers.

::

    GET /sign-in?next=/my-requests ──302──▶ {issuer}/authorize (client NWD_PAGES_CLIENT_ID,
        state, nonce, PKCE S256)         │  the person signs in at the issuer
    GET /sign-in/callback?code&state ◀───┘
        Authlib: state checked, code exchanged (with the PKCE verifier; a public client has no
        secret), the ID token's signature, issuer, audience and nonce checked
        the ACCESS token verified by deps.verifier — exactly as an API bearer token
        session.sign_in(subject, name, roles) ──303──▶ next (a path of this site only)
    POST /sign-out (CSRF) ──303──▶ /

No OAuth or JWT code is written here: the flow is Authlib's Starlette client
(``authlib.integrations.starlette_client.OAuth``), discovered from ``NWD_OIDC_ISSUER``; the
token is checked by :class:`runtime.identity.TokenVerifier`. The session keeps the access token
and verifies it again on every page that uses it (:mod:`intake.pages.access`): once it has
expired, the visitor is asked to sign in again.
"""

from __future__ import annotations

import warnings
from typing import Any

import authlib.deprecate
import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from i18n import catalogs

with warnings.catch_warnings():
    # Authlib (1.6+) warns on import that its httpx integration will move to "httpx2": a
    # notice for its own future, printed to every process's stderr otherwise.
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError
from i18n.catalogs import gettext as _
from intake.pages import refusals, session
from intake.pages.deps import PageDeps
from intake.pages.render import language_of
from intake.pages.router import safe_next
from runtime.identity import DISCOVERY_PATH, InvalidToken, IssuerUnavailable

log = structlog.get_logger(__name__)

CLIENT_NAME = "nwd"
NEXT_KEY = "sign_in_next"
CALLBACK_PATH = "/sign-in/callback"


def oauth_client(deps: PageDeps) -> Any:
    """The pages' OAuth client at the trusted issuer (public: PKCE S256, no secret)."""
    oauth = OAuth()
    oauth.register(
        CLIENT_NAME,
        client_id=deps.settings.pages_client_id,
        server_metadata_url=deps.settings.oidc_issuer.rstrip("/") + DISCOVERY_PATH,
        client_kwargs={"scope": "openid profile", "code_challenge_method": "S256",
                       "token_endpoint_auth_method": "none", "timeout": 10},
    )
    return oauth.create_client(CLIENT_NAME)


def redirect_uri(deps: PageDeps) -> str:
    return str(deps.settings.intake_url).rstrip("/") + CALLBACK_PATH


def router(deps: PageDeps) -> APIRouter:
    routes = APIRouter(include_in_schema=False)
    client = oauth_client(deps)

    def problem(request: Request, status: int) -> Response:
        with catalogs.use(language_of(request)):
            if status == 503:
                return refusals.message(
                    request, 503, _("Sign-in is not available just now"),
                    _("We cannot reach the sign-in service. Try again in a minute."),
                    headers={"Retry-After": "30"})
            return refusals.message(
                request, 400, _("Sign-in did not finish"),
                _("The sign-in could not be completed, or it was started too long ago. "
                  "Please try again."), link=("/sign-in", _("Sign in")))

    @routes.get("/sign-in")
    async def sign_in(request: Request, next: str = "/my-requests") -> Response:
        request.session[NEXT_KEY] = safe_next(next, "/my-requests")
        try:
            redirect: Response = await client.authorize_redirect(request, redirect_uri(deps))
        except (httpx.HTTPError, OAuthError, ValueError) as exc:
            log.warning("sign_in_unavailable", error=type(exc).__name__)
            return problem(request, 503)
        return redirect

    @routes.get(CALLBACK_PATH)
    async def callback(request: Request) -> Response:
        try:
            token = await client.authorize_access_token(request)
        except OAuthError as exc:
            log.info("sign_in_refused", error=exc.error)
            return problem(request, 400)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("sign_in_unavailable", error=type(exc).__name__)
            return problem(request, 503)
        access_token = token.get("access_token") if isinstance(token, dict) else None
        if not isinstance(access_token, str):
            return problem(request, 400)
        try:
            principal = await deps.verifier.verify(access_token)
        except InvalidToken as exc:
            log.info("sign_in_refused", reason=exc.reason)
            return problem(request, 400)
        except IssuerUnavailable:
            return problem(request, 503)
        claims = token.get("userinfo") or {}
        name = claims.get("name") if isinstance(claims, dict) else None
        session.sign_in(request, token=access_token, subject=principal.subject,
                        name=name if isinstance(name, str) and name else principal.subject,
                        roles=tuple(sorted(principal.roles)))
        log.info("signed_in", roles=len(principal.roles))
        target = safe_next(request.session.pop(NEXT_KEY, None), "/my-requests")
        return RedirectResponse(target, status_code=303)

    @routes.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        form = await refusals.posted(request)
        if isinstance(form, Response):
            return form
        session.sign_out(request)
        return RedirectResponse("/", status_code=303)

    return routes
