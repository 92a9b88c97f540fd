"""Alarm episodes: from the moment a stream's k-of-n alarm rises to the moment it clears (or the stream goes away:
stalled, reconnecting, ended or failed; :mod:`pcedge.video.loop` clears the alarm then).

One :class:`EpisodeBook` per run keeps every stream's open episode and gives each one id, the same on MQTT,
webhooks, the live view and disk. It is a sink placed before the publishers in the chain: for each delivery it
notes whether an episode began or ended there (:meth:`EpisodeBook.transition`), which the publishers after it
read during the same delivery. The snapshot, the annotated frame that raised the alarm, is drawn and encoded
once, lazily, by whichever publisher's worker asks first (or, if none did, when the episode ends: once per
episode), and the frame is released then.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

from ..alarm import LEVELS
from ..video.sinks import Sink
from ..video.streams import Defended, Stream, StreamEvent

RECENT = 50  # episodes the book remembers for the live view and /api/events
EPISODE_ID = re.compile(r"(?P<start>\d{9,11}\.\d{6})-(?P<camera>[a-z0-9_-]+)")
"""An episode id: its start (Unix seconds, microseconds) and its camera's slug; the name of its folder on disk."""


def episode_id(start_time: float, camera: str) -> str:
    return f"{start_time:.6f}-{camera}"


@dataclass
class Episode:
    """One alarm episode of one camera (times are Unix seconds; ``end_time`` is None while it lasts)."""

    id: str
    camera: str
    stream: int
    start_time: float
    label: int
    class_name: str
    level: str
    disagreers: list[int]
    raised_by: Defended | None  # released once the snapshot is encoded (a 1080p frame is 6 MB)
    annotate: Callable[[Defended], np.ndarray]
    end_time: float | None = None
    frames: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    paths: dict[str, str] = field(default_factory=dict)  # "snapshot", "clip", "record" once written to disk
    _jpeg: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self, quality: int = 85) -> bytes:
        """The annotated frame that raised the alarm, as JPEG bytes (drawn and encoded once, on first use); b"" once
        the episode has left the book's recent ones (:meth:`forget_snapshot`)."""
        with self._lock:
            if self._jpeg is None and self.raised_by is not None:
                ok, data = cv2.imencode(".jpg", self.annotate(self.raised_by), [cv2.IMWRITE_JPEG_QUALITY, quality])
                self._jpeg, self.raised_by = (data.tobytes() if ok else b""), None
            return self._jpeg or b""

    def forget_snapshot(self) -> None:
        """Free the JPEG of an episode that ended long ago: a publisher still holding the episode (a disk or broker that
        hung for an hour) must not hold every snapshot since; it gets b"" (and says so) instead."""
        with self._lock:
            if self.end_time is not None:
                self._jpeg, self.raised_by = b"", None

    def as_event(self, kind: str) -> dict[str, Any]:
        """The episode as the ``events`` payload (Frigate's ``new`` / ``end`` shape, flattened)."""
        return {"type": kind, "id": self.id, "camera": self.camera, "start_time": round(self.start_time, 3),
                "end_time": None if self.end_time is None else round(self.end_time, 3), "label": self.label,
                "class_name": self.class_name, "level": self.level, "disagreers": self.disagreers, "frames": self.frames,
                "levels": {level: self.levels.get(level, 0) for level in LEVELS},
                "snapshot": self.paths.get("snapshot"), "clip": self.paths.get("clip")}


@dataclass(frozen=True)
class Transition:
    kind: str  # "new" or "end"
    episode: Episode


class EpisodeBook(Sink):
    """Every stream's open episode and the recent ones (see the module docstring)."""

    name = "episodes"
    order = 1

    def __init__(self, annotate: Callable[[Defended], np.ndarray]) -> None:
        self.annotate = annotate
        self.open: dict[int, Episode] = {}
        self.recent: deque[Episode] = deque(maxlen=RECENT)
        self._current: tuple[object, Transition | None] = (None, None)
        self._lock = threading.Lock()  # the live view reads ``recent`` from its own thread

    def transition(self, delivery: Defended | StreamEvent) -> Transition | None:
        """The episode that began or ended with this delivery (valid while the chain hands it out)."""
        item, found = self._current
        return found if item is delivery else None

    def frame(self, item: Defended) -> None:
        state, found = item.result.stream_alarm, None
        episode = self.open.get(item.stream.index)
        if state is not None and state.raised and episode is None:
            episode = self._begin(item)
            found = Transition("new", episode)
        if episode is not None:
            episode.frames += 1
            episode.levels[item.result.level] += 1
            if state is not None and state.cleared:
                found = Transition("end", self._end(item.stream))
        self._current = (item, found)

    def event(self, event: StreamEvent) -> None:
        found = None
        if event.kind == "alarm_cleared" and event.stream.index in self.open:  # the stream went away with its alarm up
            found = Transition("end", self._end(event.stream))
        self._current = (event, found)

    def close(self, summary: dict[str, Any]) -> None:
        self._current = (None, None)

    def recent_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e.as_event("end" if e.end_time is not None else "new") for e in reversed(self.recent)]

    def find(self, episode_id: str) -> Episode | None:
        with self._lock:
            return next((e for e in self.recent if e.id == episode_id), None)

    def _begin(self, item: Defended) -> Episode:
        now, result = time.time(), item.result
        camera = item.stream.slug
        episode = Episode(episode_id(now, camera), camera, item.stream.index, now, result.label, result.class_name, result.level,
                          list(result.disagreers), item, self.annotate)
        self.open[item.stream.index] = episode
        with self._lock:
            if len(self.recent) == self.recent.maxlen and self.recent[0].end_time is not None:
                self.recent[0].forget_snapshot()  # it leaves the book now: memory stays bounded by RECENT snapshots
            self.recent.append(episode)
        return episode

    def _end(self, stream: Stream) -> Episode:
        episode = self.open.pop(stream.index)
        episode.end_time = time.time()
        episode.snapshot()  # usually encoded already by a publisher; else now (once per episode), freeing the frame
        return episode

