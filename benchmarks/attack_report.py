"""Attack success: undefended model vs the defended pipeline, inside and beyond the threat model.

    python benchmarks/attack_report.py [--images 60] [--json benchmarks/results/attack_report.json]

fashion-cnn trained with masks on 10,000 real Fashion-MNIST images (about a minute), masks for a 2%
patch (4x4 at 28x28, 4 masks per axis: K = 16). For each of the first N test images: certify it through
the real runtime; then attack it with every objective of pcedge.evaluation.attacks (every grid position a restart)
with a 4x4 patch (inside the threat model) and a 6x6 patch (about 4.6%, beyond it); replay each patched
image through the runtime (ONNX Runtime, C++ writer, double masking). Reported per patch size: how
often the attack changed the undefended label, how often the defended label was wrong, and, over
certified images, how often the defended label was wrong: for 4x4 that must be 0 (the theorem); for
6x6 the certificate does not apply and the number is whatever it is.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from pcedge.defense import is_certified
from pcedge.evaluation.attacks import OBJECTIVES, attack_image
from pcedge.evaluation.datasets import load_dataset
from pcedge.export import export_onnx, load_model
from pcedge.training.finetune import preprocess_dataset, train_in_memory
from pcedge.training.trainer import TrainConfig
from pcedge.masks import create_mask_set
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.driver import PatchCleanser
from pcedge.util.machine import machine_info

DATA = Path("/usr/share/datasets/fashion-mnist")
PATCHES = {"4x4 (2%, inside the threat model)": (4, 4), "6x6 (4.6%, beyond the threat model)": (6, 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/attack_report.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    loaded = load_model("fashion-cnn")
    d = loaded.defaults
    spec = PreprocessSpec(input_size=d["image_size"], crop_pct=1.0, mean=d["mean"], std=d["std"], class_names=d["labels"])
    images, labels = preprocess_dataset(load_dataset(DATA, split="train"), spec, np.arange(10000), progress=False)
    train_in_memory(loaded.module, create_mask_set((28, 28), 4, masks_per_axis=4), images, labels,  # 10x10 windows
                    TrainConfig(epochs=3, lr=3e-3), progress=False)
    model_path = Path(tempfile.mkdtemp()) / "fashion_cnn_masked.onnx"
    export_onnx(loaded.module, model_path, image_size=28, mean=d["mean"], std=d["std"], crop_pct=1.0, labels=d["labels"],
                exporter="torchscript", source_name="fashion-cnn (attack report)")
    test = load_dataset(DATA, split="test")
    rows = {name: {"attacks": 0, "undefended_fooled": 0, "defended_wrong": 0, "certified_attacks": 0, "certified_wrong": 0}
            for name in PATCHES}
    certified_count = clean_correct = 0
    with PatchCleanser.from_onnx(model_path, backend="ort", patch="4", masks_per_axis=4, max_batch=136) as pc:
        for position in range(args.images):
            gray = test.load(position)
            label = test.item(position)[0]
            certified = is_certified(pc.label_table(gray), label)
            certified_count += certified
            clean_correct += pc.predict(gray).label == label
            rgb = np.repeat(gray[:, :, None], 3, axis=2)
            for name, patch in PATCHES.items():
                for objective in OBJECTIVES:
                    attack = attack_image(loaded.module, rgb, label, spec, patch, objective=objective, mask_set=pc.mask_set,
                                          steps=args.steps, seed=position)
                    defended = pc.predict(attack.image[:, :, ::-1].copy()).label
                    row = rows[name]
                    row["attacks"] += 1
                    row["undefended_fooled"] += attack.undefended_label != label
                    row["defended_wrong"] += defended != label
                    row["certified_attacks"] += certified
                    row["certified_wrong"] += certified and defended != label
            print(f"{position + 1}/{args.images} images, {certified_count} certified", flush=True)
    report = {"images": args.images, "certified_images": certified_count, "defended_clean_correct": clean_correct,
              "objectives": list(OBJECTIVES), "steps": args.steps, "mask_set": {"patch": [4, 4], "num_masks": 16},
              "results": rows, "seconds": round(time.perf_counter() - start, 1), "machine": machine_info()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{args.images} test images, {certified_count} certified for a 4x4 patch; {len(OBJECTIVES)} objectives each")
    print(f"{'patch':38s} {'attacks':>7s} {'undefended fooled':>18s} {'defended wrong':>15s} {'certified: wrong':>17s}")
    for name, r in rows.items():
        print(f"{name:38s} {r['attacks']:7d} {r['undefended_fooled'] / r['attacks']:17.1%} {r['defended_wrong'] / r['attacks']:14.1%} "
              f"{r['certified_wrong']:7d} of {r['certified_attacks']}")


if __name__ == "__main__":
    main()
