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
"""An INT8 copy whose labels agree with FP32 on fewer held-out masked images than this is not written."""


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


def saturation_risk(metadata: dict[str, str], features: list[str] | None = None) -> str | None:
    """A warning when an INT8 model's labels on this CPU may differ from other CPUs' (None when they cannot).

    Models from pcedge before the ``u8s7`` scheme (or other tools) use full 8-bit weights; on x86 without
    VNNI their products saturate. ``features``: this CPU's flags (read from /proc/cpuinfo by default).
    """
    raw = metadata.get(QUANTIZATION_KEY)
    if raw is None:
        return None
    info = json.loads(raw)
    if info.get("scheme") in INT8_SCHEMES:
        return None
    flags = cpu_features() if features is None else features
    here = int8_arithmetic(flags)
    return (f"this INT8 model has full 8-bit int8 weights (no pcedge scheme recorded): on x86 CPUs without VNNI its "
            f"products saturate, so its labels depend on the CPU (here: {here}). Re-quantize it with pcedge quantize "
            f"(scheme u8s7) and certify it on the CPU family that runs it")
