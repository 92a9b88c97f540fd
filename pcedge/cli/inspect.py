"""``pcedge inspect``: what an ONNX file holds, read with ONNX Runtime (and onnx for the details if present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EngineError
from ..preprocess import METADATA_KEY
from ..util.optional import is_available
from .options import model_file

JSON_KEYS = (METADATA_KEY, "pcedge.quantization", "pcedge.outputs", "pcedge.num_classes", "pcedge.training")
"""Metadata entries stored as JSON text; ``--json`` shows them as JSON values, not strings inside strings."""


def inspect_onnx(path: str | Path) -> dict:
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise EngineError(f"model file {path} does not exist")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise EngineError(f"{path} is not a readable ONNX model: {str(exc).splitlines()[0]}") from exc
    meta = dict(session.get_modelmeta().custom_metadata_map)
    info = {
        "path": str(path),
        "file_size_bytes": path.stat().st_size,
        "inputs": [{"name": i.name, "shape": i.shape, "type": i.type} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": o.shape, "type": o.type} for o in session.get_outputs()],
        "metadata": {k: (json.loads(v) if k in JSON_KEYS else v) for k, v in meta.items()},
    }
    if is_available("onnx"):
        import numpy as np
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        info["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
        info["parameters"] = int(sum(np.prod(t.dims) for t in model.graph.initializer))
    pre = info["metadata"].get(METADATA_KEY, {})
    if isinstance(pre, dict) and pre.get("class_names"):
        pre = {**pre, "class_names": f"{len(pre['class_names'])} names ({', '.join(pre['class_names'][:3])}, ...)"}
    lines = [f"{path} ({info['file_size_bytes'] / 1e6:.1f} MB" + (f", opset {info['opset']}, {info['parameters']:,} parameters)" if "opset" in info else ")")]
    lines += [f"  input  {i['name']}: {i['shape']} {i['type']}" for i in info["inputs"]]
    lines += [f"  output {o['name']}: {o['shape']} {o['type']}" for o in info["outputs"]]
    lines.append(f"  preprocessing: {pre if pre else 'none recorded (pass --image-size/--mean/--std to the runtime)'}")
    quant = info["metadata"].get("pcedge.quantization")
    if isinstance(quant, dict):
        made = quant.get("quantized_on", {})
        what = (f"OpenVINO {quant.get('hint')} (runs at {quant.get('hint')} on --backend openvino, f32 elsewhere)"
                if quant.get("engine") == "openvino" else
                f"INT8: scheme {quant.get('scheme', 'none recorded (full 8-bit weights: labels may depend on the CPU)')}")
        lines.append(f"  {what}, agreement with FP32 {100 * quant.get('label_agreement_fp32', 0):.1f}% on held-out masked images"
                     + (" (written with --force)" if quant.get("forced") else "")
                     + (f"; measured on {made.get('cpu')} ({quant.get('measured_with') or made.get('int8_arithmetic')})" if made else ""))
    training = info["metadata"].get("pcedge.training")
    if isinstance(training, dict):
        lines.append(f"  fine-tuned: {training.get('recipe')}; teacher weights {str(training.get('teacher_sha256'))[:16]}; "
                     f"{training.get('steps')} steps on {training.get('training_frames')} frames of {len(training.get('sources', []))} "
                     f"source(s); best held-out mask agreement {training.get('best', {}).get('mask_agreement')}; {training.get('stopped')}")
    lines += [f"  {k}: {v}" for k, v in info["metadata"].items() if k not in (METADATA_KEY, "pcedge.quantization", "pcedge.training")]
    from ..runtime.latency import LatencyCurveCache
    from ..runtime.modelfile import file_sha256

    curves = LatencyCurveCache().curves_for_model(file_sha256(path))
    info["latency_curves"] = [{"engine": ident.get("engine"), **curve.as_dict()} for ident, curve in curves]
    lines += [f"  latency per batch on this machine, {ident.get('engine')}: {curve.describe()}" for ident, curve in curves]
    info["text"] = "\n".join(lines)
    return info


def run(args: argparse.Namespace) -> int:
    info = inspect_onnx(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["text"])
    return 0


PARSER = dict(
    help="print an ONNX model's inputs, outputs, metadata and size", epilog="example:\n  pcedge inspect model.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=model_file, help="the .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
