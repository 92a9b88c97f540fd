"""Defended inference over a stream: the embedding API (:func:`stream`) and what ``pcedge run`` does (:func:`run`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..alarm import DEFAULT_WINDOW, StreamAlarm
from ..errors import ConfigError
from ..result import Result
from ..runtime.driver import PatchCleanser
from ..util.progress import progress
from .framelog import FrameLog
from .outputs import DisplayOutput, NullOutput, open_output
from .overlay import draw_overlay
from .sources import Frame, FrameSource, SourceOptions, open_source

log = logging.getLogger(__name__)


def stream(source: str | int | Path | FrameSource, model: PatchCleanser, *, options: SourceOptions | None = None,
           fps_limit: float = 0.0, stop: threading.Event | None = None,
           alarm: str | StreamAlarm = DEFAULT_WINDOW) -> Iterator[tuple[Result, Frame]]:
    """Yield ``(result, frame)`` for each frame the model processes; ``frame.image`` is the BGR frame.

    ``source`` is a URI (see :mod:`pcedge.video.sources`) or an open :class:`FrameSource`; a URI is
    opened here and closed when the loop ends, breaks or raises. ``fps_limit`` caps the processing rate
    (live sources then drop the frames in between; file sources are slowed to that rate). ``result.level``
    is the frame's alarm level and ``result.stream_alarm`` the stream's ``alarm`` ("k/n": raised while at
    least k of the last n frames show the patch signature) after that frame.
    """
    if fps_limit < 0:
        raise ConfigError(f"fps_limit must be >= 0, got {fps_limit}")
    stream_alarm = alarm if isinstance(alarm, StreamAlarm) else StreamAlarm.from_text(alarm)
    owned = not isinstance(source, FrameSource)
    src = open_source(source, options) if owned else source
    period = 1.0 / fps_limit if fps_limit else 0.0
    next_due = time.monotonic()
    try:
        for frame in src:
            if stop is not None and stop.is_set():
                break
            if period:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_due = max(next_due + period, time.monotonic())
            result = model.predict(frame.image)
            result.stream_alarm = stream_alarm.update(result.level)
            yield result, frame
    finally:
        if owned:
            src.close()


@dataclass
class RunOptions:
    """What ``pcedge run`` does besides inference."""

    output: str | None = None
    log_path: str | None = None
    fps_limit: float = 0.0
    max_frames: int = 0  # 0 = until the source ends
    show_masks: bool = True
    show_undefended: bool = False  # one extra unmasked inference per frame (CPU engines)
    alarm: str = DEFAULT_WINDOW  # stream alarm: k of the last n frames at the patch level
    progress: bool = False  # a status line while it runs (a bar with ETA for files; frames, FPS, p50, alarm for live sources)


def report_alarm_change(framelog: FrameLog, index: int, result: Result, stream: str = "") -> None:
    """The stream alarm's transitions: a log line for people (naming ``stream`` when there are several), an event
    line in the frame log for scripts."""
    state = result.stream_alarm
    if state is None or not (state.raised or state.cleared):
        return
    kind = "alarm_raised" if state.raised else "alarm_cleared"
    framelog.event(kind, frame=index, hits=state.hits, window=state.window)
    if state.raised:
        log.warning("PATCH ALARM raised%s at frame %d: the patch signature on %d of the last %d frames (%s)",
                    f" on {stream}" if stream else "", index, state.hits, state.window, result.class_name)
    else:
        log.info("patch alarm cleared%s at frame %d", f" on {stream}" if stream else "", index)


def run(model: PatchCleanser, source_uri: str, source_options: SourceOptions, run_options: RunOptions,
        stop: threading.Event | None = None) -> dict:
    """Stream, annotate, record and log until the source ends, ``max_frames``, or ``stop`` is set.

    Returns the summary (also written as the log's last line). The output is always closed, so a
    recorded file stays playable after Ctrl-C or SIGTERM.
    """
    stop = stop or threading.Event()
    alarm = StreamAlarm.from_text(run_options.alarm)  # refuse a bad window before opening anything
    source = open_source(source_uri, source_options)
    framelog = FrameLog(run_options.log_path)
    output = status = None
    try:
        output = open_output(run_options.output, fps=run_options.fps_limit or source.fps or 30.0)
        log.info("source: %s; output: %s", source.description, output.description)
        total = source.length if not run_options.max_frames else min(source.length or run_options.max_frames, run_options.max_frames)
        status = progress(total=total, desc="defended frames", unit="frame", enabled=run_options.progress)
        window: deque[float] = deque(maxlen=30)
        for result, frame in stream(source, model, fps_limit=run_options.fps_limit, stop=stop, alarm=alarm):
            undefended = model.predict_undefended(frame.image) if run_options.show_undefended else None
            framelog.gaps(source.stats)
            framelog.frame(frame.index, frame.captured_at, result, dropped=source.stats.dropped, name=frame.name,
                           undefended=undefended)
            report_alarm_change(framelog, frame.index, result)
            window.append(time.monotonic())
            fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else 0.0
            status.set_postfix_str(framelog.status_text(fps, alarm.active), refresh=False)
            status.update(1)
            if not output.failed and not isinstance(output, NullOutput):
                output.write(draw_overlay(frame.image, result, fps=fps,
                                          undefended=None if undefended is None else model.class_name(undefended),
                                          mask_set=model.mask_set if run_options.show_masks else None, spec=model.spec))
            if isinstance(output, DisplayOutput) and output.quit_requested:
                break
            if run_options.max_frames and framelog.latency.count >= run_options.max_frames:
                break
    except BaseException:
        framelog.close()  # every processed frame is already flushed to the log
        raise
    finally:
        if status is not None:
            status.close()
        source.close()
        if output is not None:
            output.close()
    framelog.gaps(source.stats)  # an outage after the last frame (a source given up)
    summary = framelog.summary(source=source.stats.as_dict(), engine=model.engine.describe(), schedule=model.schedule,
                               masks=len(model.mask_set), threat=model.mask_set.threat.describe(),
                               alarm_window=alarm.window_text, alarms_raised=alarm.raised_count,
                               alarm_frames=alarm.active_frames,
                               output=(output.failed or f"{output.description}: {output.written} frames") if output else "",
                               interrupted=stop.is_set())
    framelog.close(summary)
    return summary
