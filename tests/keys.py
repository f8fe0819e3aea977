"""Test keys: the engine's and each agency's Ed25519 keys, made fresh for each test process.

Real keys, real signatures (agency_kit.signing): only where they come from is the tests'.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agency_kit.keys import Keyring, StaticKeys, jwks, load_private_key, new_key, private_jwk
from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.signing import CALLBACK_TAG, Signer
from definitions.models import AgencyRegistry
from runtime.process import free_port
from tests.polling import eventually


def keyring(owner: str) -> Keyring:
    """One fresh key under a kid naming ``owner``."""
    return Keyring((load_private_key(_jwk(f"{owner}-{uuid.uuid4().hex[:8]}")),))


def _jwk(kid: str) -> str:
    return json.dumps(new_key(kid))


ENGINE = keyring("engine")
"""The engine's keyring in tests: the worker signs with it, the agencies verify with it."""


def engine_signer() -> Signer:
    return ENGINE.signer()


def engine_keys() -> StaticKeys:
    """The engine's public keys as the agencies know them."""
    return StaticKeys(ENGINE.public())


def agency_credentials(
    registry: AgencyRegistry, *, without: frozenset[str] = frozenset(),
    engine: StaticKeys | None = None,
) -> AgencyCredentials:
    """A fresh key for each agency with ``keys`` in ``registry`` (but those ``without``)."""
    rings: dict[str, Keyring] = {
        agency.id: keyring(agency.id) for agency in registry.agencies
        if agency.keys is not None and agency.id not in without}
    return AgencyCredentials(keyrings=rings, engine_keys=engine or engine_keys())


def jwks_env(registry: AgencyRegistry, agencies_url: str) -> Mapping[str, str]:
    """Each agency's JWKS variable -> the reference agencies' JWKS URL of that agency."""
    return {agency.keys.jwks_url_env: f"{agencies_url}/agencies/{agency.id}/.well-known/jwks.json"
            for agency in registry.agencies
            if agency.keys is not None and agency.keys.jwks_url_env}


@asynccontextmanager
async def serving_jwks(keys: Keyring) -> AsyncIterator[str]:
    """``keys``' public halves served as a JWKS over real HTTP (uvicorn, a free port); its URL."""
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def published() -> JSONResponse:
        return JSONResponse(jwks(keys.public()))

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        assert server.started

    try:
        await eventually(started, within_s=5, every_s=0.02)
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json"
    finally:
        server.should_exit = True
        await task


def agency_signed(keys: Keyring, url: str, raw: bytes) -> dict[str, str]:
    """The headers of a callback of ``raw`` to ``url``, signed by ``keys`` as an agency signs."""
    return keys.signer().request_headers(
        "POST", url, raw, {"Content-Type": "application/json"}, tag=CALLBACK_TAG)


def engine_env() -> dict[str, str]:
    """The variables a worker process signs with: the tests' engine key (a private JWK)."""
    return {"NWD_SIGNING_KEY": json.dumps(private_jwk(*ENGINE.signing))}
