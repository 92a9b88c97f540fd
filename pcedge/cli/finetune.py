"""pcedge finetune: train or fine-tune a classifier with masks (the paper's recipe), then export it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .options import add_mask_options, add_preprocessing_options, mask_spec_from_args, positive_int, preprocessing_overrides

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.datasets import load_dataset
    from ..export import export_onnx, load_model
    from ..export.finetune import FinetuneConfig, preprocess_dataset, train

    loaded = load_model(args.model, args.checkpoint)
    spec = loaded.preprocessing(preprocessing_overrides(args))
    labels = spec.class_names
    mask_set = mask_spec_from_args(args).build(spec.input_size)
    dataset = load_dataset(args.data, class_names=labels, split=args.split)
    images, targets = preprocess_dataset(dataset, spec, dataset.subset(args.limit, args.seed), progress=not (args.no_progress or args.quiet))
    config = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed or 0,
                            mask_size=None if args.plain else mask_set.mask_size, windows=args.windows)
    print(f"# training {loaded.name} on {len(images)} images of {dataset.name}; "
          + ("plain (no masks)" if args.plain else f"{args.windows} random {mask_set.mask_size[0]}x{mask_set.mask_size[1]} masks per image"),
          file=sys.stderr)
    history = train(loaded.module, images, targets, config, progress=not (args.no_progress or args.quiet),
                    checkpoint=args.save_checkpoint)
    report = export_onnx(loaded.module, args.out, spec=spec, labels=list(labels) or list(dataset.class_names), source_name=f"{loaded.name} ({'plain' if args.plain else 'masked'} fine-tuned)")
    print(report.summary())
    print(json.dumps({"history": history}, indent=None))
    return 0


PARSER = dict(
    help="train / fine-tune a PyTorch classifier with masks (the paper's recipe), then export it",
    description="Fine-tune with random mask-sized windows (0 after normalization) so masked images stay classifiable.",
    epilog="examples:\n"
           "  pcedge finetune --model fashion-cnn --data /usr/share/datasets/fashion-mnist --split train \\\n"
           "      --patch 2% --epochs 4 --out fmnist_masked.onnx\n"
           "  pcedge finetune --model my_pkg.nets:build --checkpoint w.pt --data train_folder/ --out masked.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="efficientnet-lite0 | fashion-cnn | timm:<name> | package.module:factory")
    p.add_argument("--checkpoint", help="weights to start from (TorchScript, pickled module or state_dict)")
    p.add_argument("--data", required=True, help="training images: class folders, IDX files or .npz")
    p.add_argument("--split", default="train", choices=["train", "test"], help="which IDX pair in a folder holding both")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    add_mask_options(p)
    p.add_argument("--plain", action="store_true", help="train without masks (the baseline)")
    p.add_argument("--windows", type=int, default=2, help="masks per training image")
    p.add_argument("--epochs", type=positive_int, default=3, help="passes over the training images")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per optimizer step")
    p.add_argument("--limit", type=positive_int, help="train on N images only")
    p.add_argument("--seed", type=int, default=0, help="seed for the weights' shuffling, the masks and --limit's draw")
    p.add_argument("--save-checkpoint", help="write the state_dict here after every epoch (.pt)")
    add_preprocessing_options(p, exporting=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bars (as -q, but keeps the log lines)")


