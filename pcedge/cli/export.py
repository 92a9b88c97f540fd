"""pcedge export: a PyTorch classifier to one self-contained ONNX file."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .options import add_preprocessing_options, preprocessing_overrides

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx, load_model
    from ..util.progress import ticking

    with ticking(f"exporting {args.model or args.checkpoint} and checking parity with PyTorch"):
        loaded = load_model(args.model, args.checkpoint, trust=args.trust_checkpoint)
        spec = loaded.preprocessing(preprocessing_overrides(args))
        labels = Path(args.labels).read_text(encoding="utf-8").splitlines() if args.labels else (list(spec.class_names) or None)
        report = export_onnx(loaded.module, args.out, spec=spec, labels=labels, argmax=not args.no_argmax, opset=args.opset,
                             max_batch=args.max_batch, exporter=args.exporter, source_name=loaded.name)
    if args.json:
        print(json.dumps({"path": str(report.path), "exporter": report.exporter, "opset": report.opset,
                          "num_classes": report.num_classes, "parity": report.parity, "sha256": report.sha256}, indent=2))
    else:
        print(report.summary())
    return 0


PARSER = dict(
    help="export a PyTorch classifier to ONNX (dynamic batch, preprocessing, ArgMax)",
    description="Export a PyTorch classifier to one self-contained ONNX file the runtime serves as is.",
    epilog="examples:\n  pcedge export --model efficientnet-lite0 --out model.onnx\n"
           "  pcedge export --model my_pkg.nets:build --checkpoint weights.pt --image-size 224 --out model.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="efficientnet-lite0 | timm:<name> | package.module:factory")
    p.add_argument("--checkpoint", help="TorchScript file, or state_dict (with --model); a pickled module only with --trust-checkpoint")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a --checkpoint that is a pickled nn.Module: this RUNS CODE FROM THE FILE (only for files you made)")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    add_preprocessing_options(p, exporting=True)
    p.add_argument("--labels", help="text file with one class name per line, in class-index order")
    p.add_argument("--no-argmax", action="store_true", help="do not add the in-graph ArgMax 'labels' output")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--max-batch", type=int, help="upper bound recorded for the dynamic batch axis")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="auto: torch.export-based when onnxscript is installed, else TorchScript")
    p.add_argument("--json", action="store_true", help="print a JSON report")


