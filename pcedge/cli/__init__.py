"""The ``pcedge`` command: thin argparse layers over the library, one library call per command.

Expected user errors print one line (``--debug`` shows the traceback). Exit codes: 0 normal end; 1 a
failure (a model that cannot load, a source that cannot open, a live source lost); 2 bad usage (an
option's value); 130 after Ctrl-C; 143 after SIGTERM; 141 when the reader of stdout went away.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from ..alarm import DEFAULT_WINDOW, parse_window
from ..errors import ConfigError, PcedgeError
from ..util.logsetup import configure_logging

log = logging.getLogger("pcedge")


BACKEND_CHOICES = ["auto", "tensorrt", "ort-trt", "ort-cuda", "ort"]
EXIT_CODES = ("exit codes: 0 normal end; 1 failure (model, source, or a live source lost); 2 bad usage; "
              "130 Ctrl-C; 143 SIGTERM; 141 stdout closed")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.HelpFormatter):
    """Keeps the examples' line breaks; shows a default once, and only where it says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, True, "", argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give 1 or more")
    return value


def _patch_text(text: str) -> str:
    """Checks what can be checked without the image size (pcedge.masks.check_patch_text), naming the flag."""
    from ..masks import check_patch_text

    try:
        check_patch_text(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _model_file(text: str) -> Path:
    """An existing model file; a folder gets the files it holds named."""
    path = Path(text)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.onnx"))
        hint = f" (it holds {', '.join(inside)})" if inside else " (it holds no .onnx file)"
        raise argparse.ArgumentTypeError(f"{text} is a folder: pass the .onnx file inside it{hint}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} does not exist (export a model with: pcedge export --model efficientnet-lite0 "
                                         f"--out model.onnx)")
    return path


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", " ").replace(",", " ").split()
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f"image size {text!r}: use 224 or 480x640 (height x width)")


def add_mask_options(parser: argparse.ArgumentParser, *, with_size: bool = False) -> None:
    """The threat-model options shared by every command that builds a mask set."""
    group = parser.add_argument_group("mask set (threat model)")
    if with_size:
        group.add_argument("--image-size", type=_image_size, default=(224, 224), help="model input size: 224 or HxW")
    group.add_argument("--patch", type=_patch_text, default="2%", help="patch size: '2%%' of the image, '32' pixels, or '32x16' (h x w)")
    group.add_argument("--masks-per-axis", type=_positive_int, default=6, help="k masks per axis (K = k*k masks in all)")
    group.add_argument("--stride", type=_positive_int, default=None, help="mask stride in pixels (overrides --masks-per-axis)")
    group.add_argument("--mask-size", type=_positive_int, default=None,
                       help="fix the mask side in pixels (default: the secure patch + stride - 1); insecure combinations are refused")
    group.add_argument("--two-patches", action="store_true", help="defend against two patches (K*(K-1)/2 union masks)")


def mask_set_from_args(args: argparse.Namespace, image_size: Sequence[int]):
    from ..masks import create_mask_set

    return create_mask_set(image_size, args.patch, masks_per_axis=args.masks_per_axis, stride=args.stride, two_patches=args.two_patches,
                           mask_size=args.mask_size)


def announce_engine(model, extra: str = "") -> None:
    """The one line that says what runs: engine, mask set, threat model, second-round schedule."""
    log.info("engine: %s; %d masks (%s); second round: %s%s", model.engine.describe(), len(model.mask_set),
             model.mask_set.threat.describe(), model.schedule, f"; {extra}" if extra else "")


def write_json(path: str | Path, data: object) -> None:
    """A JSON report file, written whole or not at all, readable like the user's other files."""
    import tempfile

    from ..util.files import publish

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target.parent, prefix=f".{target.name}.", delete=False, encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    publish(fh.name, target)


# ------------------------------------------------------------------------------------------ masks
def cmd_masks(args: argparse.Namespace) -> int:
    from .masks_report import describe_mask_set, draw_mask_set

    ms = mask_set_from_args(args, args.image_size)
    info = describe_mask_set(ms)
    if args.save:
        if not args.image:
            raise PcedgeError("--save needs --image: the picture to draw the masks on")
        draw_mask_set(ms, args.image, args.save)
        info["saved"] = str(args.save)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["text"])
        if args.save:
            print(f"drawn over {args.image} -> {args.save}")
    return 0


# ------------------------------------------------------------------------------------------ export
def _floats3(text: str) -> tuple[float, float, float]:
    values = [float(v) for v in text.replace(",", " ").split()]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: give three numbers, e.g. 0.485,0.456,0.406")
    return tuple(values)  # type: ignore[return-value]


def preprocessing_from_args(args: argparse.Namespace, model_defaults: dict) -> dict:
    """Export-time preprocessing: the command line, else the model's own defaults, else timm's ImageNet ones."""
    d = model_defaults
    return {"image_size": args.image_size or d.get("image_size") or (224, 224),
            "mean": args.mean or d.get("mean") or (0.485, 0.456, 0.406),
            "std": args.std or d.get("std") or (0.229, 0.224, 0.225),
            "crop_pct": args.crop_pct or d.get("crop_pct") or 0.875,
            "interpolation": getattr(args, "interpolation", None) or d.get("interpolation") or "bilinear"}


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx, load_model
    from ..util.progress import ticking

    with ticking(f"exporting {args.model or args.checkpoint} and checking parity with PyTorch"):
        loaded = load_model(args.model, args.checkpoint)
        d = loaded.defaults
        labels = Path(args.labels).read_text(encoding="utf-8").splitlines() if args.labels else d.get("labels")
        report = export_onnx(
            loaded.module, args.out, **preprocessing_from_args(args, d),
            labels=labels, argmax=not args.no_argmax, opset=args.opset, max_batch=args.max_batch,
            exporter=args.exporter, source_name=loaded.name,
        )
    if args.json:
        print(json.dumps({"path": str(report.path), "exporter": report.exporter, "opset": report.opset,
                          "num_classes": report.num_classes, "parity": report.parity, "sha256": report.sha256}, indent=2))
    else:
        print(report.summary())
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="export a PyTorch classifier to ONNX (dynamic batch, preprocessing, ArgMax)",
        formatter_class=_Formatter,
        description="Export a PyTorch classifier to one self-contained ONNX file the runtime serves as is.",
        epilog="examples:\n  pcedge export --model efficientnet-lite0 --out model.onnx\n"
               "  pcedge export --model my_pkg.nets:build --checkpoint weights.pt --image-size 224 --out model.onnx",
    )
    p.add_argument("--model", help="efficientnet-lite0 | timm:<name> | package.module:factory")
    p.add_argument("--checkpoint", help="TorchScript file, pickled module, or state_dict (with --model)")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--image-size", type=_image_size, help="model input size (default: the model's own, else 224)")
    p.add_argument("--mean", type=_floats3, help="per-channel mean in 0..1 (default: the model's, else ImageNet)")
    p.add_argument("--std", type=_floats3, help="per-channel std in 0..1 (default: the model's, else ImageNet)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (timm's crop_pct, default 0.875)")
    p.add_argument("--interpolation", choices=["bilinear", "bicubic"], help="resize interpolation")
    p.add_argument("--labels", help="text file with one class name per line, in class-index order")
    p.add_argument("--no-argmax", action="store_true", help="do not add the in-graph ArgMax 'labels' output")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--max-batch", type=int, help="upper bound recorded for the dynamic batch axis")
    p.add_argument("--exporter", choices=["auto", "dynamo", "torchscript"], default="auto",
                   help="auto: torch.export-based when onnxscript is installed, else TorchScript")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_export)


# ------------------------------------------------------------------------------------------ inspect
def cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect_model import inspect_onnx

    info = inspect_onnx(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(info["text"])
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="print an ONNX model's inputs, outputs, metadata and size", formatter_class=_Formatter,
                       epilog="example:\n  pcedge inspect model.onnx")
    p.add_argument("model", type=_model_file, help="the .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)


# ------------------------------------------------------------------------------------------ predict
def image_paths(items: Sequence[str]) -> list[tuple[Path, bool]]:
    """(path, named explicitly) for image files, folders of images and globs, in order (as ``pcedge run`` reads them)."""
    from ..errors import SourceError
    from ..video.sources import parse_source

    paths: list[tuple[Path, bool]] = []
    for item in items:
        spec = parse_source(item)
        if spec.kind == "image":
            paths.append((spec.location, True))
        elif spec.kind == "images":
            paths.extend((path, False) for path in spec.location)
        else:
            raise SourceError(f"{item} is not an image, a folder of images or a glob: for videos, cameras and streams "
                              f"use pcedge run --source {item}")
    return paths


def cmd_predict(args: argparse.Namespace) -> int:
    import cv2

    from ..errors import SourceError

    paths = image_paths(args.images)
    unreadable = []
    with defended_model_from_args(args) as pc:
        announce_engine(pc)
        for image, explicit in paths:
            frame = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if frame is None:
                if explicit:
                    raise SourceError(f"cannot read image {image} (not a format OpenCV decodes, or a damaged file)")
                log.warning("skipping %s: OpenCV cannot decode it", image)
                unreadable.append(str(image))
                continue
            result = pc.predict(frame)
            if args.json:
                print(json.dumps({"image": str(image), **result.as_dict()}), flush=True)
            else:
                t = result.timings_ms
                print(f"{image}: {result.class_name} ({result.label}) {result.level.upper()} case={result.case} "
                      f"disagreers={result.disagreers} {t['total']:.1f} ms (masking {t['masking']:.1f}, first {t['first_round']:.1f}, "
                      f"second {t['second_round']:.1f}, {result.two_mask_passes} two-mask images)", flush=True)
    if unreadable:
        log.warning("%d of %d images could not be read: %s", len(unreadable), len(paths), ", ".join(unreadable))
        return 1
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="defended prediction for images, folders or globs of images", formatter_class=_Formatter,
                       epilog="examples:\n  pcedge predict --model model.onnx cat.jpg dog.jpg --patch 2% --json\n"
                              "  pcedge predict --model model.onnx photos/ 'shots/*.png'")
    p.add_argument("images", nargs="+", help="image files, folders of images, or globs (quote them)")
    add_engine_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.set_defaults(func=cmd_predict)


def add_spec_overrides(parser: argparse.ArgumentParser) -> None:
    """Preprocessing for models exported elsewhere (pcedge models carry it in their metadata)."""
    group = parser.add_argument_group("preprocessing (only for models without pcedge metadata, or to override it)")
    group.add_argument("--image-size", type=_image_size, help="model input size, e.g. 224")
    group.add_argument("--mean", type=_floats3, help="per-channel mean in 0..1")
    group.add_argument("--std", type=_floats3, help="per-channel std in 0..1")
    group.add_argument("--crop-pct", type=float, help="center-crop fraction")


# ------------------------------------------------------------------------------------------ run
def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Backend and second-round options shared by the commands that run the defended model."""
    parser.add_argument("--model", required=True, type=_model_file, help="an ONNX model exported by pcedge export")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="auto: TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU (the one that runs is printed)")
    add_mask_options(parser)
    parser.add_argument("--second-round", default="auto", choices=["auto", "per-disagreer", "all"],
                        help="how second-round images are batched: auto follows this engine's latency per batch size "
                             "(measured once, cached); per-disagreer: one call per disagreeing mask; all: every "
                             "disagreer at once. Every choice returns the same labels")
    parser.add_argument("--budget", type=int, help="cap on second-round passes (the result says 'budget' when hit)")
    add_spec_overrides(parser)


def defended_model_from_args(args: argparse.Namespace, max_batch: int | None = None):
    from ..runtime.driver import PatchCleanser

    overrides = {"input_size": args.image_size, "mean": args.mean, "std": args.std, "crop_pct": args.crop_pct}
    return PatchCleanser.from_onnx(args.model, backend=args.backend, patch=args.patch, masks_per_axis=args.masks_per_axis,
                                   stride=args.stride, two_patches=args.two_patches, mask_size=args.mask_size,
                                   second_round=args.second_round, budget=args.budget, spec_overrides=overrides, max_batch=max_batch)


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ..video import RunOptions, SourceOptions, run
    from ..video.framelog import format_summary
    from ..video.outputs import display_available

    parse_window(args.alarm)  # refuse a bad --alarm before loading the model
    source_options = SourceOptions(width=args.width, height=args.height, fps=args.rate, codec=args.codec, loop=args.loop,
                                   reconnect_s=args.reconnect, stall_s=args.stall_timeout, rtsp_backend=args.rtsp_backend)
    output = args.output
    if output is None and not args.headless:
        if display_available():
            output = "display://0"
        else:
            log.info("no display and no --output: running headless%s",
                     "" if args.log else " (add --log FILE for one JSON line per frame, --output FILE for a video)")
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with defended_model_from_args(args) as model:
            announce_engine(model)
            summary = run(model, args.source, source_options,
                          RunOptions(output=output, log_path=args.log, fps_limit=args.fps_limit, max_frames=args.max_frames,
                                     show_masks=not args.no_mask_overlay, show_undefended=args.show_undefended,
                                     alarm=args.alarm, progress=not args.quiet),
                          stop=stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(format_summary(summary))
    if args.json:
        write_json(args.json, summary)
    if received:
        return 128 + received[0]  # 130 after SIGINT, 143 after SIGTERM: the recording and summary are complete
    return 1 if summary["source"].get("error") else 0


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run", help="defended live inference on a video file, camera, RTSP stream or GStreamer pipeline",
        formatter_class=_Formatter,
        description="Run the defended model on every frame of a source; overlay, record, log, summarize.",
        epilog="examples:\n"
               "  pcedge run --model lite0.onnx --source clip.mp4 --output annotated.mp4 --log frames.jsonl\n"
               "  pcedge run --model lite0.onnx --source 0 --width 1280 --height 720 --codec MJPG\n"
               "  pcedge run --model lite0.onnx --source rtsp://192.168.1.10:8554/cam --headless --log f.jsonl\n"
               "  pcedge run --model lite0.onnx --source csi://0 --output display://0      # Jetson CSI camera\n"
               "sources: video file, image, folder or glob of images, camera index or /dev/videoN (v4l2://),\n"
               "  csi://N, rtsp:// rtp:// http://, gst:<pipeline>. outputs: .mp4/.avi/.mkv/.mov, a folder, display://0\n"
               "alarm levels per frame: clear (masks agree), uncertain (they disagree, no patch signature), patch (one\n"
               "  mask explains the disagreement); the stream alarm rises while --alarm K/N frames are at patch level.\n"
               + EXIT_CODES + " (after Ctrl-C and SIGTERM the recording and the summary are complete)",
    )
    add_engine_options(p)
    p.add_argument("--source", required=True, help="what to read (see below)")
    p.add_argument("--output", help="annotated output: video file, folder, or display://0 (default: a window if a display exists)")
    p.add_argument("--headless", action="store_true", help="no window and no output, even when a display exists")
    p.add_argument("--log", help="write one JSON object per frame to this file (JSON lines)")
    p.add_argument("--json", help="write the end-of-run summary to this JSON file")
    p.add_argument("--fps-limit", type=float, default=0.0, help="process at most N frames per second (0: as fast as possible)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N processed frames (0: at the source's end)")
    p.add_argument("--loop", action="store_true", help="restart file and image sources at their end")
    p.add_argument("--show-undefended", action="store_true",
                   help="also run the plain model on each frame and show its label (CPU engines; one extra inference)")
    p.add_argument("--no-mask-overlay", action="store_true", help="do not draw the disagreeing masks")
    p.add_argument("--alarm", default=DEFAULT_WINDOW, metavar="K/N",
                   help="raise the stream alarm while K of the last N frames show the patch signature")
    cam = p.add_argument_group("camera and stream")
    cam.add_argument("--width", type=int, default=0, help="requested capture width (0: the camera's default)")
    cam.add_argument("--height", type=int, default=0, help="requested capture height")
    cam.add_argument("--rate", type=float, default=0.0, help="requested capture frame rate")
    cam.add_argument("--codec", default="", help="camera FOURCC, e.g. MJPG or YUYV")
    cam.add_argument("--reconnect", type=float, default=30.0, help="seconds to keep reopening a lost live source")
    cam.add_argument("--stall-timeout", type=float, default=5.0, help="seconds without a frame before a live source counts as stalled")
    cam.add_argument("--rtsp-backend", choices=["ffmpeg", "gstreamer"], default="ffmpeg",
                     help="read rtsp:// with OpenCV's FFmpeg, or with GStreamer (H.264; on a Jetson its hardware decoder; "
                          "needs an OpenCV with GStreamer)")
    p.set_defaults(func=cmd_run)


# ------------------------------------------------------------------------------------------ certify
CERTIFY_BATCH = 256  # images per engine call when certifying: large batches, bounded memory


def cmd_certify(args: argparse.Namespace) -> int:
    import math
    import time

    from ..evaluation.certification import (
        build_report,
        certify,
        plot_report,
        report_markdown,
    )
    from ..evaluation.datasets import load_dataset
    from ..preprocess import resolve_spec
    from ..runtime.modelfile import read_onnx_metadata

    spec = resolve_spec({"input_size": args.image_size, "mean": args.mean, "std": args.std, "crop_pct": args.crop_pct},
                        read_onnx_metadata(args.model))
    k = len(mask_set_from_args(args, spec.input_size))
    pairs = k * (k + 1) // 2
    batch = math.ceil(pairs / math.ceil(pairs / CERTIFY_BATCH))  # equal chunks, none tiny
    dataset = load_dataset(args.data, class_names=spec.class_names, split=args.split)
    positions = dataset.subset(args.limit, args.seed)
    start = time.perf_counter()
    with defended_model_from_args(args, max_batch=max(batch, k)) as model:
        announce_engine(model, f"{dataset.name}: {len(positions)} of {len(dataset)} images, {pairs} masked inferences each")
        tables = certify(model, dataset, positions=positions, tables_path=args.tables, resume=args.resume,
                         model_path=args.model, progress=not (args.no_progress or args.quiet))
    report = build_report(tables, dataset, seconds=time.perf_counter() - start, requested=len(positions))
    markdown = report_markdown(report)
    print(markdown)
    if args.json:
        write_json(args.json, report)
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.plot:
        plot_report(report, args.plot)
    return 0


def _add_certify(sub) -> None:
    p = sub.add_parser(
        "certify", help="clean, defended and certified accuracy over a labelled image set", formatter_class=_Formatter,
        description="Certify every image of a labelled set: K(K+1)/2 masked inferences per image, tables kept for reports.",
        epilog="examples:\n"
               "  pcedge certify --model lite0.onnx --data imagenet_val/ --limit 500 --seed 0 --json r.json --markdown r.md\n"
               "  pcedge certify --model fmnist.onnx --data /usr/share/datasets/fashion-mnist --patch 4 --tables t.npz --resume\n"
               "datasets: a folder with one subfolder per class; MNIST/Fashion-MNIST IDX files (folder or images file);\n"
               "  an .npz with 'images' and 'labels'",
    )
    add_engine_options(p)
    p.add_argument("--data", required=True, help="the labelled images (see below)")
    p.add_argument("--split", default="test", choices=["test", "train"], help="which IDX pair in a folder holding both")
    p.add_argument("--limit", type=_positive_int, help="certify only N images (the first N, or N drawn with --seed)")
    p.add_argument("--seed", type=int, help="draw the --limit images at random with this seed")
    p.add_argument("--tables", help="keep the per-image K x K label tables in this .npz (needed for --resume)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from --tables")
    p.add_argument("--json", help="write the report as JSON")
    p.add_argument("--markdown", help="write the report as Markdown")
    p.add_argument("--plot", help="draw the report (PNG)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_certify)


# ------------------------------------------------------------------------------------------ finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    from ..evaluation.datasets import load_dataset
    from ..export import export_onnx, load_model
    from ..export.finetune import FinetuneConfig, preprocess_dataset, train
    from ..preprocess import PreprocessSpec

    loaded = load_model(args.model, args.checkpoint)
    labels = loaded.defaults.get("labels") or ()
    pre = preprocessing_from_args(args, loaded.defaults)
    spec = PreprocessSpec(input_size=pre.pop("image_size"), class_names=labels, **pre)
    mask_set = mask_set_from_args(args, spec.input_size)
    dataset = load_dataset(args.data, class_names=labels, split=args.split)
    images, targets = preprocess_dataset(dataset, spec, dataset.subset(args.limit, args.seed), progress=not (args.no_progress or args.quiet))
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed or 0,
                            mask_size=None if args.plain else mask_set.mask_size, windows=args.windows)
    print(f"# training {loaded.name} on {len(images)} images of {dataset.name}; "
          + ("plain (no masks)" if args.plain else f"{args.windows} random {mask_set.mask_size[0]}x{mask_set.mask_size[1]} masks per image"),
          file=sys.stderr)
    history = train(loaded.module, images, targets, config, progress=not (args.no_progress or args.quiet),
                    checkpoint=args.save_checkpoint)
    report = export_onnx(loaded.module, args.out, image_size=spec.input_size, mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct,
                         interpolation=spec.interpolation, labels=list(labels) or list(dataset.class_names), source_name=f"{loaded.name} ({'plain' if args.plain else 'masked'} fine-tuned)")
    print(report.summary())
    print(json.dumps({"history": history}, indent=None))
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune", help="train / fine-tune a PyTorch classifier with masks (the paper's recipe), then export it",
        formatter_class=_Formatter,
        description="Fine-tune with random mask-sized windows (0 after normalization) so masked images stay classifiable.",
        epilog="examples:\n"
               "  pcedge finetune --model fashion-cnn --data /usr/share/datasets/fashion-mnist --split train \\\n"
               "      --patch 2% --epochs 4 --out fmnist_masked.onnx\n"
               "  pcedge finetune --model my_pkg.nets:build --checkpoint w.pt --data train_folder/ --out masked.onnx",
    )
    p.add_argument("--model", required=True, help="efficientnet-lite0 | fashion-cnn | timm:<name> | package.module:factory")
    p.add_argument("--checkpoint", help="weights to start from (TorchScript, pickled module or state_dict)")
    p.add_argument("--data", required=True, help="training images: class folders, IDX files or .npz")
    p.add_argument("--split", default="train", choices=["train", "test"], help="which IDX pair in a folder holding both")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    add_mask_options(p)
    p.add_argument("--plain", action="store_true", help="train without masks (the baseline)")
    p.add_argument("--windows", type=int, default=2, help="masks per training image")
    p.add_argument("--epochs", type=_positive_int, default=3, help="passes over the training images")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--batch-size", type=_positive_int, default=128, help="images per optimizer step")
    p.add_argument("--limit", type=_positive_int, help="train on N images only")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights' shuffling, the masks and --limit's draw")
    p.add_argument("--save-checkpoint", help="write the state_dict here after every epoch (.pt)")
    p.add_argument("--image-size", type=_image_size, help="model input size (default: the model's own)")
    p.add_argument("--mean", type=_floats3, help="per-channel mean in 0..1 (default: the model's)")
    p.add_argument("--std", type=_floats3, help="per-channel std in 0..1 (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (as -q, but keeps the log lines)")
    p.set_defaults(func=cmd_finetune)


# ------------------------------------------------------------------------------------------ bench
def cmd_bench(args: argparse.Namespace) -> int:
    from ..evaluation.bench import BenchOptions, format_table, plot_latencies, run_bench

    options = BenchOptions(frames=args.frames, warmup=args.warmup, patch=args.patch, masks_per_axis=args.masks_per_axis,
                           backends=tuple(args.backend or ["auto"]), torch_model=args.torch_model, attack_rate=args.attack_rate,
                           rss=not args.no_rss, optimize_patch=not args.no_optimized_patch)
    report = run_bench(args.model, options, report_line=lambda text: log.info("%s", text.lstrip("# ")))
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
    if args.plot:
        plot_latencies(report, args.plot)
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="defended vs undefended vs the original PyTorch way, on the same frames, in one run",
        formatter_class=_Formatter,
        description="Latency (mean/p50/p90/p99), FPS, per-stage times, second-round cost under attack and peak RSS.",
        epilog="examples:\n"
               "  pcedge bench --model lite0.onnx --frames 30 --json bench.json --plot bench.png\n"
               "  pcedge bench --model resnet18.onnx --torch-model benchmarks.models:resnet18 --backend ort --backend ort-cuda",
    )
    p.add_argument("--model", required=True, type=_model_file, help="an ONNX model exported by pcedge export")
    p.add_argument("--backend", action="append", choices=BACKEND_CHOICES,
                   help="backend(s) to measure; repeat the option for several (default: auto)")
    p.add_argument("--patch", type=_patch_text, default="2%", help="patch size: '2%%', '32' or '32x16'")
    p.add_argument("--masks-per-axis", type=_positive_int, default=6, help="k masks per axis (K = k*k masks in all)")
    p.add_argument("--frames", type=_positive_int, default=20, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--torch-model", help="the PyTorch source of the model, for the original baseline and the optimized patch "
                                         "(default: the bundled model named in the ONNX metadata)")
    p.add_argument("--attack-rate", type=float, default=0.0, help="also time a stream where this fraction of frames carries a patch")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--no-optimized-patch", action="store_true", help="skip the optimized-patch rows (they need torch and time)")
    p.add_argument("--json", help="write the full report (with per-frame samples) here")
    p.add_argument("--plot", help="draw the latency distributions (PNG)")
    p.set_defaults(func=cmd_bench, backend=None)


# ------------------------------------------------------------------------------------------ quantize
def cmd_quantize(args: argparse.Namespace) -> int:
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
                           per_channel=not args.per_tensor, patch=args.patch, masks_per_axis=args.masks_per_axis,
                           min_agreement=args.min_agreement, force=args.force, progress=lambda text: log.info("%s ...", text))
    print(report.summary())
    print("a quantized model is a different model: certify it (pcedge certify) on the CPU family that will run it")
    return 0


def _add_quantize(sub) -> None:
    from ..export.quantize import DEFAULT_MIN_AGREEMENT, SCHEMES

    p = sub.add_parser(
        "quantize", help="INT8 copy of a model for CPUs: the same labels on every CPU, refused if it disagrees with FP32",
        formatter_class=_Formatter,
        description="ONNX Runtime static INT8 quantization (QDQ), calibrated with the runtime's own masked images; the\n"
                    "agreement with the FP32 model is measured on masked images of frames calibration never saw, and a\n"
                    "model below --min-agreement is not written.\nschemes:\n"
                    + "\n".join(f"  {name}: {text}" for name, text in SCHEMES.items()),
        epilog="examples:\n  pcedge quantize --model resnet18.onnx --out resnet18.int8.onnx\n"
               "  pcedge quantize --model lite0.onnx --calibration my_camera_frames/ --frames 64 --out lite0.int8.onnx",
    )
    p.add_argument("--model", required=True, type=_model_file, help="an ONNX model exported by pcedge export")
    p.add_argument("--out", required=True, type=Path, help="the INT8 .onnx file to write")
    p.add_argument("--calibration", help="calibration images: class folders, IDX or .npz, ideally frames of the camera that will "
                                         "run the model; a quarter is held out to measure agreement (default: camera-like views "
                                         "of scikit-image's photos, held out: views of foolbox's ImageNet photos)")
    p.add_argument("--frames", type=_positive_int, default=16, help="calibration frames (each also masked 3 ways); a third as many views of other photos are held out")
    p.add_argument("--scheme", choices=sorted(SCHEMES), default="u8s7", help="INT8 arithmetic (see above)")
    p.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                   help="refuse to write a model whose labels agree with FP32 on fewer held-out masked images")
    p.add_argument("--force", action="store_true", help="write the model even below --min-agreement (with a warning)")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor instead of per-channel weight scales")
    p.add_argument("--patch", default="2%", help="the threat model whose masks appear in calibration")
    p.add_argument("--masks-per-axis", type=int, default=6, help="masks per axis of that threat model")
    p.set_defaults(func=cmd_quantize)


# ------------------------------------------------------------------------------------------ doctor
def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    report = run_doctor()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report["checks"]:
            print(f"{'ok ' if row['ok'] else '-- '} {row['name']:26s} {row['detail']}")
            if not row["ok"] and row.get("fix"):
                print(f"    fix: {row['fix']}")
    return 0


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine can run (GPU, TensorRT, ORT providers, kernels, video)",
                       formatter_class=_Formatter, epilog="example:\n  pcedge doctor")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_doctor)


# ------------------------------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pcedge",
        description="PatchCleanser certified patch defense for edge cameras.",
        formatter_class=_Formatter,
        epilog="Run 'pcedge COMMAND --help' for a command's options and an example.\n" + EXIT_CODES,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"pcedge {__version__}")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "masks", help="print (and draw) a mask set with its coverage proof", formatter_class=_Formatter,
        description="Build a mask set, prove it covers every patch placement, print it.",
        epilog="example:\n  pcedge masks --image-size 224 --patch 2% --masks-per-axis 6 --image photo.jpg --save masks.png",
    )
    add_mask_options(p, with_size=True)
    p.add_argument("--image", type=Path, help="a picture to draw the masks on (resized to the image size)")
    p.add_argument("--save", type=Path, help="where to write the drawing (PNG/JPEG)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_masks)

    _add_export(sub)
    _add_inspect(sub)
    _add_predict(sub)
    _add_run(sub)
    _add_certify(sub)
    _add_finetune(sub)
    _add_bench(sub)
    _add_quantize(sub)
    _add_doctor(sub)
    for command in sub.choices.values():
        _common_options(command, top=False)
    return parser


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """-q/-v/--debug, accepted before or after the subcommand (a subcommand's copy must not reset the top one)."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="only warnings, errors and results: no progress, no status lines")
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="more detail: every library's log lines (-vv: debug)")
    parser.add_argument("--debug", action="store_true", default=default(False), help="debug logs and full tracebacks")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = 2 if args.debug else (-1 if args.quiet else min(args.verbose, 2))
    configure_logging(verbosity)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left makes the final flush fail too
        return code
    except BrokenPipeError:
        # the reader of our stdout went away (pcedge inspect --json | head): stop quietly, as cat and grep do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except PcedgeError as exc:
        if args.debug:
            raise
        print(f"pcedge {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
