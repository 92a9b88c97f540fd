"""Constant-memory latency statistics: percentiles within 1% of the exact ones, exact mean/min/max, fixed size."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge.util.latency_stats import BUCKETS, RELATIVE_ERROR, LatencyStats
from tests.conftest import examples


def exact_rank_value(values: np.ndarray, q: float) -> float:
    """The value at rank ceil(q/100 * n) of the sorted values (nearest-rank percentile)."""
    ranked = np.sort(values)
    return float(ranked[max(1, math.ceil(q / 100 * len(values))) - 1])


@settings(max_examples=examples(300))
@given(st.lists(st.floats(0.01, 50_000, allow_nan=False), min_size=1, max_size=400), st.sampled_from([1, 50, 90, 99, 100]))
def test_percentiles_are_within_one_percent_and_mean_min_max_exact(values, q):
    stats = LatencyStats()
    for v in values:
        stats.add(v)
    data = np.asarray(values)
    exact = exact_rank_value(data, q)
    assert abs(stats.percentile(q) - exact) <= RELATIVE_ERROR * exact + 1e-9
    assert math.isclose(stats.mean, float(data.mean()), rel_tol=1e-9)
    assert stats.min == data.min() and stats.max == data.max() and stats.count == len(values)


def test_memory_does_not_grow_with_the_number_of_values():
    stats = LatencyStats(window=100)
    for n in range(200_000):
        stats.add(10.0 + (n % 1000) / 100)
    assert stats._counts.size == BUCKETS and len(stats.recent) == 100 and stats.count == 200_000
    assert 10.0 <= stats.percentile(50) <= 20.0 and stats.recent_median() > 0


def test_empty_and_out_of_range_values():
    stats = LatencyStats()
    assert stats.mean is None and stats.percentile(50) is None and stats.recent_median() == 0.0
    for v in (0.0, 1e-9, 5e7):  # below the lowest and above the highest bucket: clamped, still counted
        stats.add(v)
    assert stats.count == 3 and stats.percentile(100) == 5e7 and stats.percentile(1) == 0.0
