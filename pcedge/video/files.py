"""File-like sources: images, folders and globs of images, video files; read in the caller's thread, nothing dropped."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import cv2

from ..errors import SourceError
from .base import Frame, FrameSource, open_capture, to_bgr8
from .uri import SourceOptions

log = logging.getLogger("pcedge.video.sources")


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
                image = to_bgr8(image)
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
        self._cap = open_capture(str(path), cv2.CAP_FFMPEG, options, f"video file {path}")
        # read once here: other threads ask for them (the status line) while the reader or the closer uses the capture
        self._fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def length(self) -> int | None:
        return self._frame_count if self._frame_count > 0 and not self.options.loop else None

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
            self._cap = open_capture(str(self.path), cv2.CAP_FFMPEG, self.options, f"video file {self.path}")

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
