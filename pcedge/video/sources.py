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

from pathlib import Path

from .base import Frame, FrameSource, SourceStats
from .files import ImageSource, VideoFileSource
from .live import LiveSource
from .uri import IMAGE_SUFFIXES, SourceOptions, SourceSpec, parse_source

__all__ = ["IMAGE_SUFFIXES", "Frame", "FrameSource", "ImageSource", "LiveSource", "SourceOptions", "SourceSpec", "SourceStats",
           "VideoFileSource", "open_source", "parse_source"]


def open_source(uri: str | int | Path, options: SourceOptions | None = None, *, retry_first_open: bool = False) -> FrameSource:
    """Open a source URI (see the module docstring); errors name the source and what was tried.

    A live source that cannot be opened raises at once, unless ``retry_first_open``: then it is opened in its
    capture thread and retried for ``reconnect_s`` like a source lost mid-run (what the stream loop asks for,
    so a camera that comes up after the service is picked up)."""
    options = options or SourceOptions()
    spec = parse_source(uri, options)
    if spec.live:
        return LiveSource(spec, options, retry_first_open=retry_first_open)
    if spec.kind == "image":
        return ImageSource([spec.location], spec.uri, options)
    if spec.kind == "images":
        return ImageSource(spec.location, spec.uri, options)
    return VideoFileSource(spec.location, options)
