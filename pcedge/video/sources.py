"""Frame sources: video files, images, cameras (index, V4L2 path, CSI), RTSP/RTP/HTTP and GStreamer.

URIs follow jetson-inference's conventions (``csi://0``, ``v4l2:///dev/video0``, ``rtsp://...``,
``file://...``) plus OpenCV's (a camera index ``0``, a raw pipeline with the ``gst:`` prefix).

Two reading disciplines, because users want different things from them:
- *file-like* sources (video files, images, folders, globs) are read frame by frame in the caller's
  thread: nothing is ever dropped, so a recorded clip is analysed completely.
- *live* sources (cameras, network streams, GStreamer) are read by a capture thread that keeps only the
  newest frame: a slow model never builds up seconds of RTSP lag. Frames replaced before the consumer
  took them are counted as dropped. A live source that fails (camera unplugged, server gone) is reopened
  with backoff for ``reconnect_s`` seconds; each outage is recorded as a gap. A source that stalls
  without closing is noticed by a watchdog (``stall_s`` without a frame) and reopened the same way.
"""

from __future__ import annotations

import glob as globmod
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from ..datasets import IMAGE_SUFFIXES
from ..errors import ConfigError, SourceError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".gif")
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtp://", "udp://", "http://", "https://", "rtmp://")
RTSP_BACKENDS = ("ffmpeg", "gstreamer")
APPSINK = "appsink drop=1 max-buffers=1 sync=false"  # the newest frame only: a slow model never accumulates lag
JETSON_ONLY_ELEMENTS = ("nvarguscamerasrc", "nvv4l2decoder", "nvvidconv", "(memory:NVMM)")
"""Elements and caps that exist only in JetPack's GStreamer; the tests swap exactly these for desktop ones."""


@dataclass(frozen=True)
class SourceOptions:
    """Capture settings. width/height/fps/codec are requests to the camera (0 / "" = its default)."""

    width: int = 0
    height: int = 0
    fps: float = 0.0  # also paces live reads: never faster than this
    codec: str = ""  # a FOURCC such as MJPG or YUYV (V4L2 cameras)
    loop: bool = False  # restart file-like sources at their end
    reconnect_s: float = 30.0  # how long a failed live source is retried before giving up
    stall_s: float = 5.0  # a live source with no frame for this long is treated as failed
    open_timeout_s: float = 10.0
    rtsp_backend: str = "ffmpeg"  # or "gstreamer": rtspsrc with the platform's H.264 decoder (Jetson: nvv4l2decoder)

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0 or self.fps < 0:
            raise ConfigError(f"camera width/height/fps must be >= 0, got {self.width}x{self.height}@{self.fps}")
        if self.codec and len(self.codec) != 4:
            raise ConfigError(f"codec must be a 4-character FOURCC such as MJPG or YUYV, got {self.codec!r}")
        if self.reconnect_s < 0 or self.stall_s <= 0 or self.open_timeout_s <= 0:
            raise ConfigError("reconnect_s must be >= 0, stall_s and open_timeout_s > 0")
        if self.rtsp_backend not in RTSP_BACKENDS:
            raise ConfigError(f"--rtsp-backend {self.rtsp_backend!r}: choose one of {', '.join(RTSP_BACKENDS)}")


@dataclass
class Frame:
    """One captured frame: the BGR image, its index in the source, and when it was captured."""

    image: np.ndarray
    index: int
    captured_at: float  # time.time()
    name: str = ""  # file name for image sources


@dataclass
class SourceStats:
    """What happened to frames before the model saw them: reported in the summary and the log."""

    read: int = 0
    dropped: int = 0  # live frames replaced by a newer one before they were processed
    unreadable: list[str] = field(default_factory=list)  # image files OpenCV could not decode
    reconnects: int = 0
    stalls: int = 0
    gaps: list[dict[str, float]] = field(default_factory=list)  # {"start", "end", "seconds"} per outage
    error: str = ""  # why a live source was given up

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "dropped": self.dropped, "unreadable": list(self.unreadable),
                "reconnects": self.reconnects, "stalls": self.stalls, "gaps": list(self.gaps), "error": self.error}


class FrameSource:
    """Iterate to get :class:`Frame` objects; ``close()`` (or ``with``) releases the device."""

    live = False

    def __init__(self, description: str) -> None:
        self.description = description
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def fps(self) -> float:
        """The source's nominal frame rate (0 when unknown)."""
        return 0.0

    @property
    def length(self) -> int | None:
        """How many frames iteration will give, when known in advance (files and images not looped)."""
        return None


# ------------------------------------------------------------------------------------------ parsing
@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: ``kind`` in image, images, video, camera, network, gstreamer."""

    kind: str
    location: Any  # path, list of paths, camera index/device, URL or pipeline
    uri: str


def parse_source(uri: str | int | Path, options: SourceOptions | None = None) -> SourceSpec:
    """Decide what ``uri`` names, without opening it."""
    options = options or SourceOptions()
    text = str(uri).strip()
    if not text:
        raise SourceError("empty source: give a file, folder, glob, camera index, /dev/videoN, csi://N, rtsp://... or gst:...")
    if text.isdigit():
        return SourceSpec("camera", int(text), text)
    if text.startswith("v4l2://"):
        return SourceSpec("camera", text[len("v4l2://"):], text)
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text, text)
    if text.startswith("csi://"):
        sensor = text[len("csi://"):]
        if not sensor.isdigit():
            raise SourceError(f"{text}: use csi://N with the sensor id N (csi://0)")
        return SourceSpec("gstreamer", csi_pipeline(int(sensor), options), text)
    if text.startswith("gst:"):
        return SourceSpec("gstreamer", text[len("gst:"):].strip(), text)
    if text.startswith(("rtsp://", "rtsps://")) and options.rtsp_backend == "gstreamer":
        return SourceSpec("gstreamer", rtsp_pipeline(text, jetson=is_jetson()), text)
    if text.startswith(NETWORK_SCHEMES):
        return SourceSpec("network", text, text)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if any(ch in text for ch in "*?["):
        paths = sorted(p for p in globmod.glob(text) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"{uri}: the glob matches no image files ({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("images", [Path(p) for p in paths], str(uri))
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"{path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("images", paths, str(uri))
    if not path.exists():
        raise SourceError(f"{uri}: no such file or folder (sources: a file, folder, glob, camera index, "
                          "/dev/videoN, csi://N, rtsp://..., gst:<pipeline>)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return SourceSpec("image", path, str(uri))
    return SourceSpec("video", path, str(uri))


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def csi_pipeline(sensor_id: int, options: SourceOptions) -> str:
    """The nvarguscamerasrc pipeline jetson-utils uses for MIPI CSI cameras on Jetson.

    The camera delivers NVMM (GPU) buffers; nvvidconv copies them to system memory as BGRx, which
    videoconvert turns into the BGR OpenCV reads.
    """
    w, h, fps = options.width or 1280, options.height or 720, int(options.fps or 30)
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! video/x-raw(memory:NVMM),width={w},height={h},framerate={fps}/1 "
            f"! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! {APPSINK}")


def rtsp_pipeline(url: str, *, jetson: bool) -> str:
    """An H.264 RTSP stream through GStreamer: Jetson's hardware decoder (nvv4l2decoder) there, libav's elsewhere."""
    decode = "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx" if jetson else "avdec_h264"
    return (f"rtspsrc location={url} latency=0 protocols=tcp ! rtph264depay ! h264parse ! {decode} ! videoconvert "
            f"! video/x-raw,format=BGR ! {APPSINK}")


def opencv_has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return any(line.strip().startswith("GStreamer:") and "YES" in line for line in info.splitlines())


# ------------------------------------------------------------------------------------------ opening
def open_source(uri: str | int | Path, options: SourceOptions | None = None) -> FrameSource:
    """Open a source URI (see the module docstring); errors name the source and what was tried."""
    options = options or SourceOptions()
    spec = parse_source(uri, options)
    if spec.kind == "image":
        return ImageSource([spec.location], spec.uri, options)
    if spec.kind == "images":
        return ImageSource(spec.location, spec.uri, options)
    if spec.kind == "video":
        return VideoFileSource(spec.location, options)
    return LiveSource(spec, options)


class ImageSource(FrameSource):
    """One image, a folder or a glob, in sorted order; unreadable files are counted, never silently skipped."""

    def __init__(self, paths: list[Path], uri: str, options: SourceOptions) -> None:
        super().__init__(f"{len(paths)} image(s) from {uri}")
        self.paths, self.options = paths, options

    @property
    def length(self) -> int | None:
        return None if self.options.loop else len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            decoded = 0
            for path in self.paths:
                image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if image is None or image.size == 0:
                    log.warning("skipping %s: OpenCV cannot decode it", path)
                    if str(path) not in self.stats.unreadable:
                        self.stats.unreadable.append(str(path))
                    continue
                image = _to_bgr8(image)
                decoded += 1
                self.stats.read += 1
                yield Frame(image, index, time.time(), path.name)
                index += 1
            if not self.options.loop or decoded == 0:
                return


class VideoFileSource(FrameSource):
    """A video file read frame by frame (never drops); ``loop`` restarts it at the end."""

    def __init__(self, path: Path, options: SourceOptions) -> None:
        super().__init__(f"video file {path}")
        self.path, self.options = path, options
        self._cap = _open_capture(str(path), cv2.CAP_FFMPEG, options, f"video file {path}")
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def length(self) -> int | None:
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self._cap is not None else 0
        return count if count > 0 and not self.options.loop else None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        while True:
            produced = 0
            while self._cap is not None:
                ok, image = self._cap.read()
                if not ok or image is None:
                    break
                produced += 1
                self.stats.read += 1
                yield Frame(image, index, time.time())
                index += 1
            if index == 0:
                raise SourceError(f"video file {self.path}: opened, but no frame could be decoded (corrupt or unsupported codec)")
            if not self.options.loop or produced == 0 or self._cap is None:
                return
            self._cap.release()
            self._cap = _open_capture(str(self.path), cv2.CAP_FFMPEG, self.options, f"video file {self.path}")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class LiveSource(FrameSource):
    """A camera, network stream or GStreamer pipeline, read by a capture thread keeping the newest frame."""

    live = True

    def __init__(self, spec: SourceSpec, options: SourceOptions, *, opener: Callable[[], Any] | None = None) -> None:
        super().__init__(_describe_live(spec))
        self.spec, self.options = spec, options
        self._opener = opener or (lambda: _open_live(spec, options))
        self._cap = self._opener()  # fail fast: a wrong URL or missing camera is an error, not a retry loop
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._finished = False
        self._stop = threading.Event()
        self._last_frame_at = time.monotonic()
        self._thread = threading.Thread(target=self._capture_loop, name="pcedge-capture", daemon=True)
        self._thread.start()

    @property
    def fps(self) -> float:
        return self._fps

    def __iter__(self) -> Iterator[Frame]:
        give_up_s = self.options.stall_s + self.options.reconnect_s + self.options.open_timeout_s
        while True:
            with self._cond:
                stalled = False
                while self._latest is None and not self._finished:
                    self._cond.wait(timeout=0.1)
                    waited = time.monotonic() - self._last_frame_at
                    if waited >= self.options.stall_s and not stalled:
                        # The watchdog: a backend whose read() blocks forever still gets noticed here.
                        stalled = True
                        self.stats.stalls += 1
                        log.warning("%s: no frame for %.1f s", self.description, waited)
                    if waited >= give_up_s:
                        self.stats.error = f"{self.description}: no frame for {waited:.0f} s, giving up"
                        log.error(self.stats.error)
                        self._finished = True
                frame, self._latest = self._latest, None
                if frame is None:
                    return
            yield frame

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
                    self._publish(Frame(_to_bgr8(image), index, time.time()))
                    index += 1
                    if period:  # never faster than the requested rate (a camera would not be either)
                        next_due = max(next_due + period, time.monotonic() - period)
                        self._stop.wait(max(0.0, next_due - time.monotonic()))
                    continue
                if self._stop.is_set():
                    break
                first = self._reconnect()
                if first is None:
                    break
                self._publish(Frame(_to_bgr8(first), index, time.time()))
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
            self.stats.read += 1
            if self._latest is not None:
                self.stats.dropped += 1
            self._latest = frame
            self._last_frame_at = time.monotonic()
            self._cond.notify()

    def _reconnect(self) -> np.ndarray | None:
        """Reopen with backoff for up to reconnect_s and return the first frame; None when the source is given up.

        A reopen counts only when a frame comes out of it: some backends (OpenCV 4.6's FFmpeg on RTSP)
        "open" a stream whose server is gone and then fail every read, which must not look like a
        recovery. The outage is recorded as a gap either way.
        """
        start_wall, start = time.time(), time.monotonic()
        log.warning("%s: stream ended, failed or stalled; reconnecting for up to %.0f s", self.description, self.options.reconnect_s)
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        delay = 0.25
        while not self._stop.is_set() and time.monotonic() - start < self.options.reconnect_s:
            try:
                cap = self._opener()
            except SourceError as exc:
                log.debug("reopen failed: %s", exc)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            ok, image = cap.read()
            if not ok or image is None or not image.size:
                log.debug("reopened, but no frame came out")
                cap.release()
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._cap = cap
            self.stats.reconnects += 1
            end = time.time()
            self.stats.gaps.append({"start": start_wall, "end": end, "seconds": round(end - start_wall, 3)})
            log.warning("%s: reconnected after %.1f s", self.description, end - start_wall)
            return image
        if not self._stop.is_set():
            self.stats.error = f"{self.description}: lost and not back within {self.options.reconnect_s:.0f} s"
            self.stats.gaps.append({"start": start_wall, "end": time.time(), "seconds": round(time.time() - start_wall, 3)})
            log.error(self.stats.error)
        return None


def _describe_live(spec: SourceSpec) -> str:
    if spec.kind == "camera":
        return f"camera {spec.location}"
    if spec.kind == "gstreamer":
        return f"GStreamer source {spec.uri if not spec.uri.startswith('gst:') else spec.location!r}"
    return f"stream {spec.uri}"


def _open_live(spec: SourceSpec, options: SourceOptions) -> Any:
    if spec.kind == "camera":
        return _open_camera(spec.location, options)
    if spec.kind == "gstreamer":
        if not opencv_has_gstreamer():
            raise SourceError(f"{spec.uri}: this OpenCV has no GStreamer support (pip's opencv-python does not; "
                              "on Jetson use JetPack's python3-opencv, or build OpenCV with -DWITH_GSTREAMER=ON)")
        return _open_capture(spec.location, cv2.CAP_GSTREAMER, options, f"GStreamer pipeline {spec.location!r}")
    return _open_capture(spec.location, cv2.CAP_FFMPEG, options, f"stream {spec.location}")


def _open_camera(location: int | str, options: SourceOptions) -> Any:
    device = f"/dev/video{location}" if isinstance(location, int) else str(location)
    if os.name == "posix" and Path("/dev").is_dir() and not Path(device).exists():
        present = sorted(str(p) for p in Path("/dev").glob("video*"))
        raise SourceError(f"camera {location}: {device} does not exist (cameras present: {', '.join(present) or 'none'})")
    target = location if isinstance(location, int) else device
    cap = _open_capture(target, cv2.CAP_V4L2, options, f"camera {location} ({device}, V4L2)")
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


def _open_capture(target: int | str, api: int, options: SourceOptions, what: str) -> Any:
    """Open with OpenCV. Only its FFmpeg backend takes open/read timeouts (OpenCV 4.6's GStreamer backend refuses
    to open when given them); for the others the consumer-side watchdog in :class:`LiveSource` notices stalls."""
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(options.open_timeout_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(options.stall_s * 1000)] if api == cv2.CAP_FFMPEG else []
    cap = cv2.VideoCapture(target, api, params)
    if not cap.isOpened():
        cap.release()
        backend = {cv2.CAP_FFMPEG: "FFmpeg", cv2.CAP_V4L2: "V4L2", cv2.CAP_GSTREAMER: "GStreamer"}.get(api, str(api))
        raise SourceError(f"cannot open {what} with OpenCV's {backend} backend "
                          "(unreachable, missing, in use, or a format this OpenCV cannot decode)")
    return cap


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Frames as the driver takes them: uint8, gray or BGR(A). 16-bit images are scaled, not clipped."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return image
