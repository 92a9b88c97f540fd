"""Live sources: cameras, network streams and GStreamer pipelines, read by a capture thread that keeps the newest frame,
reconnected with backoff after a failure and watched for stalls.

A consumer either iterates (blocking until the next frame) or, as the stream loop does, takes the newest frame
at the moment it needs one (:meth:`LiveSource.take_newest`), so the frame it defends is as fresh as the camera
allows; every frame a newer one replaced is counted as dropped either way.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from ..errors import SourceError
from ..util.redact import redact
from .base import Frame, FrameSource, open_capture, to_bgr8
from .rtsp_probe import rtsp_unanswered
from .uri import SourceOptions, SourceSpec, opencv_has_gstreamer

log = logging.getLogger("pcedge.video.sources")


class LiveSource(FrameSource):
    """A camera, network stream or GStreamer pipeline, read by a capture thread keeping the newest frame."""

    live = True

    def __init__(self, spec: SourceSpec, options: SourceOptions, *, opener: Callable[[], Any] | None = None,
                 retry_first_open: bool = False) -> None:
        """Opens the source now and raises :class:`SourceError` if it cannot (a wrong URL or a missing camera is an
        error to a caller who asked for one source), unless ``retry_first_open``: then the capture thread opens it,
        retrying with backoff for ``reconnect_s`` exactly as after a loss (a camera that comes up after the
        service), and a source that never opens ends with the reason in ``stats.error``."""
        super().__init__(_describe_live(spec))
        self.spec, self.options = spec, options
        self._opener = opener or (lambda: _open_live(spec, options))
        self.on_frame: Callable[[], None] | None = None  # called from the capture thread after each new frame
        self.opened = threading.Event()  # set once the source has delivered its first frame
        self.tried = threading.Event()  # set once the first attempt to open it has finished, whatever came of it
        self._open_deferred = retry_first_open
        self._cap = None if retry_first_open else self._opener()
        if not retry_first_open:
            self.tried.set()
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0) if self._cap is not None else 0.0
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._finished = False
        self._stall_noted = False
        self._reconnecting = False
        self._gap_before_next = False  # an outage was recorded: the next frame published follows it
        self._stop = threading.Event()
        self._last_frame_at, self._last_frame_wall = time.monotonic(), time.time()
        self._thread = threading.Thread(target=self._capture_loop, name="pcedge-capture", daemon=True)
        self._thread.start()

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def finished(self) -> bool:
        """No frame will come any more (given up, closed, or a finite pipeline ended) and none is waiting."""
        with self._cond:
            return self._finished and self._latest is None

    @property
    def state(self) -> str:
        """``starting`` (not opened yet), ``running``, ``stalled`` (open, no frame for ``stall_s``), ``reconnecting``,
        ``ended`` (a finite pipeline's end, or closed) or ``failed`` (given up)."""
        with self._cond:
            if self._finished:
                return "failed" if self.stats.error else "ended"
            if not self.opened.is_set():
                return "starting"
            if self._reconnecting:
                return "reconnecting"
            return "stalled" if time.monotonic() - self._last_frame_at >= self.options.stall_s else "running"

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._latest is None and not self._finished:
                    self._cond.wait(timeout=0.1)
                    self._watch()
                frame, self._latest = self._latest, None
                if frame is None:
                    return
            yield frame

    def take_newest(self) -> Frame | None:
        """The newest captured frame not yet taken, without waiting (None if none arrived since the last take)."""
        with self._cond:
            self._watch()
            frame, self._latest = self._latest, None
        return frame

    def _watch(self) -> None:
        """The watchdog (caller holds the lock): a backend whose read() blocks forever is still noticed, as a stall
        once ``stall_s`` pass without a frame on an open source, and given up after every retry would have ended."""
        if self._finished:
            return
        waited = time.monotonic() - self._last_frame_at
        if waited >= self.options.stall_s and not self._stall_noted and self.opened.is_set():
            self._stall_noted = True
            self.stats.stalls += 1
            log.warning("%s: no frame for %.1f s", self.description, waited)
        if waited >= self.options.stall_s + self.options.reconnect_s + self.options.open_timeout_s:
            self.stats.error = f"{self.description}: no frame for {waited:.0f} s, giving up"
            log.error(self.stats.error)
            self._finished = True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.options.open_timeout_s + self.options.stall_s + 1)
        with self._cond:
            self._finished = True
            if self._latest is not None:  # captured but never delivered: a closed source delivers nothing more
                self.stats.dropped += 1
                self._latest = None
            self._cond.notify_all()

    # ------------------------------------------------------------------ capture thread
    def _capture_loop(self) -> None:
        index = 0
        period = 1.0 / self.options.fps if self.options.fps else 0.0
        next_due = time.monotonic()
        try:
            while not self._stop.is_set():
                ok, image = self._cap.read() if self._cap is not None else (False, None)
                if ok and image is not None and image.size:
                    self._publish(Frame(to_bgr8(image), index, time.time()))
                    index += 1
                    if period:  # never faster than the requested rate (a camera would not be either)
                        next_due = max(next_due + period, time.monotonic() - period)
                        self._stop.wait(max(0.0, next_due - time.monotonic()))
                    continue
                if self._stop.is_set():
                    break
                first = self._reconnect(first_open=self._open_deferred and not self.opened.is_set())  # retry_first_open starts here
                if first is None:
                    break
                self._publish(Frame(to_bgr8(first), index, time.time()))
                index += 1
        finally:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            frame.follows_gap, self._gap_before_next = self._gap_before_next, False
            self.stats.read += 1
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._last_frame_at, self._last_frame_wall = time.monotonic(), frame.captured_at
            self._stall_noted = self._reconnecting = False
            self._cond.notify()
        self.opened.set()
        if self.on_frame is not None:
            self.on_frame()

    def _reconnect(self, first_open: bool = False) -> np.ndarray | None:
        """(Re)open with backoff for up to reconnect_s and return the first frame; None when the source is given up.

        A (re)open counts only when a frame comes out of it: some backends (OpenCV 4.6's FFmpeg on RTSP)
        "open" a stream whose server is gone and then fail every read, which must not look like a
        recovery. The outage is recorded as a gap either way; a first open always gets one attempt, and
        one that succeeds at once is no outage.
        """
        # the outage began with the last frame (a stalled camera was silent for stall_s before this), or now
        start_wall, start = self._last_frame_wall if not first_open else time.time(), time.monotonic()
        if not first_open:
            self._reconnecting = True
            log.warning("%s: stream ended, failed or stalled; reconnecting for up to %.0f s", self.description,
                        self.options.reconnect_s)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        delay, attempts, reason = 0.25, 0, ""
        while not self._stop.is_set() and (time.monotonic() - start < self.options.reconnect_s or (first_open and not attempts)):
            attempts += 1
            image, reason = self._try_open()
            self.tried.set()
            if image is not None:
                end = time.time()
                if attempts > 1 or not first_open:
                    self.stats.add_gap(start_wall, end)
                    self._gap_before_next = True
                    log.warning("%s: %s after %.1f s", self.description, "opened" if first_open else "reconnected", end - start_wall)
                self.stats.reconnects += int(not first_open)
                return image
            log.debug("%s: %s", self.description, reason)
            if not self.options.reconnect_s:
                break
            if first_open and attempts == 1:
                log.warning("%s; retrying for up to %.0f s", reason, self.options.reconnect_s)  # the reason names the source
            self._stop.wait(delay)
            delay = min(delay * 2, 5.0)
        if not self._stop.is_set():
            if first_open:
                retried = f"; never opened, retried for {self.options.reconnect_s:.0f} s" if self.options.reconnect_s else ""
                self.stats.error = f"{reason}{retried}"
            else:
                self.stats.error = f"{self.description}: lost and not back within {self.options.reconnect_s:.0f} s"
            self.stats.add_gap(start_wall, time.time())
            log.error(self.stats.error)
        return None

    def _try_open(self) -> tuple[np.ndarray | None, str]:
        """One open attempt: the first frame, or None and why not."""
        try:
            cap = self._opener()
        except SourceError as exc:
            return None, str(exc)
        ok, image = cap.read()
        if ok and image is not None and image.size:
            self._cap, self._fps = cap, float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            return image, ""
        cap.release()
        return None, f"{self.description}: opened, but no frame came out"


def _describe_live(spec: SourceSpec) -> str:
    """How logs, errors and summaries name the source: built from its redacted URI (never its credentials)."""
    if spec.kind == "camera":
        return f"camera {spec.location}"
    if spec.kind == "gstreamer":
        return f"GStreamer source {redact(spec.uri if not spec.uri.startswith('gst:') else repr(spec.location))}"
    return f"stream {redact(spec.uri)}"


def _open_live(spec: SourceSpec, options: SourceOptions) -> Any:
    if spec.kind == "camera":
        return _open_camera(spec.location, options)
    if spec.kind == "gstreamer":
        if not opencv_has_gstreamer():
            raise SourceError(f"{_describe_live(spec)}: this OpenCV has no GStreamer support (pip's opencv-python does not; "
                              "on Jetson use JetPack's python3-opencv, or build OpenCV with -DWITH_GSTREAMER=ON)")
        return open_capture(spec.location, cv2.CAP_GSTREAMER, options, _describe_live(spec))
    unanswered = rtsp_unanswered(spec.location, options.open_timeout_s)
    if unanswered:
        raise SourceError(f"cannot open {_describe_live(spec)}: {unanswered}")
    return open_capture(spec.location, cv2.CAP_FFMPEG, options, _describe_live(spec))


def _open_camera(location: int | str, options: SourceOptions) -> Any:
    device = f"/dev/video{location}" if isinstance(location, int) else str(location)
    if os.name == "posix" and Path("/dev").is_dir() and not Path(device).exists():
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        raise SourceError(f"camera {location}: {device} does not exist (cameras present: {', '.join(present) or 'none'})")
    target = location if isinstance(location, int) else device
    cap = open_capture(target, cv2.CAP_V4L2, options, f"camera {location} ({device}, V4L2)")
    if options.codec:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*options.codec))
    if options.width:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, options.width)
    if options.height:
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, options.height)
    if options.fps:
        cap.set(cv2.CAP_PROP_FPS, options.fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap
