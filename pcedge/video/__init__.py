"""Defended inference on video: sources, outputs, overlay, per-frame log, and the stream loop."""

from .sources import Frame, FrameSource, SourceOptions, open_source, parse_source
from .streaming import RunOptions, run, stream

__all__ = ["Frame", "FrameSource", "RunOptions", "SourceOptions", "open_source", "parse_source", "run", "stream"]
