"""Real reference agencies on a real uvicorn server and real PostgreSQL, plus a signing client.

``agencies`` is one app per test module on its own database, reset before each test;
``start_agencies`` starts a fresh app (with start-up behaviour or options) on the test's own
fresh ``database_url``; ``receiver`` starts a small callback receiver standing in for the
engine's callback endpoint, and ``counting_receiver`` one that can misbehave
(:mod:`tests.integration.agency_kit.receiver`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agency_kit.keys import StaticKeys, jwks, private_jwk
from agency_kit.reference import create_app
from agency_kit.reference.credentials import AgencyCredentials, write_keys_file
from agency_kit.signing import CALLBACK_TAG, Signer, Verified, Verifier
from definitions.loader import load_registry_file
from definitions.models import AgencyRegistry
from tests.conftest import new_database
from tests.http import client as http_client
from tests.integration.agency_kit.receiver import CountingReceiver
from tests.keys import ENGINE, agency_credentials
from tests.polling import eventually

REGISTRY_PATH = Path(__file__).with_name("agencies.yaml")

ADDRESS = {"line1": "1 High Street", "city": "Springfield", "postcode": "AB1 2CD", "country": "GB"}
DMV_INPUT = {"licence_number": "ABC12345", "full_name": "Ada Lovelace", "new_address": ADDRESS}


def registry() -> AgencyRegistry:
    return load_registry_file(REGISTRY_PATH)


def credentials() -> AgencyCredentials:
    """Fresh keys for the test registry's agencies but ``locked`` (whose keys are missing)."""
    return agency_credentials(registry(), without=frozenset({"locked"}))


class Server:
    """An ASGI app served by uvicorn in this event loop, on a free port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        task = self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))

        async def started() -> None:
            if task.done():
                task.result()  # it stopped before it started: its error, at once
            assert self.server.started, "uvicorn did not start"

        await eventually(started, within_s=5, every_s=0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None and not self.task.done():
            await self.task
        self.sock.close()


@dataclass
class Agencies:
    """A running reference-agencies app and a client that speaks the contract to it."""

    url: str
    database_url: str
    http: httpx.AsyncClient
    credentials: AgencyCredentials
    server: Server | None = None

    async def stop(self) -> None:
        """Stop the app (as a process stopping would: owed work stays in its tables)."""
        assert self.server is not None, "only apps from start_agencies can be stopped here"
        await self.server.stop()

    def base(self, agency: str) -> str:
        return f"{self.url}/agencies/{agency}"

    async def post(
        self,
        agency: str,
        path: str,
        body: dict[str, Any] | bytes,
        *,
        key: str | None = None,
        signed: bool = True,
        signer: Signer | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a contract call signed as the engine signs it (``signer``: another signer;
        ``signed=False``: unsigned); ``key=None`` derives the key from the body."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        url = f"{self.base(agency)}{path}"
        sent = {"Content-Type": "application/json"}
        if key is None and isinstance(body, dict):
            key = f"{body.get('reference')}:{body.get('step')}:{body.get('item') or '-'}"
        if key:
            sent["Idempotency-Key"] = key
        if isinstance(body, dict) and "reference" in body:
            sent["X-NWD-Reference"] = str(body["reference"])
        if signed:
            sent = (signer or ENGINE.signer()).request_headers("POST", url, raw, sent)
        sent.update(headers or {})
        return await self.http.post(url, content=raw, headers=sent)

    async def call(
        self, agency: str, operation: str, body: dict[str, Any], **kwargs: Any
    ) -> httpx.Response:
        return await self.post(agency, f"/operations/{operation}", body, **kwargs)

    async def behave(self, agency: str, behaviour: dict[str, Any]) -> None:
        response = await self.http.put(
            f"{self.url}/_admin/agencies/{agency}/behaviour", json=behaviour
        )
        assert response.status_code == 200, response.text

    async def records(self, agency: str, **params: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"{self.url}/_admin/agencies/{agency}/records", params=params
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def outbox(self, agency: str, **params: str) -> list[dict[str, Any]]:
        """The agency's outbox rows, through the admin API."""
        response = await self.http.get(
            f"{self.url}/_admin/agencies/{agency}/outbox", params=params
        )
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows

    async def count(self, agency: str, table: str) -> int:
        """Rows in the agency's own table, read straight from PostgreSQL."""
        schema = "agency_" + agency.replace("-", "_")
        conn = await asyncpg.connect(self.database_url)
        try:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))
        finally:
            await conn.close()


def request_body(reference: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "reference": reference or f"REQ-{uuid.uuid4().hex[:8]}",
        "step": "dmv",
        "item": None,
        "input": dict(DMV_INPUT),
        "callback_url": None,
        "language": "en",
    }
    body.update(overrides)
    return body


StartAgencies = Callable[..., Awaitable[Agencies]]


@pytest_asyncio.fixture
async def start_agencies(database_url: str) -> AsyncIterator[StartAgencies]:
    """Start the reference agencies (call it with behaviour/keys overrides)."""
    servers: list[Server] = []
    clients: list[httpx.AsyncClient] = []

    async def start(
        behaviour: dict[str, Any] | None = None,
        keys: AgencyCredentials | None = None,
        **options: Any,
    ) -> Agencies:
        creds = keys or credentials()
        app = create_app(registry(), database_url, creds, behaviour, **options)
        server = Server(app)
        await server.start()
        servers.append(server)
        client = http_client(timeout=10.0)
        clients.append(client)
        return Agencies(url=server.url, database_url=database_url, http=client,
                        credentials=creds, server=server)

    yield start
    for client in clients:
        await client.aclose()
    for server in servers:
        if server.task is not None and not server.task.done():
            await server.stop()


@pytest_asyncio.fixture(scope="module")
async def shared_agencies(postgres_server: str) -> AsyncIterator[Agencies]:
    """One app on its own database for a whole module (starting one per test is slow)."""
    database_url = await new_database(postgres_server)
    creds = credentials()
    server = Server(create_app(registry(), database_url, creds))
    await server.start()
    async with http_client(timeout=10.0) as client:
        yield Agencies(url=server.url, database_url=database_url, http=client, credentials=creds)
    await server.stop()


@pytest_asyncio.fixture
async def agencies(shared_agencies: Agencies) -> Agencies:
    """The module's reference agencies, reset: empty tables, start-up behaviour, no callbacks."""
    response = await shared_agencies.http.post(f"{shared_agencies.url}/_admin/reset")
    assert response.status_code == 200, response.text
    return shared_agencies


@dataclass
class Receiver:
    """A stand-in for the engine's callback endpoint: records what arrives."""

    url: str
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = field(default_factory=asyncio.Queue)
    fail_first: int = 0
    status_after: int = 200
    attempts: int = 0


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = FastAPI()
    state: dict[str, Receiver] = {}

    @app.post("/callbacks/{token}")
    async def callback(token: str, request: Request) -> JSONResponse:
        rec = state["r"]
        rec.attempts += 1
        body = await request.body()
        if rec.attempts <= rec.fail_first:
            return JSONResponse({"error": "try later"}, status_code=503)
        await rec.received.put(({k.lower(): v for k, v in request.headers.items()}, body))
        return JSONResponse({"ok": True}, status_code=rec.status_after)

    server = Server(app)
    await server.start()
    state["r"] = Receiver(url=f"{server.url}/callbacks/{uuid.uuid4().hex}")
    try:
        yield state["r"]
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def counting_receiver() -> AsyncIterator[CountingReceiver]:
    """A callback endpoint on a free loopback port that counts and can misbehave."""
    receiver = CountingReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


def verify_callback(
    agency_keys: AgencyCredentials, agency: str, url: str, raw: bytes, headers: dict[str, str]
) -> Verified:
    """Check a callback as the engine does: signed by ``agency``'s own key, for ``url``."""
    keys = StaticKeys(agency_keys.keyrings[agency].public())
    return Verifier(keys.get).verify_request("POST", url, raw, headers, tag=CALLBACK_TAG,
                                             require_nonce=True)


@pytest_asyncio.fixture
async def engine_jwks_url() -> AsyncIterator[str]:
    """The tests' engine public keys served as a JWKS over real HTTP (the intake's route)."""
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def published() -> JSONResponse:
        return JSONResponse(jwks(ENGINE.public()))

    server = Server(app)
    await server.start()
    try:
        yield f"{server.url}/.well-known/jwks.json"
    finally:
        await server.stop()


def write_agency_keys(path: Path, agency_keys: AgencyCredentials) -> Path:
    """The keys file a reference agencies process reads (NWD_AGENCY_KEYS_FILE), mode 0600."""
    write_keys_file(path, {agency: [private_jwk(kid, key) for kid, key in ring.keys]
                           for agency, ring in agency_keys.keyrings.items()})
    return path
