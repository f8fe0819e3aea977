"""`nwd report` as an operator runs it: a real process, DATABASE_URL, a table and a PNG."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.test_report_figures import COA, seed

NWD = str(Path(sys.executable).parent / "nwd")


async def test_nwd_report_prints_tables_and_writes_a_chart(
    database_url: str, tmp_path: Path
) -> None:
    await seed(database_url)
    chart = tmp_path / "report.png"
    env = {**os.environ, "DATABASE_URL": database_url, "NWD_LOG_FORMAT": "console"}
    done = await asyncio.to_thread(
        subprocess.run,
        [NWD, "report", "--from", "2026-11-02", "--to", "2026-11-15", "--sla-days", "5",
         "--chart", str(chart)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Per service" in out and "Per agency" in out and "Week over week" in out
    coa = next(line for line in out.splitlines() if line.startswith(COA))
    assert coa.split()[:3] == [COA, "5", "60%"]
    tax = next(line for line in out.splitlines() if line.startswith("tax-authority"))
    assert tax.split()[:3] == ["tax-authority", "5", "60%"]
    assert "Value delivered: 13 separate agency contacts spared across 7 requests." in out
    assert f"chart: {chart}" in out
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_nwd_report_refuses_a_backwards_range(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [NWD, "report", "--from", "2026-11-15", "--to",
         "2026-11-02"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "nwd: error: --from 2026-11-15 is after --to 2026-11-02"
