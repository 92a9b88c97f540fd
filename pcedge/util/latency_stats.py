"""Latency statistics of an endless stream in constant memory: a log-bucketed histogram.

A camera runs for weeks; keeping every frame's latency to compute percentiles grows without bound
(about 80 MB a day at 30 FPS as Python floats). The histogram keeps counts in buckets whose width is
1% of their value, from 1 microsecond to 1000 seconds (2,084 int64 counters, 16 kB, whatever the run's
length), so every percentile it reports is within 1% of the exact one; the mean, minimum and maximum
are exact. This is HdrHistogram's idea at two significant digits, written out in a few lines with
numpy rather than adding a dependency to the edge runtime. A short window of the newest values feeds
the live status line.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

LOWEST_MS = 1e-3
HIGHEST_MS = 1e6
RELATIVE_ERROR = 0.01
_GROWTH = math.log1p(RELATIVE_ERROR)
BUCKETS = int(math.ceil(math.log(HIGHEST_MS / LOWEST_MS) / _GROWTH)) + 1


class LatencyStats:
    """Count, exact mean/min/max, percentiles within 1%, and the newest ``window`` values, in constant memory."""

    def __init__(self, window: int = 100) -> None:
        self._counts = np.zeros(BUCKETS, np.int64)
        self.count = 0
        self._sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        value = float(ms)
        self._counts[_bucket(value)] += 1
        self.count += 1
        self._sum += value
        self.min, self.max = min(self.min, value), max(self.max, value)
        self.recent.append(value)

    @property
    def mean(self) -> float | None:
        return self._sum / self.count if self.count else None

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0..100, nearest rank): the centre of the bucket holding that rank, clamped to the
        exact min/max; the two end buckets (values outside 1 us..1000 s) answer with the exact min or max."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        bucket = int(np.searchsorted(np.cumsum(self._counts), rank))
        if bucket == 0 or bucket == BUCKETS - 1:
            return self.min if bucket == 0 else self.max
        centre = LOWEST_MS * math.exp((bucket + 0.5) * _GROWTH)
        return min(max(centre, self.min), self.max)

    def recent_median(self) -> float:
        return float(np.median(self.recent)) if self.recent else 0.0


def _bucket(ms: float) -> int:
    if not ms > LOWEST_MS:  # also NaN
        return 0
    return min(BUCKETS - 1, int(math.log(ms / LOWEST_MS) / _GROWTH))
