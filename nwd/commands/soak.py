"""`nwd soak`: run the soak program (``python -m benchmarks.soak``) with the same arguments.

Like `nwd bench` (:mod:`nwd.commands.bench`): the soak measures and checks the engine from
outside, on a stack of its own, so its code is never loaded into the command line; this
command only starts it and returns its exit code (0: every end check passed, 1: one failed).
``nwd soak --help`` prints the program's own options. From a source checkout only.
"""

from __future__ import annotations

import argparse

from nwd.cli import UserError
from nwd.commands.bench import launch
from runtime.settings import PROJECT_ROOT

PROGRAM = "benchmarks.soak"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    soak = subparsers.add_parser(
        "soak",
        help="soak the engine under faults on a stack of its own and check that nothing was "
             "lost, duplicated or stuck; `nwd soak --help` lists its options",
        description="Runs `python -m benchmarks.soak` with the given arguments.",
        add_help=False,
        prefix_chars="\0",  # every argument, options included, is the program's
    )
    soak.add_argument("arguments", nargs="*", metavar="ARG",
                      help="the soak's options (see `nwd soak --help`)")
    soak.set_defaults(handler=_soak)


def _soak(args: argparse.Namespace) -> int:
    if not (PROJECT_ROOT / "benchmarks" / "soak" / "__main__.py").is_file():
        raise UserError("nwd soak runs from a source checkout (benchmarks/ is not installed)")
    return launch(list(args.arguments), PROGRAM)
