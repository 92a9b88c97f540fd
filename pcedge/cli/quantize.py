"""pcedge quantize: an INT8 copy for CPUs, or a copy OpenVINO runs in BF16/FP16; refused if it disagrees with FP32."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError
from ..runtime.modelfile import INT8_MIN_AGREEMENT, INT8_SCHEMES, OPENVINO_REDUCED_HINTS
from ..runtime.openvino import DEVICES
from .options import add_mask_options, mask_spec_from_args, model_file, positive_int

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..export.openvino_precision import gate_openvino_precision
    from ..export.quantize import quantize_int8

    if args.precision == "int8" and args.device != "CPU":
        raise ConfigError("--device chooses OpenVINO's device for --precision bf16 or f16; INT8 runs on ONNX Runtime's CPU")
    if args.calibration:
        from ..evaluation.datasets import load_dataset

        dataset = load_dataset(args.calibration)
        frames = [f for f in (dataset.load(int(p)) for p in dataset.subset(args.frames, 0)) if f is not None]
        held_out = None  # the last quarter of the drawn images
    else:
        from ..evaluation.bench import camera_frames, held_out_camera_frames

        frames, held_out = camera_frames(args.frames), held_out_camera_frames(max(2, args.frames // 3))
    common = dict(held_out_frames=held_out, masks=mask_spec_from_args(args), min_agreement=args.min_agreement, force=args.force,
                  progress=lambda text: log.info("%s ...", text))
    if args.precision == "int8":
        report = quantize_int8(args.model, args.out, frames, scheme=args.scheme, per_channel=not args.per_tensor, **common)
    else:
        report = gate_openvino_precision(args.model, args.out, frames, hint=args.precision, device=args.device, **common)
    print(report.summary())
    print("a reduced-precision model is a different model: certify it (pcedge certify" +
          (")" if args.precision == "int8" else " --backend openvino)") + " on the CPU family or device that will run it")
    return 0


PARSER = dict(
    help="INT8 copy of a model for CPUs, or a copy OpenVINO runs in BF16/FP16; refused if it disagrees with FP32",
    description="--precision int8: ONNX Runtime static INT8 quantization (QDQ), calibrated with the runtime's own masked\n"
                "images. --precision bf16 or f16: the same weights, computed by OpenVINO in that precision (AMX and AVX-512\n"
                "BF16 CPUs, integrated GPUs, NPUs). Either way the agreement with the FP32 model is measured on masked\n"
                "images of frames calibration never saw, and a model below --min-agreement is not written.\nschemes (INT8):\n"
                + "\n".join(f"  {name}: {text}" for name, text in INT8_SCHEMES.items()),
    epilog="examples:\n  pcedge quantize --model resnet18.onnx --out resnet18.int8.onnx\n"
           "  pcedge quantize --model lite0.onnx --calibration my_camera_frames/ --frames 64 --out lite0.int8.onnx\n"
           "  pcedge quantize --model fmnist.onnx --precision bf16 --calibration /usr/share/datasets/fashion-mnist "
           "--out fmnist.bf16.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=model_file, help="an ONNX model exported by pcedge export")
    p.add_argument("--out", required=True, type=Path, help="the INT8 .onnx file to write")
    p.add_argument("--calibration", help="calibration images: class folders, IDX or .npz, ideally frames of the camera that will "
                                         "run the model; a quarter is held out to measure agreement (default: camera-like views "
                                         "of scikit-image's photos, held out: views of foolbox's ImageNet photos)")
    p.add_argument("--frames", type=positive_int, default=16, help="calibration frames (each also masked 3 ways); a third as many views of other photos are held out")
    p.add_argument("--precision", choices=["int8", *OPENVINO_REDUCED_HINTS], default="int8",
                   help="int8 (ONNX Runtime), or bf16 / f16 (OpenVINO's inference precision: refused where the device computes "
                        "f32 instead, as OpenVINO's CPU plugin does without AMX or AVX-512 BF16/FP16)")
    p.add_argument("--device", choices=DEVICES[:-1], default="CPU", help="OpenVINO's device to gate bf16 / f16 on")
    p.add_argument("--scheme", choices=sorted(INT8_SCHEMES), default="u8s7", help="INT8 arithmetic (see above)")
    p.add_argument("--min-agreement", type=float, default=INT8_MIN_AGREEMENT,
                   help="refuse to write a model whose labels agree with FP32 on fewer held-out masked images")
    p.add_argument("--force", action="store_true", help="write the model even below --min-agreement (with a warning)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight scales")
    add_mask_options(p)


