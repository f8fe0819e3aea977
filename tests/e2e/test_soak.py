"""The short soak: the soak program (``python -m benchmarks.soak``, what ``make soak`` runs) on a
stack of its own, small enough for ``make test``.

100 requests across the catalog at 10 per second, 5 % of agency calls answered 503, callback
agencies, and one worker SIGKILL mid-run (its supervisor restarts it). The program's own end
checks must all pass: every request accepted, closed and completed in Temporal, every planned
agency effect exactly once in the agencies' own tables, every callback delivered, the read model
equal to Temporal. The test reads them from the program's JSON report — the same checks the
full soak runs (docs/reliability.md, "Soak"), not a copy of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.settings import PROJECT_ROOT

REQUESTS = 100


@pytest.mark.timeout(420)
def test_short_soak_loses_nothing_duplicates_nothing_leaves_nothing_stuck(
        tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--requests", str(REQUESTS), "--rate", "10",
         "--kills", "1", "--kill-every", "4", "--no-temporal-restart", "--no-postgres-restart",
         "--drain-timeout", "150", "--json", str(report_path)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert report_path.exists(), f"no report; exit {done.returncode}\n{done.stdout[-3000:]}" \
                                 f"\n{done.stderr[-3000:]}"
    report = json.loads(report_path.read_text())
    checks = report["checks"]
    assert checks["ok"], f"end checks failed: {checks['counts']}\n{checks['examples']}"
    assert done.returncode == 0, done.stderr[-3000:]
    # the checks looked at everything, and the fault happened
    assert report["requests"] == {**report["requests"], "planned": REQUESTS,
                                  "accepted": REQUESTS, "closed": REQUESTS}
    assert set(report["requests"]["by_service"]) == {
        "change-of-address", "report-a-death", "register-a-business"}
    assert checks["verified"]["requests"] == REQUESTS
    assert checks["verified"]["effects_expected"] == report["effects_planned"]
    assert checks["verified"]["agency_records"] >= report["effects_planned"]
    assert checks["verified"]["callbacks_owed"] > 0
    assert checks["verified"]["read_model_rows"] == REQUESTS
    assert report["faults"]["worker_kills"] == 1
    assert report["faults"]["worker_restarts"] >= 1
    for name in ("lost_effects", "duplicated_effects", "stuck_running", "read_model_mismatches",
                 "undelivered_callbacks", "pending_outbox_rows", "unexpected_workflows"):
        assert checks["counts"][name] == 0, name
    assert report["figures"]["end_to_end_s"]["p99"] > 0
