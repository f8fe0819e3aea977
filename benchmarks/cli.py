"""The benchmark program: ``python -m benchmarks`` (what ``nwd bench`` runs).

The engine against a hand-written Temporal workflow, same run, same server; the fan-out and
chain scenarios also on DBOS (a library keeping durable workflows in PostgreSQL), on the same
embedded PostgreSQL, as the alternative a user might pick instead.

It starts its own stack (file-backed Temporal dev server with the latency dynamic config,
embedded PostgreSQL, the reference agencies serving ``benchmarks/definitions``) in a fresh
state folder on free ports — or uses the servers named by ``TEMPORAL_ADDRESS`` /
``DATABASE_URL`` — runs the scenarios (:mod:`benchmarks.harness`), prints a table, and writes
``bench.json`` and ``bench.png`` to ``--out`` (default ``bench-results/``).

The benchmark is a program of its own, not part of the command line: it measures the engine
from outside, so the engine's CLI never loads it (an import-linter contract holds that).
Options are checked before anything starts; a mistake is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.scenarios import MODES, Scenario, scenarios

if TYPE_CHECKING:
    from benchmarks.harness import Harness
    from benchmarks.processes import BenchEnv

PROG = "python -m benchmarks"


class UsageError(Exception):
    """A mistake in the options, or a request this machine cannot serve: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark the No Wrong Door engine against a hand-written Temporal "
                    "workflow (and DBOS), in one run on one server. `nwd bench` runs this "
                    "program with the same arguments.",
    )
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="smaller R, 1 repetition: a few minutes (default)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="the issue's R and N, 3 repetitions")
    parser.set_defaults(profile="quick")
    parser.add_argument("--scenario", action="append", default=None,
                        help="run only this scenario (repeatable): 200x5, 50x50, 10x500, "
                             "1x20-seq, 200x5-0ms")
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="agency latency (default 50; the -0ms scenario always uses 0)")
    parser.add_argument("--failure-rate", type=float, default=0.0, metavar="P",
                        help="share of agency calls answered 503 and retried, 0 <= P < 1 "
                             "(default 0; seeded: the same in every mode)")
    parser.add_argument("--isolate-server", action="store_true",
                        help="give the Temporal server a core of its own, everything else "
                             "the other cores (Linux, 2+ cores): shows whether the server is "
                             "the bound")
    parser.add_argument("--repetitions", type=int, default=None,
                        help="repetitions per mode (default: quick 1, full 3)")
    parser.add_argument("--requests", type=int, default=None, metavar="R",
                        help="R requests per scenario instead of the profile's (a short check)")
    parser.add_argument("--mode", action="append", default=None, choices=MODES,
                        help="run only this mode (repeatable; default: all — dbos only in the "
                             "fan-out and chain scenarios)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="where bench.json, bench.png and logs go")
    parser.add_argument("--cprofile", action="store_true",
                        help="also run the first scenario once more with the engine worker "
                             "under cProfile; prints its top costs")
    return parser


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked options: what will run."""

    scenarios: list[Scenario]
    repetitions: int


def plan(args: argparse.Namespace) -> Plan:
    """The scenarios and repetitions the options ask for.

    Raises:
        UsageError: an unknown scenario, or a count or rate out of range.
    """
    selected = scenarios(args.profile, args.latency_ms)
    if args.scenario:
        known = {s.name for s in selected}
        unknown = [n for n in args.scenario if n not in known]
        if unknown:
            raise UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(known)}")
        selected = [s for s in selected if s.name in args.scenario]
    if not 0.0 <= args.failure_rate < 1.0:
        raise UsageError(
            f"--failure-rate must be at least 0 and below 1, not {args.failure_rate:g}")
    repetitions = (args.repetitions if args.repetitions is not None
                   else 3 if args.profile == "full" else 1)
    if repetitions < 1:
        raise UsageError("--repetitions must be at least 1")
    if args.requests is not None:
        if args.requests < 1:
            raise UsageError("--requests must be at least 1")
        selected = [dataclasses.replace(s, requests=args.requests) for s in selected]
    return Plan(selected, repetitions)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit code (2: a usage mistake, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        checked = plan(args)
        return _with_stack(args, checked)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _with_stack(args: argparse.Namespace, checked: Plan) -> int:
    # Imported here, after the options are checked: a mistake is reported at once, without
    # loading Temporal, the engine and the stack.
    from benchmarks.processes import bench_stack

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="nwd-bench-"))
    failing = f", {args.failure_rate:.0%} of calls failing" if args.failure_rate else ""
    print(f"nwd bench: {args.profile} profile, {checked.repetitions} repetition(s), agencies "
          f"{args.latency_ms:g} ms{failing}; state in {state_dir}", flush=True)
    with bench_stack(state_dir, os.environ,
                     echo=lambda line: print(f"  stack: {line}", flush=True)) as env:
        return asyncio.run(_run(args, env, checked, out))


async def _run(args: argparse.Namespace, env: BenchEnv, checked: Plan, out: Path) -> int:
    from benchmarks.harness import Harness
    from benchmarks.measure import isolate_server, postmaster_pid
    from benchmarks.report import chart, table, write_json

    if env.postgres_pid is None:  # a PostgreSQL we did not start (DATABASE_URL): if local
        env = dataclasses.replace(env, postgres_pid=await postmaster_pid(env.postgres_dsn))
    if args.isolate_server:
        if env.server_pid is None:
            raise UsageError("--isolate-server needs the server this command starts "
                             "(unset TEMPORAL_ADDRESS)")
        others = [p for p in (env.agencies_pid, env.postgres_pid) if p is not None]
        try:
            server_cores, rest = isolate_server(env.server_pid, others)
        except (RuntimeError, OSError) as exc:
            raise UsageError(f"--isolate-server: {exc}") from exc
        print(f"  Temporal server on core(s) {server_cores}; worker, agencies, PostgreSQL "
              f"and this process on {rest}", flush=True)
    harness = Harness(env, out, echo=lambda line: print(line, flush=True),
                      failure_rate=args.failure_rate)
    started = time.time()
    report = await harness.run(checked.scenarios, checked.repetitions, modes=args.mode)
    print()
    print(table(report))
    config = {
        "profile": args.profile, "latency_ms": args.latency_ms,
        "repetitions": checked.repetitions,
        "failure_rate": args.failure_rate, "isolate_server": args.isolate_server,
        "scenarios": [s.name for s in checked.scenarios], "started": started,
        "requests": args.requests, "modes": args.mode or list(MODES),
        "duration_s": round(time.time() - started, 1),
        "temporal": env.temporal_address, "server_cpu_measured": env.server_pid is not None,
        "postgres_cpu_measured": env.postgres_pid is not None,
        "commit": _git("rev-parse", "HEAD"), "dirty_files": _git("status", "--short").count("\n"),
    }
    write_json(report, out / "bench.json", config)
    print(f"\nJSON: {out / 'bench.json'}")
    if chart(report, out / "bench.png"):
        print(f"chart: {out / 'bench.png'}")
    else:
        print("chart: skipped (matplotlib is not installed)")
    if args.cprofile:
        await _profile(harness, checked.scenarios[0], out)
    return 0


def _git(*args: str) -> str:
    """git's answer in the checkout (stamped into bench.json); empty without git."""
    from runtime.settings import PROJECT_ROOT

    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=False, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip() + ("\n" if args[0] == "status" and done.stdout.strip() else "")


async def _profile(harness: Harness, scenario: Scenario, out: Path) -> None:
    """One more engine run of ``scenario`` with its worker under cProfile; the top costs."""
    await harness.set_latency(scenario.latency_ms)
    path = out / "engine.prof"
    await harness.run_once(scenario, "engine", 0, cprofile=path)
    for _ in range(50):  # the worker writes its profile as it exits
        if path.exists():
            break
        await asyncio.sleep(0.1)
    listing = out / "engine-profile.txt"
    with listing.open("w") as stream:
        profile = pstats.Stats(str(path), stream=stream)
        profile.sort_stats("tottime").print_stats(30)
        profile.sort_stats("cumulative").print_stats(30)
    print(f"\nprofile of one engine run ({scenario.name}): {listing}")
    print(json.dumps({"profile": str(path)}))
