"""``python -m benchmarks.soak [options]``: the soak program (see :mod:`benchmarks.soak.cli`)."""

from __future__ import annotations

from benchmarks.soak.cli import main
from runtime.process import exit_now

if __name__ == "__main__":
    exit_now(main())  # everything is stopped by now
