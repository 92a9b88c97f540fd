"""Source URIs: what a string names (file, images, camera, network stream, GStreamer pipeline), without opening it.

URIs follow jetson-inference's conventions (``csi://0``, ``v4l2:///dev/video0``, ``rtsp://...``,
``file://...``) plus OpenCV's (a camera index ``0``, a raw pipeline with the ``gst:`` prefix).
"""

from __future__ import annotations

import glob as globmod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SourceError
from ..util.redact import redact

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
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



# ------------------------------------------------------------------------------------------ parsing
@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: ``kind`` in image, images, video, camera, network, gstreamer."""

    kind: str
    location: Any = field(repr=False)  # path, list of paths, camera index/device, URL or pipeline (may hold a password)
    uri: str = field(repr=False)

    @property
    def live(self) -> bool:
        """A camera, network stream or pipeline (read by a capture thread), not a file or images."""
        return self.kind not in ("image", "images", "video")


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
            raise SourceError(f"{redact(text)}: use csi://N with the sensor id N (csi://0)")
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
            raise SourceError(f"{redact(str(uri))}: the glob matches no image files ({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("images", [Path(p) for p in paths], str(uri))
    path = Path(text)
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"{path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("images", paths, str(uri))
    if not path.exists():
        raise SourceError(f"{redact(str(uri))}: no such file or folder (sources: a file, folder, glob, camera index, "
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
    import cv2

    info = cv2.getBuildInformation()
    return any(line.strip().startswith("GStreamer:") and "YES" in line for line in info.splitlines())
