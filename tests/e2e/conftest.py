"""The engine wired for real: Temporal dev server, worker, PostgreSQL read model, agencies.

Each test gets its own task queue, its own engine database and its own agencies database,
and a worker running in this process on the session's real dev server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import MetricMeter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.agency_directory import AgencyDirectory
from activities.emails import SmtpServer
from agency_kit.reference.credentials import AgencyCredentials
from agency_kit.signing import CALLBACK_TAG, Signer
from definitions.catalog import Catalog
from definitions.loader import load_catalog
from intake import interactions
from intake.access import ACCESS_CODE_HEADER, RequestAccess
from intake.app import create_app
from intake.codec_server import CodecServer
from intake.submissions import Submissions, Submitted, build_submissions
from nwd.stack.mailsink import RunningSink
from readmodel.access import AccessStore
from readmodel.migrations import apply_migrations
from readmodel.nonces import NonceCache
from readmodel.store import ReadModel, open_pool
from runtime.callback_tokens import callback_key
from runtime.identity import Principal, TokenVerifier
from runtime.messages import RequestResult, request_reference
from runtime.process import free_port
from runtime.settings import DEFAULT_CATALOG_DIR, Settings
from runtime.temporal import data_converter
from tests.conftest import new_database
from tests.http import client as http_client
from tests.identity import AUDIENCE, Issuer
from tests.keys import agency_credentials, engine_signer, jwks_env
from tests.polling import eventually
from tests.tiers import mark_folder
from worker import agency_http_session, build_worker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REFERENCE_KEY = b"the e2e tests' reference key, protecting nothing real"
"""The server secret references are keyed with in these tests (``NWD_REFERENCE_KEY``)."""


def reference_for(service: str, key: str) -> str:
    """The reference a submission with idempotency key ``key`` gets in these tests."""
    return request_reference(service, key, REFERENCE_KEY)


def example(name: str) -> dict[str, Any]:
    """The submission of ``examples/<name>.json`` (what `nwd submit` sends in the demo)."""
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ drives the whole engine, and carries the ``e2e`` marker."""
    mark_folder(items, Path(__file__).parent, pytest.mark.e2e)


@dataclass(frozen=True)
class Captured:
    """One request as an agency received it: what a wiretap on the agency's link would hold."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Wiretap:
    """ASGI middleware recording every contract call the agencies receive, byte for byte."""

    def __init__(self, app: Any, base_url: str) -> None:
        self.app = app
        self.base_url = base_url
        self.calls: list[Captured] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or "/operations/" not in scope["path"]:
            await self.app(scope, receive, send)
            return
        messages: list[Any] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        self.calls.append(Captured(
            scope["method"], f"{self.base_url}{scope['path']}",
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            b"".join(m.get("body", b"") for m in messages)))
        replay = iter(messages)

        async def replayed() -> Any:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


@dataclass
class Agencies:
    """The reference agencies, served over real HTTP by uvicorn in this process."""

    url: str
    database_url: str
    env: dict[str, str]
    admin: httpx.AsyncClient
    credentials: AgencyCredentials
    """Each agency's private keys (to sign as an agency would) and the engine's public keys."""
    app: Any = field(default=None, repr=False)
    served: tuple[uvicorn.Server, asyncio.Task[None]] | None = field(default=None, repr=False)
    wiretap: Wiretap | None = field(default=None, repr=False)
    """Every contract call the agencies received (the engine's signed calls)."""

    async def stop(self) -> None:
        """Stop serving (the process of a real agency going down): connections refused;
        outcomes falling due and callbacks owed wait in its database (the outbox)."""
        assert self.served is not None, "not running"
        server, task = self.served
        self.served = None
        server.should_exit = True
        await task

    async def start(self) -> None:
        """Serve the same app again on the same port and database (after :meth:`stop`)."""
        assert self.served is None, "already running"
        self.served = await serve(self.wiretap or self.app, int(urlsplit(self.url).port or 0))

    async def set_behaviour(self, agency: str, behaviour: Mapping[str, Any]) -> None:
        response = await self.admin.put(f"/_admin/agencies/{agency}/behaviour", json=behaviour)
        response.raise_for_status()

    async def records(self, agency: str, *, reference: str | None = None) -> list[dict[str, Any]]:
        """What ``agency`` has recorded; only the request ``reference``'s, if given."""
        response = await self.admin.get(f"/_admin/agencies/{agency}/records")
        response.raise_for_status()
        body = response.json()
        rows = list(body["records"] if isinstance(body, dict) else body)
        return [r for r in rows if reference is None or r.get("reference") == reference]

    async def outbox(self, agency: str, *, reference: str | None = None) -> list[dict[str, Any]]:
        """The callbacks ``agency`` owes or has sent (its outbox rows), oldest first."""
        response = await self.admin.get(f"/_admin/agencies/{agency}/outbox",
                                         params={} if reference is None else
                                         {"reference": reference})
        response.raise_for_status()
        return list(response.json())


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        if task.done():
            task.result()  # it stopped before it started: its error, at once
        assert server.started, f"uvicorn did not start on port {port}"

    await eventually(started, within_s=4, every_s=0.02)
    return server, task


@pytest.fixture(scope="session")
def licensed_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """The catalog plus a developer's own service with a decision step (tests/e2e/catalog)."""
    folder = tmp_path_factory.mktemp("catalog")
    shutil.copy(DEFAULT_CATALOG_DIR / "agencies.yaml", folder / "agencies.yaml")
    shutil.copytree(Path(__file__).parent / "catalog" / "services", folder / "services")
    return load_catalog(folder)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG_DIR)


@asynccontextmanager
async def running_agencies(database_url: str, catalog: Catalog,
                           **options: Any) -> AsyncIterator[Agencies]:
    """The reference agencies of ``catalog`` on uvicorn (a free port), on ``database_url``;
    ``options`` go to :func:`agency_kit.reference.app.create_app` (``callback_timeout_s``...)."""
    from agency_kit.reference.app import create_app

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env: dict[str, str] = dict(jwks_env(catalog.registry, url))
    for agency in catalog.agencies.values():
        if agency.http is not None:
            env[agency.http.base_url_env] = f"{url}/agencies/{agency.id}"
    credentials = agency_credentials(catalog.registry)
    app = create_app(registry=catalog.registry, database_url=database_url,
                     credentials=credentials, **options)
    async with http_client(base_url=url, timeout=10) as admin:
        agencies = Agencies(url=url, database_url=database_url, env=env, admin=admin,
                            credentials=credentials, app=app, wiretap=(tap := Wiretap(app, url)),
                            served=await serve(tap, port))
        try:
            yield agencies
        finally:
            if agencies.served is not None:
                await agencies.stop()


@pytest_asyncio.fixture
async def agencies(postgres_server: str, catalog: Catalog) -> AsyncIterator[Agencies]:
    async with running_agencies(await new_database(postgres_server, "agencies"), catalog) as a:
        yield a


class OwnerCodes(httpx.Auth):
    """The intake client of a test acting as the requests' owner: it keeps the access code of
    every request this engine submitted (through :meth:`Engine.submit` or ``POST /requests``)
    and sends it with that request's routes, unless the call brings credentials of its own.
    A stranger is a client without it (:meth:`Engine.stranger`)."""

    requires_response_body = True

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        parts = request.url.path.split("/")
        has_own = "authorization" in request.headers or ACCESS_CODE_HEADER in request.headers
        if len(parts) > 2 and parts[1] == "requests" and parts[2] in self.codes \
                and not has_own:
            request.headers[ACCESS_CODE_HEADER] = self.codes[parts[2]]
        response = yield request
        if request.url.path == "/requests" and response.status_code == 202:
            body = response.json()
            if body.get("access_code"):
                self.codes[body["reference"]] = body["access_code"]


class OwnedSubmissions(Submissions):
    """A front door whose new requests' access codes go to the test's owner client."""

    def __init__(self, inner: Submissions, owner: OwnerCodes) -> None:
        self.__dict__.update(inner.__dict__)
        self._owner = owner

    async def submit(self, service_id: str, data: Any, *, idempotency_key: str,
                     language: str = "en", owner: Principal | None = None) -> Submitted:
        submitted = await super().submit(service_id, data, idempotency_key=idempotency_key,
                                         language=language, owner=owner)
        if submitted.access_code is not None:
            self._owner.codes[submitted.reference] = submitted.access_code
        return submitted


@dataclass
class Engine:
    client: Client
    task_queue: str
    submissions: Submissions
    read_model: ReadModel
    pool: asyncpg.Pool
    agencies: Agencies
    worker: Worker | None
    intake_url: str
    intake: httpx.AsyncClient
    callback_key: bytes
    started: list[str] = field(default_factory=list)
    database_url: str = ""
    """The engine database's DSN (for worker processes a test runs itself)."""
    encryption_key: bytes = b""
    """The payload key (the front door derives its submission digests' key from it)."""
    owner: OwnerCodes = field(default_factory=OwnerCodes)
    """The access codes the intake client sends as the requests' owner."""
    issuer: Issuer | None = None
    """The OIDC provider the intake trusts (None: no token verifies, see running_engine)."""
    reference_key: bytes = b""
    access: RequestAccess | None = None
    mail: RunningSink | None = None
    """The SMTP sink the worker sends citizens' emails to (a real aiosmtpd server)."""

    def settings(self, **values: Any) -> Settings:
        """The engine's settings (task queue, intake URL, payload key), with ``values``."""
        return Settings(**{"task_queue": self.task_queue, "intake_url": self.intake_url,
                           "encryption_key": base64.b64encode(self.encryption_key).decode(),
                           **values})

    async def submit(self, service: str, data: Any, key: str | None = None,
                     language: str = "en") -> str:
        submitted = await self.submissions.submit(
            service, data, idempotency_key=key or str(uuid.uuid4()), language=language
        )
        self.started.append(submitted.reference)
        if submitted.access_code is not None:
            self.owner.codes[submitted.reference] = submitted.access_code
        return submitted.reference

    def access_code(self, reference: str) -> str:
        return self.owner.codes[reference]

    def stranger(self) -> httpx.AsyncClient:
        """A client of the intake that holds no access code and no token."""
        return http_client(base_url=self.intake_url, timeout=30)

    async def decide(self, reference: str, step_id: str, *, approve: bool,
                     reason: str | None = None, subject: str = "caseworker",
                     roles: Sequence[str] | None = None) -> httpx.Response:
        """``POST /requests/{ref}/decisions`` with ``subject``'s token, signed in at the
        engine's issuer (the dev ``caseworker`` holds the test catalog's roles; ``roles``
        gives ``subject`` these first, through the provider's user API)."""
        assert self.issuer is not None, "running_engine(issuer=...) for decisions"
        if roles is not None:
            await self.issuer.set_roles(subject, roles)
        token = await self.issuer.sign_in(subject)
        body: dict[str, Any] = {"step_id": step_id, "approve": approve}
        if reason is not None:
            body["reason"] = reason
        return await self.intake.post(f"/requests/{reference}/decisions", json=body,
                                      headers={"Authorization": f"Bearer {token}"})

    def submissions_for(self, catalog: Catalog, *, recorded_at_submit: bool = False,
                        client: Client | None = None) -> Submissions:
        """Another front door for this engine, wired by the production factory: ``catalog``
        instead of the default one; without a read model unless ``recorded_at_submit`` (as
        the benchmark starts requests). Its requests get access codes as the intake's do,
        and :attr:`intake` sends them as their owner would."""
        return OwnedSubmissions(build_submissions(
            self.settings(), client or self.client, catalog,
            self.read_model if recorded_at_submit else None,
            reference_key=self.reference_key, access=self.access), self.owner)

    def agency_signed(self, agency: str, path: str, raw: bytes, *,
                      key: str | None = None, signer: Signer | None = None) -> dict[str, str]:
        """The headers of a POST of ``raw`` to the intake's ``path``, signed (RFC 9421) as
        ``agency`` signs its callbacks — with its own key, unless ``signer`` is given."""
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        signing = signer or self.agencies.credentials.signer(agency)
        assert signing is not None, f"{agency} has no key"
        return signing.request_headers("POST", f"{self.intake_url}{path}", raw, headers,
                                       tag=CALLBACK_TAG)

    async def post_signed(self, agency: str, path: str, raw: bytes, *, key: str | None = None,
                          signer: Signer | None = None) -> httpx.Response:
        """POST ``raw`` to the intake's ``path`` signed as :meth:`agency_signed` signs it."""
        return await self.intake.post(path, content=raw, headers=self.agency_signed(
            agency, path, raw, key=key, signer=signer))

    async def result(self, reference: str, wait_s: float = 60) -> RequestResult:
        handle = self.submissions.handle(reference)
        return await asyncio.wait_for(handle.result(), wait_s)


def engine_client(env: WorkflowEnvironment, key: bytes) -> Client:
    config = env.client.config()
    config["data_converter"] = data_converter(key)
    return Client(**config)


@pytest.fixture(scope="session")
def encryption_key() -> bytes:
    return base64.b64decode(base64.b64encode(os.urandom(32)))


@pytest.fixture
def engine_client_for_key(temporal_env: WorkflowEnvironment, encryption_key: bytes) -> Client:
    """A client of the session's dev server that seals payloads with the tests' key."""
    return engine_client(temporal_env, encryption_key)


@asynccontextmanager
async def running_engine(
    client: Client,
    *,
    postgres_server: str,
    agencies: Agencies,
    catalog: Catalog,
    encryption_key: bytes,
    task_queue: str,
    search_attributes: bool = True,
    meter: MetricMeter | None = None,
    metrics: Callable[[], Awaitable[str]] | None = None,
    codec_server: Callable[[ReadModel], CodecServer] | None = None,
    in_process_worker: bool = True,
    production: bool = False,
    issuer: Issuer | None = None,
) -> AsyncIterator[Engine]:
    """A worker, an engine database and an intake (with the callback routes) on ``client``.

    Without ``in_process_worker`` there is no worker: the test runs its own (processes it
    can kill, tests/faults/).

    The intake is wired as ``intake.__main__`` wires it: its submissions write the request's
    first row. ``meter``, ``metrics`` and ``production`` are the intake's options of the same
    names (submission counters, ``GET /metrics``, no ``/docs``); ``codec_server`` builds the
    codec server over the engine's read model (its audit log).

    Citizens' access is the production one (:mod:`intake.access`, in the engine database):
    :attr:`Engine.intake` sends each request's access code as its owner would. ``issuer`` is
    the OIDC provider whose tokens the intake trusts (decisions, signed-in citizens); without
    one it trusts an issuer nobody runs (a bearer token then answers 503).
    """
    database_url = await new_database(postgres_server, "engine")
    pool = await open_pool(database_url, max_size=5)
    await apply_migrations(pool)
    read_model = ReadModel(pool)
    key = callback_key(encryption_key)
    intake_port = free_port()
    intake_url = f"http://127.0.0.1:{intake_port}"
    settings = Settings(task_queue=task_queue, intake_url=intake_url,
                        encryption_key=base64.b64encode(encryption_key).decode())
    verifier = (issuer.verifier(leeway_s=0) if issuer is not None
                else TokenVerifier(f"http://127.0.0.1:{free_port()}", audience=AUDIENCE))
    access = RequestAccess(AccessStore(pool), verifier, REFERENCE_KEY)
    submissions = build_submissions(settings, client, catalog, read_model,
                                    search_attributes=search_attributes, access=access,
                                    reference_key=REFERENCE_KEY)
    app = create_app(client=client, submissions=submissions, read_model=read_model,
                     ui_url="http://127.0.0.1:8233", meter=meter, metrics=metrics,
                     codec_server=codec_server(read_model) if codec_server else None,
                     production=production, access=access)
    app.include_router(interactions.router(
        client, interactions.CallbackVerifier(key, catalog, agencies.env,
                                              NonceCache(read_model.pool)), access=access,
        caseworkers=interactions.Caseworkers(verifier)))
    owner = OwnerCodes()
    intake_server, intake_task = await serve(app, intake_port)
    sink = RunningSink(Path(tempfile.mkdtemp(prefix="nwd-mail-"))).__enter__()
    try:
        async with agency_http_session() as http, \
                http_client(base_url=intake_url, timeout=30, auth=owner) as intake:
            worker = build_worker(
                client, task_queue=task_queue, http=http, read_model=read_model,
                directory=AgencyDirectory(agencies.env, engine_signer()), callback_key=key,
                # the development guard: a clock, random or I/O call in workflow code fails
                sandboxed=True, mail=SmtpServer(sink.host, sink.port), intake_url=intake_url,
            ) if in_process_worker else None
            async with worker if worker is not None else contextlib.nullcontext():
                engine = Engine(
                    client=client, task_queue=task_queue, submissions=submissions,
                    read_model=read_model, pool=pool, agencies=agencies, worker=worker,
                    intake_url=intake_url, intake=intake, callback_key=key,
                    database_url=database_url, encryption_key=encryption_key,
                    owner=owner, issuer=issuer, reference_key=REFERENCE_KEY, access=access,
                    mail=sink,
                )
                yield engine
                # Leave nothing running on the shared server for the next test to trip over.
                for reference in engine.started:
                    handle = client.get_workflow_handle(reference)
                    if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                        await handle.terminate("test finished")
    finally:
        intake_server.should_exit = True
        await intake_task
        await verifier.aclose()
        await pool.close()
        sink.__exit__()
        shutil.rmtree(sink.directory, ignore_errors=True)


@pytest_asyncio.fixture
async def engine(
    temporal_env: WorkflowEnvironment,
    postgres_server: str,
    agencies: Agencies,
    catalog: Catalog,
    encryption_key: bytes,
    task_queue: str,
    oidc_issuer: Issuer,
) -> AsyncIterator[Engine]:
    async with running_engine(
        engine_client(temporal_env, encryption_key), postgres_server=postgres_server,
        agencies=agencies, catalog=catalog, encryption_key=encryption_key,
        task_queue=task_queue, issuer=oidc_issuer,
    ) as engine:
        yield engine
