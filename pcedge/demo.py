"""``make demo``: the defended EfficientNet-Lite0 on real labelled photos, end to end, offline.

Exports the bundled EfficientNet-Lite0 (real ImageNet weights) with its preprocessing, proves and draws
the mask set, then runs the defended driver on foolbox's 20 labelled ImageNet samples and on
scikit-image photos, one of them with a pasted (not optimized) patch, and prints a summary table.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .masks_report import describe_mask_set, draw_mask_set
from .preprocess import read_onnx_metadata
from .runtime.driver import PatchCleanser
from .sample_data import foolbox_samples


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


def skimage_photos() -> dict[str, np.ndarray]:
    """A few real photos that ship with scikit-image, as BGR frames (absent package: none)."""
    try:
        from skimage import data
    except ImportError:
        return {}
    return {name: cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR) for name in ("chelsea", "coffee", "rocket", "astronaut")}


def paste_patch(frame: np.ndarray, patch_source: np.ndarray, side: int, y: int, x: int) -> np.ndarray:
    out = frame.copy()
    out[y : y + side, x : x + side] = cv2.resize(patch_source, (side, side), interpolation=cv2.INTER_AREA)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_demo_model(args.out)
    with PatchCleanser.from_onnx(model, backend=args.backend, patch="2%", masks_per_axis=6) as pc:
        print(describe_mask_set(pc.mask_set)["text"])
        photos = skimage_photos()
        if "chelsea" in photos:
            cv2.imwrite(str(args.out / "chelsea.png"), photos["chelsea"])
            draw_mask_set(pc.mask_set, args.out / "chelsea.png", args.out / "masks.png")
            print(f"mask set drawn over the cat -> {args.out / 'masks.png'}")
        print(f"\nengine: {pc.engine.describe()}\n")
        print(f"{'image':26s} {'true':>5s} {'undefended':24s} {'defended':24s} {'case':10s} {'passes':>6s} {'ms':>7s}")
        rows = []
        for path, label in foolbox_samples("imagenet"):
            rows.append((path.name, label, cv2.imread(str(path), cv2.IMREAD_COLOR)))
        rows += [(f"skimage:{name}", None, frame) for name, frame in photos.items()]
        if "chelsea" in photos and "rocket" in photos:
            # 26 px in a 300x451 photo grows to at most 31 px after resize (256/300) + crop: inside the 2% threat.
            patched = paste_patch(photos["chelsea"], photos["rocket"], 26, 120, 200)
            rows.append(("skimage:chelsea+patch", None, patched))
            cv2.imwrite(str(args.out / "chelsea_patched.png"), patched)
        correct_plain = correct_defended = labelled = 0
        for name, label, frame in rows:
            plain = pc.predict_undefended(frame)
            result = pc.predict(frame)
            if label is not None:
                labelled += 1
                correct_plain += plain == label
                correct_defended += result.label == label
            print(f"{name:26s} {'' if label is None else label:>5} {pc.class_name(plain)[:24]:24s} {result.class_name[:24]:24s} "
                  f"{result.case:10s} {result.two_mask_passes:6d} {result.timings_ms['total']:7.1f}"
                  + ("  <- ALERT" if result.alert else ""))
        print(f"\nImageNet samples: undefended top-1 {correct_plain}/{labelled}, defended {correct_defended}/{labelled} "
              f"(20 images only: a smoke check, not an accuracy estimate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
