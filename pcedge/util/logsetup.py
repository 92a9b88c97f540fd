"""One logging policy for every pcedge command (and ``make demo``): what a person sees by default.

By default: pcedge's own INFO lines (``pcedge: ...``), everyone's warnings, no third-party chatter.
``-q``: warnings and errors only, no progress. ``-v``: every library's INFO lines with logger names.
``-vv``/``--debug``: debug. Libraries that set up their own loggers when imported (torch does) are put
back under the policy by :func:`tame`, which ``pcedge.util.optional.require`` calls after each heavy import.
"""

from __future__ import annotations

import logging
import os
import sys

from .redact import redact

_VERBOSITY: int | None = None  # None: the host application owns logging (pcedge used as a library)


QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch", "torch.onnx", "torch.export", "torch._dynamo", "efficientnet_lite_pytorch",
                 "matplotlib", "PIL", "numexpr")
"""Third-party loggers that narrate their internals at INFO; shown only with -v."""


def configure_logging(verbosity: int) -> None:
    """One logging policy for every command: -q warnings and errors only, default pcedge's own INFO lines,
    -v every library's INFO, -vv/--debug DEBUG. Third-party chatter stays below the default."""
    from .progress import set_quiet

    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_LogFormatter(detailed=verbosity >= 1))
    root.addHandler(handler)
    root.setLevel(logging.WARNING if verbosity <= 0 else level)
    logging.getLogger("pcedge").setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if verbosity <= 0 else logging.NOTSET)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.ERROR if verbosity <= 0 else logging.WARNING)
    set_quiet(verbosity < 0)
    global _VERBOSITY
    _VERBOSITY = verbosity
    quiet_opencv(verbose=verbosity > 0)


FFMPEG_QUIET, FFMPEG_ERRORS = "-8", "16"  # FFmpeg's AV_LOG_QUIET and AV_LOG_ERROR


def quiet_opencv(verbose: bool) -> None:
    """OpenCV's own "[ WARN:0@0.1] global cap.cpp ..." lines and its FFmpeg's "[tcp @ 0x...] Connection refused"
    reach the console before pcedge says the same thing in its words: shown only with -v.

    FFmpeg's level is read by OpenCV from ``OPENCV_FFMPEG_LOGLEVEL`` when its first capture opens, so it is set
    here, before any (a value the user set is kept); OpenCV's own level has a different call in 4.x and 5.x.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", FFMPEG_ERRORS if verbose else FFMPEG_QUIET)
    try:
        import cv2
    except ImportError:
        return
    level = 3 if verbose else 0  # 3: warnings, 0: silent
    if hasattr(cv2, "setLogLevel"):  # OpenCV 4.x
        cv2.setLogLevel(level)
    elif hasattr(getattr(cv2, "utils", None), "logging"):  # OpenCV 5.x
        cv2.utils.logging.setLogLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the object it was at setup: a library user
    or a test harness that swaps stderr (and closes the old one) never gets "I/O operation on closed file"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LogFormatter(logging.Formatter):
    """``pcedge: message`` for pcedge's lines, ``warning: message`` for warnings; logger names with -v."""

    def __init__(self, detailed: bool) -> None:
        super().__init__()
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and self.detailed:
            message += "\n" + self.formatException(record.exc_info)
        message = redact(message)  # a URL's credentials never reach the console, whoever logged it
        if self.detailed:
            return f"{record.levelname.lower()} {record.name}: {message}"
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return f"pcedge: {message}"


def tame(module: str) -> None:
    """Re-apply the policy to a just-imported library's loggers (torch resets its own at import time)."""
    if _VERBOSITY is None or _VERBOSITY > 0:
        return
    for name in QUIET_LOGGERS:
        if name.split(".")[0] == module:
            logging.getLogger(name).setLevel(logging.ERROR)
