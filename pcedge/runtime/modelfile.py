"""Model files: the metadata pcedge writes into an ONNX file, its content hash, and what the runtime checks on load.

Read through ONNX Runtime (no ``onnx`` package on the edge); the writers' side (``stamp_metadata``) takes
an ``onnx.ModelProto`` that export and quantization already hold.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..preprocess import PreprocessSpec
from ..util.machine import cpu_features, int8_arithmetic

CONTENT_HASH_KEY = "pcedge.content_sha256"
QUANTIZATION_KEY = "pcedge.quantization"
INT8_SCHEMES = {
    "u8s7": "uint8 activations, int8 weights limited to 7 bits: no saturation on x86 CPUs without VNNI, "
            "the same labels on every CPU, full INT8 speed",
    "u8u8": "uint8 activations and weights: no saturation, but ONNX Runtime's x86 kernels for it are slow",
}
INT8_MIN_AGREEMENT = 0.95
"""A reduced-precision model (INT8, or OpenVINO's BF16/FP16) whose labels agree with FP32 on fewer held-out masked
images than this is not written."""
OPENVINO_HINTS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
"""OpenVINO's inference precision hints, and pcedge's names for them (``engine.precision``, certificates)."""
OPENVINO_REDUCED_HINTS = ("bf16", "f16")
"""The hints a model file must pass the agreement gate for (``pcedge quantize --precision``)."""


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The custom metadata of an ONNX file, read through ONNX Runtime (no onnx package needed)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types for corrupt files
        raise EngineError(f"{path} is not a readable ONNX model: {exc}") from exc
    return dict(session.get_modelmeta().custom_metadata_map)


def read_spec(path: str | Path) -> PreprocessSpec:
    """The preprocessing spec that export wrote into an ONNX file's metadata."""
    return PreprocessSpec.from_metadata(read_onnx_metadata(path))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB pieces (engines and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stamp_metadata(model: Any, entries: dict[str, str], *, keep: bool = True) -> None:
    """Write metadata entries into an ``onnx.ModelProto`` and renew its content hash (sha256 of the model
    serialized without the hash entry). ``keep``: keep the other entries already there."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != CONTENT_HASH_KEY and p.key not in entries] if keep else []
    del model.metadata_props[:]
    for key, value in [*kept, *entries.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    entry = model.metadata_props.add()
    entry.key, entry.value = CONTENT_HASH_KEY, digest


def gated_precision(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The record of the reduced OpenVINO precision a model file passed the agreement gate for (``pcedge quantize
    --precision bf16|f16``: its ``hint``, agreement, the machine it was measured on), or None."""
    raw = metadata.get(QUANTIZATION_KEY)
    info = json.loads(raw) if raw else None
    return info if info and info.get("engine") == "openvino" else None


def int8_record(metadata: dict[str, str]) -> dict[str, Any] | None:
    """The INT8 quantization record of a model file (``pcedge quantize``'s, or an INT8 file from elsewhere), or None."""
    raw = metadata.get(QUANTIZATION_KEY)
    return None if raw is None or gated_precision(metadata) else json.loads(raw)


def saturation_risk(metadata: dict[str, str], features: list[str] | None = None) -> str | None:
    """A warning when an INT8 model's labels on this CPU may differ from other CPUs' (None when they cannot).

    Models from pcedge before the ``u8s7`` scheme (or other tools) use full 8-bit weights; on x86 without
    VNNI their products saturate. ``features``: this CPU's flags (read from /proc/cpuinfo by default).
    """
    info = int8_record(metadata)
    if info is None or info.get("scheme") in INT8_SCHEMES:
        return None
    flags = cpu_features() if features is None else features
    here = int8_arithmetic(flags)
    return (f"this INT8 model has full 8-bit int8 weights (no pcedge scheme recorded): on x86 CPUs without VNNI its "
            f"products saturate, so its labels depend on the CPU (here: {here}). Re-quantize it with pcedge quantize "
            f"(scheme u8s7) and certify it on the CPU family that runs it")
