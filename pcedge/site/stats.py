"""Each camera's state in one JSON-able dict: what ``<prefix>/stats`` publishes and ``/api/stats`` answers."""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..alarm import LEVELS
from ..video.loop import Stream
from .episodes import camera_slug


def camera_stats(streams: Sequence[Stream]) -> dict[str, Any]:
    """Per camera (keyed by its slug): name, FPS, latency and age p50 (recent frames), frames per level, the newest
    level, whether the alarm is up, drops, gaps, frames without a result, and whether the stream still runs."""
    cameras = {}
    for s in streams:
        source = s.feed.stats
        cameras[camera_slug(s.name)] = {
            "name": s.name, "fps": round(s.stats.fps, 2), "latency_p50_ms": round(s.stats.latency.recent_median(), 1),
            "age_p50_ms": round(s.stats.age.recent_median(), 1), "frames": s.stats.frames,
            "levels": {level: s.stats.levels.get(level, 0) for level in LEVELS}, "level": s.stats.last_level or None,
            "alarm": s.alarm.active, "alarms": s.alarm.raised_count, "dropped": source.dropped, "gaps": source.gap_count,
            "failed_frames": sum(s.stats.failures.values()), "state": s.end or ("running" if s.feed.opened else "opening"),
            "error": source.error or None,
        }
    started = min((s.stats.started for s in streams), default=time.time())
    return {"cameras": cameras, "uptime_s": round(time.time() - started, 1)}  # since the run began
