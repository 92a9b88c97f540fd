"""Where annotated frames go: a video file, a folder of images, an OpenCV window, or nowhere.

Recording must never stop the defense: when a write fails or the disk runs low, the output stops
recording, closes what it wrote (so the file stays playable) and reports why; inference goes on.
Video files are written under a ``.partial`` name and renamed when closed, so a file with the final
name is always complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

# FOURCCs that pip's OpenCV (FFmpeg inside) writes everywhere; H.264 needs an encoder it may not have.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}
MIN_FREE_BYTES = 64 * 1024 * 1024  # stop recording before the disk is completely full
DISK_CHECK_EVERY = 30  # frames between free-space checks


class Output:
    """Receives annotated BGR frames. ``failed`` holds why recording stopped ("" while it works)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.failed = ""
        self.written = 0

    def write(self, frame: np.ndarray) -> None:
        if self.failed:
            return
        try:
            self._write(frame)
            self.written += 1
        except OSError as exc:
            self._fail(f"{self.description}: {exc}")

    def close(self) -> None:
        """Flush and release; safe to call twice."""

    def set_rate(self, fps: float) -> None:
        """The frame rate to record at, once known (the source's, at its first frame); before the first write only."""

    def _write(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _fail(self, reason: str) -> None:
        self.failed = reason
        log.error("recording stopped (inference goes on): %s", reason)
        self.close()

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class NullOutput(Output):
    """Headless: frames are only logged."""

    def __init__(self) -> None:
        super().__init__("no output (headless)")

    def _write(self, frame: np.ndarray) -> None:
        pass


class VideoFileOutput(Output):
    """An mp4/avi/mkv/mov file; opened at the first frame, when its size is known."""

    def __init__(self, path: Path, fps: float, codec: str = "", min_free_bytes: int = MIN_FREE_BYTES) -> None:
        super().__init__(f"video file {path}")
        suffix = path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise ConfigError(f"{path}: video outputs are {', '.join(VIDEO_CODECS)}; or give a folder for images")
        self.path, self.fps = path, fps if fps > 0 else 30.0
        self.codec = codec or VIDEO_CODECS[suffix]
        self.min_free_bytes = min_free_bytes
        self.partial = path.with_name(path.stem + ".partial" + path.suffix)
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._closed = False

    def set_rate(self, fps: float) -> None:
        if self._writer is None and fps > 0:
            self.fps = fps

    def _write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self._size:  # the stream changed resolution mid-way
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        if self.written % DISK_CHECK_EVERY == 0 and free_bytes(self.path.parent) < self.min_free_bytes:
            raise OSError(f"less than {self.min_free_bytes >> 20} MiB free on the disk of {self.path.parent}")
        self._writer.write(frame)

    def _open(self, frame: np.ndarray) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = (frame.shape[1], frame.shape[0])
        writer = cv2.VideoWriter(str(self.partial), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*self.codec), self.fps, self._size)
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write {self.codec} video to {self.partial}")
        self._writer = writer

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.partial.exists():
                os.replace(self.partial, self.path)
                log.info("wrote %s (%d frames)", self.path, self.written)


class FolderOutput(Output):
    """One JPEG (or PNG with ``ext='.png'``) per frame: frame_000000.jpg, ..."""

    def __init__(self, folder: Path, ext: str = ".jpg", min_free_bytes: int = MIN_FREE_BYTES) -> None:
        super().__init__(f"image folder {folder}")
        self.folder, self.ext, self.min_free_bytes = folder, ext, min_free_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def _write(self, frame: np.ndarray) -> None:
        if self.written % DISK_CHECK_EVERY == 0 and free_bytes(self.folder) < self.min_free_bytes:
            raise OSError(f"less than {self.min_free_bytes >> 20} MiB free on the disk of {self.folder}")
        path = self.folder / f"frame_{self.written:06d}{self.ext}"
        if not cv2.imwrite(str(path), frame):
            path.unlink(missing_ok=True)
            raise OSError(f"cannot write {path}")


class DisplayOutput(Output):
    """An OpenCV window; closing it or pressing q / Esc asks the stream to stop."""

    def __init__(self, title: str = "pcedge") -> None:
        super().__init__(f"window {title!r}")
        self.title = title
        self.quit_requested = False
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise ConfigError(f"display://: this OpenCV cannot open windows ({str(exc).strip()[:120]}); "
                              "install opencv-python instead of -headless, or write to a file") from None

    def _write(self, frame: np.ndarray) -> None:
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.quit_requested = True

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


def display_available() -> bool:
    """A display exists (X11 or Wayland); on Linux without one, windows cannot open."""
    return os.name == "nt" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_output(uri: str | Path | None, fps: float = 30.0, *, title: str = "") -> Output:
    """``None`` or "" = headless; ``display://N`` = window (``title``: its title); a video suffix = file; anything
    else = folder."""
    text = "" if uri is None else str(uri).strip()
    if not text:
        return NullOutput()
    if text.startswith("display://"):
        if not display_available():
            raise ConfigError(f"{text}: no display here (DISPLAY is not set); use --output FILE.mp4 or --headless")
        return DisplayOutput(title or f"pcedge {text[len('display://'):] or '0'}")
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoFileOutput(path, fps)
    if path.suffix:
        raise ConfigError(f"{text}: unknown output type; use a video file ({', '.join(VIDEO_CODECS)}), "
                          "a folder, or display://0")
    return FolderOutput(path)


def free_bytes(folder: Path) -> int:
    """Bytes free on the disk that holds ``folder`` (or would hold it: the nearest existing parent is asked)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
