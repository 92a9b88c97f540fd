"""The stream loop: one scheduler for one or many streams, each standing alone.

A step takes, from every stream that is due, the frame to defend now (a camera's newest, a file's next:
:class:`pcedge.video.feeds.Feed`), waits at most ``gather_s`` for streams that have none yet (a stalled or
slow camera never holds the step longer), defends them together in one driver step
(``model.predict_each``: engine calls shared, each result exactly what the frame alone would get), and hands
out, per frame, a :class:`Defended` (with that stream's k-of-n alarm, the frame's age at decision) or a
``frame_error`` event; and per stream its lifecycle as :class:`StreamEvent`s: ``opened``, ``state`` (each change of
:attr:`Stream.state`), ``gap`` (an outage, once it is over), ``alarm_cleared`` (the stream went away with its alarm
up), ``ended`` (with the reason: ``end``, ``max_frames``, ``lost``, ``failed``, ``stopped``).

A stream that goes away (stalled, reconnecting, ended, failed) starts its alarm window afresh: frames from before a
gap say nothing about the scene after it, and an alarm that was up clears then, so no alarm, episode or retained
state outlives the frames that raised it.

Failures stay in their stream: a camera that cannot open is retried like one that was lost, a file that
cannot be read ends its stream, a frame the writer refuses is that frame's failure, a region that does not lie
inside its camera's frame ends that region; only an engine failure (the model or the device) ends the loop, by
raising, after handing out whatever the failed step answered. ``max_frames`` ends each stream at N frames; the
loop ends when every stream has ended or ``stop`` is set.

The streams of one camera (its regions, :mod:`pcedge.video.streams`) share its feed: it is polled once per step and
each region defends its crop of that frame. Streams can be added and removed while the loop runs
(:meth:`StreamLoop.change`, a reload): the change is applied between two steps, removed streams end (reason
``removed``), added ones start, and a :class:`StreamsChanged` item says so; every other stream never notices.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from ..alarm import DEFAULT_WINDOW, StreamAlarm
from ..errors import ConfigError, SourceError
from ..result import FrameFailure, Result
from ..util import naming
from .base import Frame, FrameSource
from .feeds import Feed
from .streams import AWAY, STATES, Defended, Stream, StreamEvent, StreamsChanged, StreamSpec, parse_streams
from .uri import SourceOptions

__all__ = ["AWAY", "STATES", "Defended", "DefendedModel", "Stream", "StreamEvent", "StreamLoop", "StreamSpec", "StreamsChanged",
           "parse_streams", "stream", "stream_many"]

DEFAULT_GATHER_S = 0.005
"""How long a step waits for streams that have no frame yet once one stream has one (seconds)."""
CLOSE_WAIT_S = 15.0
"""How long the loop waits at its end for sources to release their devices (a camera's close can wait on a read)."""


class DefendedModel(Protocol):
    """What the loop needs of a model: :class:`pcedge.runtime.driver.PatchCleanser` or a served defense."""

    def predict_each(self, frames: Sequence[Any]) -> list[Result | FrameFailure]: ...


class StreamLoop:
    """Iterate to run the loop (see the module docstring); items are :class:`Defended`, :class:`StreamEvent` and
    :class:`StreamsChanged`.

    ``sources`` are URIs (``name=URI`` names one), :class:`StreamSpec` or open :class:`FrameSource` objects
    (URIs are opened here and closed at the end; sources given open are left open). A URI that names nothing
    (no such file) is refused here, before anything runs. ``options``, ``fps_limit`` (one rate for all or one per
    stream), ``max_frames`` and ``alarm`` apply to every stream whose spec does not set its own.
    """

    def __init__(self, model: DefendedModel, sources: Sequence[str | StreamSpec | FrameSource], *,
                 options: SourceOptions | None = None, fps_limit: float | Sequence[float] = 0.0, max_frames: int = 0,
                 alarm: str = DEFAULT_WINDOW, gather_s: float = DEFAULT_GATHER_S, stop: threading.Event | None = None) -> None:
        if not sources:
            raise ConfigError("the stream loop needs at least one source")
        limits = list(fps_limit) if isinstance(fps_limit, (list, tuple)) else [float(fps_limit)] * len(sources)
        if len(limits) != len(sources) or any(v < 0 for v in limits):
            raise ConfigError(f"fps_limit: give one rate >= 0, or one per source ({len(sources)}), got {fps_limit}")
        if gather_s < 0 or max_frames < 0:
            raise ConfigError(f"gather_s and max_frames must be >= 0, got {gather_s} and {max_frames}")
        StreamAlarm.from_text(alarm)  # refuse a bad window before opening anything
        self.model, self.max_frames, self.gather_s, self.alarm = model, max_frames, gather_s, alarm
        self.options = options or SourceOptions()
        self.stop = stop or threading.Event()
        self.heartbeat = time.monotonic()  # the start of the newest iteration: a watchdog's proof of life
        self._wake = threading.Event()
        self._changes: list[tuple[list[StreamSpec], list[str], Future]] = []
        self._changes_lock = threading.Lock()
        self._holds = 0  # while held (a reload between its phases), the loop goes on even with no stream running
        self._closed = False  # the loop has ended: a change is refused at once
        self.streams: tuple[Stream, ...] = ()  # replaced whole on a change: other threads read a consistent tuple
        for n, (source, rate) in enumerate(zip(sources, limits)):
            self.streams = self.streams + (self._make(source, n, rate),)
        self._next_index = len(self.streams)
        naming.check_unique([s.name for s in self.streams], how_to_rename="'name=URI', StreamSpec(uri, name), or a FrameSource "
                                                                           "description of its own")

    def _make(self, source: str | StreamSpec | FrameSource, index: int, rate: float | None = None) -> Stream:
        """A stream for ``source``, sharing the feed of a stream of the same camera (a region of it) if there is one."""
        if isinstance(source, FrameSource):
            feed = Feed(source, self.options, self._wake, limit=self.max_frames)
            name = source.description
            return Stream(index, name, feed, StreamAlarm.from_text(self.alarm), StreamSpec(name, name), 1.0 / rate if rate else 0.0,
                          self.max_frames)
        spec = StreamSpec.parse(source, index) if isinstance(source, str) else source
        rate = spec.fps_limit if spec.fps_limit is not None else rate or 0.0
        max_frames = spec.max_frames if spec.max_frames is not None else self.max_frames
        sibling = next((s for s in self.streams if s.running and s.spec.camera_name == spec.camera_name and s.spec.uri == spec.uri), None)
        feed = sibling.feed if sibling else Feed(spec.uri, spec.options or self.options, self._wake, limit=max_frames)
        return Stream(index, spec.name, feed, StreamAlarm.from_text(spec.alarm or self.alarm), spec, 1.0 / rate if rate else 0.0,
                      max_frames)

    def change(self, add: Sequence[StreamSpec] = (), remove: Sequence[str] = ()) -> Future:
        """Add and remove streams (by name) while the loop runs: applied between two steps, from the loop's thread. The
        future's result is the :class:`StreamsChanged`; a name clash or an unknown name fails it and changes nothing."""
        future: Future = Future()
        with self._changes_lock:
            if self._closed:
                future.set_exception(ConfigError("nothing changed: the loop has ended"))
                return future
            self._changes.append((list(add), list(remove), future))
        self._wake.set()
        return future

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """While the block runs, the loop does not end for want of running streams (a change that removes every stream
        and then adds new ones, in two steps)."""
        with self._changes_lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._changes_lock:
                self._holds -= 1
            self._wake.set()

    def __iter__(self) -> Iterator[Defended | StreamEvent | StreamsChanged]:
        self._start_feeds(self.streams)
        try:
            try:
                while not self.stop.is_set():
                    self.heartbeat = time.monotonic()
                    yield from self._apply_changes()
                    yield from self._lifecycle()
                    if not any(s.running for s in self.streams) and not self._holds:
                        break
                    batch = self._gather()
                    if not batch:
                        self._wake.wait(timeout=0.05)
                        self._wake.clear()
                        continue
                    yield from self._defend(batch)
            except Exception:  # an engine failure ends the run: every stream still ends (alarms cleared, episodes closed)
                for stream in self.streams:
                    if stream.running:
                        yield from self._end(stream, "stopped", {})
                raise
            for stream in self.streams:
                if stream.running:
                    yield from self._end(stream, "stopped", {})
        finally:
            self._close_all()
            self._refuse_changes("the loop has ended")
        yield from self._gaps()  # outages after each stream's last frame (a camera given up)

    def _start_feeds(self, streams: Sequence[Stream]) -> None:
        feeds = {id(s.feed): s.feed for s in sorted(streams, key=lambda s: s.feed.live)}  # files first: see Feed.start
        for feed in feeds.values():
            if not feed.started:
                feed.start()

    # ------------------------------------------------------------------------------- changes while running
    def _apply_changes(self) -> Iterator[StreamEvent | StreamsChanged]:
        with self._changes_lock:
            changes, self._changes = self._changes, []
        for add, remove, future in changes:
            if not future.set_running_or_notify_cancel():  # withdrawn by its caller (it stopped waiting)
                continue
            try:
                removed = self._removed(remove)
                keep = [s.name for s in self.streams if s not in removed]
                naming.check_unique(keep + [spec.name for spec in add], how_to_rename="rename one under cameras:")
            except ConfigError as exc:
                future.set_exception(exc)
                continue
            for stream in removed:
                if stream.running:
                    yield from self._end(stream, "removed", {})
            self.streams = tuple(s for s in self.streams if s not in removed)
            added: tuple[Stream, ...] = ()
            for spec in add:
                added += (self._make(spec, self._next_index),)
                self._next_index += 1  # indices are never reused: logs and sinks key streams by them
                self.streams = self.streams + added[-1:]  # a camera's later regions find its feed
            self._start_feeds(added)
            done = StreamsChanged(self.streams, added, removed)
            future.set_result(done)
            yield done

    def _removed(self, names: Sequence[str]) -> tuple[Stream, ...]:
        by_name = {s.name: s for s in self.streams}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ConfigError(f"no stream named {', '.join(unknown)} in this run (streams: {', '.join(by_name)})")
        return tuple(by_name[n] for n in names)

    def _refuse_changes(self, why: str) -> None:
        with self._changes_lock:
            changes, self._changes, self._closed = self._changes, [], True
        for _, _, future in changes:
            if future.set_running_or_notify_cancel():
                future.set_exception(ConfigError(f"nothing changed: {why}"))

    # ------------------------------------------------------------------------------- one step
    def _gather(self) -> list[tuple[Stream, Frame]]:
        """The frame of every due stream that has one, waiting up to ``gather_s`` for the others once one has. A feed
        is polled once for all the streams it serves (a camera's regions), each taking its own view of the frame."""
        taken: dict[int, Frame] = {}
        deadline = None
        while True:
            now = time.monotonic()
            polled: dict[int, Frame | None] = {}
            for stream in self.streams:
                if stream.running and stream.index not in taken and now >= stream.next_due:
                    key = id(stream.feed)
                    if key not in polled:
                        polled[key] = stream.feed.poll()
                    if polled[key] is not None:
                        self._take(stream, polled[key], taken, now)
            waiting = [s for s in self.streams if s.running and s.index not in taken and now >= s.next_due and s.feed.opened]
            if not taken or not waiting or self.gather_s == 0:
                break
            deadline = deadline or now + self.gather_s
            if now >= deadline:
                break
            self._wake.wait(timeout=deadline - now)
            self._wake.clear()
        return [(s, taken[s.index]) for s in self.streams if s.index in taken]

    @staticmethod
    def _take(stream: Stream, frame: Frame, taken: dict[int, Frame], now: float) -> None:
        try:
            taken[stream.index] = stream.view(frame)
        except SourceError as exc:  # a region outside its camera's frame: that region ends (_lifecycle)
            stream.error = str(exc)
            return
        stream.next_due = max(stream.next_due + stream.period, now) if stream.period else now

    def _defend(self, batch: list[tuple[Stream, Frame]]) -> Iterator[Defended | StreamEvent]:
        try:
            outcomes = self.model.predict_each([frame.image for _, frame in batch])
        except Exception as exc:
            partial = getattr(exc, "outcomes", None)  # what a failed step still answered (a served model's step)
            if partial is not None:
                yield from self._hand_out(batch, partial)
            raise
        yield from self._hand_out(batch, outcomes)

    def _hand_out(self, batch: list[tuple[Stream, Frame]], outcomes: Sequence[Result | FrameFailure]) -> Iterator[Defended | StreamEvent]:
        now = time.time()
        for (stream, frame), outcome in zip(batch, outcomes):
            stream.taken += 1
            if isinstance(outcome, FrameFailure):
                stream.stats.add_failure(outcome)
                yield StreamEvent(stream, "frame_error", {"index": frame.index, "failure": outcome.kind, "reason": outcome.reason})
            else:
                yield from self._report_state(stream, "running")  # a stream with a frame in hand runs, whatever comes next
                if frame.follows_gap:  # exact even when the loop never saw the outage's state
                    yield from self._restart_alarm(stream, "gap")
                outcome.stream_alarm = stream.alarm.update(outcome.level)
                age_ms = (now - frame.captured_at) * 1e3
                stream.stats.add(outcome, age_ms)
                yield Defended(stream, frame, outcome, age_ms)
            if stream.max_frames and stream.taken >= stream.max_frames and stream.running:
                yield from self._end(stream, "max_frames", {"frames": stream.taken})

    # ------------------------------------------------------------------------------- lifecycle
    def _lifecycle(self) -> Iterator[StreamEvent]:
        for stream in self.streams:
            feed = stream.feed
            if not stream.reported_open and feed.opened:
                stream.reported_open = True
                yield StreamEvent(stream, "opened", {"source": feed.description})
            yield from self._gaps([stream])
            if stream.running and stream.error:
                yield from self._end(stream, "failed", {"error": stream.error})
            elif stream.running and feed.ended:
                reason = ("lost" if feed.live else "failed") if feed.error else "end"
                yield from self._end(stream, reason, {"error": feed.error} if feed.error else {})
            else:
                yield from self._state_changes(stream)

    def _end(self, stream: Stream, reason: str, fields: dict[str, Any]) -> Iterator[StreamEvent]:
        """End ``stream`` (its state, its alarm, then the ``ended`` event) and release its source unless another stream
        (a region of the same camera) still reads it."""
        stream.end = reason
        if not any(s.running and s.feed is stream.feed for s in self.streams):
            stream.feed.close()
        yield from self._state_changes(stream)
        yield StreamEvent(stream, "ended", {"reason": reason, **fields})

    def _state_changes(self, stream: Stream) -> Iterator[StreamEvent]:
        yield from self._report_state(stream, stream.state)

    def _report_state(self, stream: Stream, state: str) -> Iterator[StreamEvent]:
        """A ``state`` event when the stream's state changed; an away state restarts its alarm window, so sinks reading
        the stream during the event see the alarm down (``alarm_cleared`` follows when it was up)."""
        if state == stream.reported_state:
            return
        previous, stream.reported_state = stream.reported_state, state
        cleared = state in AWAY and stream.alarm.reset()
        yield StreamEvent(stream, "state", {"state": state, "previous": previous})
        if cleared:
            yield StreamEvent(stream, "alarm_cleared", {"reason": state})

    @staticmethod
    def _restart_alarm(stream: Stream, reason: str) -> Iterator[StreamEvent]:
        """Start the stream's alarm window afresh (``alarm_cleared`` when the alarm was up)."""
        if stream.alarm.reset():
            yield StreamEvent(stream, "alarm_cleared", {"reason": reason})

    def _gaps(self, streams: Sequence[Stream] | None = None) -> Iterator[StreamEvent]:
        for stream in streams or self.streams:
            stats = stream.feed.stats
            for gap in stats.gaps_since(stream.reported_gaps):
                yield StreamEvent(stream, "gap", dict(gap))
            stream.reported_gaps = stats.gap_count

    def _close_all(self) -> None:
        feeds = {id(s.feed): s.feed for s in self.streams}.values()
        for feed in feeds:
            feed.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for feed in feeds:
            feed.join(max(0.0, deadline - time.monotonic()))


def stream_many(sources: Sequence[str | StreamSpec | FrameSource], model: DefendedModel, *, options: SourceOptions | None = None,
                fps_limit: float | Sequence[float] = 0.0, stop: threading.Event | None = None, alarm: str = DEFAULT_WINDOW,
                gather_s: float = DEFAULT_GATHER_S, max_frames: int = 0) -> Iterator[tuple[int, Result, Frame]]:
    """Yield ``(stream index, result, frame)`` for every frame the model defends, from several streams at once.

    The same loop as ``pcedge run`` (:class:`StreamLoop`); lifecycle events and failed frames are not yielded (a
    failed stream's reason is in its source's ``stats.error``), and the loop ends when every stream has ended.
    """
    for item in StreamLoop(model, sources, options=options, fps_limit=fps_limit, max_frames=max_frames, alarm=alarm,
                           gather_s=gather_s, stop=stop):
        if isinstance(item, Defended):
            yield item.stream.index, item.result, item.frame


def stream(source: str | int | Path | FrameSource, model: DefendedModel, *, options: SourceOptions | None = None,
           fps_limit: float = 0.0, stop: threading.Event | None = None, alarm: str = DEFAULT_WINDOW,
           max_frames: int = 0) -> Iterator[tuple[Result, Frame]]:
    """Yield ``(result, frame)`` for each frame the model defends from one source; ``frame.image`` is the BGR frame.

    The one-source form of :class:`StreamLoop`: a camera's frames are its newest at each step (frames it
    replaced are counted as dropped), a file's are all of them in order. ``fps_limit`` caps the rate.
    ``result.level`` is the frame's alarm level and ``result.stream_alarm`` the stream's ``alarm`` ("k/n":
    raised while at least k of the last n frames show the patch signature) after that frame.
    """
    if fps_limit < 0:
        raise ConfigError(f"fps_limit must be >= 0, got {fps_limit}")
    target = source if isinstance(source, FrameSource) else str(source)
    for _, result, frame in stream_many([target], model, options=options, fps_limit=fps_limit, stop=stop, alarm=alarm,
                                        max_frames=max_frames):
        yield result, frame
