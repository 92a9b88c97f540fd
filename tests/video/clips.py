"""Real video files for the tests, written with OpenCV: each frame carries its own index.

The index is drawn as 8 black/white columns (one bit each), which survives lossy codecs, so a test can
tell exactly which frames a source delivered and in what order.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from pcedge.video.base import Frame, FrameSource

BITS = 8


def numbered_frame(index: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    h, w = size
    frame = np.zeros((h, w, 3), np.uint8)
    col = w // BITS
    for bit in range(BITS):
        if index >> bit & 1:
            frame[:, bit * col : (bit + 1) * col] = 255
    frame[: h // 4, :, 2] = 128  # some colour, so BGR order matters to the model
    return frame


def read_index(frame: np.ndarray) -> int:
    h, w = frame.shape[:2]
    col = w // BITS
    strip = frame[h // 2 :, :, 1]
    return sum(1 << bit for bit in range(BITS) if strip[:, bit * col + 2 : (bit + 1) * col - 2].mean() > 127)


def write_numbered_clip(path: Path, count: int, size: tuple[int, int] = (96, 128), fps: int = 25, fourcc: str = "") -> Path:
    fourcc = fourcc or ("MJPG" if path.suffix == ".avi" else "mp4v")
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for i in range(count):
        writer.write(numbered_frame(i, size))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


class GivenFrames(FrameSource):
    """Given frames, delivered as a file delivers them (none dropped), or as a camera with ``live``."""

    def __init__(self, images: list[np.ndarray], live: bool = False) -> None:
        super().__init__("given frames")
        self.images, self.live = images, live

    def __iter__(self):
        for index, image in enumerate(self.images):
            self.stats.read += 1
            yield Frame(image, index, time.time())
