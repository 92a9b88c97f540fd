"""No masks vs random masks vs greedy masks (mixed views) on Fashion-MNIST: equal epochs, certified on all 10,000 test
images, and the INT8 agreement of each model.

The setting of ``benchmarks/fashion_mnist.py`` (fashion-cnn at 28x28, one 2%-pixel patch, K = 25 masks): one base
trained PLAIN_EPOCHS epochs on whole images, then copies fine-tuned FINETUNE_EPOCHS epochs each (AdamW, lr 1e-3):
``none`` (whole images: the plain model with as many epochs), ``random`` (two random Cutout windows per image) and
``greedy`` (each image drawn unmasked, random-masked or greedy-masked by ``--greedy-mix``, the library's default unless
given; pairs searched every ``--greedy-every`` epochs). All through pcedge's streaming trainer
(pcedge.training.trainer) on 57,000 training images with 3,000 held out (``--val-certify`` of them certified per epoch;
the best epoch by held-out certified accuracy is kept), exported to ONNX (kept in ``--out``, git-ignored), certified
through the real runtime (ONNX Runtime CPU), and quantized by ``pcedge quantize``'s function (u8s7, calibrated on 64
training images, agreement with FP32 on the one-mask and two-mask images of 100 test images; written even below the
gate, to measure it). The base is saved in ``--out`` (base.pt) and reused, and each run writes its own summary, so one
run can be repeated alone (``--runs greedy --greedy-mix ...``); summary.json joins them.

    python benchmarks/fashion_greedy.py --out benchmarks/results/fashion_greedy_mix
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
from pcedge.export.quantize import quantize_int8
from pcedge.masks import MaskSpec
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.driver import PatchCleanser
from pcedge.training.distributed import Processes
from pcedge.training.trainer import TrainConfig, Trainer
from pcedge.training.training_data import TrainingImages, split_held_out
from pcedge.training.views import ViewMix

DATA = Path("/usr/share/datasets/fashion-mnist")
PLAIN_EPOCHS, FINETUNE_EPOCHS = 4, 3
MASKS = MaskSpec("2%", 6)
INT8_CALIBRATION, INT8_HELD_OUT = 64, 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fashion_greedy_mix"))
    parser.add_argument("--runs", default="none,random,greedy", help="which fine-tunings to run (comma-separated)")
    parser.add_argument("--greedy-every", type=int, default=1)
    parser.add_argument("--greedy-mix", help="unmasked,random,greedy fractions (default: pcedge's DEFAULT_GREEDY_MIX)")
    parser.add_argument("--val-certify", type=int, default=500)
    parser.add_argument("--test-limit", type=int, default=0, help="certify only the first N test images (0: all 10,000)")
    parser.add_argument("--train-limit", type=int, default=0, help="train on the first N training images only (pilots; 0: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    loaded = load_model("fashion-cnn")
    d = loaded.defaults
    spec = PreprocessSpec(input_size=d["image_size"], crop_pct=d["crop_pct"], mean=d["mean"], std=d["std"], class_names=d["labels"])
    mask_set = MASKS.build(spec.input_size)
    train_set, test_set = load_dataset(DATA, split="train"), load_dataset(DATA, split="test")
    kept, held = split_held_out(len(train_set), 0.05, args.seed)
    kept = kept[: args.train_limit or None]
    train_images, val_images = TrainingImages(train_set, spec, kept), TrainingImages(train_set, spec, held)
    cpu = Processes(device=torch.device("cpu"))

    def fit(module, config: TrainConfig) -> dict:
        trainer = Trainer(module, mask_set, config, train_images, val_images, cpu, identity={}, cache_size=len(train_set))
        start = time.perf_counter()
        result = trainer.fit()
        return {"config": {"masks": config.masks, "mix": config.mix.text, "greedy_every": config.greedy_every}, "history": result.history,
                "best": result.best, "seconds": round(time.perf_counter() - start, 1)}

    base, base_path = loaded.module, args.out / f"base_seed{args.seed}_{len(kept)}.pt"
    if base_path.exists():
        base.load_state_dict(torch.load(base_path, weights_only=True))
        print(f"base: {base_path} (trained by an earlier invocation)", flush=True)
    else:
        trained = fit(base, TrainConfig(epochs=PLAIN_EPOCHS, masks="none", seed=args.seed, val_certify=0))
        torch.save(base.state_dict(), base_path)
        (args.out / "base.json").write_text(json.dumps(trained, indent=2) + "\n")
        print(f"base: trained in {trained['seconds']:.0f} s", flush=True)

    positions = test_set.subset(args.test_limit or None, None)
    calibration = [train_set.load(int(p)) for p in train_set.subset(INT8_CALIBRATION, args.seed)]
    held_out = [test_set.load(int(p)) for p in test_set.subset(INT8_HELD_OUT, args.seed + 1)]
    k = len(mask_set)
    for name in args.runs.split(","):
        mix = ViewMix.parse(args.greedy_mix) if args.greedy_mix and name == "greedy" else None
        model = copy.deepcopy(base)
        run = fit(model, TrainConfig(epochs=FINETUNE_EPOCHS, lr=1e-3, masks=name, seed=args.seed + 1, greedy_every=args.greedy_every,
                                     greedy_mix=mix, val_certify=args.val_certify))
        print(f"{name}: trained in {run['seconds']:.0f} s, best epoch {run['best']['epoch']}", flush=True)
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
        int8 = quantize_int8(path, args.out / f"fashion_cnn_{name}.int8.onnx", calibration, held_out_frames=held_out, masks=MASKS, force=True)
        run["int8"] = {"agreement": round(int8.agreement, 4), "one_mask": round(int8.one_mask_agreement, 4),
                       "two_mask": round(int8.two_mask_agreement, 4), "held_out_images": int8.held_out_images,
                       "passes_gate": not int8.forced}
        run["certification"] = {key: report[key] for key in ("num_images", "clean_accuracy", "defended_accuracy", "certified_accuracy",
                                                             "certified_accuracy_ci95", "cases", "seconds")}
        run["machine"] = report["machine"]
        (args.out / f"summary_{name}.json").write_text(json.dumps(run, indent=2) + "\n")
        print(f"{name:7s} clean {report['clean_accuracy']:.4f} defended {report['defended_accuracy']:.4f} certified "
              f"{report['certified_accuracy']:.4f} ({report['seconds']:.0f} s); INT8 agreement {int8.agreement:.4f}", flush=True)
    summary = {"setting": {"threat": mask_set.threat.describe(), "num_masks": k, "mask_size": list(mask_set.mask_size),
                           "plain_epochs": PLAIN_EPOCHS, "finetune_epochs": FINETUNE_EPOCHS, "train_images": len(kept), "held_out": len(held),
                           "val_certify": args.val_certify, "test_images": len(positions),
                           "int8": f"u8s7, {INT8_CALIBRATION} training images calibrate, {INT8_HELD_OUT} test images held out"},
               "runs": {p.stem[len("summary_"):]: json.loads(p.read_text()) for p in sorted(args.out.glob("summary_*.json"))}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
