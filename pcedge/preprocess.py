"""Preprocessing spec (timm's eval transform) and the numpy reference both kernels are tested against.

A model must never run with the wrong normalization, so the spec is written into the ONNX metadata at
export and read back by the runtime (:meth:`PreprocessSpec.from_onnx`).

The eval transform: resize (the shorter side to floor(size / crop_pct) for square inputs; each side to
floor(side / crop_pct) otherwise, as timm does), center crop to the input size, RGB, /255, (x - mean) / std.
Resampling follows OpenCV's INTER_LINEAR convention (half-pixel centres, no antialiasing), which is what
the fused kernels compute; PIL's antialiased resize that timm uses in training differs slightly on
strong downscales (documented in the README).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ConfigError, EngineError

METADATA_KEY = "pcedge.preprocess"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Geometry:
    """Where a frame of a given size lands: resized to (resized_h, resized_w), then cropped at (top, left)."""

    resized_h: int
    resized_w: int
    top: int
    left: int


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn a camera frame into the model's input tensor."""

    input_size: tuple[int, int] = (224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    class_names: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in (self.input_size if not isinstance(self.input_size, int) else (self.input_size,) * 2))
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"input_size must be (height, width) > 0, got {self.input_size!r}")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean and std need 3 values with std > 0, got mean={self.mean}, std={self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ConfigError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")

    # --------------------------------------------------------------------------- geometry and constants
    @property
    def resize_size(self) -> tuple[int, int]:
        """floor(size / crop_pct) per input side (timm's scale_size)."""
        return tuple(int(math.floor(s / self.crop_pct)) for s in self.input_size)  # type: ignore[return-value]

    def geometry(self, frame_h: int, frame_w: int) -> Geometry:
        """Resize and crop geometry for a frame, as torchvision's Resize + CenterCrop compute it."""
        if frame_h < 1 or frame_w < 1:
            raise ConfigError(f"frame must be at least 1x1, got {frame_h}x{frame_w}")
        h, w = self.input_size
        if h == w:  # Resize(int): the shorter side becomes the scale size, the other keeps the aspect
            short = self.resize_size[0]
            if frame_h <= frame_w:
                rh, rw = short, int(short * frame_w / frame_h)
            else:
                rh, rw = int(short * frame_h / frame_w), short
        else:
            rh, rw = self.resize_size
        rh, rw = max(rh, h), max(rw, w)
        return Geometry(rh, rw, int(round((rh - h) / 2.0)), int(round((rw - w) / 2.0)))

    def normalization(self) -> tuple[list[float], list[float]]:
        """Per output channel (scale, shift) so that x_norm = v255 * scale + shift."""
        scale = [1.0 / (255.0 * s) for s in self.std]
        shift = [-m / s for m, s in zip(self.mean, self.std)]
        return scale, shift

    def source_channels(self, frame_channels: int, frame_order: str = "BGR") -> list[int]:
        """Which frame channel feeds each model channel: BGR frames (OpenCV) to RGB models, gray to all."""
        if frame_channels == 1:
            return [0, 0, 0]
        if frame_channels not in (3, 4):
            raise ConfigError(f"frames need 1, 3 or 4 channels, got {frame_channels}")
        order = frame_order.upper()
        if order not in ("BGR", "RGB"):
            raise ConfigError(f"frame_order must be BGR or RGB, got {frame_order!r}")
        return [0, 1, 2] if order == self.channel_order else [2, 1, 0]

    # --------------------------------------------------------------------------- metadata
    def to_metadata(self) -> dict[str, str]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return {METADATA_KEY: json.dumps(data)}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "PreprocessSpec":
        if METADATA_KEY not in metadata:
            raise EngineError(
                f"the model has no '{METADATA_KEY}' metadata (it was not exported by pcedge); pass the "
                "preprocessing explicitly: --image-size, --mean, --std, --crop-pct"
            )
        data = json.loads(metadata[METADATA_KEY])
        data["input_size"] = tuple(data["input_size"])
        data["class_names"] = tuple(data.get("class_names", ()))
        return cls(**data)


def resolve_spec(explicit: dict, metadata: dict[str, str] | None, defaults: PreprocessSpec | None = None) -> PreprocessSpec:
    """timm's precedence: explicit arguments, then the model's metadata, then defaults."""
    base = None
    if metadata and METADATA_KEY in metadata:
        base = PreprocessSpec.from_metadata(metadata)
    elif defaults is not None:
        base = defaults
    overrides = {k: v for k, v in explicit.items() if v is not None}
    if base is None:
        if "input_size" not in overrides:
            raise ConfigError(
                "the model carries no preprocessing metadata; pass at least --image-size (and --mean/--std "
                "if it was not trained with ImageNet statistics)"
            )
        return PreprocessSpec(**overrides)
    data = asdict(base)
    data.update(overrides)
    return PreprocessSpec(**data)


# ------------------------------------------------------------------------------------------ reference
def as_hwc_uint8(frame: np.ndarray) -> np.ndarray:
    """Validate a frame: uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); returns a contiguous HWC view."""
    if not isinstance(frame, np.ndarray):
        raise ConfigError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 (as OpenCV reads them), got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ConfigError(f"a frame must be (H, W), (H, W, 3) or (H, W, 4), got shape {frame.shape}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ConfigError(f"empty frame of shape {frame.shape}")
    return np.ascontiguousarray(frame)


def _taps(out_len: int, offset: int, src_len: int, resized_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy twin of pce::linear_tap (float32 arithmetic, as the kernels do)."""
    scale = np.float32(src_len) / np.float32(resized_len)
    f = (np.arange(out_len, dtype=np.float32) + np.float32(offset) + np.float32(0.5)) * scale - np.float32(0.5)
    i0 = np.floor(f).astype(np.int64)
    w1 = (f - i0.astype(np.float32)).astype(np.float32)
    low = i0 < 0
    i0[low], w1[low] = 0, 0
    high = i0 >= src_len - 1
    i0[high], w1[high] = src_len - 1, 0
    i1 = np.minimum(i0 + 1, src_len - 1)
    return i0, i1, w1


def preprocess_reference(frame: np.ndarray, spec: PreprocessSpec, frame_order: str = "BGR") -> np.ndarray:
    """Frame -> normalized (3, H, W) float32, written plainly in numpy: the oracle for both kernels."""
    frame = as_hwc_uint8(frame)
    fh, fw, fc = frame.shape
    geo = spec.geometry(fh, fw)
    h, w = spec.input_size
    channels = spec.source_channels(fc, frame_order)
    if spec.interpolation == "bilinear":
        y0, y1, wy = _taps(h, geo.top, fh, geo.resized_h)
        x0, x1, wx = _taps(w, geo.left, fw, geo.resized_w)
        src = frame.astype(np.float32)
        a, b = src[y0][:, x0], src[y0][:, x1]
        c, d = src[y1][:, x0], src[y1][:, x1]
        top = a + (b - a) * wx[None, :, None]
        bottom = c + (d - c) * wx[None, :, None]
        sampled = top + (bottom - top) * wy[:, None, None]
    else:
        import cv2

        resized = cv2.resize(frame, (geo.resized_w, geo.resized_h), interpolation=cv2.INTER_CUBIC)
        resized = resized.reshape(geo.resized_h, geo.resized_w, fc)
        sampled = resized[geo.top : geo.top + h, geo.left : geo.left + w].astype(np.float32)
    scale, shift = spec.normalization()
    out = np.empty((3, h, w), dtype=np.float32)
    for c in range(3):
        out[c] = sampled[:, :, channels[c]] * np.float32(scale[c]) + np.float32(shift[c])
    return out


def masked_batch_reference(image: np.ndarray, mask_windows: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """numpy reference of the masked-batch writers: out[n] = image with the windows of selection n at 0.

    ``selection`` is (N,) mask indices or (N, 2) index pairs; ``mask_windows`` the (K, R, 4) table.
    """
    selection = np.asarray(selection)
    pairs = selection[:, None] if selection.ndim == 1 else selection
    out = np.repeat(image[None], len(pairs), axis=0)
    for n, masks in enumerate(pairs):
        for m in masks:
            for y0, x0, y1, x1 in mask_windows[m]:
                out[n, :, y0:y1, x0:x1] = 0
    return out
