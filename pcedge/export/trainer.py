"""Masked fine-tuning at scale: streamed data, CPU or CUDA (mixed precision), one process or torchrun's many.

Each step takes a batch from the loader (:mod:`.training_data`), masks it (random Cutout-style windows, or each
image's greedy worst two-mask view: :mod:`.greedy_masks`), and takes one optimizer step under the chosen recipe.
After every epoch rank 0 validates on the held-out images (:mod:`.validation`) and keeps the best weights by
certified accuracy (by clean accuracy when nothing is certified: ``val_certify`` 0); checkpoints
(:mod:`.training_state`) carry everything needed to resume exactly.

Recipes:
- ``paper``: the PatchCleanser authors' fine-tuning: SGD, momentum 0.9, batch 64, 10 epochs with the learning rate
  x0.1 after half of them (epoch 5 of 10), lr 0.01 for ResNets (give 0.001 for ViTs), no label smoothing.
- ``adamw``: AdamW, lr 2e-3, weight decay 1e-4, one-cycle schedule (15% warm-up), label smoothing 0.1, batch 128:
  what trained the Fashion-MNIST benchmark models (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError, PcedgeError
from ..masks import MaskSet
from ..util.optional import require
from ..util.progress import progress as progress_bar
from . import training_state
from .distributed import Processes
from .finetune import apply_random_masks
from .greedy_masks import GreedyCache, apply_mask_pairs, worst_two_masks
from .training_data import EpochSampler, make_loader
from .validation import validate

torch = require("torch", "fine-tuning")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "sgd" | "adamw"
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: str  # "step-half" (x0.1 after half the epochs) | "one-cycle"
    label_smoothing: float


RECIPES = {"paper": Recipe("sgd", 10, 0.01, 64, 0.0, "step-half", 0.0),
           "adamw": Recipe("adamw", 3, 2e-3, 128, 1e-4, "one-cycle", 0.1)}
MASKS = ("random", "greedy", "none")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None  # None: the recipe's
    recipe: str = "adamw"
    lr: float | None = None  # None: the recipe's
    batch_size: int | None = None  # images per optimizer step over all processes; None: the recipe's
    masks: str = "random"  # random Cutout windows, greedy worst two-mask views, or none (plain training)
    windows: int = 2  # random masks per image
    greedy_every: int = 1  # epochs between greedy searches (cached in between)
    augment: bool = False  # random resized crop + flip before the writer
    seed: int = 0
    device: str = "cpu"
    amp: str | None = None  # "bf16" | "fp16"
    workers: int = 0  # loader processes
    val_certify: int = 200  # held-out images certified per validation
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in all; --resume goes on
    threads: int = 0  # torch CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES or self.masks not in MASKS or self.amp not in (None, "bf16", "fp16"):
            raise ConfigError(f"recipe one of {sorted(RECIPES)}, masks one of {MASKS}, amp bf16/fp16/None")
        if (self.epochs is not None and self.epochs < 1) or self.greedy_every < 1 or self.windows < 0 or (self.lr is not None and self.lr <= 0):
            raise ConfigError("epochs, greedy_every >= 1, windows >= 0 and lr > 0 are required")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")

    @property
    def settings(self) -> Recipe:
        """The recipe with this config's overrides."""
        r = RECIPES[self.recipe]
        return Recipe(r.optimizer, self.epochs or r.epochs, self.lr or r.lr, self.batch_size or r.batch_size, r.weight_decay, r.schedule,
                      r.label_smoothing)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # one row per epoch
    best: dict[str, Any]
    stopped: str
    steps: int
    unreadable: list[int] = field(default_factory=list)  # dataset positions that could not be decoded


class Trainer:
    """Trains ``module`` in place on ``train_images`` (items: image, label, position; see :mod:`.training_data`)."""

    def __init__(self, module: Any, mask_set: MaskSet, config: TrainConfig, train_images: Any, val_images: Any,
                 processes: Processes, *, identity: dict[str, Any], cache_size: int) -> None:
        self.cfg, self.procs, self.identity = config, processes, identity
        self.device = processes.device
        self.module = module.to(self.device)
        self.channels_last = self.device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in module.modules())
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.model = module
        if processes.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(module, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.train_images, self.val_images = train_images, val_images
        self.keep = torch.from_numpy(mask_set.keep_masks().astype(np.float32)).to(self.device)
        self.mask_size = mask_set.mask_size  # random masks: windows of this size anywhere
        self.recipe = config.settings
        self.per_rank_batch = self.recipe.batch_size // processes.world
        self.sampler = EpochSampler(len(train_images), seed=config.seed, rank=processes.rank, world=processes.world)
        self.steps_per_epoch = -(-self.sampler.per_rank() // self.per_rank_batch)
        self.optimizer, self.scheduler = _optimizer(module, self.recipe, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing, reduction="none")
        self.cache = GreedyCache(cache_size)
        self.epoch = self.batch_in_epoch = self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, Any] | None = None
        self.unreadable: set[int] = set()
        self.sums = np.zeros(4)

    # ------------------------------------------------------------------------------- the loop
    def fit(self, checkpoint: str | Path | None = None, *, progress: bool = True) -> TrainResult:
        cfg = self.cfg
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        stopped = "all epochs"
        try:
            while self.epoch < self.recipe.epochs:
                row = self._epoch(progress and self.procs.main)
                if row is None:
                    stopped = f"step cap ({cfg.max_steps} steps): --resume continues"
                    break
                if checkpoint and self.procs.main:
                    training_state.save(checkpoint, self.state())
                self.procs.barrier()
        except torch.cuda.OutOfMemoryError:
            smaller = max(self.procs.world, self.recipe.batch_size // 2)
            raise PcedgeError(f"out of GPU memory at {self.per_rank_batch} images per step per process: try --batch-size {smaller}"
                              + ("" if cfg.amp else " and/or --amp bf16") + (", or --greedy-every N" if cfg.masks == "greedy" else "")) from None
        finally:
            torch.set_num_threads(threads_before)
        if stopped != "all epochs" and checkpoint and self.procs.main:
            training_state.save(checkpoint, self.state())
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        self.module.eval()
        return TrainResult(self.history, self.best, stopped, self.step, self.procs.union(self.unreadable))

    def _epoch(self, progress: bool) -> dict[str, Any] | None:
        """One epoch (or the rest of one); its validated row, or None when the step cap stopped it part-way."""
        cfg, epoch = self.cfg, self.epoch
        self.sampler.set_epoch(epoch, start=self.batch_in_epoch * self.per_rank_batch)
        if hasattr(self.train_images, "set_epoch"):
            self.train_images.set_epoch(epoch)
        loader = make_loader(self.train_images, self.sampler, self.per_rank_batch, workers=cfg.workers, pin_memory=self.device.type == "cuda")
        search = cfg.masks == "greedy" and epoch % cfg.greedy_every == 0
        if self.batch_in_epoch == 0:
            self.sums = np.zeros(4)  # loss x images, correct, images, greedy search seconds (in checkpoints: a resumed epoch adds to them)
        sums = self.sums
        start = time.perf_counter()
        bar = progress_bar(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.recipe.epochs}", unit="step", enabled=progress)
        bar.update(self.batch_in_epoch)  # a resumed epoch starts where it stopped
        self.module.train()
        for images, labels, positions in loader:
            sums += self._step(images, labels, positions, search)
            self.step += 1
            self.batch_in_epoch += 1
            bar.update(1)
            bar.set_postfix_str(f"loss {sums[0] / max(sums[2], 1):.3f}, accuracy {sums[1] / max(sums[2], 1):.3f}", refresh=False)
            if cfg.max_steps and self.step >= cfg.max_steps and self.batch_in_epoch < self.steps_per_epoch:
                bar.close()
                return None
        bar.close()
        if self.recipe.schedule == "step-half":
            self.scheduler.step()
        loss, correct, seen, greedy_s = self.procs.sum(sums.tolist())
        self.procs.share_buffers(self.module)
        if seen == 0:
            raise DatasetError(f"no readable image in a whole epoch ({len(self.unreadable)} unreadable on rank {self.procs.rank}): "
                               "check the dataset's files")
        row = {"epoch": epoch + 1, "step": self.step, "loss": loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "seconds": round(time.perf_counter() - start, 2), "greedy_search_seconds": round(greedy_s / self.procs.world, 2),
               "lr": self.optimizer.param_groups[0]["lr"], "ranks_identical": self.procs.identical(self.module)}
        self.epoch, self.batch_in_epoch = epoch + 1, 0
        if self.procs.main:
            row.update(self._validate())
            self._keep_if_best(row)
            log.info("epoch %d/%d: %s", epoch + 1, self.recipe.epochs, epoch_text(row))
        self.history.append(row)
        if cfg.max_steps and self.step >= cfg.max_steps and self.epoch < self.recipe.epochs:
            return None
        return row

    def _step(self, images: Any, labels: Any, positions: Any, search: bool) -> np.ndarray:
        cfg = self.cfg
        bad = labels < 0
        self.unreadable.update(positions[bad].tolist())
        seed = (cfg.seed * 1_000_003 + self.procs.rank) * 1_000_003 + self.step
        torch.manual_seed(seed)  # dropout and the like: the step is the random state (exact resume)
        x = images.to(self.device, non_blocking=True)
        y = labels.clamp(min=0).to(self.device, non_blocking=True)
        weight = (~bad).to(self.device, torch.float32)
        greedy_s = 0.0
        if cfg.masks == "random" and cfg.windows:
            apply_random_masks(x, self.mask_size, cfg.windows, torch.Generator().manual_seed(seed))
        elif cfg.masks == "greedy":
            t0 = time.perf_counter()
            keys = positions.numpy()
            pairs = None if search else self.cache.lookup(keys)
            if pairs is None:
                pairs = worst_two_masks(self.module, self._layout(x), y, self.keep, autocast=self._autocast())
                self.cache.store(keys, pairs)
            else:
                pairs = torch.from_numpy(pairs).to(self.device)
            apply_mask_pairs(x, pairs, self.keep)
            greedy_s = time.perf_counter() - t0
        with self._autocast_or_none():
            logits = self.model(self._layout(x))
            loss = (self.loss_fn(logits.float(), y) * weight).sum() / weight.sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.recipe.schedule == "one-cycle":
            self.scheduler.step()
        n = float(weight.sum())
        return np.array([float(loss.detach()) * n, float(((logits.argmax(1) == y).float() * weight).sum()), n, greedy_s])

    def _layout(self, x: Any) -> Any:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self) -> Any:
        """A factory of the autocast context for ``--amp`` (None without it)."""
        if not self.cfg.amp:
            return None
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return lambda: torch.autocast(self.device.type, dtype=dtype)

    def _autocast_or_none(self) -> Any:
        factory = self._autocast()
        return factory() if factory else torch.autocast(self.device.type, enabled=False)

    # ------------------------------------------------------------------------------- validation and the best weights
    def _validate(self) -> dict[str, Any]:
        if self.val_images is None:
            return {}
        loader = make_loader(self.val_images, None, max(self.per_rank_batch, 64), workers=self.cfg.workers,
                             pin_memory=self.device.type == "cuda")
        t0 = time.perf_counter()
        row = validate(self.module, loader, self.keep, certify_limit=self.cfg.val_certify, device=self.device, autocast=self._autocast())
        return {"val_" + k: v for k, v in row.items()} | {"val_seconds": round(time.perf_counter() - t0, 2)}

    def _keep_if_best(self, row: dict[str, Any]) -> None:
        """Best by held-out certified accuracy, ties (and runs that certify nothing) by clean accuracy; last without validation."""
        score = (row.get("val_certified_accuracy") or 0.0, row.get("val_clean_accuracy") or 0.0)
        best = (self.best.get("val_certified_accuracy") or 0.0, self.best.get("val_clean_accuracy") or 0.0)
        if not self.best or score > best or self.val_images is None:
            self.best = dict(row)
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.module.state_dict().items()})

    # ------------------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {"identity": self.identity, "config": asdict(self.cfg), "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "step": self.step, "history": self.history, "best": self.best,
                "best_model": self.best_state, "greedy_pairs": self.cache.pairs, "unreadable": sorted(self.unreadable), "epoch_sums": self.sums}

    def resume(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path`` (refused when it belongs to another run: training_state.load)."""
        state = training_state.load(path, self.identity)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.history, self.best, self.best_state = state["history"], state["best"], state["best_model"]
        self.cache.pairs = state["greedy_pairs"]
        self.unreadable, self.sums = set(state["unreadable"]), state["epoch_sums"]
        log.info("resuming %s at epoch %d, step %d", path, self.epoch + 1, self.step)


def _optimizer(module: Any, recipe: Recipe, steps_per_epoch: int) -> tuple[Any, Any]:
    params = [p for p in module.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "step-half":
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, recipe.epochs // 2), gamma=0.1)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                          pct_start=0.15)


def epoch_text(row: dict[str, Any]) -> str:
    """One epoch's row as the log line a person reads."""
    text = (f"loss {row['loss']:.4f}, train accuracy {row['train_accuracy']:.4f} ({row['seconds']:.0f} s"
            + (f", greedy search {row['greedy_search_seconds']:.0f} s)" if row["greedy_search_seconds"] else ")"))
    if "val_clean_accuracy" in row:
        text += f"; held out: clean {row['val_clean_accuracy']:.4f} of {row['val_images']}"
        if row["val_certified_images"]:
            text += (f", one-round agreement {row['val_one_round_agreement']:.4f}, certified {row['val_certified_accuracy']:.4f} "
                     f"of {row['val_certified_images']}")
        text += f" ({row['val_seconds']:.0f} s)"
    return text
