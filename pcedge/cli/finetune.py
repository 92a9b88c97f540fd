"""pcedge finetune: train or fine-tune a classifier with masks (the paper's recipe), then export it.

With labels (``--data``) the run is :func:`pcedge.cli.training.train_labelled` (also under torchrun); without
(``--unlabeled``) masked self-distillation (:mod:`pcedge.training.distill`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import ConfigError
from .options import add_mask_options, add_preprocessing_options, mask_spec_from_args, positive_int, preprocessing_overrides

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    if args.unlabeled:
        return _distill(args)
    if not args.data:
        raise ConfigError("give --data (labelled images) or --unlabeled (footage: self-distillation without labels)")
    from .training import train_labelled

    return train_labelled(args)


def _distill(args: argparse.Namespace) -> int:
    from ..evaluation.datasets import load_dataset
    from ..export import export_onnx, load_model
    from ..training.distill import DistillConfig, Distiller, guarded_agreement, read_footage
    from ..training.finetune import preprocess_dataset

    loaded = load_model(args.model, args.checkpoint, trust=args.trust_checkpoint)
    overrides = preprocessing_overrides(args)
    if "image_size" not in loaded.defaults and overrides["input_size"] is None:
        raise ConfigError(f"{loaded.name} records no preprocessing: pass the teacher's --image-size, --mean, --std and "
                          "--crop-pct (and --interpolation) as it was trained, or the distilled model would learn other pixels")
    spec = loaded.preprocessing(overrides)
    mask_set = mask_spec_from_args(args).build(spec.input_size)
    quiet = args.no_progress or args.quiet
    val_fraction = DistillConfig.validation_fraction if args.val_fraction is None else args.val_fraction
    config = DistillConfig(max_steps=args.max_steps or DistillConfig.max_steps, max_minutes=args.max_minutes, batch_size=args.batch_size or DistillConfig.batch_size,
                           lr=args.lr or DistillConfig.lr,
                           temperature=args.temperature, unmasked_weight=args.unmasked_weight,
                           pseudo_label_weight=args.pseudo_label_weight, pseudo_label_confidence=args.pseudo_label_confidence,
                           validate_every=args.validate_every,
                           patience=args.patience, validation_fraction=val_fraction, seed=args.seed or 0)
    footage = read_footage(args.unlabeled, spec, max_frames=args.max_frames, every=args.every,
                           validation_fraction=val_fraction, progress=not quiet)
    labelled = None
    if args.data:
        dataset = load_dataset(args.data, class_names=spec.class_names, split=args.split)
        labelled = preprocess_dataset(dataset, spec, dataset.subset(args.limit, args.seed), progress=not quiet)
    distiller = Distiller(loaded.module, mask_set, config)
    if args.resume:
        distiller.resume(args.resume)
    recipe = ("masked self-distillation (teacher: the original model; on one/two-mask and unmasked views KL at T=%g + %g x "
              "cross-entropy with the teacher's top-1 where its probability >= %g; unmasked views weighted %g)%s"
              % (config.temperature, config.pseudo_label_weight, config.pseudo_label_confidence, config.unmasked_weight,
                 f" + labelled masked cross-entropy on {len(labelled[0])} images" if labelled else ", no labels"))
    print(f"# {loaded.name}: {recipe}; {len(footage.train)} training frames, {len(footage.validation)} held out "
          f"({', '.join(s['source'] for s in footage.sources)}); K={len(mask_set)} masks", file=sys.stderr)
    result = distiller.fit(footage, labelled=labelled, checkpoint=args.save_checkpoint or args.resume, progress=not quiet)
    print(f"# {result.stopped}; best at step {result.best.get('step')}: held-out mask agreement {result.best['mask_agreement']:.3f}, "
          f"teacher agreement {guarded_agreement(result.best):.3f} ({result.seconds / 60:.1f} min)", file=sys.stderr)
    training = {"recipe": recipe, "teacher": loaded.name, "teacher_sha256": result.teacher_sha256, "steps": result.steps,
                "stopped": result.stopped, "best": result.best, "history": result.history, "sources": footage.sources,
                "training_frames": len(footage.train), "labelled_images": len(labelled[0]) if labelled else 0,
                "labelled_data": str(args.data) if args.data else None, "config": asdict(config),
                "threat": mask_set.threat.describe(), "num_masks": len(mask_set)}
    report = export_onnx(loaded.module, args.out, spec=spec, labels=list(spec.class_names) or None,
                         source_name=f"{loaded.name} (masked self-distillation)", metadata={"pcedge.training": json.dumps(training)})
    print(report.summary())
    print(json.dumps({"stopped": result.stopped, "best": result.best, "history": result.history}))
    return 0


PARSER = dict(
    help="train / fine-tune a PyTorch classifier with masks (the paper's recipe), then export it",
    description="Fine-tune with random mask-sized windows (0 after normalization) so masked images stay classifiable.",
    epilog="examples:\n"
           "  pcedge finetune --model fashion-cnn --data /usr/share/datasets/fashion-mnist --split train \\\n"
           "      --patch 2% --epochs 4 --out fmnist_masked.onnx\n"
           "  pcedge finetune --model my_pkg.nets:build --checkpoint w.pt --data train_folder/ --out masked.onnx\n"
           "  pcedge finetune --model timm:resnet50 --checkpoint r50.pth --data imagenet/train --val-data imagenet/val --recipe paper \\\n"
           "      --masks greedy --device cuda --amp bf16 --augment --save-checkpoint r50.pt --out r50_masked.onnx\n"
           "  torchrun --nproc-per-node 4 --signals-to-handle SIGTERM,SIGINT,SIGUSR1 -m pcedge finetune ... --save-checkpoint r50.pt\n"
           "      # the same on 4 GPUs (or CPU processes: gloo); SIGTERM/SIGUSR1 (preemption) -> checkpoint, exit 75: --resume r50.pt\n"
           "  pcedge finetune --model efficientnet-lite0 --unlabeled lobby.mp4 --unlabeled 'yard/*.jpg' --max-minutes 60 \\\n"
           "      --save-checkpoint lite0_distill.pt --out lite0_cam.onnx          # no labels: the camera's own footage\n"
           "  pcedge finetune --model efficientnet-lite0 --unlabeled lobby.mp4 --resume lite0_distill.pt --out lite0_cam.onnx",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="efficientnet-lite0 | fashion-cnn | timm:<name> | package.module:factory")
    p.add_argument("--checkpoint", help="weights to start from: a state_dict (with --model) or TorchScript; a pickled module "
                                        "only with --trust-checkpoint")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a --checkpoint that is a pickled nn.Module: this RUNS CODE FROM THE FILE (only for files you made)")
    p.add_argument("--data", help="labelled training images: class folders, IDX files or .npz (with --unlabeled: mixed in)")
    p.add_argument("--split", default="train", choices=["train", "test"], help="which IDX pair in a folder holding both")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    add_mask_options(p)
    p.add_argument("--epochs", type=positive_int, help="passes over the training images (default: the recipe's, 10 paper / 3 adamw)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's with labels, 5e-5 for --unlabeled)")
    p.add_argument("--batch-size", type=positive_int,
                   help="images per optimizer step, over all torchrun processes (default: the recipe's, 64 paper / 128 adamw; "
                        "24 frames for --unlabeled)")
    p.add_argument("--limit", type=positive_int, help="train on N images only")
    p.add_argument("--seed", type=int, default=0, help="seed for shuffling, masks, augmentation, the held-out split and --limit's draw")
    p.add_argument("--save-checkpoint", help="write a checkpoint here after every epoch (with --unlabeled: every validation) (.pt); "
                                             "with --data also when SIGTERM, SIGUSR1 or Ctrl-C stops the run (exit code 75)")
    p.add_argument("--resume", help="continue from this checkpoint (--save-checkpoint's file), and keep saving there")
    p.add_argument("--val-fraction", type=float,
                   help="held out for validation (default 0.05 with --data: a seeded fraction of it, unless --val-data; "
                        "0.15 with --unlabeled: the later part of each source)")
    p.add_argument("--max-steps", type=positive_int,
                   help="optimizer steps at most (default none with --data: then a checkpoint is written and --resume goes on; "
                        "2000 for --unlabeled)")
    add_preprocessing_options(p, exporting=True)
    t = p.add_argument_group("with labels (--data): masks, recipe, devices, validation")
    t.add_argument("--masks", default="random", choices=["random", "greedy", "none"],
                   help="random: --windows Cutout-style windows of the mask size per image (the paper's); greedy: each image's "
                        "worst two-mask view of the mask set, searched with the model being trained (2K forwards per image "
                        "per search), mixed with unmasked and random views (--greedy-mix); none: plain training (the baseline)")
    t.add_argument("--windows", type=int, default=2, help="random masks per training image")
    t.add_argument("--greedy-every", type=positive_int, default=1,
                   help="epochs between greedy searches (pairs cached and shared by all torchrun processes between; 1 with --augment)")
    t.add_argument("--greedy-mix", metavar="UNMASKED,RANDOM,GREEDY",
                   help="with --masks greedy: fractions of images shown unmasked, with random masks, and greedy-masked "
                        "(default 0.25,0.25,0.5: greedy views alone cost clean accuracy)")
    t.add_argument("--recipe", default="adamw", choices=["paper", "adamw"],
                   help="paper: SGD momentum 0.9, batch 64, 10 epochs, lr 0.01 (give --lr 0.001 for ViTs) x0.1 once, after half; "
                        "adamw: AdamW lr 2e-3, one-cycle, label smoothing 0.1, batch 128")
    t.add_argument("--augment", action="store_true", help="random resized crop + horizontal flip of each image before preprocessing")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (under torchrun with cuda: one GPU per local rank)")
    t.add_argument("--amp", choices=["bf16", "fp16"], help="mixed precision (fp16 with a gradient scaler, CUDA only; bf16 also on CPUs)")
    t.add_argument("--workers", type=int, help="data loader processes (default: 0 for IDX/.npz held in memory, else half the CPUs, <= 8)")
    t.add_argument("--val-data", help="held-out labelled images to validate on (an IDX folder gives its test pair)")
    t.add_argument("--val-certify", type=int, default=200,
                   help="held-out images certified per epoch (K(K+1)/2 forwards each; the best checkpoint is by certified accuracy)")
    free = p.add_argument_group("without labels (masked self-distillation from the original model)")
    free.add_argument("--unlabeled", action="append", metavar="SOURCE",
                      help="footage to learn from: any source pcedge run takes (video, folder, glob, camera, stream); repeatable")
    free.add_argument("--max-frames", type=positive_int, default=600, help="frames read per source")
    free.add_argument("--every", type=positive_int, default=1, help="keep every N-th frame (neighbouring frames repeat each other)")
    free.add_argument("--max-minutes", type=float, default=60.0, help="training time at most")
    free.add_argument("--validate-every", type=positive_int, default=100, help="steps between held-out validations")
    free.add_argument("--patience", type=positive_int, default=4, help="validations without a better mask agreement before stopping")
    free.add_argument("--temperature", type=float, default=2.0, help="distillation temperature")
    free.add_argument("--unmasked-weight", type=float, default=1.0, help="weight of the unmasked view's terms (keeps clean labels)")
    free.add_argument("--pseudo-label-weight", type=float, default=1.0,
                      help="weight of the cross-entropy with the teacher's top-1 label (builds the margin masks need; 0: soft KL only)")
    free.add_argument("--pseudo-label-confidence", type=float, default=0.0,
                      help="use the teacher's top-1 as a hard label only where its probability is at least this (default 0: always)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (as -q, but keeps the log lines)")
