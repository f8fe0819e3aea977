"""Who may open a request's pages: the API's rule (:class:`intake.access.RequestAccess`),
fed from the session instead of headers.

A signed-in visitor's token (kept by :mod:`.session` at sign-in) is verified again here, on
every page, exactly as a bearer token on the API; an access code the visitor typed or was
shown is read from the session. The answer is the API's: None (allowed) or its refusal (404
for a stranger, which the pages show as "not found"; 429 with its wait; 503).
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from intake.access import RequestAccess, invalid_token, issuer_unavailable
from intake.pages import session
from runtime.identity import InvalidToken, IssuerUnavailable, Principal


async def principal(access: RequestAccess, request: Request) -> Principal | JSONResponse | None:
    """The signed-in visitor's verified principal; None when not signed in; the API's 401
    (or 503) when the session's token no longer verifies (expired: sign in again)."""
    token = session.bearer(request)
    if token is None:
        return None
    try:
        return await access.verifier.verify(token)
    except InvalidToken as exc:
        return invalid_token(exc.reason)
    except IssuerUnavailable:
        return issuer_unavailable()


async def check(access: RequestAccess, request: Request, reference: str, *,
                code: str | None = None) -> JSONResponse | None:
    """None when the visitor may open ``reference``'s pages (their token owns it, or they
    hold its access code: ``code`` if given, else the one the session remembers)."""
    who = await principal(access, request)
    if isinstance(who, JSONResponse):
        return who
    return await access.check_credentials(
        reference, principal=who, code=code or session.access_code(request, reference),
        client_host=request.client.host if request.client else "unknown")
