"""pcedge quantize: an INT8 copy for CPUs, refused if it disagrees with FP32."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..runtime.modelfile import INT8_MIN_AGREEMENT, INT8_SCHEMES
from .options import add_mask_options, mask_spec_from_args, model_file, positive_int

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..export.quantize import quantize_int8

    if args.calibration:
        from ..evaluation.datasets import load_dataset

        dataset = load_dataset(args.calibration)
        frames = [f for f in (dataset.load(int(p)) for p in dataset.subset(args.frames, 0)) if f is not None]
        held_out = None  # the last quarter of the drawn images
    else:
        from ..evaluation.bench import camera_frames, held_out_camera_frames

        frames, held_out = camera_frames(args.frames), held_out_camera_frames(max(2, args.frames // 3))
    report = quantize_int8(args.model, args.out, frames, held_out_frames=held_out, scheme=args.scheme,
                           per_channel=not args.per_tensor, masks=mask_spec_from_args(args),
                           min_agreement=args.min_agreement, force=args.force, progress=lambda text: log.info("%s ...", text))
    print(report.summary())
    print("a quantized model is a different model: certify it (pcedge certify) on the CPU family that will run it")
    return 0


PARSER = dict(
    help="INT8 copy of a model for CPUs: the same labels on every CPU, refused if it disagrees with FP32",
    description="ONNX Runtime static INT8 quantization (QDQ), calibrated with the runtime's own masked images; the\n"
                "agreement with the FP32 model is measured on masked images of frames calibration never saw, and a\n"
                "model below --min-agreement is not written.\nschemes:\n"
                + "\n".join(f"  {name}: {text}" for name, text in INT8_SCHEMES.items()),
    epilog="examples:\n  pcedge quantize --model resnet18.onnx --out resnet18.int8.onnx\n"
           "  pcedge quantize --model lite0.onnx --calibration my_camera_frames/ --frames 64 --out lite0.int8.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=model_file, help="an ONNX model exported by pcedge export")
    p.add_argument("--out", required=True, type=Path, help="the INT8 .onnx file to write")
    p.add_argument("--calibration", help="calibration images: class folders, IDX or .npz, ideally frames of the camera that will "
                                         "run the model; a quarter is held out to measure agreement (default: camera-like views "
                                         "of scikit-image's photos, held out: views of foolbox's ImageNet photos)")
    p.add_argument("--frames", type=positive_int, default=16, help="calibration frames (each also masked 3 ways); a third as many views of other photos are held out")
    p.add_argument("--scheme", choices=sorted(INT8_SCHEMES), default="u8s7", help="INT8 arithmetic (see above)")
    p.add_argument("--min-agreement", type=float, default=INT8_MIN_AGREEMENT,
                   help="refuse to write a model whose labels agree with FP32 on fewer held-out masked images")
    p.add_argument("--force", action="store_true", help="write the model even below --min-agreement (with a warning)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight scales")
    add_mask_options(p)


