"""OpenVINO's reduced precisions (BF16, FP16) through the agreement gate of ``pcedge quantize``.

OpenVINO computes an FP32 model in BF16 or FP16 where the device has them (AMX and AVX-512 BF16 CPUs, integrated
GPUs, NPUs): 2-2.5x faster on AMX, and different labels where a masked image's margin between two classes is
small, which is often for a model not fine-tuned with masks. So a reduced precision is a different model, and it
goes through the same gate as INT8 (:func:`pcedge.export.quantize.gate_agreement`): the one-mask and two-mask images
of held-out frames, labelled by OpenVINO at that precision and by the FP32 model, must agree on at least
``min_agreement`` of them. Then a copy of the model is written with the gate's record in its metadata
(the weights are unchanged); the OpenVINO engine runs that copy at that precision, and any other file at f32.

Where the device has no such precision, OpenVINO silently computes f32 (its CPU plugin on AVX2 does): there is
nothing to gate, and the request is refused with what OpenVINO reports, so that no file claims a precision it was
never measured at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, EngineError
from ..masks import MaskSpec
from ..preprocess import PreprocessSpec
from ..runtime.base import Engine
from ..runtime.modelfile import INT8_MIN_AGREEMENT, OPENVINO_HINTS, OPENVINO_REDUCED_HINTS
from .quantize import QuantizeReport, fp32_source_metadata, gate_agreement, gate_record, held_out_images, split_held_out, write_with_record

def gate_openvino_precision(model_path: str | Path, out_path: str | Path, frames: Sequence[np.ndarray], *, hint: str,
                            held_out_frames: Sequence[np.ndarray] | None = None, device: str = "CPU", masks: MaskSpec = MaskSpec(),
                            min_agreement: float = INT8_MIN_AGREEMENT, force: bool = False, progress: Any = None) -> QuantizeReport:
    """Write a copy of a pcedge FP32 model that OpenVINO runs in ``hint`` (bf16 or f16) on ``device``, if its labels
    agree with FP32 on at least ``min_agreement`` of the held-out masked images.

    The held-out frames are chosen as :func:`pcedge.export.quantize.quantize_int8` chooses them (``held_out_frames``,
    else the last quarter of ``frames``), so both reduced precisions of a model are measured on the same images.
    Raises :class:`AgreementError` below the threshold (unless ``force``) and :class:`EngineError` where OpenVINO would
    not compute in ``hint`` on this device.
    """
    from ..runtime.openvino import OpenVinoEngine

    if hint not in OPENVINO_REDUCED_HINTS:
        raise ConfigError(f"--precision {hint!r}: OpenVINO's reduced precisions are {', '.join(OPENVINO_REDUCED_HINTS)}")
    if device == "AUTO":
        raise ConfigError(f"--device AUTO with --precision {hint}: OpenVINO's AUTO may move the model between devices and does not "
                          "report what it computes in; gate the device that will run it (--device CPU, GPU or NPU)")
    _, held_out_frames = split_held_out(frames, held_out_frames, min_agreement)
    step = progress or (lambda text: None)
    model_path, out_path = Path(model_path), Path(out_path)
    metadata = fp32_source_metadata(model_path)
    spec = PreprocessSpec.from_metadata(metadata)
    with OpenVinoEngine(model_path, target=device, hint=hint) as engine:
        if engine.precision != OPENVINO_HINTS[hint]:
            raise EngineError(f"--precision {hint}: OpenVINO's {engine.execution_devices[0]} here computes {engine.precision}, not "
                              f"{hint} (its capabilities: {', '.join(engine.capabilities())}), so there is nothing to gate. Run "
                              f"pcedge quantize --precision {hint} on the machine (CPU family or device) that will run the model")
        one_mask, two_mask = held_out_images(held_out_frames, spec, masks.build(spec.input_size))
        step(f"measuring agreement of OpenVINO {hint} with FP32 on {len(one_mask) + len(two_mask)} held-out masked images")
        reduced = engine_labels(engine, np.concatenate([one_mask, two_mask]))
        described = engine.describe()
    report = gate_agreement(model_path, reduced, one_mask, two_mask, scheme=hint, calibration_images=0,
                            min_agreement=min_agreement, force=force)
    info = {"method": "openvino inference precision hint", "engine": "openvino", "hint": hint, "precision": OPENVINO_HINTS[hint],
            "device": device, "measured_with": described, **gate_record(report, metadata)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_with_record(model_path, out_path, info)
    report.path = out_path
    return report


def engine_labels(engine: Engine, images: np.ndarray) -> np.ndarray:
    """An active host-buffer engine's labels of given (N, C, H, W) images, copied into its buffer a full call at a time."""
    out = np.empty(len(images), np.int64)
    for start in range(0, len(images), engine.max_batch):
        chunk = images[start : start + engine.max_batch]
        engine.input_buffer(len(chunk))[...] = chunk
        out[start : start + len(chunk)] = engine.infer(len(chunk))
    return out
