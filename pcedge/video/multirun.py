"""What ``pcedge run --source A --source B ...`` does: several streams defended by one engine, each on its own.

Per stream: its name, its k-of-n alarm, its output (one per stream, or one file per stream in a folder),
its gaps and summary; one JSON-lines log for all of them, every record carrying ``stream`` and
``stream_name``. The run ends when every stream has ended, at ``max_frames`` per stream, or at ``stop``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from ..runtime.driver import PatchCleanser
from ..util.progress import progress
from .framelog import FrameLog
from .multistream import DEFAULT_GATHER_S, StreamSpec, stream_many
from .outputs import NullOutput, Output, open_output
from .overlay import draw_overlay
from .sources import FrameSource, SourceOptions, open_source
from .streaming import RunOptions, report_alarm_change

log = logging.getLogger(__name__)


def stream_outputs(outputs: Sequence[str], names: Sequence[str]) -> list[str | None]:
    """``--output`` once per stream, or once as a folder that gets ``<name>.mp4`` per stream, or not at all."""
    if not outputs:
        return [None] * len(names)
    if len(outputs) == len(names):
        return list(outputs)
    if len(outputs) == 1 and not Path(outputs[0]).suffix and not outputs[0].startswith("display://"):
        return [str(Path(outputs[0]) / f"{_file_safe(name)}.mp4") for name in names]
    from ..errors import ConfigError

    raise ConfigError(f"{len(names)} sources and {len(outputs)} outputs: give --output once per source, or once as a folder "
                      "(one video per stream)")


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "stream"


class _Stream:
    """One stream's source, log, output and the bookkeeping of its status line."""

    def __init__(self, index: int, spec: StreamSpec, source: FrameSource, framelog: FrameLog, output: Output) -> None:
        self.index, self.spec, self.source, self.framelog, self.output = index, spec, source, framelog, output
        self.times: deque[float] = deque(maxlen=30)
        self.level = "-"

    @property
    def fps(self) -> float:
        t = self.times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


def run_many(model: PatchCleanser, sources: Sequence[str], source_options: SourceOptions, run_options: RunOptions,
             outputs: Sequence[str] = (), stop: threading.Event | None = None, gather_s: float = DEFAULT_GATHER_S) -> dict[str, Any]:
    """Defend every source with one engine until all end; returns the summary (per stream and totals)."""
    stop = stop or threading.Event()
    specs = [StreamSpec.parse(text, n) for n, text in enumerate(sources)]
    targets = stream_outputs(outputs, [s.name for s in specs])
    streams: list[_Stream] = []
    shared = FrameLog(run_options.log_path)  # owns the one log file; each stream writes its tagged records to it
    status = None
    try:
        try:
            for n, (spec, target) in enumerate(zip(specs, targets)):
                source = open_source(spec.uri, source_options)
                framelog = FrameLog(None, shared=shared, tags={"stream": n, "stream_name": spec.name})
                streams.append(_Stream(n, spec, source, framelog, open_output(target, fps=run_options.fps_limit or source.fps or 30.0)))
                log.info("stream %d (%s): %s; output: %s", n, spec.name, source.description, streams[-1].output.description)
            status = progress(total=None, desc=f"defended frames, {len(streams)} streams", unit="frame", enabled=run_options.progress)
            for index, result, frame in stream_many([s.source for s in streams], model, fps_limit=run_options.fps_limit, stop=stop,
                                                    alarm=run_options.alarm, gather_s=gather_s):
                st = streams[index]
                st.framelog.gaps(st.source.stats)
                st.framelog.frame(frame.index, frame.captured_at, result, dropped=st.source.stats.dropped, name=frame.name)
                report_alarm_change(st.framelog, frame.index, result, stream=st.spec.name)
                st.times.append(time.monotonic())
                st.level = "ALARM" if result.stream_alarm and result.stream_alarm.active else result.level
                status.set_postfix_str(_status_line(streams), refresh=False)
                status.update(1)
                if not st.output.failed and not isinstance(st.output, NullOutput):
                    st.output.write(draw_overlay(frame.image, result, fps=st.fps,
                                                 mask_set=model.mask_set if run_options.show_masks else None, spec=model.spec))
                if run_options.max_frames and all(s.framelog.latency.count >= run_options.max_frames or s.source.stats.error
                                                  for s in streams):
                    break
        finally:
            if status is not None:
                status.close()
            for st in streams:
                st.source.close()
                st.output.close()
    except BaseException:
        shared.close()  # every processed frame is already flushed to the log
        raise
    summary = _summary(model, streams, stop)
    for st, per_stream in zip(streams, summary["streams"]):
        st.framelog.close(per_stream)  # one tagged summary line per stream
    shared.close(summary)
    return summary


def _status_line(streams: list[_Stream]) -> str:
    """Alarms first, then every stream's FPS and latest level, compactly."""
    ordered = sorted(streams, key=lambda s: (s.level != "ALARM", s.index))
    return " | ".join(f"{s.spec.name} {s.fps:.1f} FPS {s.level}" for s in ordered)


def _summary(model: PatchCleanser, streams: list[_Stream], stop: threading.Event) -> dict[str, Any]:
    per_stream = []
    for st in streams:
        st.framelog.gaps(st.source.stats)  # an outage after the last frame
        per_stream.append(st.framelog.summary(stream=st.index, stream_name=st.spec.name, source=st.source.stats.as_dict(),
                                              output=(st.output.failed or f"{st.output.description}: {st.output.written} frames")))
    frames = sum(s["frames"] for s in per_stream)
    live = [st for st in streams if st.source.live]
    return {"streams": per_stream, "frames": frames, "fps": round(sum(s["fps"] or 0.0 for s in per_stream), 3),
            "engine": model.engine.describe(), "schedule": model.schedule, "masks": len(model.mask_set),
            "threat": model.mask_set.threat.describe(), "interrupted": stop.is_set(),
            "all_live_lost": bool(live) and all(st.source.stats.error for st in live)}


def format_many(summary: dict[str, Any]) -> str:
    """The per-stream table and the totals printed at the end of a multi-stream ``pcedge run``."""
    rows = [f"{'stream':18s} {'frames':>7s} {'FPS':>6s} {'p50 ms':>7s} {'p99 ms':>7s} {'clear':>6s} {'uncert':>6s} {'patch':>6s} "
            f"{'dropped':>7s} {'gaps':>5s}  error"]
    for s in summary["streams"]:
        lv, src = s["levels"], s["source"]
        rows.append(f"{s['stream_name'][:18]:18s} {s['frames']:7d} {s['fps'] or 0:6.1f} {s['p50_ms'] or 0:7.1f} {s['p99_ms'] or 0:7.1f} "
                    f"{lv['clear']:6d} {lv['uncertain']:6d} {lv['patch']:6d} {src['dropped']:7d} {src['gap_count']:5d}  {src['error']}")
    rows.append(f"{'all streams':18s} {summary['frames']:7d} {summary['fps']:6.1f}   engine {summary['engine']}; "
                f"{summary['masks']} masks ({summary['threat']})")
    return "\n".join(rows)
