"""`nwd bench`: run the benchmark program (``python -m benchmarks``) with the same arguments.

The benchmark is a separate program that measures the engine from outside: its harness,
drivers and workers are never loaded into the command line (an import-linter contract holds
that). This command only starts it, with this interpreter, and returns its exit code;
``nwd bench --help`` prints the program's own help. It lives in the checkout's
``benchmarks/`` folder, which is not installed, so it runs from a source checkout only.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from nwd.cli import UserError
from runtime.settings import PROJECT_ROOT

PROGRAM = "benchmarks"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_program(
        subparsers, "bench", PROGRAM,
        "benchmark the engine against a hand-written Temporal workflow (and DBOS); "
        "`nwd bench --help` lists its options",
    )


def register_program(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str, program: str, help_text: str,
) -> None:
    """Add `nwd NAME`, which runs ``python -m PROGRAM`` (a program of ``benchmarks/``) with
    every argument it is given, through :func:`launch`."""
    command = subparsers.add_parser(
        name,
        help=help_text,
        description=f"Runs `python -m {program}` with the given arguments.",
        add_help=False,
        # Every argument, options included, is the program's: with no option prefix of its
        # own, this parser takes `--quick`, `--help`, ... as plain words and passes them on.
        prefix_chars="\0",
    )
    command.add_argument("arguments", nargs="*", metavar="ARG",
                         help=f"the program's options (see `nwd {name} --help`)")

    def run(args: argparse.Namespace) -> int:
        if not (PROJECT_ROOT / program.replace(".", "/") / "__main__.py").is_file():
            raise UserError(f"nwd {name} runs from a source checkout "
                            "(benchmarks/ is not installed)")
        return launch(list(args.arguments), program)

    command.set_defaults(handler=run)


def launch(arguments: list[str], program: str = PROGRAM) -> int:
    """Run the benchmark program (or ``program``, another of ``benchmarks/``, such as
    ``benchmarks.soak``) to its end; its exit code (128 + N if signal N ended it).

    The checkout goes first on its ``PYTHONPATH`` (the ``benchmarks`` package is not
    installed); the working directory stays the caller's, so ``--out`` means what it says.
    Ctrl-C reaches the program directly (it shares the terminal's process group) and it stops
    its stack itself, so meanwhile SIGINT does nothing here: neither a KeyboardInterrupt that
    would leave it orphaned nor a kill mid-cleanup. (A no-op handler, not ``SIG_IGN``: an
    ignored signal stays ignored across ``exec``, a handler falls back to the default, so the
    program still gets its KeyboardInterrupt.)
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: None)
    try:
        process = subprocess.Popen([sys.executable, "-m", program, *arguments], env=env)
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code
