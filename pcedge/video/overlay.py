"""The overlay users see on every frame: defended label, case, alert, latency and FPS.

An alert (masks disagree: a possible patch attack, or a hard frame) turns the banner red and draws a
red border; with ``show_masks`` the disagreeing masks are drawn where they fall in the camera frame
(the model input is a resized, centre-cropped view of the frame, so windows are mapped back through
the same geometry the writer used).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..masks import MaskSet
from ..preprocess import PreprocessSpec
from ..runtime.driver import Result

GREEN, RED, WHITE, BLACK, AMBER = (60, 180, 60), (40, 40, 230), (255, 255, 255), (0, 0, 0), (0, 190, 255)


def model_window_to_frame(window: np.ndarray, spec: PreprocessSpec, frame_h: int, frame_w: int) -> tuple[int, int, int, int]:
    """A model-input window [y0, x0, y1, x1) as frame pixel coordinates (x0, y0, x1, y1)."""
    geo = spec.geometry(frame_h, frame_w)
    sy, sx = frame_h / geo.resized_h, frame_w / geo.resized_w
    y0, x0, y1, x1 = (int(v) for v in window)
    return (int(round((x0 + geo.left) * sx)), int(round((y0 + geo.top) * sy)),
            int(round((x1 + geo.left) * sx)), int(round((y1 + geo.top) * sy)))


def draw_overlay(frame: np.ndarray, result: Result, *, fps: float = 0.0, undefended: str | None = None,
                 mask_set: MaskSet | None = None, spec: PreprocessSpec | None = None) -> np.ndarray:
    """A copy of ``frame`` (BGR uint8) with the banner; masks drawn when ``mask_set`` and ``spec`` are given."""
    out = frame.copy() if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(_as_3d(frame), _to_bgr_code(frame))
    h, w = out.shape[:2]
    scale = max(0.4, min(w, h) / 720.0)
    thick = max(1, int(round(2 * scale)))
    if result.alert and mask_set is not None and spec is not None:
        for index in result.disagreers:
            for window in mask_set.windows[index]:
                x0, y0, x1, y1 = model_window_to_frame(window, spec, h, w)
                cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), AMBER, thick)
    lines = [f"{result.class_name}  [{result.case}]"]
    if result.alert:
        lines.append(f"ALERT: {len(result.disagreers)} mask(s) disagree - possible patch")
    if undefended is not None and undefended != result.class_name:
        lines.append(f"undefended model says: {undefended}")
    lines.append(f"{result.timings_ms['total']:.1f} ms" + (f"  {fps:.1f} FPS" if fps > 0 else "") + f"  {result.backend}")
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale
    line_h = int(28 * scale)
    banner_h = line_h * len(lines) + int(10 * scale)
    cv2.rectangle(out, (0, 0), (w, banner_h), RED if result.alert else GREEN, -1)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (int(8 * scale), line_h * (i + 1)), font, size, WHITE, thick, cv2.LINE_AA)
    if result.alert:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), RED, max(3, thick * 3))
    return out


def _as_3d(frame: np.ndarray) -> np.ndarray:
    return frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame


def _to_bgr_code(frame: np.ndarray) -> int:
    return cv2.COLOR_BGRA2BGR if frame.ndim == 3 and frame.shape[2] == 4 else cv2.COLOR_GRAY2BGR
