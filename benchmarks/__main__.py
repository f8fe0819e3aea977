"""``python -m benchmarks [options]``: the benchmark program (see :mod:`benchmarks.cli`)."""

from __future__ import annotations

import os
import sys

from benchmarks.cli import main

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal SDK's native runtime can crash the interpreter during the normal shutdown
    # of a short-lived process that used a client (temporalio/sdk-python#300), which would
    # turn a clean exit into a fatal error; everything is flushed and stopped by now.
    os._exit(code)
