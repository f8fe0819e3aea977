"""`nwd`: the command line of No Wrong Door.

Each group of commands lives in its own module under :mod:`nwd.commands` and exposes
``register(subparsers)``; a command returns its exit code. A user mistake is reported as one
line on stderr (``nwd: error: ...``), never a traceback — a bad setting too: one line per
variable, naming it and its rule (:class:`runtime.settings.InvalidSettings`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from runtime.process import exit_now

COMMAND_MODULES = ("definitions", "stack", "requests", "report", "mail", "bench", "soak")


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nwd",
        description="No Wrong Door: one citizen submission, every agency, exactly once.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"nwd.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"nwd.commands.{name}":
                continue  # a command group not built (yet) in this checkout
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from runtime.settings import InvalidSettings, print_problems

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except UserError as exc:
        print(f"nwd: error: {exc}", file=sys.stderr)
        return 2
    except InvalidSettings as exc:
        print_problems("nwd", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def run() -> None:
    """Console-script entry point; leaves through :func:`runtime.process.exit_now`."""
    exit_now(main())


if __name__ == "__main__":
    run()
