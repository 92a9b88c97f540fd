"""A sample clip made here from real photos (scikit-image's), for ``make demo`` and the video tests.

Each photo is filmed like a handheld camera would: a 16:9 window slowly pans and zooms across it. The
last segment shows one of the photos again (the coffee cup by default) with a patch stuck on it, which
moves with the scene. The patch is given by the
caller (the demo passes a patch optimized against the demo model); its side in the frame is chosen so
that after the model's resize and crop it stays inside the 2% threat model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import MissingDependencyError

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")
PATCHED_MOTION = (0.3, 0.7)  # the patched segment pans over this part of the path: a steadier shot


@dataclass(frozen=True)
class ClipSegment:
    """Frames [start, stop) of the clip show ``photo``; ``patched`` segments carry the patch."""

    photo: str
    start: int
    stop: int
    patched: bool


def load_photos(names: tuple[str, ...] = PHOTOS) -> dict[str, np.ndarray]:
    """scikit-image's bundled photos as BGR frames."""
    try:
        from skimage import data
    except ImportError:
        raise MissingDependencyError("the demo clip is made from scikit-image's photos: pip install scikit-image") from None
    return {name: cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR) for name in names}


def camera_view(photo: np.ndarray, t: float, size: tuple[int, int], zoom: tuple[float, float] = (1.0, 1.25)) -> tuple[np.ndarray, np.ndarray]:
    """The frame at progress ``t`` in [0, 1] of a pan-and-zoom over ``photo``, and the 2x3 photo->frame map."""
    out_h, out_w = size
    ph, pw = photo.shape[:2]
    aspect = out_w / out_h
    base_w = min(pw, ph * aspect)
    z = zoom[0] + (zoom[1] - zoom[0]) * t
    win_w, win_h = base_w / z, base_w / z / aspect
    cx = win_w / 2 + (pw - win_w) * (0.2 + 0.6 * t)
    cy = win_h / 2 + (ph - win_h) * (0.5 + 0.3 * np.sin(np.pi * t) - 0.15)
    s = out_w / win_w
    affine = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy]], dtype=np.float64)
    frame = cv2.warpAffine(photo, affine, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return frame, affine


def patch_corner(photo: np.ndarray, affine: np.ndarray, anchor: tuple[float, float], side: int) -> tuple[int, int]:
    """(y, x) in the frame of a ``side`` px patch centred on ``anchor`` (x, y fractions of the photo)."""
    fx, fy = affine @ np.array([anchor[0] * photo.shape[1], anchor[1] * photo.shape[0], 1.0])
    return int(fy - side / 2), int(fx - side / 2)


def paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> np.ndarray:
    """``patch`` (BGR, any size) pasted with its top-left corner at (x, y), clipped to the frame."""
    out = frame.copy()
    ph, pw = patch.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + pw, frame.shape[1]), min(y + ph, frame.shape[0])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return out


def make_demo_clip(path: str | Path, patch: np.ndarray, *, patched_photo: str = "coffee", patch_anchor: tuple[float, float] = (0.5, 0.5),
                   size: tuple[int, int] = (360, 640), fps: int = 15, seconds_per_photo: float = 2.0,
                   photos: tuple[str, ...] = PHOTOS) -> list[ClipSegment]:
    """Write the clip and return its segments. ``patch_anchor``: the patch centre in ``patched_photo`` (x, y fractions).

    The patched photo appears twice: clean first, then with the patch, so the alert visibly rises.
    """
    if patched_photo not in photos:
        raise ValueError(f"patched_photo {patched_photo!r} is not among the clip's photos {photos}")
    images = load_photos(tuple(dict.fromkeys(photos)))
    order = [(name, False) for name in photos] + [(patched_photo, True)]
    per = int(round(seconds_per_photo * fps))
    # .avi/.mkv: lossless FFV1, so an optimized patch reaches the model as it was made; .mp4: mp4v (lossy)
    fourcc = "FFV1" if Path(path).suffix.lower() in (".avi", ".mkv") else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {fourcc} video to {path}")
    segments = []
    try:
        for n, (name, patched) in enumerate(order):
            photo = images[name]
            t0, t1 = PATCHED_MOTION if patched else (0.0, 1.0)
            for i in range(per):
                frame, affine = camera_view(photo, t0 + (t1 - t0) * i / max(per - 1, 1), size)
                if patched:
                    y, x = patch_corner(photo, affine, patch_anchor, patch.shape[0])
                    frame = paste(frame, patch, x, y)
                writer.write(frame)
            segments.append(ClipSegment(name, n * per, (n + 1) * per, patched))
    finally:
        writer.release()
    return segments


def max_patch_side_in_frame(frame_size: tuple[int, int], patch_px: int, spec) -> int:
    """Largest square (frame pixels) whose footprint in the model input stays within ``patch_px``.

    Bilinear resizing spreads a patch edge over one more input pixel, so one pixel of margin is kept.
    """
    geo = spec.geometry(*frame_size)
    scale = geo.resized_h / frame_size[0]
    return int((patch_px - 1) / scale)
