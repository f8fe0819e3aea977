"""CPU of the workflow code alone: replay the sample histories a bench run kept, many times.

The Temporal server, the network and the agencies are out of the picture, so the figure is
steadier on a noisy machine: it is what the worker spends in workflow code (payload
conversion and encryption, the engine's planner and bookkeeping) per request, for the
engine and the baseline side by side — run directly, as the worker does, and under the
SDK's sandbox, to show what the sandbox costs.

    .venv/bin/python -m benchmarks.replay_cost bench-results/histories [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import time
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from benchmarks.baseline_workflow import BaselineFanOut
from nwd.client import data_converter
from worker import workflow_runner
from workflows.request_workflow import CitizenRequestWorkflow


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
        replayer = Replayer(
            workflows=[CitizenRequestWorkflow, BaselineFanOut],
            data_converter=data_converter(key),
            workflow_runner=workflow_runner(sandboxed),
        )
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


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.replay_cost")
    parser.add_argument("folder", type=Path, help="the histories/ folder of a bench run")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    key = base64.b64decode((args.folder / "key.b64").read_text())
    histories = {p.stem: p.read_text() for p in sorted(args.folder.glob("*-*.json"))}
    asyncio.run(main_async(key, histories, args.rounds))


if __name__ == "__main__":
    main()
