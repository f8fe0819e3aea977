"""The benchmark's statistics on known inputs (percentiles, medians, ratios)."""

from __future__ import annotations

import pytest

from benchmarks.stats import latency_summary, median, median_of_runs, percentile, ratio, ratios


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 3, 2, 1], 0) == 1
    assert percentile([4, 3, 2, 1], 100) == 4
    assert percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)
    assert percentile([10], 99) == 10


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_median_odd_and_even() -> None:
    assert median([3, 1, 2]) == 2
    assert median([5, 1, 2, 10]) == 3.5


def test_latency_summary() -> None:
    summary = latency_summary([0.1 * i for i in range(1, 11)])
    assert summary["p50"] == pytest.approx(0.55)
    assert summary["p99"] == pytest.approx(0.991)
    assert summary["mean"] == pytest.approx(0.55)
    assert summary["max"] == pytest.approx(1.0)


def test_ratio() -> None:
    assert ratio(9.0, 10.0) == pytest.approx(0.9)
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None


def test_median_of_runs_skips_missing_values() -> None:
    runs = [{"a": 1.0, "b": None}, {"a": 3.0, "b": 4.0}, {"a": 2.0, "c": 7.0}]
    assert median_of_runs(runs) == {"a": 2.0, "b": 4.0, "c": 7.0}
    assert median_of_runs([{"a": None}]) == {"a": None}


def test_ratios_per_key() -> None:
    got = ratios({"rps": 9.0, "p99": 2.0, "only": 1.0}, {"rps": 10.0, "p99": 1.0})
    assert got == {"rps": pytest.approx(0.9), "p99": pytest.approx(2.0)}
