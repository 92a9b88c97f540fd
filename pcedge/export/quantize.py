"""INT8 models for CPUs: ONNX Runtime static quantization, calibrated on the images the defense feeds it.

On a CPU, batching the K masked images does not make a forward pass cheaper per image, so the
defense's cost there is K forward passes; an INT8 model makes each of them cheaper. Two facts shape
how pcedge quantizes:

- **Labels must not depend on the CPU.** ONNX Runtime multiplies uint8 activations by int8 weights with
  ``vpmaddubsw`` on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake), whose 16-bit pair sums
  saturate: the same file then gives other labels there than on a VNNI CPU or a GPU, and a
  certificate computed on one CPU would not hold on the other. The default scheme ``u8s7`` limits
  weights to 7 bits (|w| <= 64): 2 x 255 x 64 = 32640 < 32767, so no pair sum can saturate and every
  x86 CPU computes the same integers (checked under an emulated AVX2-only CPU in the tests). ``u8u8``
  (uint8 weights) is saturation-free too but ONNX Runtime's x86 kernels for it are slow.
- **The deployed model sees masked images**, so calibration uses the runtime's own writer to produce
  unmasked, one-mask and two-mask images of each calibration frame, and the agreement with the FP32
  model is measured on one-mask and two-mask images of frames held out from calibration. Below
  ``min_agreement`` the model is not written (``force`` writes it anyway, with a warning). That gate
  (:func:`gate_agreement`, its report and its record) is every reduced precision's: OpenVINO's BF16 and
  FP16 pass it too (:mod:`pcedge.export.openvino_precision`).

A quantized model is a different model: certify it (``pcedge certify``) on the CPU family that will
run it. The scheme, the quantizing machine's INT8-relevant CPU flags and the agreement are recorded in
the model's metadata (``pcedge.quantization``, shown by ``pcedge inspect``), and the content hash is renewed.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, EngineError, PcedgeError
from ..masks import MaskSet, MaskSpec
from ..preprocess import METADATA_KEY, PreprocessSpec
from ..runtime.kernels import write_frame, write_masked_frame
from ..runtime.modelfile import (
    CONTENT_HASH_KEY,
    INT8_MIN_AGREEMENT,
    INT8_SCHEMES,
    OPENVINO_HINTS,
    QUANTIZATION_KEY,
    read_onnx_metadata,
    stamp_metadata,
)
from ..util.files import writing
from ..util.machine import cpu_features, cpu_model, int8_arithmetic
from ..util.optional import require

log = logging.getLogger(__name__)



class AgreementError(PcedgeError):
    """The INT8 model's labels disagree with the FP32 model's too often to be written."""


@dataclass
class QuantizeReport:
    """What the agreement gate measured for a reduced-precision copy (INT8, or OpenVINO's BF16/FP16) and what it wrote."""

    path: Path | None  # None when the model was refused
    scheme: str  # an INT8 scheme (u8s7, u8u8) or OpenVINO's precision hint (bf16, f16)
    calibration_images: int  # 0 for OpenVINO's precisions: nothing is calibrated, the FP32 weights are computed in lower precision
    one_mask_images: int
    one_mask_agreement: float  # on held-out frames: reduced label == FP32 label, one-mask images
    two_mask_images: int
    two_mask_agreement: float  # the same on two-mask images
    forced: bool = False

    @property
    def held_out_images(self) -> int:
        return self.one_mask_images + self.two_mask_images

    @property
    def agreement(self) -> float:
        """Agreement over all held-out masked images (one-mask and two-mask together)."""
        return (self.one_mask_agreement * self.one_mask_images + self.two_mask_agreement * self.two_mask_images) / self.held_out_images

    @property
    def precision(self) -> str:
        """int8, or pcedge's name for OpenVINO's hint (bf16, fp16)."""
        return "int8" if self.scheme in INT8_SCHEMES else OPENVINO_HINTS[self.scheme]

    def describe(self) -> str:
        if self.scheme in INT8_SCHEMES:
            return f"INT8 {self.scheme}: {INT8_SCHEMES[self.scheme]}"
        return f"OpenVINO {self.scheme}: the FP32 weights, computed in {self.scheme} by OpenVINO"

    def summary(self) -> str:
        where = f"wrote {self.path}" if self.path else "refused"
        calibrated = (f"calibrated on {self.calibration_images} images (whole, one-mask and two-mask); " if self.calibration_images
                      else "")
        return (f"{where} ({self.describe()}); {calibrated}on {self.held_out_images} masked images of held-out frames "
                f"{self.precision.upper()} and FP32 labels agree on {100 * self.agreement:.1f}% (one-mask "
                f"{100 * self.one_mask_agreement:.1f}%, two-mask {100 * self.two_mask_agreement:.1f}%)")


def calibration_images(frames: Sequence[np.ndarray], spec: PreprocessSpec, *, masks: MaskSpec = MaskSpec(),
                       per_frame: int = 4, seed: int = 0) -> np.ndarray:
    """(N, 3, H, W) float32 model inputs: each frame whole plus ``per_frame - 1`` random one/two-mask versions."""
    if not frames:
        raise ConfigError("calibration needs at least one frame")
    mask_set = masks.build(spec.input_size)
    rng = np.random.default_rng(seed)
    out = np.empty((len(frames) * per_frame, 3, *spec.input_size), np.float32)
    for n, frame in enumerate(frames):
        base = n * per_frame
        write_frame(frame, spec, out[base : base + 1])
        pairs = rng.integers(0, len(mask_set), size=(per_frame - 1, 2)).astype(np.int32)
        pairs[: (per_frame - 1) // 2, 1] = pairs[: (per_frame - 1) // 2, 0]  # half one-mask images (i, i)
        write_masked_frame(frame, spec, mask_set, pairs, out[base + 1 : base + per_frame])
    return out


def held_out_images(frames: Sequence[np.ndarray], spec: PreprocessSpec, mask_set: MaskSet, *, two_mask_per_frame: int | None = None,
                    seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The masked images the defense would classify for ``frames``: all K one-mask images of each frame,
    and K random two-mask images (distinct masks) per frame. Returns (one_mask, two_mask) batches."""
    k = len(mask_set)
    two = k if two_mask_per_frame is None else two_mask_per_frame
    rng = np.random.default_rng(seed)
    one_mask = np.empty((len(frames) * k, 3, *spec.input_size), np.float32)
    two_mask = np.empty((len(frames) * two, 3, *spec.input_size), np.float32)
    singles = np.stack([np.arange(k), np.arange(k)], axis=1).astype(np.int32)
    for n, frame in enumerate(frames):
        write_masked_frame(frame, spec, mask_set, singles, one_mask[n * k : (n + 1) * k])
        if two:
            i = rng.integers(0, k, two)
            j = (i + rng.integers(1, k, two)) % k if k > 1 else i
            write_masked_frame(frame, spec, mask_set, np.stack([i, j], axis=1).astype(np.int32), two_mask[n * two : (n + 1) * two])
    return one_mask, two_mask


def quantize_int8(model_path: str | Path, out_path: str | Path, frames: Sequence[np.ndarray], *,
                  held_out_frames: Sequence[np.ndarray] | None = None, scheme: str = "u8s7", per_channel: bool = True,
                  masks: MaskSpec = MaskSpec(), min_agreement: float = INT8_MIN_AGREEMENT, force: bool = False,
                  progress: Any = None) -> QuantizeReport:
    """Write an INT8 copy of a pcedge ONNX model, calibrated on ``frames`` (BGR uint8 camera frames).

    The agreement with FP32 is measured on the one-mask and two-mask images of ``held_out_frames``,
    which calibration never sees (default: the last quarter of ``frames``, at least one). Raises
    :class:`AgreementError` (and writes nothing) when it is below ``min_agreement``, unless ``force``.
    ``progress(step)`` is called with a short description before each step.
    """
    require("onnx", "INT8 quantization")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if scheme not in INT8_SCHEMES:
        raise ConfigError(f"--scheme {scheme!r}: choose one of {', '.join(INT8_SCHEMES)} (u8s7 gives the same labels on every CPU)")
    frames, held_out_frames = split_held_out(frames, held_out_frames, min_agreement)
    step = progress or (lambda text: None)
    model_path, out_path = Path(model_path), Path(out_path)
    metadata = fp32_source_metadata(model_path)
    spec = PreprocessSpec.from_metadata(metadata)
    mask_set = masks.build(spec.input_size)
    step(f"preparing {len(frames)} calibration and {len(held_out_frames)} held-out frames")
    images = calibration_images(frames, spec, masks=masks)
    one_mask, two_mask = held_out_images(held_out_frames, spec, mask_set)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(np.array_split(images, max(1, len(images) // 8)))

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"images": batch}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        step(f"calibrating on {len(images)} images ({scheme})")
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8 if scheme == "u8s7" else QuantType.QUInt8,
                        reduce_range=scheme == "u8s7", per_channel=per_channel)
        step(f"measuring agreement with FP32 on {len(one_mask) + len(two_mask)} held-out masked images")
        quantized_labels = onnx_labels(quantized, np.concatenate([one_mask, two_mask]))
        report = gate_agreement(model_path, quantized_labels, one_mask, two_mask, scheme=scheme, calibration_images=len(images),
                                min_agreement=min_agreement, force=force)
        info = {"method": "onnxruntime static QDQ", "scheme": scheme, "activations": "uint8",
                "weights": ("int8 limited to 7 bits" if scheme == "u8s7" else "uint8") + (" per-channel" if per_channel else ""),
                "calibration_images": len(images), **gate_record(report, metadata)}
        write_with_record(quantized, out_path, info)
    report.path = out_path
    return report


def split_held_out(frames: Sequence[np.ndarray], held_out_frames: Sequence[np.ndarray] | None,
                   min_agreement: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration frames, held-out frames): ``held_out_frames`` when given, else the last quarter of ``frames`` (at
    least one). Checks ``min_agreement`` too, so that a bad threshold is refused before any work."""
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement {min_agreement}: give a fraction between 0 and 1, e.g. 0.95")
    if held_out_frames is None:
        if len(frames) < 2:
            raise ConfigError(f"calibration needs at least one frame and one held-out frame; got {len(frames)} frame(s)")
        n_held = max(1, len(frames) // 4)
        frames, held_out_frames = list(frames[:-n_held]), list(frames[-n_held:])
    if not frames or not held_out_frames:
        raise ConfigError("calibration needs at least one frame and one held-out frame")
    return list(frames), list(held_out_frames)


def fp32_source_metadata(model_path: Path) -> dict[str, str]:
    """The metadata of a pcedge FP32 model, refusing files that are not one (no preprocessing, already reduced)."""
    metadata = read_onnx_metadata(model_path)
    if METADATA_KEY not in metadata:
        raise EngineError(f"{model_path} has no pcedge preprocessing metadata: export it with pcedge export first")
    if QUANTIZATION_KEY in metadata:
        raise ConfigError(f"{model_path} is already quantized (or gated for a reduced precision); start from the FP32 model it "
                          "came from")
    return metadata


def gate_agreement(fp32_path: Path, reduced_labels: np.ndarray, one_mask: np.ndarray, two_mask: np.ndarray, *, scheme: str,
                   calibration_images: int, min_agreement: float, force: bool) -> QuantizeReport:
    """The agreement gate every reduced precision passes: ``reduced_labels`` (of the one-mask images, then the two-mask
    ones) against the FP32 model's labels under ONNX Runtime CPU. Raises :class:`AgreementError` below ``min_agreement``
    unless ``force`` (then the report says it was forced)."""
    same = onnx_labels(fp32_path, np.concatenate([one_mask, two_mask])) == np.asarray(reduced_labels)
    one_agree = float(same[: len(one_mask)].mean())
    two_agree = float(same[len(one_mask) :].mean()) if len(two_mask) else 1.0
    report = QuantizeReport(None, scheme, calibration_images, len(one_mask), one_agree, len(two_mask), two_agree)
    if report.agreement < min_agreement:
        if not force:
            raise AgreementError(_refusal(report, min_agreement))
        log.warning("writing it anyway (--force): %s", _refusal(report, min_agreement))
        report.forced = True
    return report


def gate_record(report: QuantizeReport, metadata: dict[str, str]) -> dict[str, Any]:
    """What the gate measured and where, for the written model's metadata (``pcedge inspect`` shows it)."""
    features = cpu_features()
    return {"held_out_images": report.held_out_images, "label_agreement_fp32": round(report.agreement, 4),
            "one_mask_agreement": round(report.one_mask_agreement, 4), "two_mask_agreement": round(report.two_mask_agreement, 4),
            "forced": report.forced,
            "quantized_on": {"cpu": cpu_model(), "features": features, "int8_arithmetic": int8_arithmetic(features)},
            "source_sha256": metadata.get(CONTENT_HASH_KEY, "")}


def write_with_record(model_file: Path, out_path: Path, info: dict[str, Any]) -> None:
    """``model_file`` with ``info`` as its quantization record (and a renewed content hash), written atomically to
    ``out_path`` and checked by onnx."""
    onnx = require("onnx", "writing a reduced-precision model")
    model = onnx.load(str(model_file))
    stamp_metadata(model, {QUANTIZATION_KEY: json.dumps(info)})
    with writing(out_path) as final:
        onnx.save_model(model, str(final))
        onnx.checker.check_model(str(final), full_check=True)


def _refusal(report: QuantizeReport, min_agreement: float) -> str:
    if report.precision == "int8":
        cause = "8-bit activations are too coarse for this model's masked images"
        tries = ("more and more representative --calibration images (frames from the camera that will run it); fine-tuning "
                 "with masks (pcedge finetune)")
    else:
        cause = f"{report.precision}'s shorter mantissa moves this model's labels on masked images"
        tries = "fine-tuning with masks (pcedge finetune)"
    return (f"{report.precision.upper()} and FP32 labels agree on only {100 * report.agreement:.1f}% of {report.held_out_images} "
            f"masked images of held-out frames (one-mask {100 * report.one_mask_agreement:.1f}%, two-mask "
            f"{100 * report.two_mask_agreement:.1f}%), below --min-agreement {min_agreement:g}. Likely cause: {cause} (a model not "
            f"fine-tuned with masks has small margins between classes on them). Try: {tries}; or keep the FP32 model. --force "
            f"writes it anyway.")


def onnx_labels(path: str | Path, images: np.ndarray, batch: int = 36) -> np.ndarray:
    """Top-1 labels of ``images`` under ONNX Runtime CPU (the in-graph ArgMax when the model has one)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    output = "labels" if "labels" in names else names[0]
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    out = np.concatenate([session.run([output], {session.get_inputs()[0].name: chunk})[0] for chunk in chunks])
    return out if output == "labels" else out.argmax(axis=1)
