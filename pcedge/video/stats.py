"""What one stream's defended frames added up to, in constant memory: the status line, the summary, and the
site's metrics read it.

Latency is the defended frame's total time (for a ``triton://`` model, the client's end-to-end time); age is the
time from the frame's capture to its result (for a camera: how late an alarm can come).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

from ..alarm import LEVELS
from ..result import FRAME_FAILURES, FrameFailure, Result
from ..util.latency_stats import LatencyStats


class StreamStats:
    """Counters and constant-memory percentiles of one stream's frames (see the module docstring)."""

    def __init__(self) -> None:
        self.latency = LatencyStats()
        self.age = LatencyStats()
        self.cases: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.passes = 0
        self.last_level = ""  # the newest frame's level ("" before the first)
        self.started = time.time()
        self._first: float | None = None
        self._last: float | None = None
        self._recent: deque[float] = deque(maxlen=30)

    @property
    def frames(self) -> int:
        """Frames that got a defended result."""
        return self.latency.count

    def add(self, result: Result, age_ms: float) -> None:
        now = time.time()
        self._first = now if self._first is None else self._first
        self._last = now
        self._recent.append(time.monotonic())
        self.latency.add(result.timings_ms["total"])
        self.age.add(age_ms)
        self.cases[result.case] += 1
        self.levels[result.level] += 1
        self.last_level = result.level
        self.passes += result.two_mask_passes

    def add_failure(self, failure: FrameFailure) -> None:
        self.failures[failure.kind] += 1

    @property
    def fps(self) -> float:
        """Frames per second over the last 30 results (the live rate, not the run's average)."""
        t = self._recent
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Frames, latency mean and percentiles (ms, within 1%: :mod:`pcedge.util.latency_stats`), age at decision
        p50/p99, FPS over the processing span, alarm levels, cases, frames without a result by kind."""
        lat, frames = self.latency, self.frames
        span = (self._last - self._first) if frames > 1 and self._first is not None and self._last is not None else 0.0
        return {
            "frames": frames,
            "mean_ms": _rounded(lat.mean),
            "p50_ms": _rounded(lat.percentile(50)),
            "p90_ms": _rounded(lat.percentile(90)),
            "p99_ms": _rounded(lat.percentile(99)),
            "age_p50_ms": _rounded(self.age.percentile(50)),
            "age_p99_ms": _rounded(self.age.percentile(99)),
            "fps": round((frames - 1) / span, 3) if span > 0 else None,
            "levels": {level: self.levels.get(level, 0) for level in LEVELS},
            "patch_rate": round(self.levels.get("patch", 0) / frames, 4) if frames else None,
            "cases": dict(self.cases),
            "two_mask_passes": self.passes,
            "failed_frames": {kind: self.failures.get(kind, 0) for kind in FRAME_FAILURES},
            "wall_s": round(time.time() - self.started, 3),
        }

    def status_text(self, alarm_active: bool) -> str:
        """One line for the live status: FPS, latency p50 over the last 100 frames, level counts, alarm."""
        levels = " ".join(f"{level} {self.levels.get(level, 0)}" for level in LEVELS)
        return (f"{self.fps:.1f} FPS, p50 {self.latency.recent_median():.0f} ms, {levels}"
                + (", PATCH ALARM" if alarm_active else ", no alarm"))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
