"""The benchmark's statistics: percentiles, medians and engine ÷ baseline ratios.

Pure functions on plain floats so they can be tested on known inputs. Percentiles use linear
interpolation between closest ranks (numpy's default, "type 7"): p50 of [1, 2, 3, 4] is 2.5.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0 ≤ q ≤ 100) of ``values``, linearly interpolated.

    Raises:
        ValueError: no values, or ``q`` outside [0, 100].
    """
    data = sorted(values)
    if not data:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    rank = (len(data) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return data[low]
    return data[low] + (data[high] - data[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, mean and max of a list of latencies (same unit in, same unit out)."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": sum(values) / len(values),
        "max": max(values),
    }


def ratio(engine: float | None, baseline: float | None) -> float | None:
    """engine ÷ baseline; None when either is missing or the baseline is zero."""
    if engine is None or baseline is None or baseline == 0:
        return None
    return engine / baseline


def median_of_runs(runs: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per key, the median over repetitions of the values present (None when none is)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    out: dict[str, float | None] = {}
    for key in keys:
        present = [v for run in runs if (v := run.get(key)) is not None]
        out[key] = median(present) if present else None
    return out


def ratios(
    engine: Mapping[str, float | None], baseline: Mapping[str, float | None]
) -> dict[str, float | None]:
    """engine ÷ baseline for every key both sides have."""
    return {k: ratio(engine[k], baseline.get(k)) for k in engine if k in baseline}
