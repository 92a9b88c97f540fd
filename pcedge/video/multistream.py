"""Several streams, one engine: the newest frame of every ready stream defended in one batched step.

Each source is read by its own feed thread into a one-frame slot: a file source waits until its frame
is taken (nothing is dropped), a live source keeps capturing into its own newest-frame buffer (frames
it replaces are counted as dropped, as for one stream). The scheduler takes the frames that are ready,
waits at most ``gather_s`` for the others (a stalled or slow stream never holds the step longer), orders
them round-robin (so a fast file cannot starve a camera), defends them in one
:meth:`PatchCleanser.predict_batch` step (engine calls of up to ``max_batch`` images) (each result exactly what that frame alone
would get) and hands every result back to its stream with that stream's own k-of-n alarm.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..alarm import DEFAULT_WINDOW, StreamAlarm
from ..errors import ConfigError
from ..result import Result
from ..runtime.driver import PatchCleanser
from .sources import Frame, FrameSource, SourceOptions, open_source

DEFAULT_GATHER_S = 0.005
"""How long a step waits for streams that have no frame yet once one stream has one (seconds)."""


@dataclass(frozen=True)
class StreamSpec:
    """One source of a multi-stream run: ``name=URI`` on the command line, the URI alone otherwise."""

    uri: str
    name: str

    @classmethod
    def parse(cls, text: str, index: int) -> "StreamSpec":
        """``name=URI`` names a stream; a bare URI is named after its file (or the URI itself, for cameras and URLs)."""
        name, sep, uri = text.partition("=")
        if sep and name and "/" not in name and ":" not in name:
            return cls(uri, name)
        stem = Path(text).stem if Path(text).suffix else ""
        return cls(text, stem or text or f"stream{index}")


@dataclass
class _Feed:
    """One stream's reader thread, its slot, its alarm and its rate limit."""

    index: int
    spec: StreamSpec
    source: FrameSource
    alarm: StreamAlarm
    period: float
    wake: threading.Event
    slot: queue.Queue = field(default_factory=lambda: queue.Queue(maxsize=1))
    next_due: float = 0.0
    ended: bool = False
    error: BaseException | None = None

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._read, args=(stop,), name=f"pcedge-feed-{self.index}", daemon=True).start()

    def _read(self, stop: threading.Event) -> None:
        try:
            for frame in self.source:
                if not self._put(frame, stop):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the scheduler, which re-raises it in the caller's thread
            self.error = exc
        finally:
            self._put(None, stop)  # the end marker, once the scheduler has taken the last frame

    def _put(self, item: Frame | None, stop: threading.Event) -> bool:
        """Wait for the slot to be free (a file source is never dropped); False when the run stopped first."""
        while not stop.is_set():
            try:
                self.slot.put(item, timeout=0.1)
                self.wake.set()
                return True
            except queue.Full:
                continue
        return False

    def take(self, now: float) -> Frame | None:
        """The waiting frame if this stream is due (its rate limit allows it); marks the end of the stream."""
        if self.ended or now < self.next_due:
            return None
        try:
            frame = self.slot.get_nowait()
        except queue.Empty:
            return None
        if frame is None:
            self.ended = True
            return None
        self.next_due = max(self.next_due + self.period, now) if self.period else now
        return frame


def stream_many(sources: Sequence[str | StreamSpec | FrameSource], model: PatchCleanser, *, options: SourceOptions | None = None,
                fps_limit: float | Sequence[float] = 0.0, stop: threading.Event | None = None, alarm: str = DEFAULT_WINDOW,
                gather_s: float = DEFAULT_GATHER_S) -> Iterator[tuple[int, Result, Frame]]:
    """Yield ``(stream index, result, frame)`` for every frame the model defends, from several streams at once.

    ``sources`` are URIs (``name=URI`` names one), :class:`StreamSpec` or open :class:`FrameSource`
    objects (URIs are opened here and closed when the loop ends). ``fps_limit`` is one rate for all or one
    per stream (0: as fast as possible). Each stream has its own ``alarm`` ("k/n"). The loop ends when
    every stream has ended; a source that fails is closed and re-raised here after the others stop.
    """
    specs = [s if isinstance(s, (StreamSpec, FrameSource)) else StreamSpec.parse(str(s), n) for n, s in enumerate(sources)]
    if not specs:
        raise ConfigError("stream_many needs at least one source")
    limits = list(fps_limit) if isinstance(fps_limit, (list, tuple)) else [float(fps_limit)] * len(specs)
    if len(limits) != len(specs) or any(v < 0 for v in limits):
        raise ConfigError(f"fps_limit: give one rate >= 0, or one per source ({len(specs)}), got {fps_limit}")
    if gather_s < 0:
        raise ConfigError(f"gather_s must be >= 0, got {gather_s}")
    stop = stop or threading.Event()
    internal_stop = threading.Event()
    wake = threading.Event()
    feeds: list[_Feed] = []
    try:
        for n, spec in enumerate(specs):
            source = spec if isinstance(spec, FrameSource) else open_source(spec.uri, options)
            name = spec.name if isinstance(spec, StreamSpec) else source.description
            feed = _Feed(n, StreamSpec(getattr(spec, "uri", source.description), name), source,
                         StreamAlarm.from_text(alarm), 1.0 / limits[n] if limits[n] else 0.0, wake)
            feeds.append(feed)
        for feed in feeds:
            feed.start(internal_stop)
        yield from _schedule(feeds, model, wake, stop, gather_s)
    finally:
        internal_stop.set()
        for feed in feeds:
            if not isinstance(specs[feed.index], FrameSource):
                feed.source.close()
    for feed in feeds:
        if feed.error is not None:
            raise feed.error


def _schedule(feeds: list[_Feed], model: PatchCleanser, wake: threading.Event, stop: threading.Event,
              gather_s: float) -> Iterator[tuple[int, Result, Frame]]:
    start = 0  # round-robin: the stream served first in the next step
    while not stop.is_set() and not all(feed.ended for feed in feeds):
        batch = _gather(feeds, start, gather_s)
        if not batch:
            wake.wait(timeout=0.05)
            wake.clear()
            continue
        start = (batch[-1][0].index + 1) % len(feeds)
        results = model.predict_batch([frame.image for _, frame in batch])
        for (feed, frame), result in zip(batch, results):
            result.stream_alarm = feed.alarm.update(result.level)
            yield feed.index, result, frame
        if any(feed.error is not None for feed in feeds):
            return


def _gather(feeds: list[_Feed], start: int, gather_s: float) -> list[tuple[_Feed, Frame]]:
    """The frames of the streams that are ready, waiting up to ``gather_s`` for the others once one is."""
    order = feeds[start:] + feeds[:start]
    taken: dict[int, Frame] = {}
    deadline = None
    while True:
        now = time.monotonic()
        for feed in order:
            if feed.index not in taken:
                frame = feed.take(now)
                if frame is not None:
                    taken[feed.index] = frame
        waiting = [f for f in order if f.index not in taken and not f.ended]
        if not taken or not waiting or gather_s == 0:
            break
        deadline = deadline or now + gather_s
        if now >= deadline:
            break
        time.sleep(min(0.001, deadline - now))
    return [(feed, taken[feed.index]) for feed in order if feed.index in taken]
