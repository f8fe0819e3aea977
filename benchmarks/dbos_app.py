"""The benchmark's DBOS comparison: the baseline's workflow on DBOS. NOT part of the engine.

DBOS (the ``dbos`` package, MIT licensed) is the alternative a user might pick instead of
Temporal: a library for durable workflows that keeps all its state in PostgreSQL, with no
server of its own. Here it runs on the benchmark's embedded PostgreSQL (a fresh system
database per run), in its own process, measured like the Temporal workers.

It does exactly what :class:`benchmarks.baseline_workflow.BaselineFanOut` does, with the same
input (:class:`BaselineInput`): one async DBOS step per agency call, each the same POST
(:func:`post_agency_call`: same URL, contract body, headers and idempotency key) through one
shared client configured as the engine's (:func:`benchmarks.agency_call.agency_http_session`),
retried like the baseline's activities
(5 attempts, 1 s first interval, backoff 2); all calls together under ``asyncio.gather``, or
one after another for a chain. The workflow id is the request's reference, so starting it
twice runs it once.

How requests arrive. A DBOS application is a library inside the user's own service, so its
callers reach it through that service's API; here a tiny aiohttp front door:

- ``POST /workflows`` (a :class:`BaselineInput` as JSON) starts the workflow with
  ``DBOS.start_workflow_async`` and answers 202 once DBOS has recorded it durably — the
  counterpart of Temporal's start RPC;
- ``GET /workflows/{id}/result`` waits for its result — the counterpart of Temporal's result
  long-poll.

So end-to-end latency covers the same two phases as for the Temporal modes, and the harness's
cap on concurrent starts applies alike. A DBOS queue (``DBOSClient.enqueue``) was not used:
every dequeue waits for the queue's poll (1 s by default), a latency a synchronous service
would not choose, and it would only add a second hop through PostgreSQL.

``python -m benchmarks.dbos_app`` with ``DATABASE_URL`` (the system database) is the process
the harness starts: it prints ``READY <base url>`` once serving and stops on SIGTERM/SIGINT;
``--cprofile FILE`` profiles it. It imports neither Temporal nor the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web
from dbos import DBOS, DBOSConfig, SetWorkflowID, WorkflowHandleAsync

from benchmarks.agency_call import (
    BaselineCall,
    BaselineCallResult,
    BaselineInput,
    BaselineResult,
    agency_http_session,
    post_agency_call,
)

APP_NAME = "nwd-bench-dbos"

_http: aiohttp.ClientSession | None = None
"""The shared agency client of this process. DBOS steps are module-level functions, so the
client is set here by :func:`dbos_front_door` (the process's composition root) for them."""


def _agency_http() -> aiohttp.ClientSession:
    if _http is None:
        raise RuntimeError("the DBOS benchmark app is not running (see dbos_front_door)")
    return _http


@DBOS.step(name="agency_call", retries_allowed=True, max_attempts=5, interval_seconds=1.0,
           backoff_rate=2.0)
async def agency_call(call: BaselineCall, reference: str) -> BaselineCallResult:
    """One agency call; DBOS records its result in ``operation_outputs`` when it returns."""
    return await post_agency_call(_agency_http(), call, reference)


@DBOS.workflow(name="dbos_fan_out")
async def dbos_fan_out(request: BaselineInput) -> BaselineResult:
    if request.sequential:
        results = [await agency_call(call, request.reference) for call in request.calls]
    else:
        # DBOS numbers a step when it is called, before its first await, so calling the
        # steps in list order gives them the same ids in every execution (what recovery
        # needs); gather then runs them concurrently.
        results = list(await asyncio.gather(
            *[agency_call(call, request.reference) for call in request.calls]
        ))
    return BaselineResult(
        reference=request.reference,
        completed=sum(1 for r in results if r.status == "completed"),
    )


class FrontDoor:
    """The HTTP endpoints: start a workflow, wait for its result."""

    def __init__(self) -> None:
        self._handles: dict[str, WorkflowHandleAsync[BaselineResult]] = {}

    async def start(self, http_request: web.Request) -> web.Response:
        request = BaselineInput.model_validate_json(await http_request.read())
        with SetWorkflowID(request.reference):
            handle = await DBOS.start_workflow_async(dbos_fan_out, request)
        self._handles[request.reference] = handle
        return web.json_response({"workflow_id": handle.get_workflow_id()}, status=202)

    async def result(self, http_request: web.Request) -> web.Response:
        workflow_id = http_request.match_info["workflow_id"]
        # The handle of a workflow this process started awaits its task; any other (a
        # second ask, another process's workflow) polls the system database.
        handle = self._handles.pop(workflow_id, None)
        if handle is None:
            handle = await DBOS.retrieve_workflow_async(workflow_id)
        result = await handle.get_result()
        return web.Response(body=result.model_dump_json(), content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/workflows", self.start)
        app.router.add_get("/workflows/{workflow_id}/result", self.result)
        return app


@asynccontextmanager
async def dbos_front_door(
    database_url: str, http: aiohttp.ClientSession, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Launch DBOS on ``database_url`` and serve the front door; yields its base URL.

    Args:
        database_url: PostgreSQL URL of DBOS's system database (created if missing).
        http: the agency client the steps use; the caller owns (and closes) it.
        host: where to listen.
        port: where to listen; 0 picks a free port (the yielded URL names it).
    """
    global _http
    _http = http
    config: DBOSConfig = {"name": APP_NAME, "system_database_url": database_url}
    DBOS(config=config)
    # Called on the running loop on purpose: DBOS runs async workflows on the loop that
    # launched it. Launch blocks briefly (system-table migrations), before any request.
    DBOS.launch()
    runner = web.AppRunner(FrontDoor().app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
        DBOS.destroy()
        _http = None


async def serve(database_url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with agency_http_session() as http, dbos_front_door(database_url, http) as url:
        print(f"READY {url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.dbos_app")
    parser.add_argument("--cprofile", default=None)
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(serve(os.environ["DATABASE_URL"]))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
