"""Defended inference on video: sources, the stream loop and its sinks (log, status, overlay and recording).

OpenCV is not a hard requirement of pcedge (a Jetson uses JetPack's, with GStreamer; pip's would
shadow it), so its absence is reported here, once, with both ways to get it.
"""

from ..util.optional import require

require("cv2", "video sources, outputs and overlays")

from .loop import StreamLoop, stream, stream_many
from .runner import Runner, RunOptions, run
from .sinks import Sink
from .sources import Frame, FrameSource, SourceOptions, open_source, parse_source
from .streams import Defended, Region, Stream, StreamEvent, StreamsChanged, StreamSpec, parse_streams

__all__ = ["Defended", "Frame", "FrameSource", "Region", "RunOptions", "Runner", "Sink", "SourceOptions", "Stream", "StreamEvent",
           "StreamLoop", "StreamSpec", "StreamsChanged", "open_source", "parse_source", "parse_streams", "run", "stream", "stream_many"]
