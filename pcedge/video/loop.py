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
cannot be read ends its stream, a frame the writer refuses is that frame's failure; only an engine failure
(the model or the device) ends the loop, by raising, after handing out whatever the failed step answered.
``max_frames`` ends each stream at N frames; the loop ends when every stream has ended or ``stop`` is set.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from ..alarm import DEFAULT_WINDOW, StreamAlarm
from ..errors import ConfigError
from ..result import FrameFailure, Result
from .base import Frame, FrameSource
from .feeds import Feed
from ..util import naming
from .stats import StreamStats
from .uri import SourceOptions

DEFAULT_GATHER_S = 0.005
"""How long a step waits for streams that have no frame yet once one stream has one (seconds)."""
CLOSE_WAIT_S = 15.0
"""How long the loop waits at its end for sources to release their devices (a camera's close can wait on a read)."""
STATES = ("starting", "running", "stalled", "reconnecting", "ended", "failed")
"""A stream's states (:attr:`Stream.state`), the same on the log, MQTT, the metrics, the live view and the summary."""
AWAY = ("stalled", "reconnecting", "ended", "failed")
"""States in which no frame comes: the alarm window starts afresh and an alarm that was up clears."""


class DefendedModel(Protocol):
    """What the loop needs of a model: :class:`pcedge.runtime.driver.PatchCleanser` or a served defense."""

    def predict_each(self, frames: Sequence[Any]) -> list[Result | FrameFailure]: ...


@dataclass(frozen=True)
class StreamSpec:
    """One source of a run: ``name=URI`` on the command line, the URI alone otherwise."""

    uri: str = field(repr=False)  # may hold a password
    name: str = ""

    @classmethod
    def parse(cls, text: str, index: int) -> "StreamSpec":
        """``name=URI`` names a stream; a bare URI gets :func:`pcedge.util.naming.default_name` (a file's stem, a URL's
        host and path: never its credentials)."""
        name, sep, uri = text.partition("=")
        if sep and name and "/" not in name and ":" not in name:
            return cls(uri, name)
        return cls(text, naming.default_name(text, index))


def parse_streams(sources: Sequence[str | StreamSpec]) -> list[StreamSpec]:
    """Every source as a :class:`StreamSpec`, refused (before anything opens) when two would share a name or slug."""
    specs = [StreamSpec.parse(str(s), n) if isinstance(s, str) else s for n, s in enumerate(sources)]
    naming.check_unique([spec.name for spec in specs])
    return specs


@dataclass
class Stream:
    """One stream's state in the loop: its feed, alarm, statistics and how it ended."""

    index: int
    name: str
    feed: Feed
    alarm: StreamAlarm
    period: float = 0.0  # 1 / fps_limit (0: as fast as frames come)
    stats: StreamStats = field(default_factory=StreamStats)
    taken: int = 0  # frames taken from the feed (each one a result or a counted failure)
    end: str = ""  # why the stream ended ("" while it runs)
    next_due: float = 0.0
    reported_open: bool = False
    reported_gaps: int = 0
    reported_state: str = "starting"

    @cached_property
    def slug(self) -> str:
        """The name in topics, URLs, folders, file names and metric labels (unique in a run)."""
        return naming.slug(self.name)

    @property
    def running(self) -> bool:
        return not self.end

    @property
    def state(self) -> str:
        """One of :data:`STATES`: how it ended once it has, else its source's state."""
        if self.end:
            return "failed" if self.end in ("lost", "failed") else "ended"
        return self.feed.state


@dataclass
class Defended:
    """A defended frame of one stream: the frame, its result (with the stream's alarm), its age at decision."""

    stream: Stream
    frame: Frame
    result: Result
    age_ms: float
    undefended: int | None = None  # the plain model's label, when asked for (pcedge run --show-undefended)


@dataclass
class StreamEvent:
    """A stream's lifecycle (``opened``, ``state``, ``gap``, ``alarm_cleared``, ``ended``) or a frame without a result
    (``frame_error``)."""

    stream: Stream
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


class StreamLoop:
    """Iterate to run the loop (see the module docstring); items are :class:`Defended` and :class:`StreamEvent`.

    ``sources`` are URIs (``name=URI`` names one), :class:`StreamSpec` or open :class:`FrameSource` objects
    (URIs are opened here and closed at the end; sources given open are left open). A URI that names nothing
    (no such file) is refused here, before anything runs. ``fps_limit`` is one rate for all or one per stream.
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
        self.model, self.max_frames, self.gather_s = model, max_frames, gather_s
        self.stop = stop or threading.Event()
        self._wake = threading.Event()
        options = options or SourceOptions()
        self.streams: list[Stream] = []
        for n, (source, rate) in enumerate(zip(sources, limits)):
            spec = StreamSpec.parse(str(source), n) if isinstance(source, str) else source
            target = spec.uri if isinstance(spec, StreamSpec) else spec
            name = spec.name if isinstance(spec, StreamSpec) else spec.description
            self.streams.append(Stream(n, name, Feed(target, options, self._wake, limit=max_frames), StreamAlarm.from_text(alarm),
                                       1.0 / rate if rate else 0.0))
        naming.check_unique([s.name for s in self.streams], how_to_rename="'name=URI', StreamSpec(uri, name), or a FrameSource "
                                                                           "description of its own")

    def __iter__(self) -> Iterator[Defended | StreamEvent]:
        for stream in sorted(self.streams, key=lambda s: s.feed.live):  # files first: see Feed.start
            stream.feed.start()
        try:
            while not self.stop.is_set():
                yield from self._lifecycle()
                if not any(s.running for s in self.streams):
                    break
                batch = self._gather()
                if not batch:
                    self._wake.wait(timeout=0.05)
                    self._wake.clear()
                    continue
                yield from self._defend(batch)
            for stream in self.streams:
                if stream.running:
                    yield from self._end(stream, "stopped", {})
        finally:
            self._close_all()
        yield from self._gaps()  # outages after each stream's last frame (a camera given up)

    # ------------------------------------------------------------------------------- one step
    def _gather(self) -> list[tuple[Stream, Frame]]:
        """The frame of every due stream that has one, waiting up to ``gather_s`` for the others once one has."""
        taken: dict[int, Frame] = {}
        deadline = None
        while True:
            now = time.monotonic()
            for stream in self.streams:
                if stream.running and stream.index not in taken and now >= stream.next_due:
                    frame = stream.feed.poll()
                    if frame is not None:
                        taken[stream.index] = frame
                        stream.next_due = max(stream.next_due + stream.period, now) if stream.period else now
            waiting = [s for s in self.streams if s.running and s.index not in taken and now >= s.next_due and s.feed.opened]
            if not taken or not waiting or self.gather_s == 0:
                break
            deadline = deadline or now + self.gather_s
            if now >= deadline:
                break
            self._wake.wait(timeout=deadline - now)
            self._wake.clear()
        return [(s, taken[s.index]) for s in self.streams if s.index in taken]

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
            if self.max_frames and stream.taken >= self.max_frames and stream.running:
                yield from self._end(stream, "max_frames", {"frames": stream.taken})

    # ------------------------------------------------------------------------------- lifecycle
    def _lifecycle(self) -> Iterator[StreamEvent]:
        for stream in self.streams:
            feed = stream.feed
            if not stream.reported_open and feed.opened:
                stream.reported_open = True
                yield StreamEvent(stream, "opened", {"source": feed.description})
            yield from self._gaps([stream])
            if stream.running and feed.ended:
                reason = ("lost" if feed.live else "failed") if feed.error else "end"
                yield from self._end(stream, reason, {"error": feed.error} if feed.error else {})
            else:
                yield from self._state_changes(stream)

    def _end(self, stream: Stream, reason: str, fields: dict[str, Any]) -> Iterator[StreamEvent]:
        """End ``stream`` (its state, its alarm, then the ``ended`` event) and release its source."""
        stream.end = reason
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
        for stream in self.streams:
            stream.feed.close()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for stream in self.streams:
            stream.feed.join(max(0.0, deadline - time.monotonic()))


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
