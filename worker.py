"""Composition root of the engine's worker: client, data converter, activities, workflow.

Run it with ``python worker.py`` or ``nwd worker``; configuration comes from the environment
(see :mod:`runtime.settings`) and is read here, once. :func:`run_worker` is the one wiring of
an engine worker process: the benchmark's worker process runs it too.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import structlog
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.agency_calls import AgencyCalls
from activities.agency_directory import AgencyDirectory
from activities.emails import CitizenEmails, SmtpServer
from activities.notifications import OperatorNotifications
from activities.recording import RequestRecording
from readmodel.citizen_emails import CitizenEmailLedger
from readmodel.migrations import apply_migrations
from readmodel.store import ReadModel, open_pool
from runtime.callback_tokens import callback_key
from runtime.process import serve_main
from runtime.settings import InvalidSettings, Settings, reveal
from runtime.telemetry import prometheus_runtime
from runtime.temporal import connect
from workflows.request_workflow import CitizenRequestWorkflow

log = structlog.get_logger(__name__)


HTTP_MAX_CONNECTIONS = 200
"""Connections to agencies the worker keeps open at most (all agencies together)."""


def agency_http_session() -> aiohttp.ClientSession:
    """The one pooled HTTP client for agency calls; the caller owns (and closes) it.

    aiohttp, chosen by measurement (docs/benchmarks.md): ~0.5 ms of CPU per call against
    3-17 ms for httpx, whose pool scans every connection on each request (encode/httpx#3215).
    Every call also sets its own timeout (the step's).
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=HTTP_MAX_CONNECTIONS, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=30),
    )


def workflow_runner(sandboxed: bool = False) -> WorkflowRunner:
    """How workflow code runs: directly (production), or inside the SDK's sandbox (tests).

    The sandbox routes every payload the workflow sends or receives through ``exec`` of a
    code string under its import guard: replaying a recorded 5-call request costs ~44 ms of
    CPU sandboxed against ~20 ms direct, and a 500-item fan-out 1.75 s against 0.63 s
    (``benchmarks/replay_cost.py``, docs/benchmarks.md) — more than the engine's own logic.
    So the worker runs workflow code directly, and determinism is guarded elsewhere: the
    test suite runs every in-process workflow under the sandbox (``NWD_WORKFLOW_SANDBOX=1``,
    where a clock, random or I/O call fails), a static check of ``workflows/``'s imports
    and calls (tests/unit/test_workflow_determinism.py), and the replay tests.

    Sandboxed, every module is passed through rather than re-imported per run (~35 ms per
    new run otherwise); ``workflows/`` holds no mutable module state.
    """
    if not sandboxed:
        return UnsandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
    )


def build_worker(
    client: Client,
    *,
    task_queue: str,
    http: aiohttp.ClientSession,
    read_model: ReadModel,
    directory: AgencyDirectory,
    callback_key: bytes | None = None,
    callback_ttl_s: int = 30 * 86400,
    callback_grace_s: int = 7 * 86400,
    max_concurrent_activities: int = 500,
    sandboxed: bool = False,
    mail: SmtpServer | None = None,
    intake_url: str = "http://127.0.0.1:8000",
) -> Worker:
    """A worker for the engine's workflow and activities.

    Args:
        client: connected client; owned by the caller.
        task_queue: the queue to poll.
        http: shared, pooled HTTP client for agency calls; owned by the caller.
        read_model: where progress and outcomes are recorded (PostgreSQL).
        directory: resolves agency URLs and keys; holds the engine's signer.
        callback_key: signs agencies' callback URLs (see runtime.callback_tokens).
        callback_ttl_s: how long the callback URL of a step without a deadline is valid.
        callback_grace_s: how long after its step's deadline a callback URL is valid.
        sandboxed: run workflow code in the SDK's sandbox (see :func:`workflow_runner`).
        mail: the SMTP server citizens' emails go through (None: none is sent, each is
            logged as not sent).
        intake_url: the front door's public URL, which the emails link to.
    """
    agency_calls = AgencyCalls(http, directory, read_model, callback_key, callback_ttl_s,
                               callback_grace_s)
    recording = RequestRecording(read_model)
    activities: list[Callable[..., Any]] = [
        agency_calls.call_agency,
        recording.record_request,
        recording.record_progress,
        OperatorNotifications(read_model).notify_operator,
        CitizenEmails(CitizenEmailLedger(read_model.pool), mail,
                      intake_url=intake_url).send_citizen_email,
    ]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[CitizenRequestWorkflow],
        activities=activities,
        workflow_runner=workflow_runner(sandboxed),
        max_concurrent_activities=max_concurrent_activities,
    )


def smtp_server(settings: Settings) -> SmtpServer | None:
    """The SMTP server of the SMTP settings (None when ``NWD_SMTP_HOST`` is unset)."""
    if not settings.smtp_host:
        return None
    return SmtpServer(settings.smtp_host, settings.smtp_port, username=settings.smtp_username,
                      password=reveal(settings.smtp_password), starttls=settings.smtp_starttls,
                      sender=settings.mail_from)


@asynccontextmanager
async def engine_resources(
    settings: Settings,
) -> AsyncIterator[tuple[aiohttp.ClientSession, ReadModel]]:
    """The HTTP client and database pool a worker needs, closed on exit."""
    if settings.database_url is None:
        raise InvalidSettings(
            ("DATABASE_URL is not set: start the stack with `nwd up`, or set it",)
        )
    pool = await open_pool(settings.database_url, max_size=10)
    try:
        await apply_migrations(pool)
        async with agency_http_session() as http:
            yield http, ReadModel(pool)
    finally:
        await pool.close()


async def run_worker(
    settings: Settings, *, on_ready: Callable[[], None] | None = None
) -> None:
    """Run an engine worker until SIGINT/SIGTERM: metrics endpoint, client, pool, HTTP client.

    Args:
        settings: the process's settings; ``worker_metrics_address`` (None: no endpoint),
            ``otel``, ``task_queue``, ``workflow_sandbox``, the database and the agencies'
            variables (``agency_env``) are used here.
        on_ready: called once the worker polls its task queue (the benchmark prints READY).

    Raises:
        InvalidSettings: the metrics address is taken, or no database is configured.
    """
    runtime = None
    if settings.worker_metrics_address is not None:
        try:
            runtime = prometheus_runtime(settings.worker_metrics_address)
        except ValueError as exc:  # the SDK's "Failed starting Prometheus exporter: ..."
            raise InvalidSettings((
                f"NWD_WORKER_METRICS_ADDRESS={settings.worker_metrics_address!r} cannot be "
                f"served ({exc}); set it to a free HOST:PORT, or off",
            )) from None
    client = await connect(settings, runtime)
    async with engine_resources(settings) as (http, read_model):
        worker = build_worker(
            client,
            task_queue=settings.task_queue,
            http=http,
            read_model=read_model,
            directory=AgencyDirectory(settings.agency_env, settings.engine_signer(),
                                      require_keys=settings.production),
            callback_key=callback_key(settings.payload_key()),
            callback_ttl_s=settings.callback_token_ttl_s,
            callback_grace_s=settings.callback_grace_s,
            sandboxed=settings.workflow_sandbox,
            mail=smtp_server(settings),
            intake_url=settings.intake_url,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with worker:
            log.info("worker_started", task_queue=settings.task_queue,
                     temporal=settings.temporal_address,
                     metrics=f"http://{settings.worker_metrics_address}/metrics"
                     if settings.worker_metrics_address else None)
            if on_ready is not None:
                on_ready()
            await stop.wait()
        log.info("worker_stopped")


def main() -> None:
    serve_main("worker", run_worker)


if __name__ == "__main__":
    main()
