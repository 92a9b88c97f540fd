"""What ``pcedge run`` does, for one source or many: the stream loop with its sinks, then the summary.

Per stream: its name, k-of-n alarm, output (one per stream, a folder with one video each, or a window each),
statistics and summary; one JSON-lines log for all. Extra sinks (the site's publishers) are passed in and
receive exactly what the built-in ones do. The recording, the log and the summary are complete however the
run ends: at the sources' ends, at ``max_frames`` per stream, at ``stop`` (Ctrl-C, SIGTERM, the window's quit
key), or on an engine failure (raised after everything is written).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ..alarm import DEFAULT_WINDOW
from .framelog import FrameLog
from .loop import DEFAULT_GATHER_S, Defended, DefendedModel, StreamLoop
from .sinks import PeopleLog, Recorder, Sink, SinkChain, StatusLine, stream_outputs
from .summary import run_summary
from .uri import SourceOptions

log = logging.getLogger("pcedge.video")


@dataclass
class RunOptions:
    """What ``pcedge run`` does besides inference."""

    output: str | Sequence[str] | None = None  # one per stream, or one folder / display for all (see sinks.stream_outputs)
    log_path: str | None = None
    fps_limit: float = 0.0
    max_frames: int = 0  # per stream; 0 = until the source ends
    show_masks: bool = True
    show_undefended: bool = False  # one extra unmasked inference per frame (local engines)
    alarm: str = DEFAULT_WINDOW  # stream alarm: k of the last n frames at the patch level
    progress: bool = False  # a status line while it runs (a bar with ETA for files; FPS, level, alarm per stream)
    gather_s: float = DEFAULT_GATHER_S


def run(model: DefendedModel, sources: str | Sequence[str], source_options: SourceOptions, run_options: RunOptions,
        stop: threading.Event | None = None, sinks: Sequence[Sink] = ()) -> dict[str, Any]:
    """Defend every source until each has ended (or ``stop``); returns the summary (also the log's last line)."""
    stop = stop or threading.Event()
    sources = [sources] if isinstance(sources, str) else list(sources)
    loop = StreamLoop(model, sources, options=source_options, fps_limit=run_options.fps_limit, max_frames=run_options.max_frames,
                      alarm=run_options.alarm, gather_s=run_options.gather_s, stop=stop)
    names = [s.name for s in loop.streams]
    recorder = Recorder(stream_outputs(run_options.output, names), names, model, fps_limit=run_options.fps_limit,
                        show_masks=run_options.show_masks)
    chain = SinkChain([FrameLog(run_options.log_path), PeopleLog(), StatusLine(run_options.progress), recorder, *sinks])
    chain.start(loop.streams)
    error = ""
    try:
        for item in loop:
            if isinstance(item, Defended):
                if run_options.show_undefended:
                    item.undefended = model.predict_undefended(item.frame.image)
                chain.frame(item)
            else:
                chain.event(item)
            if chain.stop_requested:
                stop.set()
    except Exception as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        reports = chain.drain()
        summary = run_summary(loop.streams, model, chain.stream_summary, interrupted=stop.is_set(), error=error)
        if reports:
            summary["sinks"] = reports
        chain.close(summary)
    return summary
