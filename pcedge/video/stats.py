"""What one stream's defended frames added up to, in constant memory: the status line, the summary, and the
site's status (:mod:`pcedge.video.status`) read it.

Latency is the defended frame's total time (for a ``triton://`` model, the client's end-to-end time); age is the
time from the frame's capture to its result (for a camera: how late an alarm can come).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

from ..alarm import LEVELS
from ..result import FRAME_FAILURES, FrameFailure, Result
from ..util.latency_stats import LatencyStats

FPS_WINDOW_S = 10.0
"""The live rate counts the results of the last this many seconds, so a camera that stopped falls to 0 FPS."""


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
        self._first_monotonic: float | None = None
        self._recent: deque[float] = deque()  # monotonic times of the results of the last FPS_WINDOW_S
        self._recent_lock = threading.Lock()  # the site's threads read the rate while the loop adds results

    @property
    def frames(self) -> int:
        """Frames that got a defended result."""
        return self.latency.count

    def add(self, result: Result, age_ms: float) -> None:
        now = time.time()
        self._first = now if self._first is None else self._first
        self._last = now
        with self._recent_lock:
            self._recent.append(time.monotonic())
            self._first_monotonic = self._first_monotonic or self._recent[-1]
            self._forget_before(self._recent[-1] - FPS_WINDOW_S)
        self.latency.add(result.timings_ms["total"])
        self.age.add(age_ms)
        self.cases[result.case] += 1
        self.levels[result.level] += 1
        self.last_level = result.level
        self.passes += result.two_mask_passes

    def add_failure(self, failure: FrameFailure) -> None:
        self.failures[failure.kind] += 1

    @property
    def last_result_at(self) -> float | None:
        """When the newest result came (``time.time()``; None before the first)."""
        return self._last

    @property
    def fps(self) -> float:
        """Results per second over the window that ends now (the live rate, not the run's average): the last
        ``FPS_WINDOW_S`` seconds, or the time since the first result while that is shorter. It falls to 0 within
        ``FPS_WINDOW_S`` once results stop coming (a camera that died shows 0, not its old rate)."""
        with self._recent_lock:
            now = time.monotonic()
            self._forget_before(now - FPS_WINDOW_S)
            recent = self._recent
            if self._first_monotonic is not None and self._first_monotonic < now - FPS_WINDOW_S:
                return len(recent) / FPS_WINDOW_S
            return (len(recent) - 1) / (now - recent[0]) if len(recent) > 1 and now > recent[0] else 0.0

    def _forget_before(self, cutoff: float) -> None:
        """Drop result times older than ``cutoff`` (caller holds ``_recent_lock``)."""
        while self._recent and self._recent[0] < cutoff:
            self._recent.popleft()

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
