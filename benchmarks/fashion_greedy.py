"""Greedy (worst-case) masks vs random masks on Fashion-MNIST, equal epochs, certified on all 10,000 test images.

The setting of ``benchmarks/fashion_mnist.py`` (fashion-cnn at 28x28, one 2%-pixel patch, K = 25 masks): one base
trained PLAIN_EPOCHS epochs on whole images, then two copies fine-tuned FINETUNE_EPOCHS epochs each, one with two
random Cutout windows per image, one with each image's greedy worst two-mask view (searched every
``--greedy-every`` epochs, cached in between). Both through pcedge's streaming trainer (pcedge.export.trainer) on
57,000 training images with 3,000 held out (certified on ``--val-certify`` of them per epoch; the best epoch by
held-out certified accuracy is kept), exported to ONNX and certified through the real runtime (ONNX Runtime CPU).

    python benchmarks/fashion_greedy.py --out benchmarks/results/fashion_greedy
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from pcedge.evaluation.certification import build_report, certify, report_markdown
from pcedge.evaluation.datasets import load_dataset
from pcedge.export import export_onnx, load_model
from pcedge.export.distributed import Processes
from pcedge.export.trainer import TrainConfig, Trainer
from pcedge.export.training_data import TrainingImages, split_held_out
from pcedge.masks import create_mask_set
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.driver import PatchCleanser

DATA = Path("/usr/share/datasets/fashion-mnist")
PLAIN_EPOCHS, FINETUNE_EPOCHS = 4, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fashion_greedy"))
    parser.add_argument("--greedy-every", type=int, default=1)
    parser.add_argument("--val-certify", type=int, default=500)
    parser.add_argument("--test-limit", type=int, default=0, help="certify only the first N test images (0: all 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load_model("fashion-cnn")
    d = loaded.defaults
    spec = PreprocessSpec(input_size=d["image_size"], crop_pct=d["crop_pct"], mean=d["mean"], std=d["std"], class_names=d["labels"])
    mask_set = create_mask_set(spec.input_size, "2%", masks_per_axis=6)
    train_set, test_set = load_dataset(DATA, split="train"), load_dataset(DATA, split="test")
    kept, held = split_held_out(len(train_set), 0.05, args.seed)
    train_images, val_images = TrainingImages(train_set, spec, kept), TrainingImages(train_set, spec, held)
    cpu = Processes(device=torch.device("cpu"))

    def fit(module, config: TrainConfig) -> dict:
        trainer = Trainer(module, mask_set, config, train_images, val_images, cpu, identity={}, cache_size=len(train_set))
        start = time.perf_counter()
        result = trainer.fit()
        return {"history": result.history, "best": result.best, "seconds": round(time.perf_counter() - start, 1)}

    base = loaded.module
    runs = {"base": fit(base, TrainConfig(epochs=PLAIN_EPOCHS, masks="none", seed=args.seed, val_certify=0))}
    models = {}
    for masks in ("random", "greedy"):
        models[masks] = copy.deepcopy(base)
        runs[masks] = fit(models[masks], TrainConfig(epochs=FINETUNE_EPOCHS, lr=1e-3, masks=masks, seed=args.seed + 1,
                                                     greedy_every=args.greedy_every, val_certify=args.val_certify))
        print(f"{masks}: trained in {runs[masks]['seconds']:.0f} s, best epoch {runs[masks]['best']['epoch']}", flush=True)

    summary = {"setting": {"threat": mask_set.threat.describe(), "num_masks": len(mask_set), "mask_size": list(mask_set.mask_size),
                           "plain_epochs": PLAIN_EPOCHS, "finetune_epochs": FINETUNE_EPOCHS, "greedy_every": args.greedy_every,
                           "train_images": len(kept), "held_out": len(held), "val_certify": args.val_certify},
               "training": runs, "models": {}}
    positions = test_set.subset(args.test_limit or None, None)
    k = len(mask_set)
    for name, model in models.items():
        path = args.out / f"fashion_cnn_{name}.onnx"
        export_onnx(model, path, spec=spec, labels=list(spec.class_names), source_name=f"fashion-cnn ({name} masks)", exporter="torchscript")
        t0 = time.perf_counter()
        with PatchCleanser.from_onnx(path, backend="ort", patch="2%", masks_per_axis=6, max_batch=k * (k + 1) // 2) as pc:
            tables_path = args.out / f"tables_{name}.npz"
            tables_path.unlink(missing_ok=True)
            tables = certify(pc, test_set, positions=positions, tables_path=tables_path, model_path=path)
        report = build_report(tables, test_set, seconds=time.perf_counter() - t0, requested=len(positions))
        (args.out / f"report_{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"report_{name}.md").write_text(report_markdown(report))
        path.unlink()  # reproducible from this script; keep the repository small
        summary["models"][name] = {key: report[key] for key in ("num_images", "clean_accuracy", "defended_accuracy", "certified_accuracy",
                                                                "certified_accuracy_ci95", "cases", "seconds")}
        print(f"{name:7s} clean {report['clean_accuracy']:.4f} defended {report['defended_accuracy']:.4f} "
              f"certified {report['certified_accuracy']:.4f} ({report['seconds']:.0f} s)", flush=True)
    summary["machine"] = report["machine"]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
