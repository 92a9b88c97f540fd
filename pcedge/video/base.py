"""What every frame source is: an iterator of timestamped BGR frames with counters, closed when done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import cv2
import numpy as np

from ..errors import SourceError

if TYPE_CHECKING:
    from .uri import SourceOptions


@dataclass
class Frame:
    """One captured frame: the BGR image, its index in the source, and when it was captured."""

    image: np.ndarray
    index: int
    captured_at: float  # time.time()
    name: str = ""  # file name for image sources
    follows_gap: bool = False  # the first frame after an outage of its (live) source


@dataclass
class SourceStats:
    """What happened to frames before the model saw them: reported in the summary and the log."""

    read: int = 0
    dropped: int = 0  # live frames replaced by a newer one before they were processed
    unreadable: list[str] = field(default_factory=list)  # image files OpenCV could not decode
    reconnects: int = 0
    stalls: int = 0
    gaps: list[dict[str, float]] = field(default_factory=list)  # {"start", "end", "seconds"}: the newest KEPT_GAPS outages
    gap_count: int = 0  # every outage since the start (the frame log has each one as an event line)
    error: str = ""  # why a live source was given up

    KEPT_GAPS = 100  # a camera that drops out every hour for weeks must not grow the summary without bound

    def add_gap(self, start: float, end: float) -> None:
        self.gaps.append({"start": start, "end": end, "seconds": round(end - start, 3)})
        del self.gaps[: -self.KEPT_GAPS]
        self.gap_count += 1

    def gaps_since(self, seen: int) -> list[dict[str, float]]:
        """The outages after the first ``seen`` (those still kept)."""
        new = self.gap_count - seen
        return self.gaps[-new:] if new > 0 else []

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "dropped": self.dropped, "unreadable": list(self.unreadable),
                "reconnects": self.reconnects, "stalls": self.stalls, "gaps": list(self.gaps), "gap_count": self.gap_count, "error": self.error}


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



def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Frames as the driver takes them: uint8, gray or BGR(A). 16-bit images are scaled, not clipped."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return image


def open_capture(target: int | str, api: int, options: "SourceOptions", what: str) -> Any:
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
