"""Where the stream loop's deliveries go: one interface, every feature once, for any number of streams.

The loop knows only :class:`SinkChain` (as Frigate's detection loop knows only its dispatcher): it hands every
defended frame and every stream event to each sink in turn. A sink runs in the loop's thread and must return
at once; one that talks to a slow world (a broker, a webhook, a browser) keeps a bounded queue and a worker of
its own. A sink that raises is switched off with one error line, and the defense goes on: the run's result
never depends on a sink. Sinks here: :class:`PeopleLog` (alarm and stream lines for people),
:class:`StatusLine` (the progress bar or periodic status), :class:`Recorder` (overlay, recording, the display
window and its quit key); :class:`pcedge.video.framelog.FrameLog` writes the JSON lines for scripts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, PcedgeError
from ..util import naming
from ..util.progress import progress
from .outputs import DisplayOutput, NullOutput, Output, open_output
from .overlay import draw_overlay
from .streams import Defended, Stream, StreamEvent, StreamsChanged

log = logging.getLogger("pcedge.video")


class Sink:
    """A receiver of the loop's deliveries (see the module docstring). Override what you need."""

    name = "sink"
    stop_requested = False  # set to end the whole run (a display window closed by its user)
    order = 0  # where it sits in the chain: a sink reads what lower orders did with the same delivery

    def start(self, streams: Sequence[Stream]) -> None:
        """Called once before the first delivery, with every stream of the run."""

    def frame(self, item: Defended) -> None:
        """A defended frame."""

    def event(self, event: StreamEvent) -> None:
        """A stream's lifecycle event or a frame without a result."""

    def streams_changed(self, change: StreamsChanged) -> None:
        """Streams were added or removed while the run goes on (a reload); their events came before this."""

    def config_reloaded(self, result: dict[str, Any]) -> None:
        """A reload of the run's configuration was applied or refused (``result["result"]``: applied, refused)."""

    def stream_summary(self, stream: Stream) -> dict[str, Any]:
        """What this sink adds to one stream's summary (e.g. where its recording went)."""
        return {}

    def drain(self) -> None:
        """At the end, before the summary is made: deliver what is still queued (briefly; a publisher's own bound)."""

    def report(self) -> dict[str, Any]:
        """What the summary says about this sink under ``sinks`` (e.g. items it dropped); {} for nothing."""
        return {}

    def close(self, summary: dict[str, Any]) -> None:
        """Called once at the end, with the run's summary; flush and release."""


class SinkChain:
    """Every delivery to every sink, a failing sink switched off (logged once) without touching the others."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = sorted(sinks, key=lambda sink: sink.order)  # stable: equal orders keep the given order
        self.failed: dict[str, str] = {}
        self._switched_off: list[Sink] = []  # still closed at the end: a recording stays a finished file

    def start(self, streams: Sequence[Stream]) -> None:
        for sink in self.sinks:
            sink.start(streams)

    def frame(self, item: Defended) -> None:
        self._each("frame", item)

    def event(self, event: StreamEvent) -> None:
        self._each("event", event)

    def streams_changed(self, change: StreamsChanged) -> None:
        self._each("streams_changed", change)

    def config_reloaded(self, result: dict[str, Any]) -> None:
        self._each("config_reloaded", result)

    def add(self, sinks: Sequence[Sink]) -> None:
        """Sinks, already started, that join a running chain (a reload restarted them)."""
        self.sinks = sorted(self.sinks + list(sinks), key=lambda sink: sink.order)

    def remove(self, sinks: Sequence[Sink]) -> None:
        """Sinks that leave a running chain; the caller drains and closes them (away from the loop's thread)."""
        self.sinks = [sink for sink in self.sinks if sink not in sinks]

    @property
    def stop_requested(self) -> bool:
        return any(sink.stop_requested for sink in self.sinks)

    def stream_summary(self, stream: Stream) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for sink in self.sinks:
            merged.update(sink.stream_summary(stream))
        return merged

    def drain(self) -> dict[str, Any]:
        """Let every sink deliver what it still holds (all at once: each has its own bound); returns the sinks' reports
        for the summary (failed ones too)."""
        draining = [threading.Thread(target=self._guarded, args=(sink, "drain"), daemon=True) for sink in self.sinks]
        for thread in draining:
            thread.start()
        for thread in draining:
            thread.join()
        reports = {sink.name: sink.report() for sink in self.sinks if sink.report()}
        reports.update({name: {"switched_off": reason} for name, reason in self.failed.items()})
        return reports

    def close(self, summary: dict[str, Any]) -> None:
        for sink in self.sinks + self._switched_off:
            self._guarded(sink, "close", summary)

    @classmethod
    def finish(cls, sinks: Sequence[Sink]) -> None:
        """Sinks that left a running chain deliver what they hold and close (a server frees its port)."""
        for sink in sinks:
            cls._guarded(sink, "drain")
            cls._guarded(sink, "close", {})

    @staticmethod
    def _guarded(sink: Sink, method: str, *args: Any) -> None:
        try:
            getattr(sink, method)(*args)
        except Exception as exc:  # noqa: BLE001 - one sink's failure to finish must not lose the others' output
            log.error("%s could not %s cleanly: %s", sink.name, method, exc)

    def _each(self, method: str, item: Any) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, method)(item)
            except Exception as exc:  # noqa: BLE001 - a sink never stops the defense
                self.failed[sink.name] = f"{type(exc).__name__}: {exc}"
                self.sinks.remove(sink)
                self._switched_off.append(sink)
                log.error("%s failed and is switched off (the defense goes on): %s", sink.name, self.failed[sink.name],
                          exc_info=log.isEnabledFor(logging.DEBUG))


class PeopleLog(Sink):
    """Log lines for people: each stream's source when it opens, its end, and its alarm rising and clearing.

    Outages and reconnects are logged by the sources themselves, where they happen."""

    name = "log"

    def start(self, streams: Sequence[Stream]) -> None:
        self._several = len(streams) > 1

    def streams_changed(self, change: StreamsChanged) -> None:
        self._several = self._several or len(change.streams) > 1  # names stay in the lines once there were several

    def _who(self, stream: Stream) -> str:
        return f" on {stream.name}" if self._several else ""

    def frame(self, item: Defended) -> None:
        state = item.result.stream_alarm
        if state is None or not (state.raised or state.cleared):
            return
        if state.raised:
            log.warning("PATCH ALARM raised%s at frame %d: the patch signature on %d of the last %d frames (%s)",
                        self._who(item.stream), item.frame.index, state.hits, state.window, item.result.class_name)
        else:
            log.info("patch alarm cleared%s at frame %d", self._who(item.stream), item.frame.index)

    def event(self, event: StreamEvent) -> None:
        stream = event.stream
        prefix = f"stream {stream.index} ({stream.name}): " if self._several else ""
        if event.kind == "opened":
            log.info("%s%s", prefix or "source: ", event.fields["source"])
        elif event.kind == "ended" and event.fields["reason"] == "failed":
            log.error("%s%s", prefix, event.fields["error"])
        elif event.kind == "ended" and self._several and event.fields["reason"] in ("end", "max_frames"):
            log.info("%sended (%s) after %d frames", prefix, event.fields["reason"].replace("_", " "), stream.stats.frames)
        elif event.kind == "alarm_cleared":
            log.info("patch alarm cleared%s: the stream is %s (its alarm window starts afresh)", self._who(stream), event.fields["reason"])
        elif event.kind == "frame_error":
            log.warning("%sframe %d has no result (%s): %s", prefix, event.fields["index"], event.fields["failure"],
                        event.fields["reason"])


class StatusLine(Sink):
    """The progress bar (with total and ETA when every source is a file of known length) or the periodic status
    line, showing each stream's FPS, level and alarm, alarms first."""

    name = "status"

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def start(self, streams: Sequence[Stream]) -> None:
        self._streams = list(streams)

    def streams_changed(self, change: StreamsChanged) -> None:
        self._streams = list(change.streams)

    def _ensure_bar(self) -> Any:
        if self._bar is None:  # at the first delivery: the files are open and their lengths known
            lengths = [s.feed.length for s in self._streams]
            total = sum(lengths) if all(n is not None for n in lengths) else None  # type: ignore[misc]
            several = f", {len(self._streams)} streams" if len(self._streams) > 1 else ""
            self._bar = progress(total=total or None, desc=f"defended frames{several}", unit="frame", enabled=self.enabled)
        return self._bar

    def frame(self, item: Defended) -> None:
        bar = self._ensure_bar()
        bar.set_postfix_str(self._text(), refresh=False)
        bar.update(1)

    def event(self, event: StreamEvent) -> None:
        if event.kind == "frame_error":
            self._ensure_bar().update(1)  # a frame without a result still counts toward the total

    def _text(self) -> str:
        if len(self._streams) == 1:
            stream = self._streams[0]
            return stream.stats.status_text(stream.alarm.active)
        ordered = sorted(self._streams, key=lambda s: (not s.alarm.active, s.index))
        return " | ".join(f"{s.name} {s.stats.fps:.1f} FPS {'ALARM' if s.alarm.active else s.stats.last_level or '-'}"
                          for s in ordered)

    def close(self, summary: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()


class Recorder(Sink):
    """Overlay and recording per stream (a file, a folder of images, a window, or nothing), and the display's
    quit key (q, Esc, or closing the window ends the run). Recording never stops the defense: an output that
    fails (a full disk) stops recording with the reason in the summary."""

    name = "recording"

    def __init__(self, streams: Sequence[Stream], targets: Sequence[str | None], model: Any, *, fps_limit: float = 0.0,
                 show_masks: bool = True) -> None:
        """Opens every output now, so a bad one is refused before the run starts (one window per stream, titled).
        A stream's own ``spec.output`` and ``spec.show_masks`` win over ``targets`` and ``show_masks``."""
        self.model, self.fps_limit, self.show_masks = model, fps_limit, show_masks
        self.outputs: dict[int, Output] = {}
        self._annotate: dict[int, Callable[[Defended], np.ndarray]] = {}
        self._titled = len(streams) > 1
        try:
            self._open(streams, targets)
        except BaseException:
            self.close({})
            raise

    def _open(self, streams: Sequence[Stream], targets: Sequence[str | None]) -> None:
        for stream, target in zip(streams, targets, strict=True):
            spec = stream.spec
            self.outputs[stream.index] = open_output(spec.output if spec.output is not None else target, fps=self.fps_limit,
                                                     title=f"pcedge {stream.name}" if self._titled else "")
            self._annotate[stream.index] = annotator(self.model, self.show_masks if spec.show_masks is None else spec.show_masks)

    def start(self, streams: Sequence[Stream]) -> None:
        for stream in streams:
            self._announce(stream, several=len(streams) > 1)

    def _announce(self, stream: Stream, several: bool) -> None:
        output = self.outputs[stream.index]
        if not isinstance(output, NullOutput):
            log.info("%soutput: %s", f"stream {stream.index} ({stream.name}) " if several else "", output.description)

    def streams_changed(self, change: StreamsChanged) -> None:
        """Outputs for the streams added (their own ``output`` setting), closed for those removed. An output that cannot
        open (a window on a machine without a display) leaves that stream unrecorded, said once; the others record on."""
        self._titled = True
        for stream in change.removed:
            self.outputs[stream.index].close()
        for stream in change.added:
            try:
                self._open([stream], [None])
            except PcedgeError as exc:
                log.error("%s: not recorded (%s)", stream.name, exc)
                self.outputs[stream.index], self._annotate[stream.index] = NullOutput(), annotator(self.model, False)
            self._announce(stream, several=True)

    def frame(self, item: Defended) -> None:
        output = self.outputs[item.stream.index]
        if output.failed or isinstance(output, NullOutput):
            return
        if not output.written:
            output.set_rate(self.fps_limit or item.stream.feed.fps or 30.0)
        output.write(self._annotate[item.stream.index](item))
        if isinstance(output, DisplayOutput) and output.quit_requested:
            self.stop_requested = True

    def stream_summary(self, stream: Stream) -> dict[str, Any]:
        output = self.outputs[stream.index]
        return {"output": output.failed or f"{output.description}: {output.written} frames"}

    def close(self, summary: dict[str, Any]) -> None:
        for output in self.outputs.values():
            output.close()


def annotator(model: Any, show_masks: bool = True) -> Callable[[Defended], np.ndarray]:
    """The overlay ``pcedge run`` draws (:func:`pcedge.video.overlay.draw_overlay`), as a function of a delivery: the
    one drawing of recordings, windows, snapshots, clips and the live view."""
    def annotate(item: Defended) -> np.ndarray:
        undefended = None if item.undefended is None else model.class_name(item.undefended)
        return draw_overlay(item.frame.image, item.result, fps=item.stream.stats.fps, undefended=undefended,
                            mask_set=model.mask_set if show_masks else None, spec=model.spec)

    return annotate


def stream_outputs(outputs: str | Sequence[str] | None, names: Sequence[str]) -> list[str | None]:
    """``--output`` once per stream, or once as a folder (``<name>.mp4`` per stream) or a display (a window per
    stream), or not at all."""
    outputs = [outputs] if isinstance(outputs, str) else list(outputs or [])
    if not outputs:
        return [None] * len(names)
    if len(outputs) == len(names):
        return list(outputs)
    if len(outputs) == 1 and outputs[0].startswith("display://"):
        return [outputs[0]] * len(names)
    if len(outputs) == 1 and not Path(outputs[0]).suffix:
        return [str(Path(outputs[0]) / f"{naming.slug(name)}.mp4") for name in names]
    raise ConfigError(f"{len(names)} sources and {len(outputs)} outputs: give --output once per source, or once as a folder "
                      "(one video per stream) or a display (one window per stream)")
