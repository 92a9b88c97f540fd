"""Per-frame JSON lines and the end-of-run summary.

Each line is flushed as it is written, so a run that is killed still leaves every processed frame in
the log (one possibly partial last line at worst). Gaps in live streams are written as their own
``{"event": "gap", ...}`` lines where they happened.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from ..alarm import LEVELS
from ..result import Result
from ..util.latency_stats import LatencyStats
from .base import SourceStats


class FrameLog:
    """One JSON object per processed frame (``path=None``: summary only).

    Several streams share one file: the first log opens it, the others pass it as ``shared`` (they write
    to it but do not close it), and ``tags`` (e.g. ``{"stream": 1, "stream_name": "door"}``) go into
    every record of a log."""

    def __init__(self, path: str | Path | None, *, shared: "FrameLog | None" = None, tags: dict[str, Any] | None = None) -> None:
        self.path = Path(path) if path else (shared.path if shared else None)
        self._file: IO[str] | None = None
        self._owner = shared is None
        self._tags = dict(tags or {})
        self._gaps_logged = 0
        if shared is not None:
            self._file = shared._file
        elif self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        self.latency = LatencyStats()  # constant memory, whatever the run's length
        self.cases: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.passes = 0
        self.started = time.time()
        self._first: float | None = None
        self._last: float | None = None

    def frame(self, index: int, captured_at: float, result: Result, *, dropped: int, name: str = "",
              undefended: int | None = None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "index": index, "timestamp": round(captured_at, 6), "label": result.label, "class_name": result.class_name,
            "case": result.case, "level": result.level, "disagreers": result.disagreers,
            "two_mask_passes": result.two_mask_passes,
            "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}, "dropped": dropped,
        }
        if result.stream_alarm is not None:
            record["alarm"] = result.stream_alarm.active
        if name:
            record["name"] = name
        if undefended is not None:
            record["undefended_label"] = undefended
        now = time.time()
        self._first = now if self._first is None else self._first
        self._last = now
        self.latency.add(result.timings_ms["total"])
        self.cases[result.case] += 1
        self.levels[result.level] += 1
        self.passes += result.two_mask_passes
        self._emit(record)
        return record

    def status_text(self, fps: float, alarm_active: bool) -> str:
        """One line for the live status: FPS, latency p50 over the last 100 frames, level counts, alarm."""
        p50 = self.latency.recent_median()
        levels = " ".join(f"{level} {self.levels.get(level, 0)}" for level in LEVELS)
        return f"{fps:.1f} FPS, p50 {p50:.0f} ms, {levels}" + (", PATCH ALARM" if alarm_active else ", no alarm")

    def event(self, kind: str, **fields: Any) -> None:
        self._emit({"event": kind, **fields})

    def gaps(self, stats: SourceStats) -> None:
        """A ``gap`` event for every outage of the source not logged yet."""
        for gap in stats.gaps_since(self._gaps_logged):
            self.event("gap", **gap)
        self._gaps_logged = stats.gap_count

    def summary(self, **extra: Any) -> dict[str, Any]:
        """Frames, latency mean and percentiles (ms; percentiles within 1%, see :mod:`pcedge.util.latency_stats`), FPS over the processing span, alarm levels, cases."""
        lat = self.latency
        frames = lat.count
        span = (self._last - self._first) if frames > 1 and self._first is not None and self._last is not None else 0.0
        out: dict[str, Any] = {
            "frames": frames,
            "mean_ms": _rounded(lat.mean),
            "p50_ms": _rounded(lat.percentile(50)),
            "p90_ms": _rounded(lat.percentile(90)),
            "p99_ms": _rounded(lat.percentile(99)),
            "fps": round((frames - 1) / span, 3) if span > 0 else None,
            "levels": {level: self.levels.get(level, 0) for level in LEVELS},
            "patch_rate": round(self.levels.get("patch", 0) / frames, 4) if frames else None,
            "cases": dict(self.cases),
            "two_mask_passes": self.passes,
            "wall_s": round(time.time() - self.started, 3),
        }
        out.update(extra)
        return out

    def close(self, summary: dict[str, Any] | None = None) -> None:
        if self._file is not None:
            if summary is not None:
                self._emit({"event": "summary", **summary})
            if self._owner:
                self._file.close()
            self._file = None

    def _emit(self, record: dict[str, Any]) -> None:
        if self._file is not None and not self._file.closed:
            self._file.write(json.dumps({**self._tags, **record}) + "\n")
            self._file.flush()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def format_summary(summary: dict[str, Any]) -> str:
    """The table printed at the end of ``pcedge run``."""
    def ms(key: str) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.1f}"

    frames = summary["frames"]
    levels = summary.get("levels", {})
    shares = ", ".join(f"{level} {levels.get(level, 0)} ({100 * levels.get(level, 0) / frames:.0f}%)" if frames else f"{level} 0"
                       for level in LEVELS)
    lines = [
        f"frames processed   {frames}",
        f"latency ms         mean {ms('mean_ms')}  p50 {ms('p50_ms')}  p90 {ms('p90_ms')}  p99 {ms('p99_ms')}",
        f"throughput         {'-' if summary.get('fps') is None else format(summary['fps'], '.1f')} FPS",
        f"frame levels       {shares}",
    ]
    if "alarm_window" in summary:
        lines.append(f"stream alarm       raised {summary.get('alarms_raised', 0)} time(s), active on "
                     f"{summary.get('alarm_frames', 0)} frame(s) (patch on {summary['alarm_window']} frames)")
    lines.append(f"second round       {summary['two_mask_passes']} two-mask images"
                 + (f" ({summary['schedule']})" if summary.get("schedule") else ""))
    source = summary.get("source", {})
    if source:
        lines.append(f"source             read {source.get('read', 0)}, dropped {source.get('dropped', 0)}, "
                     f"unreadable {len(source.get('unreadable', []))}, reconnects {source.get('reconnects', 0)}, "
                     f"stalls {source.get('stalls', 0)}")
        if source.get("error"):
            lines.append(f"source error       {source['error']}")
    if summary.get("output"):
        lines.append(f"output             {summary['output']}")
    return "\n".join(lines)
