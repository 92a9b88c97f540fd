"""The overlay users see on every frame: defended label, alarm level, stream alarm, latency and FPS, a legend.

Colours follow the alarm levels (:mod:`pcedge.alarm`): a green banner when the masks agree, grey-blue
when they disagree without a patch signature (an uncertain frame is shown, not cried wolf about), red
when one mask's removal explains the disagreement. The stream alarm (k of the last n frames at the patch
level) adds a thick red border and a line of its own. With ``show_masks`` the disagreeing masks are
drawn where they fall in the camera frame (the model input is a resized, centre-cropped view of the
frame, so windows are mapped back through the same geometry the writer used); the mask that explains a
patch frame is drawn bold. Text is scaled to the frame so it reads the same at 640x360 and 1080p.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..alarm import LEVEL_MEANING, LEVELS
from ..masks import MaskSet
from ..preprocess import PreprocessSpec
from ..result import Result

WHITE, BLACK = (255, 255, 255), (0, 0, 0)
LEVEL_COLOURS = {"clear": (60, 160, 40), "uncertain": (150, 110, 70), "patch": (40, 40, 220)}  # BGR
MASK_COLOUR, ALARM_COLOUR = (0, 190, 255), (30, 30, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_FONT = 0.4  # OpenCV font scale of the smallest text: about 9 px capitals, readable on a 640x360 frame


def model_window_to_frame(window: np.ndarray, spec: PreprocessSpec, frame_h: int, frame_w: int) -> tuple[int, int, int, int]:
    """A model-input window [y0, x0, y1, x1) as frame pixel coordinates (x0, y0, x1, y1)."""
    geo = spec.geometry(frame_h, frame_w)
    sy, sx = frame_h / geo.resized_h, frame_w / geo.resized_w
    y0, x0, y1, x1 = (int(v) for v in window)
    return (int(round((x0 + geo.left) * sx)), int(round((y0 + geo.top) * sy)),
            int(round((x1 + geo.left) * sx)), int(round((y1 + geo.top) * sy)))


def text_scale(frame_h: int, frame_w: int) -> float:
    """The overlay's size factor: 1.0 at 650 px (the frame's shorter side), never below 0.55."""
    return max(0.55, min(frame_h, frame_w) / 650.0)


def draw_overlay(frame: np.ndarray, result: Result, *, fps: float = 0.0, undefended: str | None = None,
                 mask_set: MaskSet | None = None, spec: PreprocessSpec | None = None, legend: bool = True) -> np.ndarray:
    """A copy of ``frame`` (BGR uint8) with the banner; masks drawn when ``mask_set`` and ``spec`` are given."""
    out = frame.copy() if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(_as_3d(frame), _to_bgr_code(frame))
    h, w = out.shape[:2]
    scale = text_scale(h, w)
    thick = max(1, int(round(2 * scale)))
    level = result.level
    if level != "clear" and mask_set is not None and spec is not None:
        _draw_masks(out, result, mask_set, spec, thick)
    alarm = result.stream_alarm
    lines = [(f"{result.class_name}   {level.upper()}", 0.8)]
    if alarm is not None and alarm.active:
        lines.append((f"PATCH ALARM: patch on {alarm.hits} of the last {alarm.window} frames", 0.7))
    if undefended is not None and undefended != result.class_name:
        lines.append((f"undefended model says: {undefended}", 0.6))
    lines.append((f"{result.timings_ms['total']:.0f} ms" + (f"  {fps:.1f} FPS" if fps > 0 else "")
                  + f"  {len(result.disagreers)} of {len(result.one_mask_labels) or '?'} masks disagree  {result.backend}", 0.5))
    lines = [(text, max(MIN_FONT, size * scale)) for text, size in lines]
    heights = [int(round(40 * size)) for _, size in lines]
    cv2.rectangle(out, (0, 0), (w, sum(heights) + int(round(8 * scale))), LEVEL_COLOURS[level], -1)
    y = 0
    for (text, size), line_h in zip(lines, heights):
        y += line_h
        cv2.putText(out, text, (int(8 * scale), y - int(round(8 * size))), FONT, size, WHITE, thick, cv2.LINE_AA)
    if legend:
        _draw_legend(out, scale, thick)
    if alarm is not None and alarm.active:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), ALARM_COLOUR, max(4, thick * 4))
    return out


def _draw_masks(out: np.ndarray, result: Result, mask_set: MaskSet, spec: PreprocessSpec, thick: int) -> None:
    """Every disagreeing mask in amber; the one that explains a patch frame in red, on top, twice as thick."""
    h, w = out.shape[:2]
    order = [i for i in result.disagreers if i != result.passing_mask] + ([result.passing_mask] if result.passing_mask is not None else [])
    for index in order:
        passing = index == result.passing_mask
        width = thick * 2 if passing else thick
        for window in mask_set.windows[index]:
            x0, y0, x1, y1 = model_window_to_frame(window, spec, h, w)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), BLACK, width + 2)  # a dark rim: readable on any background
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), LEVEL_COLOURS["patch"] if passing else MASK_COLOUR, width)


def _draw_legend(out: np.ndarray, scale: float, thick: int) -> None:
    """One line per level at the bottom-left, on a darkened box: the colour swatch and what it means."""
    h, w = out.shape[:2]
    size = max(MIN_FONT, 0.42 * scale)
    line_h, box, pad = int(round(44 * size)), int(round(26 * size)), int(round(6 * scale))
    texts = [f"{level}: {LEVEL_MEANING[level]}" for level in LEVELS]
    width = box + pad + max(cv2.getTextSize(t, FONT, size, 1)[0][0] for t in texts) + 2 * pad
    top = h - pad - line_h * len(LEVELS)
    region = out[max(top - pad, 0) : h, 0 : min(width, w)]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, (level, text) in enumerate(zip(LEVELS, texts)):
        y = top + line_h * (i + 1) - pad // 2
        cv2.rectangle(out, (pad, y - box), (pad + box, y), LEVEL_COLOURS[level], -1)
        cv2.putText(out, text, (2 * pad + box, y), FONT, size, WHITE, max(1, thick - 1), cv2.LINE_AA)


def _as_3d(frame: np.ndarray) -> np.ndarray:
    return frame[:, :, 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame


def _to_bgr_code(frame: np.ndarray) -> int:
    return cv2.COLOR_BGRA2BGR if frame.ndim == 3 and frame.shape[2] == 4 else cv2.COLOR_GRAY2BGR
