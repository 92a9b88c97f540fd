"""``make demo``: the defended EfficientNet-Lite0 on a camera-like clip and on labelled photos, offline.

1. Exports the bundled EfficientNet-Lite0 (real ImageNet weights) with its preprocessing (once).
2. Proves and draws the 36-mask set (2% patch, 224x224).
3. Optimizes an adversarial patch against the undefended model on the coffee cup (PyTorch), within the
   2% threat model, and makes a clip from scikit-image's photos, panned and zoomed like a handheld
   camera, whose last segment shows the cup again with that patch stuck on it.
4. Runs the defended stream on the clip (the same code as ``pcedge run``): annotated video, per-frame
   JSON log, summary; and reports, per segment, alerts and the labels the undefended model gave.
5. Classifies foolbox's 20 labelled ImageNet photos, undefended and defended (a smoke check).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from .masks_report import describe_mask_set, draw_mask_set
from .preprocess import read_onnx_metadata
from .runtime.driver import PatchCleanser
from .sample_data import foolbox_samples
from .video import RunOptions, SourceOptions, run
from .video.democlip import PATCHED_MOTION, camera_view, load_photos, make_demo_clip, max_patch_side_in_frame, patch_corner
from .video.framelog import format_summary

CLIP_SIZE, CLIP_FPS, SECONDS_PER_PHOTO = (360, 640), 12, 1.5
PATCHED_PHOTO, PATCH_ANCHOR = "coffee", (0.5, 0.5)  # the photo that gets the patch, and where (x, y fractions)
AVOID = [967, 968, 504]  # espresso, cup, coffee mug: the patch pushes the plain model off all three


def ensure_demo_model(out_dir: Path) -> Path:
    """Export EfficientNet-Lite0 once; reuse the file while its metadata says it is ours."""
    path = out_dir / "efficientnet_lite0.onnx"
    if path.is_file() and read_onnx_metadata(path).get("pcedge.source_model") == "efficientnet-lite0":
        print(f"reusing {path}")
        return path
    from .export import export_onnx, load_model

    loaded = load_model("efficientnet-lite0")
    defaults = dict(loaded.defaults)
    labels = defaults.pop("labels")
    print(export_onnx(loaded.module, path, labels=labels, source_name=loaded.name, **defaults).summary())
    return path


def demo_patch(pc: PatchCleanser, side: int, out_dir: Path) -> np.ndarray:
    """A patch (side x side BGR) optimized against the undefended model on views of the cup; cached in out_dir.

    The patch is optimized where the camera sees it (pcedge.attacks.frame_patch) to push the plain
    model off the cup's classes; about a minute on a 2-core CPU, once.
    """
    cached = out_dir / f"adversarial_patch_{PATCHED_PHOTO}_{side}px.png"
    if cached.exists():
        return cv2.imread(str(cached), cv2.IMREAD_COLOR)
    from .attacks import frame_patch
    from .export import load_model

    photo = load_photos((PATCHED_PHOTO,))[PATCHED_PHOTO]
    views = []
    for t in np.linspace(*PATCHED_MOTION, 8):  # the same pan and zoom as the clip's patched segment
        frame, affine = camera_view(photo, float(t), CLIP_SIZE)
        views.append((frame, *patch_corner(photo, affine, PATCH_ANCHOR, side)))
    print(f"optimizing a {side}x{side} px patch against the undefended model on 8 views of the {PATCHED_PHOTO} (once; cached) ...")
    patch = frame_patch(load_model("efficientnet-lite0").module, views, side, pc.spec, AVOID, steps=100, step_size=0.03)
    cv2.imwrite(str(cached), patch)
    return patch


def clip_report(log_path: Path, segments, pc: PatchCleanser) -> None:
    """Per clip segment: alerts, defended labels, and what the undefended model said."""
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = {r["index"]: r for r in records if "index" in r}
    print(f"\n{'segment':22s} {'frames':>6s} {'alerts':>7s}  {'defended label (most frequent)':34s} undefended label (most frequent)")
    for seg in segments:
        recs = [frames[i] for i in range(seg.start, seg.stop) if i in frames]
        if not recs:
            continue
        defended = Counter(r["class_name"] for r in recs).most_common(1)[0]
        undefended = Counter(pc.class_name(r["undefended_label"]) for r in recs).most_common(1)[0]
        name = seg.photo + (" + patch" if seg.patched else "")
        print(f"{name:22s} {len(recs):6d} {sum(r['alert'] for r in recs):7d}  {defended[0][:26]:26s} ({defended[1]:2d}x)  "
              f"{undefended[0][:26]} ({undefended[1]}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_demo_model(args.out)
    with PatchCleanser.from_onnx(model, backend=args.backend, patch="2%", masks_per_axis=6) as pc:
        print(describe_mask_set(pc.mask_set)["text"])
        cat = load_photos(("chelsea",))["chelsea"]
        cv2.imwrite(str(args.out / "chelsea.png"), cat)
        draw_mask_set(pc.mask_set, args.out / "chelsea.png", args.out / "masks.png")
        print(f"mask set drawn over the cat -> {args.out / 'masks.png'}\nengine: {pc.engine.describe()}\n")

        side = max_patch_side_in_frame(CLIP_SIZE, pc.mask_set.threat.shapes[0][0], pc.spec)
        patch = demo_patch(pc, side, args.out)
        clip = args.out / "demo_clip.avi"
        segments = make_demo_clip(clip, patch, patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE, fps=CLIP_FPS,
                                  seconds_per_photo=SECONDS_PER_PHOTO)
        print(f"clip: {clip} ({segments[-1].stop} frames; the last {segments[-1].stop - segments[-1].start} carry a "
              f"{side}x{side} px patch, inside the 2% threat model after resize)")
        video, log_path = args.out / "demo_annotated.mp4", args.out / "demo_frames.jsonl"
        summary = run(pc, str(clip), SourceOptions(), RunOptions(output=str(video), log_path=str(log_path), show_undefended=True))
        print(format_summary(summary))
        clip_report(log_path, segments, pc)
        print(f"\nannotated video -> {video}\nper-frame log   -> {log_path}")

        print(f"\n{'ImageNet sample':26s} {'true':>5s} {'undefended':24s} {'defended':24s} {'case':10s} {'passes':>6s}")
        correct_plain = correct_defended = 0
        samples = foolbox_samples("imagenet")
        for path, label in samples:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            plain, result = pc.predict_undefended(frame), pc.predict(frame)
            correct_plain += plain == label
            correct_defended += result.label == label
            print(f"{path.name:26s} {label:5d} {pc.class_name(plain)[:24]:24s} {result.class_name[:24]:24s} "
                  f"{result.case:10s} {result.two_mask_passes:6d}")
        print(f"\nImageNet samples: undefended top-1 {correct_plain}/{len(samples)}, defended {correct_defended}/{len(samples)} "
              f"(20 images only: a smoke check, not an accuracy estimate; see pcedge certify)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
