"""What crosses the wire between a camera client and the served defense: tensor names, parameters, encodings.

One frame per request item: ``FRAME``, uint8 (H, W, 3) RGB, already resized and cropped by the client to the
model's input (the published ``client_preprocessing``: ~150 kB for 224x224 instead of a 6 MB 1080p frame).
The server then masks, normalizes and classifies exactly as the local driver does on such a frame, so a
certificate belongs to the pipeline "client resize + server masking and engine", and the model's config
records both halves. ``THREAT_MODEL`` (optional, JSON) asks for another mask set; it is built and proved on
the server, and a set that does not cover its patch is refused like any insecure local one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..masks import MaskSpec
from ..preprocess import METADATA_KEY, PreprocessSpec
from ..result import Result

FRAME = "FRAME"
THREAT_MODEL = "THREAT_MODEL"
FRAME_ORDER = "RGB"
TIMINGS = ("masking", "first_round", "decision", "second_round", "total")
OUTPUTS = {  # name: (Triton data type, dims after the batch axis)
    "LABEL": ("TYPE_INT64", [1]),
    "CASE": ("TYPE_STRING", [1]),
    "LEVEL": ("TYPE_STRING", [1]),
    "DISAGREERS": ("TYPE_INT32", [-1]),
    "PASSING_MASK": ("TYPE_INT32", [1]),
    "TWO_MASK_PASSES": ("TYPE_INT32", [1]),
    "ONE_MASK_LABELS": ("TYPE_INT64", [-1]),
    "BATCH_SIZES": ("TYPE_INT32", [-1]),
    "TIMINGS_MS": ("TYPE_FP32", [len(TIMINGS)]),
}
PAD = -1  # ragged per-frame lists (disagreers, one-mask labels, batch sizes) are padded with it in a multi-frame request


def server_spec(spec: PreprocessSpec) -> PreprocessSpec:
    """The server half of the pipeline: frames arrive at the input size, so no resize or crop is left to do (crop 1,
    and the kernel's bilinear sampling at scale 1 reads each pixel exactly, so no OpenCV resize on the server)."""
    data = asdict(spec)
    data["crop_pct"] = 1.0
    data["interpolation"] = "bilinear"
    return PreprocessSpec(**data)


def spec_to_json(spec: PreprocessSpec) -> str:
    return spec.to_metadata()[METADATA_KEY]


def spec_from_json(text: str) -> PreprocessSpec:
    return PreprocessSpec.from_metadata({METADATA_KEY: text})


def threat_to_json(masks: MaskSpec) -> str:
    data = asdict(masks)
    if isinstance(data["mask_size"], tuple):
        data["mask_size"] = list(data["mask_size"])
    return json.dumps(data, sort_keys=True)


def threat_from_json(text: str) -> MaskSpec:
    """A client's threat-model request; unknown fields are refused rather than ignored."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"THREAT_MODEL is not JSON ({exc})") from None
    known = {f.name for f in fields(MaskSpec)}
    if not isinstance(data, dict) or set(data) - known:
        raise ConfigError(f"THREAT_MODEL must be a JSON object with fields among {sorted(known)}, got {text[:200]!r}")
    if isinstance(data.get("mask_size"), list):
        data["mask_size"] = tuple(data["mask_size"])
    return MaskSpec(**data)


def result_outputs(results: list[Result]) -> dict[str, np.ndarray]:
    """Results of one request's frames as its output tensors (batch axis first; ragged lists padded with ``PAD``)."""

    def ragged(rows: list[list[int]], dtype) -> np.ndarray:
        out = np.full((len(rows), max(1, max(len(r) for r in rows))), PAD, dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    return {
        "LABEL": np.array([[r.label] for r in results], np.int64),
        "CASE": np.array([[r.case.encode()] for r in results], np.object_),
        "LEVEL": np.array([[r.level.encode()] for r in results], np.object_),
        "DISAGREERS": ragged([r.disagreers for r in results], np.int32),
        "PASSING_MASK": np.array([[PAD if r.passing_mask is None else r.passing_mask] for r in results], np.int32),
        "TWO_MASK_PASSES": np.array([[r.two_mask_passes] for r in results], np.int32),
        "ONE_MASK_LABELS": ragged([r.one_mask_labels for r in results], np.int64),
        "BATCH_SIZES": ragged([r.batch_sizes for r in results], np.int32),
        "TIMINGS_MS": np.array([[r.timings_ms[t] for t in TIMINGS] for r in results], np.float32),
    }


def results_from_outputs(outputs: dict[str, np.ndarray], class_name, backend: str) -> list[Result]:
    """The inverse of :func:`result_outputs`: one :class:`Result` per frame of the request."""

    def unpad(row: np.ndarray) -> list[int]:
        return [int(v) for v in row if v != PAD]

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    results = []
    for i in range(outputs["LABEL"].shape[0]):
        label = int(outputs["LABEL"][i, 0])
        passing = int(outputs["PASSING_MASK"][i, 0])
        results.append(Result(label, class_name(label), text(outputs["CASE"][i, 0]), unpad(outputs["DISAGREERS"][i]),
                              int(outputs["TWO_MASK_PASSES"][i, 0]),
                              {t: float(v) for t, v in zip(TIMINGS, outputs["TIMINGS_MS"][i])}, backend,
                              unpad(outputs["ONE_MASK_LABELS"][i]), None if passing == PAD else passing,
                              text(outputs["LEVEL"][i, 0]), batch_sizes=unpad(outputs["BATCH_SIZES"][i])))
    return results


def client_frame(frame: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """The client half of the pipeline: a camera frame (BGR, BGRA or gray uint8, as OpenCV gives it) resized and
    center-cropped to the model's input as ``spec`` says, as uint8 RGB (H, W, 3). For bicubic specs this is exactly
    what the local driver feeds its kernel (the same OpenCV resize, then a crop); for bilinear ones the local
    kernel samples in float, so the served pipeline differs from the local one by this uint8 rounding."""
    import cv2

    from ..preprocess import as_hwc_uint8

    image = as_hwc_uint8(frame)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[:, :, :3]
    geo = spec.geometry(image.shape[0], image.shape[1])
    interpolation = cv2.INTER_CUBIC if spec.interpolation == "bicubic" else cv2.INTER_LINEAR
    resized = cv2.resize(image, (geo.resized_w, geo.resized_h), interpolation=interpolation)
    h, w = spec.input_size
    crop = resized[geo.top : geo.top + h, geo.left : geo.left + w]
    return np.ascontiguousarray(crop[:, :, ::-1])  # BGR -> RGB (FRAME_ORDER)
