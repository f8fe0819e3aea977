"""`nwd dev`, `nwd up`, `nwd down`, `nwd ps`, `nwd logs`, `nwd demo`: the embedded stack.

The stack itself lives in :mod:`nwd.stack`; these commands are its user interface.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import sysconfig
import time
from pathlib import Path
from types import FrameType
from typing import Any

from nwd.cli import UserError
from nwd.stack import COMPONENTS, ComponentStatus, PortsInUseError, Stack, StackError, tail
from runtime.settings import InvalidSettings


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    components_help = f"components to start (default: all of {', '.join(COMPONENTS)})"

    dev = subparsers.add_parser(
        "dev", help="run the whole stack in the foreground until Ctrl-C",
        description="Start the embedded stack, print its URLs, stop it on Ctrl-C.",
    )
    dev.add_argument("components", nargs="*", metavar="COMPONENT", help=components_help)
    dev.set_defaults(handler=cmd_dev)

    up = subparsers.add_parser(
        "up", help="start the stack in the background",
        description="Start the embedded stack detached; `nwd down` stops it.",
    )
    up.add_argument("components", nargs="*", metavar="COMPONENT", help=components_help)
    up.set_defaults(handler=cmd_up)

    down = subparsers.add_parser("down", help="stop the stack's processes")
    down.add_argument("components", nargs="*", metavar="COMPONENT", help="default: all")
    down.set_defaults(handler=cmd_down)

    ps = subparsers.add_parser("ps", help="which components run, with their URLs")
    ps.set_defaults(handler=cmd_ps)

    logs = subparsers.add_parser("logs", help="show the end of a component's log")
    logs.add_argument("name", choices=COMPONENTS, metavar="NAME", help=", ".join(COMPONENTS))
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(handler=cmd_logs)

    demo = subparsers.add_parser(
        "demo", help="start the stack and run the demo requests through it",
        description="Start the embedded stack (detached), run the demo, leave the stack "
        "running for the Temporal UI; `make stop` stops it.",
    )
    demo.set_defaults(handler=cmd_demo)


def _stack() -> Stack:
    """The stack of this environment (a bad setting is reported by `nwd` in one line)."""
    try:
        return Stack.from_env()
    except StackError as exc:
        raise UserError(str(exc)) from exc


def _up(stack: Stack, components: list[str] | None) -> list[ComponentStatus]:
    try:
        return stack.up(components or None)
    except PortsInUseError as exc:  # a setting to change: one `nwd: error:` line per port
        raise InvalidSettings(exc.problems) from exc
    except StackError as exc:
        raise UserError(str(exc)) from exc


def _print_urls(stack: Stack) -> None:
    """Every endpoint of the running components (each port the stack opened), and the logs."""
    print()
    for what, url in stack.links():
        print(f"  {what:<18}{url}")
    print(f"  {'Logs':<18}{stack.logs_dir}/<component>.log  ({nwd_command()} logs NAME)")
    print()


def nwd_command() -> str:
    """How to call `nwd` from here: `.venv/bin/nwd` is not on PATH unless the venv is active."""
    installed = Path(sysconfig.get_path("scripts")) / "nwd"
    if shutil.which("nwd") == str(installed):
        return "nwd"
    with contextlib.suppress(ValueError):
        return str(installed.relative_to(Path.cwd()))
    return str(installed)


def cmd_up(args: argparse.Namespace) -> int:
    stack = _stack()
    _up(stack, args.components)
    _print_urls(stack)
    print(f"The stack runs in the background; stop it with `{nwd_command()} down` "
          "(or `make stop`).")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace) -> int:
    stack = _stack()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _up(stack, args.components)
        _print_urls(stack)
        print("Running; press Ctrl-C to stop.", flush=True)
        watched = {s.name for s in stack.status() if s.running and not s.external}
        while True:
            time.sleep(1.0)
            for status in stack.status():
                if status.name in watched and not status.running:
                    watched.discard(status.name)
                    print(
                        f"{status.name} exited; the end of {status.log}:\n"
                        f"{tail(stack.log_path(status.name), 20)}",
                        file=sys.stderr, flush=True,
                    )
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan processes
        try:
            stack.down()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def cmd_down(args: argparse.Namespace) -> int:
    stack = _stack()
    try:
        stopped = stack.down(args.components or None)
    except StackError as exc:
        raise UserError(str(exc)) from exc
    if not stopped:
        print("nothing of the stack was running")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    stack = _stack()
    for status in stack.status():
        if status.external:
            state = "external, " + ("reachable" if status.running else "NOT reachable")
        elif status.running:
            state = f"running (pid {status.pid})"
        else:
            state = "stopped"
        print(f"{status.name:<10} {state:<24} {status.url or ''}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    stack = _stack()
    path = stack.log_path(args.name)
    if not path.exists():
        raise UserError(f"no log for {args.name} yet ({path}); has it been started?")
    print(tail(path, args.lines))
    if args.follow:
        with path.open("r", errors="replace") as log:
            log.seek(0, 2)
            try:
                while True:
                    line = log.readline()
                    if line:
                        print(line, end="", flush=True)
                    else:
                        time.sleep(0.3)
            except KeyboardInterrupt:
                return 0
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    stack = _stack()
    _up(stack, None)
    _print_urls(stack)
    # imported only when needed: the demo pulls in the whole client side
    from nwd.demo import run_demo  # type: ignore[import-not-found, unused-ignore]

    code = asyncio.run(run_demo(stack.client_settings()))
    nwd = nwd_command()
    print(f"The stack is still running: look around in the Temporal UI ({stack.temporal_ui_url}).")
    print(f"Stop it with `make stop` (or `{nwd} down`).")
    if nwd != "nwd":
        print(f"The command line is {nwd} (or `source .venv/bin/activate`, then `nwd ...`).")
    return int(code)
