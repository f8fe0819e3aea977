"""One benchmark worker process: the engine's worker or the baseline's, measured alike.

``python -m benchmarks.worker_proc --mode engine|baseline --task-queue Q`` with the environment
``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``NWD_ENCRYPTION_KEY`` (base64), ``DATABASE_URL``
(engine only) and the agencies' ``NWD_BENCH_AGENCY_<N>_URL``. Both modes share the engine's
HTTP client (``worker.agency_http_session``), timeout and data converter. Prints ``READY`` on
stdout once polling; stops on SIGTERM/SIGINT. ``--cprofile FILE`` profiles the whole process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import signal
import sys

from temporalio.client import Client
from temporalio.worker import Worker

from benchmarks.baseline_workflow import BaselineActivities, BaselineFanOut
from runtime.logs import configure_logging
from runtime.temporal import data_converter


async def run(mode: str, task_queue: str) -> None:
    from activities.agency_directory import AgencyDirectory
    from readmodel.migrations import apply_migrations
    from readmodel.store import ReadModel, open_pool
    from worker import agency_http_session, build_worker, workflow_runner

    env = os.environ
    client = await Client.connect(
        env["TEMPORAL_ADDRESS"],
        namespace=env.get("TEMPORAL_NAMESPACE", "default"),
        data_converter=data_converter(base64.b64decode(env["NWD_ENCRYPTION_KEY"])),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    pool = None
    async with agency_http_session() as http:
        if mode == "engine":
            pool = await open_pool(env["DATABASE_URL"], max_size=10)
            await apply_migrations(pool)
            worker = build_worker(
                client, task_queue=task_queue, http=http, read_model=ReadModel(pool),
                directory=AgencyDirectory(dict(env)),
            )
        else:
            worker = Worker(
                client, task_queue=task_queue, workflows=[BaselineFanOut],
                activities=[BaselineActivities(http).baseline_call],
                max_concurrent_activities=500,
                # the engine's workflow runner (direct), so the comparison is about the workflow
                workflow_runner=workflow_runner(),
            )
        async with worker:
            print("READY", flush=True)
            await stop.wait()
    if pool is not None:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.worker_proc")
    parser.add_argument("--mode", choices=("engine", "baseline"), required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--cprofile", default=None)
    args = parser.parse_args()
    configure_logging(os.environ.get("NWD_LOG_FORMAT", "json"))
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(run(args.mode, args.task_queue))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # sdk-python #300: avoid crashes at interpreter exit


if __name__ == "__main__":
    main()
