"""Per-frame JSON lines for scripts: one object per defended frame, one per stream event, the summary last.

Each line is flushed as it is written, so a run that is killed still leaves every processed frame in the log
(one possibly partial last line at worst). With several streams every record carries ``stream`` and
``stream_name``; each stream's summary is a tagged ``{"event": "summary"}`` line before the run's own. A log
that cannot be written (a full disk) stops logging: the sink chain switches it off with one error line, the
summary names it under ``sinks``, and the defense goes on.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import IO, Any, Sequence

from .sinks import Sink
from .streams import Defended, Stream, StreamEvent, StreamsChanged


class FrameLog(Sink):
    """The JSON-lines log (see the module docstring); ``path=None`` writes nothing."""

    name = "frame log"

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._file: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")

    def start(self, streams: Sequence[Stream]) -> None:
        self._several = len(streams) > 1

    def streams_changed(self, change: StreamsChanged) -> None:
        if not (change.added or change.removed):
            return
        self._several = True  # records name their stream from now on: several may have run
        self._write({"event": "streams_changed", "timestamp": round(time.time(), 6),
                     "added": [{"stream": s.index, "stream_name": s.name} for s in change.added],
                     "removed": [{"stream": s.index, "stream_name": s.name} for s in change.removed]})

    def config_reloaded(self, result: dict[str, Any]) -> None:
        self._write({"event": "config_reloaded", "timestamp": round(time.time(), 6), **result})

    def frame(self, item: Defended) -> None:
        result = item.result
        record: dict[str, Any] = {
            "index": item.frame.index, "timestamp": round(item.frame.captured_at, 6), "label": result.label,
            "class_name": result.class_name, "case": result.case, "level": result.level, "disagreers": result.disagreers,
            "two_mask_passes": result.two_mask_passes, "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
            "age_ms": round(item.age_ms, 3), "dropped": item.stream.feed.stats.dropped,
        }
        if result.stream_alarm is not None:
            record["alarm"] = result.stream_alarm.active
        if item.frame.name:
            record["name"] = item.frame.name
        if item.undefended is not None:
            record["undefended_label"] = item.undefended
        self._emit(item.stream, record)
        state = result.stream_alarm
        if state is not None and (state.raised or state.cleared):
            self._emit(item.stream, {"event": "alarm_raised" if state.raised else "alarm_cleared", "frame": item.frame.index,
                                     "hits": state.hits, "window": state.window})

    def event(self, event: StreamEvent) -> None:
        self._emit(event.stream, {"event": event.kind, **event.fields})

    def close(self, summary: dict[str, Any]) -> None:
        if self._file is None:
            return
        if self._several:
            for per_stream in summary["streams"]:
                self._write({"stream": per_stream["stream"], "stream_name": per_stream["stream_name"], "event": "summary", **per_stream})
        self._write({"event": "summary", **{k: v for k, v in summary.items() if not (self._several and k == "streams")}})
        self._file.close()
        self._file = None

    def _emit(self, stream: Stream, record: dict[str, Any]) -> None:
        self._write({"stream": stream.index, "stream_name": stream.name, **record} if self._several else record)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):
                file.close()
            raise OSError(f"{self.path}: {exc.strerror or exc}") from None  # the sink chain switches this log off
