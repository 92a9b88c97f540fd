"""``make demo``: the defended EfficientNet-Lite0 on a camera-like clip with an adversarial patch, offline.

1. Exports the bundled EfficientNet-Lite0 (real ImageNet weights) with its preprocessing (once).
2. Proves and draws the 36-mask set (2% patch, 224x224).
3. Takes the adversarial patch shipped with pcedge (``pcedge/data/demo_patch_coffee_43px.png``): optimized
   against the undefended model on views of the coffee cup, within the 2% threat model. ``--optimize-patch``
   optimizes it again here (about a minute on 2 cores; PyTorch).
4. Makes a clip from scikit-image's photos, panned and zoomed like a handheld camera, whose last segment
   shows the cup again with the patch stuck on it; runs the defended stream on it (the same code as
   ``pcedge run``): annotated video, per-frame JSON log, summary, and per segment the alarm levels and the
   labels the undefended model gave.
5. Classifies foolbox's 20 labelled ImageNet photos, undefended and defended (a smoke check).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from ..errors import PcedgeError
from ..evaluation.demo import (
    AVOID,
    CLIP_FPS,
    CLIP_SIZE,
    PATCH_ANCHOR,
    PATCHED_PHOTO,
    SECONDS_PER_PHOTO,
    SHIPPED_PATCH,
    ensure_demo_model,
    shipped_patch,
)
from ..evaluation.democlip import PATCHED_MOTION, camera_view, load_photos, make_demo_clip, max_patch_side_in_frame, patch_corner
from ..evaluation.sample_data import foolbox_samples
from ..runtime.backends import MODEL_FILE_BACKENDS
from ..runtime.driver import PatchCleanser
from ..util.progress import progress
from ..video import RunOptions, SourceOptions, run
from ..video.summary import format_summary
from .masks import describe_mask_set, draw_mask_set

STEPS = 5


def step(n: int, text: str) -> None:
    print(f"\n[{n}/{STEPS}] {text}", flush=True)


def optimize_patch(pc: PatchCleanser, side: int, out_path: Path) -> np.ndarray:
    """A patch (side x side BGR) optimized against the undefended model on 8 views of the cup (PyTorch).

    Optimized where the camera sees it (pcedge.evaluation.attacks.frame_patch) to push the plain model off the
    cup's classes, within the threat model after the model's resize. Written to ``out_path``.
    """
    from ..evaluation.attacks import frame_patch
    from ..export import load_model

    photo = load_photos((PATCHED_PHOTO,))[PATCHED_PHOTO]
    views = []
    for t in np.linspace(*PATCHED_MOTION, 8):  # the same pan and zoom as the clip's patched segment
        frame, affine = camera_view(photo, float(t), CLIP_SIZE)
        views.append((frame, *patch_corner(photo, affine, PATCH_ANCHOR, side)))
    steps = 100
    bar = progress(total=steps, desc=f"optimizing a {side}x{side} px patch against the undefended model", unit="step")
    patch = frame_patch(load_model("efficientnet-lite0").module, views, side, pc.spec, AVOID, steps=steps, step_size=0.03,
                        on_step=lambda: bar.update(1))
    bar.close()
    cv2.imwrite(str(out_path), patch)
    return patch


def clip_report(log_path: Path, segments, pc: PatchCleanser) -> None:
    """Per clip segment: alarm levels, defended labels, and what the undefended model said."""
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = {r["index"]: r for r in records if "event" not in r}
    print(f"\n{'segment':18s} {'frames':>6s} {'clear':>6s} {'uncert.':>7s} {'patch':>6s} {'alarm':>6s}  "
          f"{'defended label (most frequent)':32s} undefended label (most frequent)")
    for seg in segments:
        recs = [frames[i] for i in range(seg.start, seg.stop) if i in frames]
        if not recs:
            continue
        levels = Counter(r["level"] for r in recs)
        defended = Counter(r["class_name"] for r in recs).most_common(1)[0]
        undefended = Counter(pc.class_name(r["undefended_label"]) for r in recs).most_common(1)[0]
        name = seg.photo + (" + patch" if seg.patched else "")
        print(f"{name:18s} {len(recs):6d} {levels['clear']:6d} {levels['uncertain']:7d} {levels['patch']:6d} "
              f"{sum(r['alarm'] for r in recs):6d}  {defended[0][:24]:24s} ({defended[1]:2d}x)  {undefended[0][:24]} ({undefended[1]}x)")


def classify_samples(pc: PatchCleanser) -> None:
    print(f"{'ImageNet sample':26s} {'true':>5s} {'undefended':24s} {'defended':24s} {'level':9s} {'2-mask':>6s}")
    correct_plain = correct_defended = 0
    samples = foolbox_samples("imagenet")
    rows = []
    for path, label in progress(samples, desc="classifying 20 labelled ImageNet photos", unit="photo"):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        plain, result = pc.predict_undefended(frame), pc.predict(frame)
        correct_plain += plain == label
        correct_defended += result.label == label
        rows.append(f"{path.name:26s} {label:5d} {pc.class_name(plain)[:24]:24s} {result.class_name[:24]:24s} "
                    f"{result.level:9s} {result.two_mask_passes:6d}")
    print("\n".join(rows))
    print(f"\nImageNet samples: undefended top-1 {correct_plain}/{len(samples)}, defended {correct_defended}/{len(samples)} "
          f"(20 images only: a smoke check, not an accuracy estimate; see pcedge certify)")


def list_outputs(out_dir: Path) -> None:
    described = {
        "demo_annotated.mp4": "the clip with the overlay: label, alarm level, stream alarm, disagreeing masks, undefended label",
        "demo_frames.jsonl": "one JSON object per frame (label, case, level, alarm, masks, timings), summary last",
        "masks.png": "the 36 masks over a photo, with the coverage proof's parameters",
        "demo_clip.avi": "the input clip (lossless FFV1, so the patch reaches the model as optimized)",
        "efficientnet_lite0.onnx": "the exported model (reused by later runs; try pcedge inspect on it)",
        "adversarial_patch.png": "the patch optimized by --optimize-patch (used instead of the shipped one)",
    }
    print(f"\noutputs in {out_dir}/:")
    for name, what in described.items():
        path = out_dir / name
        if path.is_file():
            size = path.stat().st_size
            shown = f"{size / 1e6:5.1f} MB" if size >= 1e6 else f"{size / 1e3:5.0f} kB"
            print(f"  {name:26s} {shown}  {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcedge.cli.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="folder for every output (created)")
    parser.add_argument("--backend", default="auto", choices=MODEL_FILE_BACKENDS,
                        help="engine backend (auto: TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU or OpenVINO, the "
                             "faster here)")
    parser.add_argument("--optimize-patch", action="store_true",
                        help="optimize the adversarial patch here (PyTorch, about a minute) instead of using the shipped one")
    args = parser.parse_args(argv)
    from ..util.logsetup import configure_logging

    configure_logging(verbosity=0)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        step(1, "the model: EfficientNet-Lite0 with real ImageNet weights, exported to ONNX")
        model = ensure_demo_model(args.out)
        with PatchCleanser.from_onnx(model, backend=args.backend, patch="2%", masks_per_axis=6) as pc:
            print(f"engine: {pc.engine.describe()}; second round: {pc.schedule}")
            step(2, "the mask set: every 2% patch position lies inside one of 36 masks (proved)")
            print(describe_mask_set(pc.mask_set)["text"])
            draw_mask_set(pc.mask_set, load_photos(("chelsea",))["chelsea"], args.out / "masks.png")
            step(3, "the adversarial patch")
            side = max_patch_side_in_frame(CLIP_SIZE, pc.mask_set.threat.shapes[0][0], pc.spec)
            if args.optimize_patch:
                patch = optimize_patch(pc, side, args.out / "adversarial_patch.png")
            else:
                patch = shipped_patch()
                print(f"using the shipped {patch.shape[0]} px patch {SHIPPED_PATCH.name} (optimized against the undefended "
                      f"model; --optimize-patch makes it again)")
            if patch.shape[0] > side:
                raise PcedgeError(f"the patch is {patch.shape[0]} px but the 2% threat model allows {side} px in this clip")
            step(4, "the camera clip, defended frame by frame")
            clip = args.out / "demo_clip.avi"
            segments = make_demo_clip(clip, patch, patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE,
                                      fps=CLIP_FPS, seconds_per_photo=SECONDS_PER_PHOTO)
            print(f"clip: {clip} ({segments[-1].stop} frames; the last {segments[-1].stop - segments[-1].start} carry the "
                  f"{patch.shape[0]} px patch, inside the 2% threat model after resize)")
            video, log_path = args.out / "demo_annotated.mp4", args.out / "demo_frames.jsonl"
            summary = run(pc, str(clip), SourceOptions(), RunOptions(output=str(video), log_path=str(log_path),
                                                                     show_undefended=True, progress=True))
            print(format_summary(summary))
            clip_report(log_path, segments, pc)
            step(5, "labelled photos, undefended and defended")
            classify_samples(pc)
        list_outputs(args.out)
    except PcedgeError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    raise SystemExit(main())
