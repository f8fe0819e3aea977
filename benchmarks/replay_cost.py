"""CPU of the workflow code alone: replay the sample histories a bench run kept, many times.

The Temporal server, the network and the agencies are out of the picture, so the figure is
steadier on a noisy machine: it is what the worker spends in workflow code (payload
conversion and encryption, the engine's planner and bookkeeping) per request, for the
engine and the baseline side by side — run directly, as the worker does, and under the
SDK's sandbox, to show what the sandbox costs.

    .venv/bin/python -m benchmarks.replay_cost bench-results/histories [--rounds 30]
    .venv/bin/python -m benchmarks.replay_cost bench-results/histories --profile 200x5-engine

``--profile NAME`` replays that one history under cProfile and prints the top costs of the
workflow activations (the thread the SDK runs workflow code on, which a cProfile of the
whole worker process does not see).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from benchmarks.baseline_workflow import BaselineFanOut
from runtime.temporal import data_converter
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow


def _replayer(key: bytes, sandboxed: bool,
              executor: concurrent.futures.ThreadPoolExecutor | None = None) -> Replayer:
    """The engine's and the baseline's workflows, with the workers' converter and runner."""
    return Replayer(
        workflows=[CitizenRequestWorkflow, BaselineFanOut],
        data_converter=data_converter(key),
        workflow_runner=workflow_runner(sandboxed),
        workflow_task_executor=executor,
    )


async def replay_cpu_ms(history: WorkflowHistory, replayer: Replayer, rounds: int) -> list[float]:
    """Process CPU milliseconds of each of ``rounds`` replays of one history."""
    samples = []
    for _ in range(rounds):
        before = time.process_time()
        result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
        samples.append((time.process_time() - before) * 1000)
        assert result.replay_failure is None
    return samples


async def main_async(key: bytes, histories: dict[str, str], rounds: int) -> None:
    for sandboxed in (False, True):
        runner = "sandboxed" if sandboxed else "direct"
        replayer = _replayer(key, sandboxed)
        by_scenario: dict[str, dict[str, float]] = {}
        for name, text in histories.items():
            scenario, _, mode = name.rpartition("-")
            history = WorkflowHistory.from_json(name, text)
            await replay_cpu_ms(history, replayer, 2)  # warm caches
            samples = await replay_cpu_ms(history, replayer, rounds)
            by_scenario.setdefault(scenario, {})[mode] = statistics.median(samples)
            print(f"{runner:<9} {scenario:<10} {mode:<8} {len(history.events):>6} events  "
                  f"median {statistics.median(samples):8.2f} ms CPU per replay "
                  f"(min {min(samples):.2f}, {rounds} rounds)")
        for scenario, modes in by_scenario.items():
            if "engine" in modes and "baseline" in modes:
                print(f"{runner:<9} {scenario:<10} engine ÷ baseline "
                      f"{modes['engine'] / modes['baseline']:.2f}")


class ProfilingExecutor(concurrent.futures.ThreadPoolExecutor):
    """One worker thread whose every task runs under one cProfile profiler."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)  # one thread: the profiler is never shared at once
        self.profiler = cProfile.Profile()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        return super().submit(self.profiler.runcall, fn, *args, **kwargs)


async def profile_one(key: bytes, name: str, text: str, rounds: int, sandboxed: bool) -> None:
    executor = ProfilingExecutor()
    replayer = _replayer(key, sandboxed, executor)
    await replay_cpu_ms(WorkflowHistory.from_json(name, text), replayer, rounds)
    executor.shutdown()
    print(f"{name}: workflow activations of {rounds} replays "
          f"({'sandboxed' if sandboxed else 'direct'}), by own time")
    stats = pstats.Stats(executor.profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.replay_cost")
    parser.add_argument("folder", type=Path, help="the histories/ folder of a bench run")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", metavar="NAME", default=None,
                        help="profile the replays of one history, e.g. 200x5-engine")
    parser.add_argument("--sandboxed", action="store_true",
                        help="with --profile: replay under the SDK's sandbox")
    args = parser.parse_args()
    key = base64.b64decode((args.folder / "key.b64").read_text())
    histories = {p.stem: p.read_text() for p in sorted(args.folder.glob("*-*.json"))}
    if args.profile is not None:
        if args.profile not in histories:
            parser.error(f"no history {args.profile}; have: {', '.join(histories)}")
        asyncio.run(profile_one(key, args.profile, histories[args.profile], args.rounds,
                                args.sandboxed))
        return
    asyncio.run(main_async(key, histories, args.rounds))


if __name__ == "__main__":
    main()
