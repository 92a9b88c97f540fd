"""``pcedge finetune --data``: one labelled training run, alone or as one of torchrun's processes, then the export.

Every process builds the same model, mask set and data split (all seeded), joins the process group when torchrun
started it, and trains its share; rank 0 alone prints, checkpoints and exports. What the run was (recipe, masks,
augmentation, data, history, the best epoch, unreadable images) is recorded in the exported model's metadata
(``pcedge.training``), as the label-free path records its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from .options import mask_spec_from_args, preprocessing_overrides

DEFAULT_VAL_FRACTION = 0.05


def train_labelled(args: argparse.Namespace) -> int:
    from ..training import training_state
    from ..training.distributed import join
    from ..training.trainer import TrainConfig
    from ..training.views import ViewMix
    from ..util.signals import stop_on_signals

    config = TrainConfig(epochs=args.epochs, recipe=args.recipe, lr=args.lr, batch_size=args.batch_size, masks=args.masks,
                         windows=args.windows, greedy_every=args.greedy_every, augment=args.augment, seed=args.seed or 0,
                         greedy_mix=ViewMix.parse(args.greedy_mix) if args.greedy_mix else None,
                         device=args.device, amp=args.amp, val_certify=max(0, args.val_certify), max_steps=args.max_steps)
    # the stop signals are caught from here on: one that comes while the group forms, the data loads or a checkpoint
    # is read still ends in a checkpoint after the first step and the exit code that says "resume me"
    with stop_on_signals(training_state.STOP_SIGNALS) as signals:
        processes = join(args.device, config.settings.batch_size)
        try:
            return _train(args, config, processes, signals)
        finally:
            processes.close()


def _train(args: argparse.Namespace, config: Any, processes: Any, signals: tuple[Any, list[int]]) -> int:
    from ..evaluation.datasets import load_dataset
    from ..export import export_onnx, load_model
    from ..training import training_state
    from ..training.trainer import Trainer
    from ..training.training_data import TrainingImages, data_identity, default_workers, split_held_out

    if config.amp == "fp16" and processes.device.type != "cuda":
        raise ConfigError("--amp fp16 needs --device cuda (on a CPU use --amp bf16, or none)")
    loaded = load_model(args.model, args.checkpoint, trust=args.trust_checkpoint)
    spec = loaded.preprocessing(preprocessing_overrides(args))
    mask_set = mask_spec_from_args(args).build(spec.input_size)
    dataset = load_dataset(args.data, class_names=spec.class_names, split=args.split)
    outputs = check_classes(loaded, spec, dataset)
    selected = dataset.subset(args.limit, args.seed)
    if args.val_data:
        if args.val_fraction is not None:
            raise ConfigError("give --val-data or --val-fraction, not both")
        val_set = load_dataset(args.val_data, class_names=spec.class_names, split="test")
        train_positions, val_positions = selected, np.arange(len(val_set))
    else:
        kept, held = split_held_out(len(selected), DEFAULT_VAL_FRACTION if args.val_fraction is None else args.val_fraction, args.seed or 0)
        val_set, train_positions, val_positions = dataset, selected[kept], selected[held]
    if len(train_positions) == 0:
        raise DatasetError(f"{dataset.name}: no images left to train on after holding {len(val_positions)} out")
    config = replace(config, workers=default_workers(dataset) if args.workers is None else args.workers)
    train_images = TrainingImages(dataset, spec, train_positions, augment=config.augment, seed=config.seed)
    val_images = TrainingImages(val_set, spec, val_positions) if len(val_positions) else None
    data = data_identity(dataset, train_positions, val_set if val_images else None, val_positions)
    identity = training_state.run_identity(loaded.module, mask_set, spec, data, asdict(config))
    trainer = Trainer(loaded.module, mask_set, config, train_images, val_images, processes, identity=identity, cache_size=len(dataset))
    if args.resume:
        trainer.resume(args.resume)
    quiet = args.no_progress or args.quiet
    if processes.main:
        print(f"# training {loaded.name} on {len(train_positions)} images of {dataset.name} ({len(val_positions)} held out, "
              f"{min(config.val_certify, len(val_positions))} certified per epoch); {describe_masks(config, mask_set)}; "
              f"recipe {config.recipe} {_recipe_text(trainer.recipe)}; {_where(processes, config)}", file=sys.stderr)
    checkpoint = args.save_checkpoint or args.resume
    stop, received = signals
    result = trainer.fit(checkpoint, progress=not quiet, stop=stop)
    if result.reason == "signal":
        return _stopped(processes, checkpoint, received, result.steps)
    if not processes.main:
        return 0
    unreadable = [dataset.item(p)[1] for p in result.unreadable]
    if unreadable:
        print(f"# {len(unreadable)} unreadable image(s) skipped, e.g. {', '.join(unreadable[:5])} (all in the model's "
              "pcedge.training record)", file=sys.stderr)
    record = {"recipe": config.recipe, "settings": asdict(trainer.recipe), "masks": describe_masks(config, mask_set),
              "augmentation": "random resized crop (area 25-100%, aspect 3/4-4/3) + horizontal flip" if config.augment else None,
              "config": asdict(config), "stopped": result.stopped, "steps": result.steps, "best": result.best, "history": result.history,
              "data": str(args.data), "train_images": len(train_positions), "validation_images": len(val_positions),
              "unreadable": unreadable, "threat": mask_set.threat.describe(), "num_masks": len(mask_set),
              "processes": processes.world, "initial_weights_sha256": identity["initial_weights"]}
    report = export_onnx(loaded.module.cpu().to(memory_format=_contiguous()), args.out, spec=spec,
                         labels=list(spec.class_names) or export_labels(dataset, outputs),
                         source_name=f"{loaded.name} ({config.masks}-mask fine-tuned)", metadata={"pcedge.training": json.dumps(record)})
    print(report.summary())
    if result.best:
        print(f"# {result.stopped}; kept epoch {result.best['epoch']}: " + _best_text(result.best), file=sys.stderr)
    print(json.dumps({"stopped": result.stopped, "best": result.best, "history": result.history}))
    return 0


def _stopped(processes: Any, checkpoint: str | None, received: list[int], steps: int) -> int:
    """Every rank's exit after a stop signal (a rank may have learnt of it from another): RESUME_EXIT_CODE when a
    checkpoint was written, else the signal's conventional code (nothing to resume from); no export either way."""
    import signal

    from ..training.training_state import RESUME_EXIT_CODE

    name = signal.Signals(received[0]).name if received else "a stop signal (on another process)"
    if processes.main:
        print(f"# stopped by {name} after step {steps}: " + (f"checkpoint {checkpoint} written; the same command with --resume "
              f"{checkpoint} continues (exit code {RESUME_EXIT_CODE}: resume me)" if checkpoint else
              "no --save-checkpoint, so nothing to resume from; no model exported"), file=sys.stderr)
    if checkpoint:
        return RESUME_EXIT_CODE
    return 128 + (received[0] if received else signal.SIGTERM)


def check_classes(loaded: Any, spec: Any, dataset: Any) -> int:
    """The model's output count; a dataset with labels the model has no output for is refused (one forward of a blank
    image tells the count)."""
    import torch

    with torch.no_grad():
        outputs = loaded.module.eval()(torch.zeros((1, 3, *spec.input_size))).shape[-1]
    top = int(dataset.labels.max())
    if top >= outputs:
        raise DatasetError(f"{dataset.name} has labels up to {top} ({len(dataset.class_names)} classes) but {loaded.name} outputs "
                           f"{outputs} classes: give a model built for {top + 1} classes (e.g. a factory with num_classes) or data "
                           "of the model's own classes")
    return outputs


def export_labels(dataset: Any, outputs: int) -> list[str]:
    """The dataset's class names when they name every output, else the output indices (a 10-output model trained on
    three class folders: its other outputs have no name to give)."""
    names = list(dataset.class_names)
    return names if len(names) == outputs else [str(i) for i in range(outputs)]


def describe_masks(config: Any, mask_set: Any) -> str:
    h, w = mask_set.mask_size
    if config.masks == "none":
        return "plain (no masks)"
    if config.masks == "random":
        return f"{config.windows} random {h}x{w} masks per image"
    mix = config.mix
    return (f"greedy worst two-mask views of the {len(mask_set)} {h}x{w} masks, searched every {config.greedy_every} epoch(s), "
            f"mixed: {mix.unmasked:.0%} unmasked, {mix.random:.0%} {config.windows} random {h}x{w} masks, {mix.greedy:.0%} greedy")


def _recipe_text(recipe: Any) -> str:
    schedule = f"x0.1 after epoch {recipe.decay_after}" if recipe.schedule == "step-half" else recipe.schedule
    return (f"({recipe.optimizer}, {recipe.epochs} epochs, lr {recipe.lr:g}, batch {recipe.batch_size}, {schedule}"
            f"{f', label smoothing {recipe.label_smoothing:g}' if recipe.label_smoothing else ''})")


def _where(processes: Any, config: Any) -> str:
    text = f"on {processes.device}" + (f" x {processes.world} processes" if processes.distributed else "")
    return text + (f", {config.amp}" if config.amp else "") + f", {config.workers} loader worker(s)"


def _best_text(best: dict[str, Any]) -> str:
    parts = [(key, best.get(key)) for key in ("val_clean_accuracy", "val_one_round_agreement", "val_certified_accuracy")]
    return ", ".join(f"{key[4:].replace('_', ' ')} {value:.4f}" for key, value in parts if value is not None) or "no validation"


def _contiguous() -> Any:
    import torch

    return torch.contiguous_format
