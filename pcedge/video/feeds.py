"""One stream's frames as the stream loop pulls them: the newest frame a camera captured, or the next frame of a file.

A feed opens its source in the background, so a camera that takes seconds to answer (or does not answer)
never delays the others. A live source is not read ahead: the loop takes its newest frame at the moment a
step begins (:meth:`pcedge.video.live.LiveSource.take_newest`), so a defended frame is at most about one
step old, and every frame a newer one replaced is counted as dropped by the source. A file source is read
one frame ahead by a reader thread (decoding overlaps the step; nothing is ever dropped). A live source
that cannot be opened at start is retried for ``reconnect_s`` like one lost mid-run; a file that cannot be
read ends its stream with the reason. Either way the failure stays in this feed.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ..errors import PcedgeError
from ..util.redact import redact
from .base import Frame, FrameSource, SourceStats
from .live import LiveSource
from .sources import open_source
from .uri import SourceOptions, parse_source

log = logging.getLogger("pcedge.video.sources")


class Feed:
    """One stream's source behind a non-blocking :meth:`poll` (see the module docstring).

    ``target`` is a URI (opened here, closed by :meth:`close`) or an open :class:`FrameSource` (left open).
    ``limit`` > 0 stops reading a file after that many frames (nothing read that will not be defended).
    ``wake`` is set whenever a frame becomes available, so an idle loop sleeps until one does.
    """

    def __init__(self, target: str | FrameSource, options: SourceOptions, wake: threading.Event, *, limit: int = 0) -> None:
        self.options, self.wake, self.limit = options, wake, limit
        self.owned = not isinstance(target, FrameSource)
        self.source: FrameSource | None = None if self.owned else target
        self.live = parse_source(target, options).live if self.owned else target.live
        self.uri = redact(str(target)) if self.owned else target.description  # shown until the source is open
        self._target = target
        self._cond = threading.Condition()
        self._slot: Frame | None = None  # the frame read ahead (files, and live sources without their own buffer)
        self._reader_done = False
        self._closing = False
        self._pull: Callable[[], Frame | None] | None = None
        self._closer: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._stats_before_open = SourceStats()
        self.started = False

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Open and read in the background; a file is opened here first (it is local and quick, and OpenCV opens
        captures one at a time, so a file opened before the cameras never waits behind one)."""
        self.started = True
        if self.source is None and not self.live:
            try:
                self.source = open_source(self._target, self.options)
            except PcedgeError as exc:
                self.stats.error = redact(str(exc))
                with self._cond:
                    self._reader_done = True
                return
        self._reader = threading.Thread(target=self._open_and_read, name="pcedge-feed", daemon=True)
        self._reader.start()

    @property
    def stats(self) -> SourceStats:
        return self.source.stats if self.source is not None else self._stats_before_open

    @property
    def error(self) -> str:
        """Why the stream ended early ("" while it runs or after a normal end): the source's own reason."""
        return self.stats.error

    @property
    def opened(self) -> bool:
        """The source is open and has delivered (or, for a file, can deliver) frames."""
        source = self.source
        if isinstance(source, LiveSource):
            return source.opened.is_set()
        return source is not None and not self.error

    @property
    def tried(self) -> bool:
        """The first attempt to open the source has finished (opened or not): a service is ready once every one is."""
        source = self.source
        if isinstance(source, LiveSource):
            return source.tried.is_set()
        return source is not None or self.ended

    @property
    def state(self) -> str:
        """``starting``, ``running``, ``stalled``, ``reconnecting`` (live sources: :attr:`LiveSource.state`), ``ended``
        or ``failed``."""
        source = self.source
        if isinstance(source, LiveSource):
            return source.state
        if self.ended:
            return "failed" if self.error else "ended"
        return "running" if self.opened else "starting"

    @property
    def description(self) -> str:
        return self.source.description if self.source is not None else self.uri

    @property
    def fps(self) -> float:
        return self.source.fps if self.source is not None else 0.0

    @property
    def length(self) -> int | None:
        """Frames this feed will deliver, when known in advance (files; bounded by ``limit``)."""
        length = self.source.length if self.source is not None else None
        if length is None:
            return None
        return min(length, self.limit) if self.limit else length

    @property
    def ended(self) -> bool:
        """No frame will come any more."""
        if self._pull is not None:
            return self.source.finished or self._closing
        with self._cond:
            return (self._reader_done or self._closing) and self._slot is None

    def close(self) -> None:
        """Stop reading and release the source in the background (a camera's close can wait on a read)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            if self._slot is not None:  # read but never defended: the stream stopped first
                self.stats.dropped += 1
                self._slot = None
            self._cond.notify_all()
        if self.owned and self.source is not None:
            self._closer = threading.Thread(target=self._release, args=(self.source,), name="pcedge-close", daemon=True)
            self._closer.start()

    def _release(self, source: FrameSource) -> None:
        """Close ``source`` once nothing reads it. A file is read by this feed's thread, which stops after the frame
        it is decoding (``_closing`` is set): OpenCV's ``release()`` while another thread is inside ``read()`` of
        the same capture can crash the whole process. A live source's close stops its own capture thread first
        (and is what unblocks a read that waits on a silent camera), so it is closed at once."""
        reader = self._reader
        if not source.live and reader is not None and reader is not threading.current_thread():
            reader.join()
        source.close()

    def join(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until :meth:`close` has released the source, or, for a file source the caller
        owns (and will close), until this feed's reader no longer reads it (see :meth:`_release`)."""
        if self._closer is not None:
            self._closer.join(timeout)
        elif self._reader is not None and not self.live:
            self._reader.join(timeout)

    # ------------------------------------------------------------------------------- the loop's side
    def poll(self) -> Frame | None:
        """The frame to defend now, without waiting: a camera's newest, a file's next; None when none is ready."""
        if self._pull is not None:
            return None if self._closing else self._pull()
        with self._cond:
            frame, self._slot = self._slot, None
            self._cond.notify_all()
        return frame

    # ------------------------------------------------------------------------------- the feed's thread
    def _open_and_read(self) -> None:
        try:
            if self.source is None:
                source = open_source(self._target, self.options, retry_first_open=True)
                with self._cond:
                    self.source = source
                    if self._closing:  # the run stopped while it opened
                        threading.Thread(target=source.close, daemon=True).start()
                        return
            if isinstance(self.source, LiveSource):
                self.source.on_frame = self.wake.set
                self._pull = self.source.take_newest
                return
            self._read_ahead(self.source)
        except PcedgeError as exc:
            self.stats.error = redact(str(exc))
        except Exception as exc:  # noqa: BLE001 - a failing source (an OpenCV error, a bug in a custom one) ends its stream alone
            self.stats.error = redact(f"{self.description}: {type(exc).__name__}: {exc}")
            log.error("%s", self.error, exc_info=log.isEnabledFor(logging.DEBUG))
        finally:
            with self._cond:
                self._reader_done = self._pull is None
                self._cond.notify_all()
            self.wake.set()

    def _read_ahead(self, source: FrameSource) -> None:
        delivered = 0
        for frame in source:
            with self._cond:
                if source.live:  # a live source without its own newest-frame buffer: keep the newest
                    if self._slot is not None:
                        source.stats.dropped += 1
                else:  # a file: wait until the loop took the previous frame
                    while self._slot is not None and not self._closing:
                        self._cond.wait(0.1)
                if self._closing:
                    source.stats.dropped += 1  # read, never defended: the stream stopped first
                    return
                self._slot = frame
            self.wake.set()
            delivered += 1
            if self.limit and delivered >= self.limit and not source.live:
                return
