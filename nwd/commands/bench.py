"""`nwd bench`: the engine against a hand-written Temporal workflow, same run, same server.

The fan-out and chain scenarios also run on DBOS (a library keeping durable workflows in
PostgreSQL), on the same embedded PostgreSQL, as the alternative a user might pick instead.

Starts its own stack (file-backed Temporal dev server with the latency dynamic config,
embedded PostgreSQL, the reference agencies serving ``benchmarks/definitions``) in a fresh
state folder on free ports — or uses the servers named by ``TEMPORAL_ADDRESS`` /
``DATABASE_URL`` — runs the scenarios (see :mod:`benchmarks.harness`), prints a table, and
writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``bench-results/``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nwd.cli import UserError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = subparsers.add_parser(
        "bench", help="benchmark the engine against a hand-written Temporal workflow (and DBOS)"
    )
    profile = bench.add_mutually_exclusive_group()
    profile.add_argument("--quick", dest="profile", action="store_const", const="quick",
                         help="smaller R, 1 repetition: a few minutes (default)")
    profile.add_argument("--full", dest="profile", action="store_const", const="full",
                         help="the issue's R and N, 3 repetitions")
    bench.set_defaults(profile="quick")
    bench.add_argument("--scenario", action="append", default=None,
                       help="run only this scenario (repeatable): 200x5, 50x50, 10x500, "
                            "1x20-seq, 200x5-0ms")
    bench.add_argument("--latency-ms", type=float, default=50.0,
                       help="agency latency (default 50; the -0ms scenario always uses 0)")
    bench.add_argument("--failure-rate", type=float, default=0.0, metavar="P",
                       help="share of agency calls answered 503 and retried, 0 <= P < 1 "
                            "(default 0; seeded: the same in every mode)")
    bench.add_argument("--isolate-server", action="store_true",
                       help="give the Temporal server a core of its own, everything else "
                            "the other cores (Linux, 2+ cores): shows whether the server is "
                            "the bound")
    bench.add_argument("--repetitions", type=int, default=None,
                       help="repetitions per mode (default: quick 1, full 3)")
    bench.add_argument("--requests", type=int, default=None, metavar="R",
                       help="R requests per scenario instead of the profile's (a short check)")
    bench.add_argument("--mode", action="append", default=None,
                       choices=("baseline", "engine", "dbos"),
                       help="run only this mode (repeatable; default: all — dbos only in the "
                            "fan-out and chain scenarios)")
    bench.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="where bench.json, bench.png and logs go")
    bench.add_argument("--cprofile", action="store_true",
                       help="also run the first scenario once more with the engine worker "
                            "under cProfile; prints its top costs")
    bench.set_defaults(handler=_bench)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _checkout_on_path() -> None:
    """The harness lives in the checkout's ``benchmarks/`` folder, which is not installed."""
    from runtime.settings import PROJECT_ROOT

    if not (PROJECT_ROOT / "benchmarks" / "harness.py").is_file():
        raise UserError("nwd bench runs from a source checkout (benchmarks/ is not installed)")
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))


def _bench(args: argparse.Namespace) -> int:
    _checkout_on_path()
    from benchmarks.harness import scenarios

    selected = scenarios(args.profile, args.latency_ms)
    if args.scenario:
        known = {s.name for s in selected}
        unknown = [n for n in args.scenario if n not in known]
        if unknown:
            raise UserError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(known)}")
        selected = [s for s in selected if s.name in args.scenario]
    if not 0.0 <= args.failure_rate < 1.0:
        raise UserError(f"--failure-rate must be at least 0 and below 1, not {args.failure_rate:g}")
    repetitions = (args.repetitions if args.repetitions is not None
                   else 3 if args.profile == "full" else 1)
    if repetitions < 1:
        raise UserError("--repetitions must be at least 1")
    if args.requests is not None:
        if args.requests < 1:
            raise UserError("--requests must be at least 1")
        selected = [dataclasses.replace(s, requests=args.requests) for s in selected]
    return _with_stack(args, selected, repetitions)


def _with_stack(args: argparse.Namespace, selected: list[Any], repetitions: int) -> int:
    from benchmarks.harness import DEFINITIONS, BenchEnv
    from nwd.stack import Stack
    from runtime.settings import Settings

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="nwd-bench-"))
    env = dict(os.environ)
    settings = Settings.from_environment()
    external_temporal = settings.temporal_external
    settings = Settings(
        temporal_address=settings.temporal_address,
        temporal_namespace=settings.temporal_namespace,
        database_url=settings.database_url,
        state_dir=state_dir,
        catalog_dir=DEFINITIONS,
        agencies_url=f"http://127.0.0.1:{_free_port()}",
        intake_url=f"http://127.0.0.1:{_free_port()}",
        temporal_port=_free_port(), temporal_ui_port=_free_port(),
        temporal_metrics_port=_free_port(), postgres_port=_free_port(),
        worker_metrics_address=None,
    )
    stack = Stack(settings, external_temporal=external_temporal, env=env,
                  echo=lambda line: print(f"  stack: {line}", flush=True))
    failing = f", {args.failure_rate:.0%} of calls failing" if args.failure_rate else ""
    print(f"nwd bench: {args.profile} profile, {repetitions} repetition(s), agencies "
          f"{args.latency_ms:g} ms{failing}; state in {state_dir}", flush=True)
    try:
        stack.up(["postgres", "temporal", "agencies"])
        bench_env = BenchEnv(
            temporal_address=stack.temporal_address,
            namespace=settings.temporal_namespace,
            postgres_dsn=stack.postgres_dsn,
            agencies_url=settings.agencies_url,
            key=base64.b64decode(stack.secrets().encryption_key),
            server_pid=stack.running_pid("temporal"),
            agencies_pid=stack.running_pid("agencies"),
            postgres_pid=stack.running_pid("postgres"),
        )
        return asyncio.run(_run(args, bench_env, selected, repetitions, out))
    finally:
        stack.down()


async def _run(args: argparse.Namespace, env: Any, selected: list[Any], repetitions: int,
               out: Path) -> int:
    from benchmarks.harness import Harness, isolate_server, postmaster_pid
    from benchmarks.report import chart, table, write_json

    if env.postgres_pid is None:  # a PostgreSQL we did not start (DATABASE_URL): if local
        env = dataclasses.replace(env, postgres_pid=await postmaster_pid(env.postgres_dsn))
    if args.isolate_server:
        if env.server_pid is None:
            raise UserError("--isolate-server needs the server this command starts "
                            "(unset TEMPORAL_ADDRESS)")
        others = [p for p in (env.agencies_pid, env.postgres_pid) if p is not None]
        try:
            server_cores, rest = isolate_server(env.server_pid, others)
        except (RuntimeError, OSError) as exc:
            raise UserError(f"--isolate-server: {exc}") from exc
        print(f"  Temporal server on core(s) {server_cores}; worker, agencies, PostgreSQL "
              f"and this process on {rest}", flush=True)
    harness = Harness(env, out, echo=lambda line: print(line, flush=True),
                      failure_rate=args.failure_rate)
    started = time.time()
    report = await harness.run(selected, repetitions, modes=args.mode)
    print()
    print(table(report))
    config = {
        "profile": args.profile, "latency_ms": args.latency_ms, "repetitions": repetitions,
        "failure_rate": args.failure_rate, "isolate_server": args.isolate_server,
        "scenarios": [s.name for s in selected], "started": started,
        "requests": args.requests, "modes": args.mode or ["baseline", "engine", "dbos"],
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
        await _profile(harness, selected[0], out)
    return 0


def _git(*args: str) -> str:
    import subprocess

    from runtime.settings import PROJECT_ROOT

    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=False, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip() + ("\n" if args[0] == "status" and done.stdout.strip() else "")


async def _profile(harness: Any, scenario: Any, out: Path) -> None:
    import pstats

    await harness.set_latency(scenario.latency_ms)
    path = out / "engine.prof"
    await harness.run_once(scenario, "engine", 0, cprofile=path)
    for _ in range(50):
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
