"""Each stream's state now, in one JSON-able dict: what MQTT publishes, ``/api/stats`` answers, the live view's tile
shows and the Prometheus metrics read (one assembly, so every channel says the same thing).

Built from what the loop keeps anyway (the stream's statistics, its source's counters, its alarm), at the moment it
is asked for: a camera that died shows ``fps`` falling to 0, a ``last_frame_age_s`` that grows, and its state.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..alarm import LEVELS
from .streams import Stream


def stream_status(stream: Stream, now: float | None = None) -> dict[str, Any]:
    """One stream: name, state (``starting``, ``running``, ``stalled``, ``reconnecting``, ``ended``, ``failed``), whether
    it is up (running), FPS over the last seconds, latency and age p50 of recent frames, seconds since its newest
    result, frames per level, the newest level, its alarm, drops, gaps, frames without a result, and its error."""
    now = time.time() if now is None else now
    stats, source = stream.stats, stream.feed.stats
    last = stats.last_result_at
    state = stream.state
    return {
        "name": stream.name, "state": state, "up": state == "running", "fps": round(stats.fps, 2),
        "latency_p50_ms": round(stats.latency.recent_median(), 1), "age_p50_ms": round(stats.age.recent_median(), 1),
        "last_frame_age_s": None if last is None else round(max(0.0, now - last), 3), "frames": stats.frames,
        "levels": {level: stats.levels.get(level, 0) for level in LEVELS}, "level": stats.last_level or None,
        "alarm": stream.alarm.active, "alarms": stream.alarm.raised_count, "dropped": source.dropped, "gaps": source.gap_count,
        "failed_frames": sum(stats.failures.values()), "error": stream.error or source.error or None,
    }


def site_status(streams: Sequence[Stream]) -> dict[str, Any]:
    """Every stream's :func:`stream_status`, keyed by its slug, and the seconds since the run began."""
    now = time.time()
    started = min((s.stats.started for s in streams), default=now)
    return {"cameras": {s.slug: stream_status(s, now) for s in streams}, "uptime_s": round(now - started, 1)}
