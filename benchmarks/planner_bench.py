"""Micro-benchmark of the planner: time per event (start() or record()) on 500-step plans.

Run: ``.venv/bin/python benchmarks/planner_bench.py [--repeat N]``

Each shape is planned ``N`` times; every run calls start(), then records the running steps
first-in first-out until the plan finishes. Every event is timed with ``time.perf_counter``;
the table gives the median, p99 and worst event over all runs, and whether p99 < 1 ms.
Construction (precomputing dependents, the cycle check) happens once per workflow run and is
reported on its own.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections import deque
from collections.abc import Callable

from definitions.models import CallStep
from workflows.planner import Outcome, Planner, PlanStep

BUDGET_US = 1000.0


def step(step_id: str, needs: tuple[str, ...] = (), when: str | None = None) -> CallStep:
    return CallStep(id=step_id, agency="a", operation="o", needs=needs, when=when)


def fan_out() -> list[CallStep]:
    """One root, then 499 steps that all need it (the root's record readies 499 at once)."""
    return [step("root"), *(step(f"s{i}", ("root",)) for i in range(499))]


def independent() -> list[CallStep]:
    """500 steps without needs: start() readies all of them."""
    return [step(f"s{i}") for i in range(500)]


def chain() -> list[CallStep]:
    """500 steps, each needing the one before."""
    return [step("s0"), *(step(f"s{i}", (f"s{i - 1}",)) for i in range(1, 500))]


def layered() -> list[CallStep]:
    """25 layers of 20; each step needs all 20 of the layer before; every other has a `when`."""
    steps: list[CallStep] = []
    for layer in range(25):
        needs = tuple(f"l{layer - 1}-{j}" for j in range(20)) if layer else ()
        for j in range(20):
            steps.append(step(f"l{layer}-{j}", needs, when="true" if j % 2 else None))
    return steps


SHAPES: dict[str, tuple[Callable[[], list[CallStep]], Callable[[str], Outcome]]] = {
    "fan-out 1+499": (fan_out, lambda _: "completed"),
    "independent 500": (independent, lambda _: "completed"),
    "chain 500": (chain, lambda _: "completed"),
    "layered 25x20": (layered, lambda _: "completed"),
    "chain 500, s0 fails": (chain, lambda s: "failed" if s == "s0" else "completed"),
}


def always(_: PlanStep) -> bool:
    return True


def run_once(steps: list[CallStep], outcome: Callable[[str], Outcome]) -> tuple[float, list[float]]:
    clock = time.perf_counter
    begin = clock()
    planner = Planner(steps, always)
    build = clock() - begin
    times: list[float] = []
    begin = clock()
    decision = planner.start()
    times.append(clock() - begin)
    running = deque(decision.ready)
    while running:
        step_id = running.popleft()
        result = outcome(step_id)
        begin = clock()
        decision = planner.record(step_id, result)
        times.append(clock() - begin)
        running.extend(decision.ready)
    assert decision.finished, "the plan did not finish"
    return build, times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30, help="runs per shape (default 30)")
    args = parser.parse_args()

    print(
        f"planner micro-benchmark: Python {platform.python_version()}, {platform.machine()}, "
        f"{args.repeat} runs per shape, 500 steps each"
    )
    header = (
        f"{'shape':<22}{'events/run':>11}{'build µs':>10}{'median µs':>11}{'p99 µs':>9}"
        f"{'max µs':>9}  p99 < 1 ms"
    )
    print(header)
    print("-" * len(header))
    for name, (build_steps, outcome) in SHAPES.items():
        steps = build_steps()
        run_once(steps, outcome)  # warm-up
        builds: list[float] = []
        events: list[float] = []
        count = 0
        for _ in range(args.repeat):
            build, times = run_once(steps, outcome)
            builds.append(build)
            events.extend(times)
            count = len(times)
        micro = [t * 1e6 for t in events]
        p99 = percentile(micro, 0.99)
        print(
            f"{name:<22}{count:>11}{statistics.median(builds) * 1e6:>10.0f}"
            f"{statistics.median(micro):>11.2f}{p99:>9.2f}{max(micro):>9.1f}  "
            f"{'yes' if p99 < BUDGET_US else 'NO'}"
        )


if __name__ == "__main__":
    main()
