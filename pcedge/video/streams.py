"""What the stream loop runs and hands out: a stream's description (:class:`StreamSpec`), its state in the loop
(:class:`Stream`), a defended frame (:class:`Defended`) and a lifecycle event (:class:`StreamEvent`).

A stream is a camera, or a **region** of one: a part of its frame defended as a stream of its own (its own
classification, alarm, log records, topics, tile, metrics), fed from the camera's decoded frame. Every stream of
one camera shares that camera's feed: one capture, one decode, and each region takes its crop of the same frame.
The threat model is per stream: a region's patch is a fraction of the region, which is what the classifier sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from ..alarm import StreamAlarm
from ..errors import SourceError
from ..result import Result
from ..util import naming
from .base import Frame
from .feeds import Feed
from .stats import StreamStats
from .uri import SourceOptions

STATES = ("starting", "running", "stalled", "reconnecting", "ended", "failed")
"""A stream's states (:attr:`Stream.state`), the same on the log, MQTT, the metrics, the live view and the summary."""
AWAY = ("stalled", "reconnecting", "ended", "failed")
"""States in which no frame comes: the alarm window starts afresh and an alarm that was up clears."""


@dataclass(frozen=True)
class Region:
    """``[x, y, width, height]`` of the camera's frame: whole pixels, or all four fractions of the frame (0..1)."""

    box: tuple[float, float, float, float]

    @property
    def fractional(self) -> bool:
        return all(v <= 1 for v in self.box)

    def window(self, height: int, width: int, name: str) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` in a ``width`` x ``height`` frame; :class:`SourceError` (both sizes named) when the box does
        not lie inside it."""
        x, y, w, h = self.box
        if self.fractional:
            x, w, y, h = x * width, w * width, y * height, h * height
        x0, y0, x1, y1 = (int(round(v)) for v in (x, y, x + w, y + h))
        if x1 > width or y1 > height or x1 - x0 < 1 or y1 - y0 < 1:
            raise SourceError(f"region {name}: box {list(self.box)} ({x1 - x0}x{y1 - y0} at {x0},{y0}) does not lie inside "
                              f"the camera's {width}x{height} frame")
        return y0, y1, x0, x1


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a run. The command line's ``name=URI`` (or a bare URI) gives ``uri`` and ``name``; a config file
    gives the rest: ``camera`` (streams of one camera share its frames), a ``region`` of its frame, and settings
    overriding the loop's (None: the loop's)."""

    uri: str = field(repr=False)  # may hold a password
    name: str = ""
    camera: str = ""  # "" : the stream is a camera of its own name
    region: Region | None = None
    options: SourceOptions | None = None
    fps_limit: float | None = None
    alarm: str | None = None
    max_frames: int | None = None
    output: str | None = None  # pcedge run's recording of this stream (video file, folder, display://0)
    show_masks: bool | None = None
    show_undefended: bool | None = None

    @classmethod
    def parse(cls, text: str, index: int) -> "StreamSpec":
        """``name=URI`` names a stream; a bare URI gets :func:`pcedge.util.naming.default_name` (a file's stem, a URL's
        host and path: never its credentials)."""
        name, uri = naming.parse_source(text, index)
        return cls(uri, name)

    @property
    def camera_name(self) -> str:
        return self.camera or self.name


def parse_streams(sources: Sequence[str | StreamSpec]) -> list[StreamSpec]:
    """Every source as a :class:`StreamSpec`, refused (before anything opens) when two would share a name or slug."""
    specs = [StreamSpec.parse(str(s), n) if isinstance(s, str) else s for n, s in enumerate(sources)]
    naming.check_unique([spec.name for spec in specs])
    return specs


@dataclass
class Stream:
    """One stream's state in the loop: its feed (shared by the regions of one camera), alarm, statistics, how it ended."""

    index: int
    name: str
    feed: Feed
    alarm: StreamAlarm
    spec: StreamSpec
    period: float = 0.0  # 1 / fps_limit (0: as fast as frames come)
    max_frames: int = 0
    stats: StreamStats = field(default_factory=StreamStats)
    taken: int = 0  # frames taken from the feed (each one a result or a counted failure)
    end: str = ""  # why the stream ended ("" while it runs)
    error: str = ""  # why the stream itself failed (a region outside the frame); its source's own is feed.error
    next_due: float = 0.0
    reported_open: bool = False
    reported_gaps: int = 0
    reported_state: str = "starting"
    _window: tuple[int, int, int, int, int, int] | None = None  # (frame h, frame w, y0, y1, x0, x1) of the region

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

    def view(self, frame: Frame) -> Frame:
        """The frame this stream defends: the camera's, or its region's crop (a contiguous copy: writers take rows)."""
        region = self.spec.region
        if region is None:
            return frame
        height, width = frame.image.shape[:2]
        if self._window is None or self._window[:2] != (height, width):  # the first frame, or a new resolution
            self._window = (height, width, *region.window(height, width, self.name))
        y0, y1, x0, x1 = self._window[2:]
        return Frame(np.ascontiguousarray(frame.image[y0:y1, x0:x1]), frame.index, frame.captured_at, frame.name, frame.follows_gap)


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


@dataclass
class StreamsChanged:
    """Streams were added or removed while the loop ran (a reload): every stream now, and the change."""

    streams: tuple[Stream, ...]
    added: tuple[Stream, ...]
    removed: tuple[Stream, ...]
