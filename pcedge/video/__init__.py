"""Defended inference on video: sources, outputs, overlay, per-frame log, and the stream loop.

OpenCV is not a hard requirement of pcedge (a Jetson uses JetPack's, with GStreamer; pip's would
shadow it), so its absence is reported here, once, with both ways to get it.
"""

from ..util.optional import require

require("cv2", "video sources, outputs and overlays")

from .multistream import StreamSpec, stream_many
from .sources import Frame, FrameSource, SourceOptions, open_source, parse_source
from .streaming import RunOptions, run, stream

__all__ = ["Frame", "FrameSource", "RunOptions", "SourceOptions", "StreamSpec", "open_source", "parse_source", "run", "stream",
           "stream_many"]
