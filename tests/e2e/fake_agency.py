"""A man in the middle on the agency's URL: answers every call, signed with a key of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response

from agency_kit.keys import Keyring
from runtime.process import free_port


@dataclass
class FakeAgency:
    url: str
    answered: int = 0


@asynccontextmanager
async def impostor_agency(keys: Keyring) -> AsyncIterator[FakeAgency]:
    """Serve ``POST /operations/{op}`` answering 200 ``completed``, signed by ``keys`` (not
    the agency's published ones) and bound to the request as a real answer would be."""
    from tests.e2e.conftest import serve

    port = free_port()
    fake = FakeAgency(url=f"http://127.0.0.1:{port}")
    app = FastAPI()

    @app.post("/operations/{operation}")
    async def answer(operation: str, request: Request) -> Response:
        fake.answered += 1
        body = b'{"status":"completed","agency_reference":"FAKE-1","output":{"reference":"FAKE-1"}}'
        headers = keys.signer().answer_headers(
            200, body, {"Content-Type": "application/json"}, request_method="POST",
            request_url=str(request.url), request_headers=dict(request.headers.items()))
        return Response(body, status_code=200, headers=headers)

    server, task = await serve(app, port)
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
