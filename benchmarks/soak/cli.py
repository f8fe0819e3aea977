"""The soak program: ``python -m benchmarks.soak`` (what ``make soak`` and ``nwd soak`` run).

It starts the whole embedded stack (PostgreSQL, the Temporal dev server, the reference
agencies, a worker, the intake) in a fresh state folder on free ports, owned by this process
(killed, its watchdog stops it all), runs :func:`benchmarks.soak.run.run_soak`, prints a short
summary and writes the report as JSON (``--json``, default ``bench-results/soak.json``; the
last line printed is ``{"report": PATH, "ok": ...}``). Exit code 0 when every end check
passed, 1 when one failed, 2 for a mistake in the options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROG = "python -m benchmarks.soak"


class UsageError(Exception):
    """A mistake in the options: one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Soak the engine on a stack of its own: requests across the catalog, "
                    "agency latencies, callbacks and 503s, worker SIGKILLs, a Temporal and a "
                    "PostgreSQL restart; then check that nothing was lost, duplicated or "
                    "stuck (the agencies' tables, Temporal, the read model).")
    parser.add_argument("--experiment", action="store_true",
                        help="the issue's experiment instead: 50 changes of address in flight "
                             "whose agencies answer by callback; worker SIGKILLed, then "
                             "Temporal and PostgreSQL each restarted")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests to send (default 1000; experiment 50)")
    parser.add_argument("--rate", type=float, default=4.0,
                        help="requests sent per second, open loop (default 4: below what "
                             "2 idle cores serve; above it the run measures a queue)")
    parser.add_argument("--kill-every", type=float, default=5.0, metavar="S",
                        help="SIGKILL the worker S seconds after each (re)start while "
                             "sending (default 5)")
    parser.add_argument("--kills", type=int, default=None, metavar="N",
                        help="at most N worker kills (default: no limit)")
    parser.add_argument("--no-temporal-restart", action="store_true",
                        help="do not restart the Temporal dev server")
    parser.add_argument("--no-postgres-restart", action="store_true",
                        help="do not restart PostgreSQL")
    parser.add_argument("--outage", type=float, default=3.0, metavar="S",
                        help="seconds a restarted server stays down (default 3)")
    parser.add_argument("--failure-rate", type=float, default=0.05, metavar="P",
                        help="share of agency calls answered 503 (default 0.05)")
    parser.add_argument("--callback-delay", type=float, default=None, metavar="S",
                        help="every callback-mode agency calls back after S seconds "
                             "(default: 1.5-3 s per agency; experiment 6)")
    parser.add_argument("--drain-timeout", type=float, default=600.0, metavar="S",
                        help="how long to wait, once everything is sent, for the last requests "
                             "to close; one still open then is stuck (default 600)")
    parser.add_argument("--seed", type=int, default=12, help="workload seed (default 12)")
    parser.add_argument("--json", type=Path, default=Path("bench-results/soak.json"),
                        help="where the report goes (default bench-results/soak.json)")
    return parser


def config_from(args: argparse.Namespace) -> Any:
    from benchmarks.soak.run import SoakConfig

    experiment = args.experiment
    requests = args.requests if args.requests is not None else (50 if experiment else 1000)
    if requests < 1:
        raise UsageError("--requests must be at least 1")
    if args.rate <= 0:
        raise UsageError("--rate must be above 0")
    if not 0.0 <= args.failure_rate < 1.0:
        raise UsageError(
            f"--failure-rate must be at least 0 and below 1, not {args.failure_rate:g}")
    if args.kill_every <= 0 or args.outage < 0 or args.drain_timeout <= 0:
        raise UsageError(
            "--kill-every and --drain-timeout must be above 0, --outage at least 0")
    if args.kills is not None and args.kills < 0:
        raise UsageError("--kills must be at least 0")
    return SoakConfig(
        mode="experiment" if experiment else "soak", requests=requests, rate=args.rate,
        kill_every_s=args.kill_every, max_kills=args.kills,
        restart_temporal=not args.no_temporal_restart,
        restart_postgres=not args.no_postgres_restart, outage_s=args.outage,
        failure_rate=args.failure_rate,
        callback_delay_s=args.callback_delay if args.callback_delay is not None
        else (6.0 if experiment else None),
        drain_timeout_s=args.drain_timeout, seed=args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args)
        return _with_stack(config, args.json.resolve())
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _with_stack(config: Any, report_path: Path) -> int:
    import os

    from benchmarks.processes import owned_stack
    from benchmarks.soak.run import run_soak
    from benchmarks.soak.workload import agency_behaviour
    from nwd.stack.stack import COMPONENTS
    from runtime.settings import DEFAULT_CATALOG_DIR

    state_dir = Path(tempfile.mkdtemp(prefix="nwd-soak-"))
    env = dict(os.environ)
    env["NWD_AGENCY_BEHAVIOUR"] = json.dumps(agency_behaviour(
        config.failure_rate, config.seed, callback_delay_s=config.callback_delay_s))
    env["NWD_LOG_FORMAT"] = "json"

    def echo(line: str) -> None:
        print(line, flush=True)

    print(f"nwd soak: {config.mode}, {config.requests} requests; state in {state_dir}",
          flush=True)
    began = time.time()
    with owned_stack(state_dir, env, lambda line: echo(f"  stack: {line}"),
                     catalog_dir=DEFAULT_CATALOG_DIR, components=COMPONENTS) as stack:
        stack_s = time.time() - began
        report = asyncio.run(run_soak(stack, config, echo))
    report["stack_start_s"] = round(stack_s, 1)
    report["state_dir"] = str(state_dir)
    report["commit"] = _git("rev-parse", "HEAD")
    report["dirty_files"] = len(_git("status", "--short").splitlines())
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(summary(report))
    print(json.dumps({"report": str(report_path), "ok": report["checks"]["ok"]}))
    return 0 if report["checks"]["ok"] else 1


def summary(report: dict[str, Any]) -> str:
    """A few lines a person reads: the end checks, then the figures."""
    figures = report["figures"]
    checks = report["checks"]
    requests = report["requests"]
    faults = report["faults"]
    lines = [
        f"soak ({report['mode']}): {requests['accepted']} of {requests['planned']} accepted, "
        f"{requests['closed']} closed in {report['duration_s']} s "
        f"({requests['submission_503s']} submissions answered 503 and resent)",
        f"faults: {faults['worker_kills']} worker SIGKILLs, {faults['temporal_restarts']} "
        f"Temporal and {faults['postgres_restarts']} PostgreSQL restarts",
        "end checks: " + ("PASSED" if checks["ok"] else "FAILED") + " — " + ", ".join(
            f"{k} {v}" for k, v in checks["counts"].items() if v or k in (
                "lost_effects", "duplicated_effects", "stuck_running",
                "read_model_mismatches", "pending_outbox_rows")),
        "verified: " + ", ".join(f"{k} {v}" for k, v in checks["verified"].items()),
    ]
    if "end_to_end_s" in figures:
        e2e = figures["end_to_end_s"]
        lines.append(f"throughput {figures.get('throughput_per_s')} requests/s; end to end "
                     f"p50 {e2e['p50']:.2f} s, p95 {e2e['p95']:.2f} s, p99 {e2e['p99']:.2f} s")
    for kind, spread in figures["recovery_by_kind"].items():
        parts = [f"{k} median {v['median']} s, max {v['max']} s"
                 for k, v in spread.items() if isinstance(v, dict)]
        lines.append(f"recovery after {kind} (x{spread['count']}): " + "; ".join(parts))
    if figures.get("callbacks_across_outages") is not None:
        lines.append(f"callbacks owed across a restart and delivered after it: "
                     f"{figures['callbacks_across_outages']}; falling due during it: "
                     f"{figures.get('callbacks_due_during_outages')}")
    lines.append("peak RSS MiB: " + ", ".join(f"{k} {v}" for k, v in
                                              report["peak_rss_mb"].items()))
    for check, examples in checks.get("examples", {}).items():
        lines.append(f"  {check}: {'; '.join(examples[:3])}")
    return "\n".join(lines)


def _git(*args: str) -> str:
    from runtime.settings import PROJECT_ROOT

    try:
        done = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                              check=False, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip()
