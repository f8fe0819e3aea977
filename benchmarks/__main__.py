"""``python -m benchmarks [options]``: the benchmark program (see :mod:`benchmarks.cli`)."""

from __future__ import annotations

from benchmarks.cli import main
from runtime.process import exit_now

if __name__ == "__main__":
    exit_now(main())  # everything is stopped by now
