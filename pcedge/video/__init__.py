"""Defended inference on video: sources, the stream loop and its sinks (log, status, overlay and recording).

OpenCV is not a hard requirement of pcedge (a Jetson uses JetPack's, with GStreamer; pip's would
shadow it), so its absence is reported here, once, with both ways to get it.
"""

from ..util.optional import require

require("cv2", "video sources, outputs and overlays")

from .loop import Defended, Stream, StreamEvent, StreamLoop, StreamSpec, parse_streams, stream, stream_many
from .runner import RunOptions, run
from .sinks import Sink
from .sources import Frame, FrameSource, SourceOptions, open_source, parse_source

__all__ = ["Defended", "Frame", "FrameSource", "RunOptions", "Sink", "SourceOptions", "Stream", "StreamEvent", "StreamLoop",
           "StreamSpec", "open_source", "parse_source", "parse_streams", "run", "stream", "stream_many"]
