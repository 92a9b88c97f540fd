"""torch -> ONNX with a dynamic batch axis, the preprocessing in the metadata and an in-graph ArgMax.

Export always ends with the full ``onnx.checker``, shape inference and a parity check on ONNX Runtime
(batch 1, 36 and 7); the file is written to a temporary path and renamed only when every check passed,
so a failed export leaves nothing half-written.

Exporter default ("auto"): the torch.export-based exporter (torch's default since 2.9 and the one that
is maintained) when onnxscript is installed, falling back once, with a warning, to the TorchScript
exporter, which needs no extra package and handles the widest range of classic CNN code. The exporter
actually used is recorded in the metadata.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ExportError, PcedgeError
from ..preprocess import PreprocessSpec, resolve_spec
from ..runtime.modelfile import file_sha256, stamp_metadata
from ..util.files import writing
from ..util.optional import is_available, require

log = logging.getLogger("pcedge.export")

INPUT_NAME = "images"
LOGITS_NAME = "logits"
LABELS_NAME = "labels"
PARITY_BATCHES = (1, 36, 7)
EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18


@dataclass
class ExportReport:
    """What an export produced and how well the ONNX graph matches PyTorch."""

    path: Path
    exporter: str
    opset: int
    num_classes: int
    parity: list[dict[str, Any]] = field(default_factory=list)
    file_size: int = 0
    sha256: str = ""

    def summary(self) -> str:
        lines = [f"exported {self.path} ({self.file_size / 1e6:.1f} MB, {self.exporter} exporter, opset {self.opset}, "
                 f"{self.num_classes} classes)"]
        for row in self.parity:
            lines.append(f"  parity batch {row['batch']:>3}: max |logit diff| {row['max_abs_diff']:.2e}, "
                         f"labels agree {row['label_agreement'] * 100:.1f}%")
        return "\n".join(lines)


def export_onnx(
    model: Any,
    path: str | Path,
    *,
    spec: PreprocessSpec | None = None,
    image_size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_pct: float | None = None,
    interpolation: str | None = None,
    labels: Sequence[str] | None = None,
    argmax: bool = True,
    opset: int | None = None,
    max_batch: int | None = None,
    exporter: str = "auto",
    source_name: str = "",
    tolerance: float = 1e-3,
    metadata: dict[str, str] | None = None,
) -> ExportReport:
    """Export ``model`` (an ``nn.Module`` mapping [N, 3, H, W] float to [N, classes]) to one ONNX file.

    The preprocessing recorded is ``spec`` with the explicit ``image_size``/``mean``/``std``/``crop_pct``/
    ``interpolation`` over it (:func:`pcedge.preprocess.resolve_spec`; unset fields: PreprocessSpec's defaults).
    ``metadata`` adds entries (e.g. ``pcedge.training``: how a fine-tuned model was made).
    """
    torch = require("torch", "export")
    require("onnx", "export checks")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"expected a torch.nn.Module, got {type(model).__name__}")
    explicit = {"input_size": image_size, "mean": mean, "std": std, "crop_pct": crop_pct, "interpolation": interpolation,
                "class_names": tuple(labels) if labels is not None else None}
    if spec is None and image_size is None:
        raise ExportError("export_onnx needs the model's input size: pass spec= or image_size=")
    spec = resolve_spec(explicit, None, defaults=spec)
    model = model.eval()
    sample = torch.randn(2, 3, *spec.input_size, generator=torch.Generator().manual_seed(0))
    num_classes = _check_model_output(model, sample, spec)
    if labels is not None and len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels given but the model outputs {num_classes} classes")
    opset = opset or DEFAULT_OPSET
    # A new wrapper starts in training mode, and exporters restore that mode recursively afterwards:
    # without eval() here the wrapped model would come back from export in training mode.
    head = _export_head(model, argmax).eval()
    path = Path(path)
    try:
        with writing(path) as tmp:
            used = _run_exporter(head, sample, tmp, opset, exporter, argmax, max_batch)
            _finalize(tmp, spec, source_name, used, opset, num_classes, argmax, metadata or {})
            parity = check_parity(model, tmp, spec, tolerance=tolerance)
    except PcedgeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporters raise anything; report it as an export failure
        raise ExportError(f"export of {source_name or type(model).__name__} failed: {exc}") from exc
    digest = file_sha256(path)
    return ExportReport(path, used, opset, num_classes, parity, path.stat().st_size, digest)


def _export_head(model, argmax: bool):
    """The model as exported: with ``argmax``, an in-graph ArgMax so on a GPU only N integers leave the device."""
    import torch

    class ExportHead(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            logits = self.inner(images)
            return (logits, torch.argmax(logits, dim=1)) if argmax else logits

    return ExportHead(model)


def _check_model_output(model, sample, spec: PreprocessSpec) -> int:
    import torch

    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            f"the model cannot run on a [2, 3, {spec.input_size[0]}, {spec.input_size[1]}] image batch: {exc}. "
            "Check --image-size and that the model takes RGB images"
        ) from exc
    if isinstance(out, (tuple, list)) or not hasattr(out, "shape"):
        raise ExportError(f"the model must return one [batch, classes] tensor, got {type(out).__name__}")
    if out.ndim != 2 or out.shape[0] != 2:
        raise ExportError(f"the model must return [batch, classes] logits, got shape {list(out.shape)}")
    if not torch.isfinite(out).all():
        raise ExportError("the model returns NaN or infinite logits on a random batch")
    return int(out.shape[1])


def _run_exporter(head, sample, tmp: Path, opset: int, exporter: str, argmax: bool, max_batch: int | None) -> str:
    import torch

    outputs = [LOGITS_NAME, LABELS_NAME] if argmax else [LOGITS_NAME]
    order = {"auto": ["dynamo", "torchscript"] if is_available("onnxscript") else ["torchscript"],
             "dynamo": ["dynamo"], "torchscript": ["torchscript"]}[exporter]
    errors = []
    for name in order:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if name == "dynamo":
                    require("onnxscript", "the dynamo exporter")
                    batch = torch.export.Dim("batch", min=1, max=max_batch or 65536)
                    torch.onnx.export(head, (sample,), str(tmp), input_names=[INPUT_NAME], output_names=outputs,
                                      opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},),
                                      external_data=False, verbose=False)
                else:
                    axes = {n: {0: "batch"} for n in [INPUT_NAME, *outputs]}
                    torch.onnx.export(head, (sample,), str(tmp), input_names=[INPUT_NAME], output_names=outputs,
                                      opset_version=opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True)
            return name
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            if len(order) > 1 and name == order[0]:
                log.warning("the %s exporter failed (%s); falling back to %s", name, errors[-1], order[1])
    raise ExportError("every exporter failed: " + "; ".join(errors))


def _finalize(tmp: Path, spec: PreprocessSpec, source_name: str, exporter: str, opset: int, num_classes: int, argmax: bool,
              extra: dict[str, str]) -> None:
    """Check, infer shapes, optionally simplify, pin the I/O names and write the metadata."""
    import onnx
    import torch

    model = onnx.load(str(tmp), load_external_data=True)
    _name_outputs(model, argmax)
    if is_available("onnxslim"):
        import onnxslim

        model = onnxslim.slim(model)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    _require_dynamic_batch(model)
    meta = {
        **spec.to_metadata(),
        "pcedge.source_model": source_name,
        "pcedge.exporter": f"{exporter} (torch {torch.__version__}, onnx {onnx.__version__})",
        "pcedge.num_classes": str(num_classes),
        "pcedge.outputs": json.dumps([LOGITS_NAME, LABELS_NAME] if argmax else [LOGITS_NAME]),
        **extra,
    }
    stamp_metadata(model, meta, keep=False)
    onnx.save_model(model, str(tmp), save_as_external_data=False)
    onnx.checker.check_model(str(tmp), full_check=True)


def _name_outputs(model, argmax: bool) -> None:
    names = [o.name for o in model.graph.output]
    want = [LOGITS_NAME, LABELS_NAME] if argmax else [LOGITS_NAME]
    if names != want:
        raise ExportError(f"exported graph outputs are {names}, expected {want}")


def _require_dynamic_batch(model) -> None:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dim.HasField("dim_value"):
        raise ExportError(
            f"the exported batch axis is fixed to {dim.dim_value}: the model's code hard-codes its batch size "
            "(e.g. x.view(2, -1)); use x.flatten(1) or x.view(x.size(0), -1)"
        )


def check_parity(model, onnx_path: str | Path, spec: PreprocessSpec, *, tolerance: float = 1e-3) -> list[dict[str, Any]]:
    """Compare ONNX Runtime (CPU) with PyTorch at batch 1, 36 and 7; raise ExportError above tolerance.

    Tolerance is on the maximum absolute logit difference, relative to the largest logit magnitude.
    """
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rows = []
    gen = torch.Generator().manual_seed(1)
    for batch in PARITY_BATCHES:
        x = torch.randn(batch, 3, *spec.input_size, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([LOGITS_NAME], {INPUT_NAME: x.numpy()})[0]
        diff = float(np.abs(got - expected).max())
        scale = max(1.0, float(np.abs(expected).max()))
        agree = float((got.argmax(1) == expected.argmax(1)).mean())
        rows.append({"batch": batch, "max_abs_diff": diff, "label_agreement": agree})
        if diff > tolerance * scale:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch at batch {batch}: max |logit diff| {diff:.3e} > "
                f"{tolerance:g} x {scale:.1f}; the graph uses an op ONNX Runtime computes differently"
            )
    return rows
