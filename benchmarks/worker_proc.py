"""One benchmark worker process: the engine's worker or the baseline's, measured alike.

``python -m benchmarks.worker_proc --mode engine|baseline --task-queue Q`` with the environment
``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``NWD_ENCRYPTION_KEY`` (base64), ``DATABASE_URL``
(engine only) and the agencies' ``NWD_BENCH_AGENCY_<N>_URL``, read once as the engine's
:class:`runtime.settings.Settings`. The engine mode runs the production worker itself
(:func:`worker.run_worker`) on the given task queue, without a metrics endpoint; the baseline
shares the engine's HTTP client (``worker.agency_http_session``), timeout, data converter and
workflow runner. Prints ``READY`` on stdout once polling; stops on SIGTERM/SIGINT.
``--cprofile FILE`` profiles the whole process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal
import sys

from temporalio.worker import Worker

from agency_kit.logs import configure_logging
from benchmarks.baseline_workflow import BaselineActivities, BaselineFanOut
from runtime.process import exit_now
from runtime.settings import InvalidSettings, Settings, print_problems
from runtime.temporal import connect


def ready() -> None:
    print("READY", flush=True)


async def run_baseline(settings: Settings) -> None:
    from worker import agency_http_session, workflow_runner

    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with agency_http_session() as http:
        worker = Worker(
            client, task_queue=settings.task_queue, workflows=[BaselineFanOut],
            activities=[BaselineActivities(http).baseline_call],
            max_concurrent_activities=500,
            # the engine's workflow runner (direct), so the comparison is about the workflow
            workflow_runner=workflow_runner(),
        )
        async with worker:
            ready()
            await stop.wait()


async def run(mode: str, settings: Settings) -> None:
    if mode == "engine":
        from worker import run_worker

        await run_worker(settings, on_ready=ready)
    else:
        await run_baseline(settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.worker_proc")
    parser.add_argument("--mode", choices=("engine", "baseline"), required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--cprofile", default=None)
    args = parser.parse_args()
    try:
        settings = Settings.from_environment().replace(
            task_queue=args.task_queue, worker_metrics_address=None
        )
    except InvalidSettings as exc:
        print_problems("benchmarks.worker_proc", exc)
        sys.exit(2)
    configure_logging(settings.log_format)
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    asyncio.run(run(args.mode, settings))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    exit_now(0)


if __name__ == "__main__":
    main()
