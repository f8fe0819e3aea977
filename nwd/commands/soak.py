"""`nwd soak`: run the soak program (``python -m benchmarks.soak``) with the same arguments.

Like `nwd bench` (:mod:`nwd.commands.bench`): the soak measures and checks the engine from
outside, on a stack of its own, so its code is never loaded into the command line; this
command only starts it and returns its exit code (0: every end check passed, 1: one failed).
``nwd soak --help`` prints the program's own options. From a source checkout only.
"""

from __future__ import annotations

import argparse

from nwd.commands.bench import register_program

PROGRAM = "benchmarks.soak"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_program(
        subparsers, "soak", PROGRAM,
        "soak the engine under faults on a stack of its own and check that nothing was "
        "lost, duplicated or stuck; `nwd soak --help` lists its options",
    )
