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
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Sequence

from ..alarm import DEFAULT_WINDOW
from ..errors import ConfigError
from .framelog import FrameLog
from .loop import DEFAULT_GATHER_S, DefendedModel, StreamLoop
from .sinks import PeopleLog, Recorder, Sink, SinkChain, StatusLine, stream_outputs
from .streams import Defended, Stream, StreamsChanged, StreamSpec
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


def run(model: DefendedModel, sources: str | Sequence[str | StreamSpec], source_options: SourceOptions, run_options: RunOptions,
        stop: threading.Event | None = None, sinks: Sequence[Sink] = ()) -> dict[str, Any]:
    """Defend every source until each has ended (or ``stop``); returns the summary (also the log's last line)."""
    return Runner(model, sources, source_options, run_options, stop=stop, sinks=sinks).run()


class Runner:
    """``pcedge run``'s loop and its sinks, held so that a reload can change them while they run
    (:meth:`reconfigure`); :func:`run` is the one-call form."""

    def __init__(self, model: DefendedModel, sources: str | Sequence[str | StreamSpec], source_options: SourceOptions,
                 run_options: RunOptions, *, stop: threading.Event | None = None, sinks: Sequence[Sink] = ()) -> None:
        self.model, self.options = model, run_options
        self.stop = stop or threading.Event()
        sources = [sources] if isinstance(sources, str) else list(sources)
        self.loop = StreamLoop(model, sources, options=source_options, fps_limit=run_options.fps_limit,
                               max_frames=run_options.max_frames, alarm=run_options.alarm, gather_s=run_options.gather_s, stop=self.stop)
        streams = self.loop.streams
        recorder = Recorder(streams, stream_outputs(run_options.output, [s.name for s in streams]), model,
                            fps_limit=run_options.fps_limit, show_masks=run_options.show_masks)
        self.chain = SinkChain([FrameLog(run_options.log_path), PeopleLog(), StatusLine(run_options.progress), recorder, *sinks])
        self.removed: list[Stream] = []  # streams a reload removed: the summary still counts their frames
        self._pending: list[tuple[Future, _Reconfiguration]] = []
        self._pending_lock = threading.Lock()
        self._closed = False

    def reconfigure(self, add: Sequence[StreamSpec] = (), remove: Sequence[str] = (), *, drop_sinks: Sequence[Sink] = (),
                    add_sinks: Sequence[Sink] = (), notice: dict[str, Any] | None = None) -> Future:
        """From any thread: between two steps, remove streams (by name) and ``drop_sinks`` (after the removed streams'
        last events reached them; the caller drains and closes them), add ``add_sinks`` (already started by the caller,
        away from the loop's thread: a server binds there) and streams, and tell every sink ``notice`` (a reload's
        result). The future's result is the :class:`StreamsChanged` once every sink has seen it; a name clash fails it
        and changes nothing; cancelling it before the loop took the change withdraws the change."""
        change = _Reconfiguration(list(drop_sinks), list(add_sinks), notice, Future())
        with self._pending_lock:  # recorded before the loop can apply it (it looks the change up in its thread)
            if self._closed:
                change.done.set_exception(ConfigError("nothing changed: the run has ended"))
                return change.done
            loop_change = self.loop.change(add, remove)
            self._pending.append((loop_change, change))
        loop_change.add_done_callback(self._refused)
        change.done.add_done_callback(lambda done: loop_change.cancel() if done.cancelled() else None)
        return change.done

    def _refused(self, loop_change: Future) -> None:
        """A change the loop refused (a name clash) fails its caller's future at once."""
        if loop_change.cancelled() or loop_change.exception() is None:
            return
        with self._pending_lock:
            mine = [entry for entry in self._pending if entry[0] is loop_change]
            self._pending = [entry for entry in self._pending if entry[0] is not loop_change]
        for _, change in mine:
            change.done.set_exception(loop_change.exception())

    def run(self) -> dict[str, Any]:
        """Defend until every stream has ended (or ``stop``); returns the summary."""
        self.chain.start(self.loop.streams)
        error = ""
        try:
            for item in self.loop:
                if isinstance(item, Defended):
                    show = item.stream.spec.show_undefended
                    if show or (show is None and self.options.show_undefended):
                        item.undefended = self.model.predict_undefended(item.frame.image)
                    self.chain.frame(item)
                elif isinstance(item, StreamsChanged):
                    self._changed(item)
                else:
                    self.chain.event(item)
                if self.chain.stop_requested:
                    self.stop.set()
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            raise
        finally:
            self._fail_pending()
            reports = self.chain.drain()
            summary = run_summary(self.removed + list(self.loop.streams), self.model, self.chain.stream_summary,
                                  interrupted=self.stop.is_set(), error=error)
            if reports:
                summary["sinks"] = reports
            self.chain.close(summary)
        return summary

    def _changed(self, item: StreamsChanged) -> None:
        """The loop applied a change (in its thread, between two steps): the sinks follow, then the caller hears."""
        with self._pending_lock:
            mine = next(entry for entry in self._pending if entry[0].done() and entry[0].result() is item)
            self._pending.remove(mine)
        change = mine[1]
        self.removed += item.removed
        self.chain.remove(change.drop_sinks)
        self.chain.add(change.add_sinks)
        self.chain.streams_changed(item)
        if change.notice is not None:
            self.chain.config_reloaded(change.notice)
        if change.done.set_running_or_notify_cancel():
            change.done.set_result(item)

    def _fail_pending(self) -> None:
        """Changes the loop refused or never reached (it ended first) fail their callers' futures, and later ones at once."""
        with self._pending_lock:
            pending, self._pending, self._closed = self._pending, [], True
        for _, change in pending:
            if change.done.set_running_or_notify_cancel():
                change.done.set_exception(ConfigError("nothing changed: the run has ended"))


@dataclass
class _Reconfiguration:
    drop_sinks: list[Sink]
    add_sinks: list[Sink]
    notice: dict[str, Any] | None
    done: Future
