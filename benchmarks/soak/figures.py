"""The soak's figures: throughput, end-to-end latency, recovery after each fault.

Definitions (the same in the JSON and in docs/reliability.md, "Soak"):

- **end to end**: from the soak's first attempt to submit a request (``POST /requests``,
  before any 503 and resend) until Temporal closed its workflow (the close time Temporal
  records); both on this machine's clock.
- **throughput**: requests closed / (last close - first submission).
- **recovery after a fault**, two figures, both counted from the fault's start (the SIGKILL;
  the moment the server was told to stop):
  - ``first_completion_s``: until the first request closes after it — the engine doing work
    again;
  - ``rate_recovered_s``: until the start of the first ``WINDOW_S`` (5 s) window after the
    fault whose completions reach ``RECOVERED_SHARE`` (80 %) of the completion rate over the
    ``BASELINE_S`` (10 s) before the fault — from then on the engine completes requests at
    its pre-fault rate again. None when the pre-fault rate is 0 (nothing to recover to) or no
    such window began before the run's last 5 s.
  - for a restart also ``outage_s``: from the stop until the server was ready again.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from benchmarks.soak.chaos import Fault
from benchmarks.stats import latency_summary

WINDOW_S = 5.0
BASELINE_S = 10.0
RECOVERED_SHARE = 0.8


def recovery(fault: Fault, closes: Sequence[float], *, end: float) -> dict[str, Any]:
    """The recovery figures of ``fault`` given every close time (sorted) of the run."""
    figures: dict[str, Any] = {"kind": fault.kind, "at": round(fault.at, 3)}
    if fault.back_at is not None:
        figures["outage_s"] = round(fault.back_at - fault.at, 2)
    after = bisect.bisect_right(closes, fault.at)
    figures["first_completion_s"] = (round(closes[after] - fault.at, 2)
                                     if after < len(closes) else None)
    before = after - bisect.bisect_left(closes, fault.at - BASELINE_S)
    rate = before / BASELINE_S
    figures["pre_fault_rate_per_s"] = round(rate, 2)
    figures["rate_recovered_s"] = None
    if rate > 0:
        needed = RECOVERED_SHARE * rate * WINDOW_S
        for i in range(after, len(closes)):
            start = closes[i]
            if start + WINDOW_S > end:
                break
            if bisect.bisect_right(closes, start + WINDOW_S) - i >= needed:
                figures["rate_recovered_s"] = round(start - fault.at, 2)
                break
    return figures


def summarise(*, submitted_at: dict[str, float], closed_at: dict[str, float],
              faults: list[Fault]) -> dict[str, Any]:
    """Throughput, latency percentiles (seconds) and every fault's recovery."""
    latencies = [closed_at[r] - submitted_at[r] for r in closed_at if r in submitted_at]
    closes = sorted(closed_at.values())
    figures: dict[str, Any] = {"closed": len(closes)}
    if closes and submitted_at:
        start = min(submitted_at.values())
        span = closes[-1] - start
        figures["span_s"] = round(span, 1)
        figures["throughput_per_s"] = round(len(closes) / span, 2) if span > 0 else None
    if latencies:
        figures["end_to_end_s"] = {k: round(v, 3) for k, v in latency_summary(latencies).items()}
    end = closes[-1] if closes else 0.0
    figures["recovery"] = [recovery(f, closes, end=end) for f in faults]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for entry in figures["recovery"]:
        by_kind.setdefault(entry["kind"], []).append(entry)
    figures["recovery_by_kind"] = {kind: _spread(entries) for kind, entries in by_kind.items()}
    return figures


def _spread(entries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(entries)}
    for key in ("first_completion_s", "rate_recovered_s", "outage_s"):
        values = sorted(e[key] for e in entries if e.get(key) is not None)
        if values:
            out[key] = {"median": values[len(values) // 2], "max": values[-1]}
        missing = sum(1 for e in entries if key in e and e[key] is None)
        if missing:
            out[f"{key}_none"] = missing
    return out
