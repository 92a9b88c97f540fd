"""Masked fine-tuning at scale: streamed data, CPU or CUDA (mixed precision), one process or torchrun's many.

Each step takes a batch from the loader (:mod:`.training_data`), shows each image its view of the epoch (unmasked,
random Cutout-style windows, or its greedy worst two-mask view, mixed: :mod:`.views`, :mod:`.greedy_masks`), and
takes one optimizer step under the chosen recipe. Greedy pairs found by any rank are shared with every rank as they
are searched, so an epoch that reuses them (``greedy_every``) finds every image's pair whichever rank meets it. After
every epoch rank 0 validates on the held-out images (:mod:`.validation`) and keeps the best weights by certified
accuracy (by clean accuracy when nothing is certified: ``val_certify`` 0); checkpoints (:mod:`.training_state`) carry
everything needed to resume exactly. A stop signal (``fit(stop=...)``) ends training after the current step (or cuts
a validation short) on every rank, with a checkpoint.
The recipes (optimizer, schedule, epochs) are in :mod:`.recipes`.
"""

from __future__ import annotations

import copy
import logging
import threading
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
from .greedy_masks import GreedyCache, apply_mask_pairs, worst_two_masks
from .recipes import RECIPES, Recipe, make_optimizer
from .training_data import EpochSampler, make_loader
from .validation import validate
from .views import DEFAULT_GREEDY_MIX, GREEDY, RANDOM, ViewMix, apply_windows, plan_views

torch = require("torch", "fine-tuning")
log = logging.getLogger(__name__)


MASKS = ("random", "greedy", "none")
SUMS = ("loss", "correct", "images", "greedy_seconds", "greedy_searched")  # an epoch's running sums, per rank


@dataclass(frozen=True)
class TrainConfig:
    epochs: int | None = None  # None: the recipe's
    recipe: str = "adamw"
    lr: float | None = None  # None: the recipe's
    batch_size: int | None = None  # images per optimizer step over all processes; None: the recipe's
    masks: str = "random"  # random Cutout windows, greedy worst two-mask views (mixed), or none (plain training)
    windows: int = 2  # random masks per image
    greedy_every: int = 1  # epochs between greedy searches (cached in between)
    greedy_mix: ViewMix | None = None  # with masks="greedy": the views' fractions (None: DEFAULT_GREEDY_MIX)
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
        if self.greedy_mix is not None and self.masks != "greedy":
            raise ConfigError(f"--greedy-mix {self.greedy_mix.text} mixes the views of --masks greedy; this run has --masks {self.masks}")
        if self.augment and self.masks == "greedy" and self.greedy_every > 1:
            raise ConfigError(f"--greedy-every {self.greedy_every} with --augment: each epoch draws new crops and flips, so a pair "
                              "searched on one epoch's view covers other pixels of the next epoch's (a random mask, at the cost of a "
                              "search); give --greedy-every 1 with --augment (searches the view being trained), or drop --augment")

    @property
    def mix(self) -> ViewMix:
        """The views this run shows: all unmasked (none), all random (random), or the greedy mix."""
        if self.masks == "greedy":
            return self.greedy_mix or DEFAULT_GREEDY_MIX
        return ViewMix(1.0, 0.0, 0.0) if self.masks == "none" else ViewMix(0.0, 1.0, 0.0)

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
    stopped: str  # why training ended, in words
    steps: int
    unreadable: list[int] = field(default_factory=list)  # dataset positions that could not be decoded
    reason: str = "epochs"  # "epochs" (all done) | "cap" (--max-steps) | "signal" (a stop signal: resume from the checkpoint)


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
        self.recipe, self.mix = config.settings, config.mix
        self.per_rank_batch = self.recipe.batch_size // processes.world
        self.sampler = EpochSampler(len(train_images), seed=config.seed, rank=processes.rank, world=processes.world)
        self.steps_per_epoch = -(-self.sampler.per_rank() // self.per_rank_batch)
        self.optimizer, self.scheduler = make_optimizer(module, self.recipe, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing, reduction="none")
        self.cache = GreedyCache(cache_size)
        self.epoch = self.batch_in_epoch = self.step = 0
        self.history: list[dict[str, Any]] = []
        self.pending: dict[str, Any] | None = None  # an epoch trained but not yet validated (a signal cut its validation short)
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, Any] | None = None
        self.unreadable: set[int] = set()
        self.sums = np.zeros(len(SUMS))
        self.stop = threading.Event()

    # ------------------------------------------------------------------------------- the loop
    def fit(self, checkpoint: str | Path | None = None, *, progress: bool = True, stop: threading.Event | None = None) -> TrainResult:
        """Train the remaining epochs, checkpointing after each (and where training stops) when ``checkpoint`` is given.
        Setting ``stop`` (a signal handler does) ends training after the current step on every rank."""
        cfg = self.cfg
        self.stop = stop or self.stop
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        reason = None
        try:
            if self.pending is not None and not self._finish_epoch():
                reason = "signal"
            while reason is None and self.epoch < self.recipe.epochs:
                reason = self._epoch(progress and self.procs.main)
                if checkpoint:
                    self.save(checkpoint)
        except torch.cuda.OutOfMemoryError:
            smaller = max(self.procs.world, self.recipe.batch_size // 2)
            raise PcedgeError(f"out of GPU memory at {self.per_rank_batch} images per step per process: try --batch-size {smaller}"
                              + ("" if cfg.amp else " and/or --amp bf16") + (", or --greedy-every N" if cfg.masks == "greedy" else "")) from None
        finally:
            torch.set_num_threads(threads_before)
        if self.best_state is not None:
            self.module.load_state_dict(self.best_state)
        self.module.eval()
        resumable = "--resume continues" if checkpoint else "no --save-checkpoint: nothing to resume from"
        stopped = {None: "all epochs", "cap": f"step cap ({cfg.max_steps} steps): {resumable}",
                   "signal": f"stop signal at step {self.step}: {resumable}"}[reason]
        return TrainResult(self.history, self.best, stopped, self.step, self.procs.union(self.unreadable), reason or "epochs")

    def _epoch(self, progress: bool) -> str | None:
        """One epoch (or the rest of one), validated; why training stops here ("cap", "signal") or None to go on."""
        cfg, epoch = self.cfg, self.epoch
        self.sampler.set_epoch(epoch, start=self.batch_in_epoch * self.per_rank_batch)
        if hasattr(self.train_images, "set_epoch"):
            self.train_images.set_epoch(epoch)
        loader = make_loader(self.train_images, self.sampler, self.per_rank_batch, workers=cfg.workers, pin_memory=self.device.type == "cuda")
        search = cfg.masks == "greedy" and epoch % cfg.greedy_every == 0
        if self.batch_in_epoch == 0:
            self.sums = np.zeros(len(SUMS))  # in checkpoints, per rank: a resumed epoch adds to them
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
            if self.batch_in_epoch < self.steps_per_epoch:
                if self.procs.any(self.stop.is_set()):
                    bar.close()
                    return "signal"
                if cfg.max_steps and self.step >= cfg.max_steps:
                    bar.close()
                    return "cap"
        bar.close()
        self._end_epoch(time.perf_counter() - start)
        if not self._finish_epoch() or self.procs.any(self.stop.is_set()):
            return "signal"
        if cfg.max_steps and self.step >= cfg.max_steps and self.epoch < self.recipe.epochs:
            return "cap"
        return None

    def _end_epoch(self, seconds: float) -> None:
        """The epoch's training row from every rank's sums; the epoch is then pending validation."""
        if self.recipe.schedule == "step-half":
            self.scheduler.step()
        total = dict(zip(SUMS, self.procs.sum(self.sums.tolist())))
        self.procs.share_buffers(self.module)
        seen = total["images"]
        if seen == 0:
            raise DatasetError(f"no readable image in a whole epoch ({len(self.unreadable)} unreadable on rank {self.procs.rank}): "
                               "check the dataset's files")
        self.pending = {"epoch": self.epoch + 1, "step": self.step, "loss": total["loss"] / seen, "train_accuracy": total["correct"] / seen,
                        "seconds": round(seconds, 2), "greedy_search_seconds": round(total["greedy_seconds"] / self.procs.world, 2),
                        "greedy_searched_images": int(total["greedy_searched"]), "lr": self.optimizer.param_groups[0]["lr"],
                        "ranks_identical": self.procs.identical(self.module)}
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def _finish_epoch(self) -> bool:
        """Validate the pending epoch (rank 0) and record it; False, leaving it pending, when a stop signal cut the
        validation short (a resumed run validates it first: the same weights give the same numbers)."""
        row, held, cut = self.pending, {}, False
        if self.procs.main:
            held = self._validate()
            cut = held is None
        if self.procs.any(cut):
            return False
        row.update(held)
        if self.procs.main:
            self._keep_if_best(row)
            log.info("epoch %d/%d: %s", row["epoch"], self.recipe.epochs, epoch_text(row))
        self.history.append(row)
        self.pending = None
        return True

    def _step(self, images: Any, labels: Any, positions: Any, search: bool) -> np.ndarray:
        cfg = self.cfg
        bad = labels < 0
        self.unreadable.update(positions[bad].tolist())
        seed = (cfg.seed * 1_000_003 + self.procs.rank) * 1_000_003 + self.step
        torch.manual_seed(seed)  # dropout and the like: the step is the random state (exact resume)
        x = images.to(self.device, non_blocking=True)
        y = labels.clamp(min=0).to(self.device, non_blocking=True)
        weight = (~bad).to(self.device, torch.float32)
        searched, greedy_s = self._show_views(x, y, positions.numpy(), search)
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
        return np.array([float(loss.detach()) * n, float(((logits.argmax(1) == y).float() * weight).sum()), n, greedy_s, searched])

    def _show_views(self, x: Any, y: Any, positions: np.ndarray, search: bool) -> tuple[int, float]:
        """Mask the batch ``x`` in place, each image with its view of this epoch; (images searched, seconds of greedy work)."""
        cfg, size = self.cfg, tuple(x.shape[-2:])
        if cfg.masks == "none":
            return 0, 0.0
        kinds, centres = plan_views(positions, epoch=self.epoch, seed=cfg.seed, mix=self.mix, windows=cfg.windows, image_size=size)
        searched, seconds = 0, 0.0
        if cfg.masks == "greedy":
            t0 = time.perf_counter()
            greedy = np.flatnonzero(kinds == GREEDY)
            searched = self._search(x, y, positions, kinds, search)
            if len(greedy):
                rows = torch.from_numpy(greedy).to(self.device)
                x[rows] = apply_mask_pairs(x[rows], torch.from_numpy(self.cache.lookup(positions[greedy])).to(self.device), self.keep)
            seconds = time.perf_counter() - t0
        shown = np.flatnonzero(kinds == RANDOM)
        if len(shown) and cfg.windows:
            rows = torch.from_numpy(shown).to(self.device)
            x[rows] = apply_windows(x[rows], self.mask_size, centres[shown])
        return searched, seconds

    def _search(self, x: Any, y: Any, positions: np.ndarray, kinds: np.ndarray, search: bool) -> int:
        """Search the greedy pairs this step needs on the unmasked images and share them with every rank (a collective
        under torchrun, on every rank at every step); the number of images this rank searched.

        A search epoch searches the images shown greedy in it or in the epochs that reuse its pairs (``greedy_every``);
        any other epoch only images whose pair is missing. Under torchrun the search sees rank 0's BatchNorm statistics,
        as DDP's next forward will: every rank and a resumed run search with the same model."""
        cfg = self.cfg
        if search:
            reused = range(self.epoch, min(self.epoch + cfg.greedy_every, self.recipe.epochs))
            want = np.zeros(len(positions), bool)
            for epoch in reused:
                want |= plan_views(positions, epoch=epoch, seed=cfg.seed, mix=self.mix, windows=0, image_size=tuple(x.shape[-2:]))[0] == GREEDY
        else:
            want = (kinds == GREEDY) & ~self.cache.holds(positions)
        self.procs.share_buffers(self.module)
        found = np.full((len(positions), 2), -1, np.int64)
        rows = np.flatnonzero(want)
        if len(rows):
            index = torch.from_numpy(rows).to(self.device)
            found[rows] = worst_two_masks(self.module, self._layout(x[index]), y[index], self.keep, autocast=self._autocast()).cpu().numpy()
        every_position = self.procs.gather(torch.from_numpy(positions)).numpy()
        every_pair = self.procs.gather(torch.from_numpy(found)).numpy()
        self.cache.store(every_position, every_pair)
        return len(rows)

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
    def _validate(self) -> dict[str, Any] | None:
        """Held-out numbers of the current weights (rank 0), or None when a stop signal cut them short."""
        if self.val_images is None:
            return {}
        loader = make_loader(self.val_images, None, max(self.per_rank_batch, 64), workers=self.cfg.workers,
                             pin_memory=self.device.type == "cuda")
        t0 = time.perf_counter()
        row = validate(self.module, loader, self.keep, certify_limit=self.cfg.val_certify, device=self.device, autocast=self._autocast(),
                       stop=self.stop)
        return None if row is None else {"val_" + k: v for k, v in row.items()} | {"val_seconds": round(time.perf_counter() - t0, 2)}

    def _keep_if_best(self, row: dict[str, Any]) -> None:
        """Best by held-out certified accuracy, ties (and runs that certify nothing) by clean accuracy; last without validation."""
        score = (row.get("val_certified_accuracy") or 0.0, row.get("val_clean_accuracy") or 0.0)
        best = (self.best.get("val_certified_accuracy") or 0.0, self.best.get("val_clean_accuracy") or 0.0)
        if not self.best or score > best or self.val_images is None:
            self.best = dict(row)
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.module.state_dict().items()})

    # ------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> None:
        """Checkpoint to ``path``: every rank takes part (its sums and unreadable images go in), rank 0 writes."""
        sums = self.procs.gather(torch.from_numpy(self.sums).unsqueeze(0))
        unreadable = self.procs.union(self.unreadable)
        if self.procs.main:
            tensors = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                       "scaler": self.scaler.state_dict() if self.scaler else None, "best_model": self.best_state,
                       "greedy_pairs": torch.from_numpy(self.cache.pairs), "epoch_sums": sums}
            meta = {"identity": self.identity, "config": asdict(self.cfg), "processes": self.procs.world, "epoch": self.epoch,
                    "batch_in_epoch": self.batch_in_epoch, "step": self.step, "history": self.history, "pending": self.pending,
                    "best": self.best, "unreadable": unreadable}
            training_state.save(path, tensors, meta)
        self.procs.barrier()

    def resume(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path`` (refused when it belongs to another run: training_state.load)."""
        state = training_state.load(path, self.identity, self.procs.world)
        meta = state["meta"]
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = meta["epoch"], meta["batch_in_epoch"], meta["step"]
        self.history, self.pending, self.best, self.best_state = meta["history"], meta["pending"], meta["best"], state["best_model"]
        self.cache.pairs = state["greedy_pairs"].numpy().copy()
        self.unreadable, self.sums = set(meta["unreadable"]), state["epoch_sums"][self.procs.rank].numpy().copy()
        log.info("resuming %s at epoch %d, step %d", path, self.epoch + 1, self.step)


def epoch_text(row: dict[str, Any]) -> str:
    """One epoch's row as the log line a person reads."""
    text = (f"loss {row['loss']:.4f}, train accuracy {row['train_accuracy']:.4f} ({row['seconds']:.0f} s"
            + (f", greedy search {row['greedy_search_seconds']:.0f} s for {row['greedy_searched_images']} images)"
               if row["greedy_searched_images"] else ")"))
    if "val_clean_accuracy" in row:
        text += f"; held out: clean {row['val_clean_accuracy']:.4f} of {row['val_images']}"
        if row["val_certified_images"]:
            text += (f", one-round agreement {row['val_one_round_agreement']:.4f}, certified {row['val_certified_accuracy']:.4f} "
                     f"of {row['val_certified_images']}")
        text += f" ({row['val_seconds']:.0f} s)"
    return text
