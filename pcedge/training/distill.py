"""Masked self-distillation without labels: teach a classifier masks on footage its camera will see.

The paper's remedy for a model that is unstable under masks is training with masks, which needs labels.
Here the original model, frozen, is the teacher: on each unlabelled frame the student (initialised from it)
is trained so that its output on a one- or two-mask version of the frame matches the teacher's output on
the *unmasked* frame, and its output on the unmasked frame matches it too. Each view's loss is the
temperature-scaled KL divergence to the teacher (T = 2 by default: the teacher's soft ranking carries more
than its argmax) plus ``pseudo_label_weight`` times the cross-entropy with its top-1 label. Soft KL alone
teaches the student to be as unsure as the teacher, so that one mask still tips the argmax (measured: KL
alone lost teacher agreement within 20-60 steps while mask agreement barely moved); the pseudo-label builds
a margin for the teacher's own answer, the label the defense should keep. On a frame where the teacher is
guessing, that margin is for a guess: the student settles on one class for a whole scene ("pole" for a
street). ``pseudo_label_confidence`` gates the hard label FixMatch-style; measured on Lite0 (RESULTS.md),
gating at 0.5 did not lower the uncertain rate on unseen scenes and learned the camera's own scenes far
less, so the default keeps every pseudo-label.
The unmasked view is weighted ``unmasked_weight``: it anchors the student to the teacher so that its clean
labels, which no label-free loss can improve, do not drift. Half the masked views use the runtime's own
masks (the mask set's windows: one-mask and two-mask images exactly as the defense builds them), the others
random positions of the same size (Cutout-style, clipped at the border), plus flips and brightness/contrast
jitter. BatchNorm statistics stay frozen (small CPU batches would corrupt them).

Held-out frames (the *later* part of each source: the "same camera, next week" case) are validated every
``validate_every`` steps: teacher agreement on unmasked frames and mask agreement (all K one-mask labels
equal, the frames the defense answers in one round). The best student by mask agreement is kept; training
stops at the step or time cap, after ``patience`` validations without improvement, or when teacher agreement
falls below ``min_teacher_agreement`` (divergence: the best checkpoint is kept and the report says so). The
guard counts the held-out frames where the teacher is confident (top-1 probability >= ``confident_probability``;
all frames when fewer than MIN_CONFIDENT_FRAMES are): on a street scene the teacher's top-1 is often 0.1-0.2
and flickers between two classes from frame to frame, and a student that settles on one of them for the
whole scene has lost nothing the teacher knew (measured: such frames were most of the "disagreements" that
stopped early runs, while every confident answer was kept). Both agreements are recorded.
Optionally labelled images are mixed in with cross-entropy on their masked views (the labelled recipe).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError
from ..masks import MaskSet
from ..preprocess import PreprocessSpec
from ..runtime.kernels import write_frame
from ..util.optional import require
from ..util.progress import progress as progress_bar
from .training_state import weights_sha256
from .views import apply_windows, random_centres

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "pcedge.distill/2"
MIN_VALIDATION_FRAMES = 8
MIN_TRAINING_FRAMES = 16
MIN_CONFIDENT_FRAMES = 8  # fewer held-out frames with a confident teacher: the guard counts all frames


@dataclass(frozen=True)
class DistillConfig:
    max_steps: int = 2000
    max_minutes: float = 60.0
    batch_size: int = 24  # frames per step; each gives a masked and an unmasked view
    lr: float = 5e-5  # Lite0, KL only: 1e-4 fell below the guard by step 60 (benchmarks/RESULTS.md)
    weight_decay: float = 1e-5
    temperature: float = 2.0
    unmasked_weight: float = 1.0
    pseudo_label_weight: float = 1.0  # cross-entropy with the teacher's top-1 label: the margin soft KL alone does not build
    pseudo_label_confidence: float = 0.0  # only teacher answers at least this probable are hard labels (0: all; measured both)
    grid_fraction: float = 0.5  # masked views with the runtime's own masks (the rest: random positions)
    two_mask_fraction: float = 0.5  # of masked views, those with two masks (the second round's images)
    validate_every: int = 100
    patience: int = 4
    min_teacher_agreement: float = 0.9
    confident_probability: float = 0.5  # the divergence guard counts held-out frames where the teacher is at least this sure
    validation_fraction: float = 0.15
    max_validation_frames: int = 48  # for mask agreement, evenly spaced over the held-out frames: each costs K forwards
    labelled_weight: float = 1.0
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if min(self.max_steps, self.batch_size, self.validate_every, self.patience) < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ConfigError("max_steps, batch_size, validate_every, patience >= 1 and lr, temperature > 0 are required")
        if not 0 < self.validation_fraction < 1 or not 0 <= self.grid_fraction <= 1 or not 0 <= self.two_mask_fraction <= 1:
            raise ConfigError("validation_fraction must be in (0, 1); grid_fraction and two_mask_fraction in [0, 1]")


@dataclass
class Footage:
    """Preprocessed frames: training (the earlier part of each source) and held-out validation (the later part)."""

    train: np.ndarray  # (N, 3, H, W) float32, the runtime's preprocessing
    validation: np.ndarray
    sources: list[dict[str, Any]] = field(default_factory=list)  # per source: uri, frames read, train, validation


def read_footage(sources: Sequence[str], spec: PreprocessSpec, *, max_frames: int = 600, every: int = 1,
                 validation_fraction: float = 0.15, progress: bool = True) -> Footage:
    """Frames of any sources ``pcedge run`` accepts (files, folders, globs, cameras, streams), every ``every``-th,
    at most ``max_frames`` per source, preprocessed by the runtime's writer; each source's last
    ``validation_fraction`` held out. Too few frames for the split is an error with the counts."""
    from ..video.sources import SourceOptions, open_source

    if every < 1 or max_frames < 1:
        raise ConfigError("every and max_frames must be >= 1")
    train, held, report = [], [], []
    h, w = spec.input_size
    for uri in sources:
        frames = []
        with open_source(uri, SourceOptions()) as source:
            bar = progress_bar(total=max_frames, desc=f"reading {Path(str(uri)).name}", unit="frame", enabled=progress)
            for n, frame in enumerate(source):
                if n % every:
                    continue
                out = np.empty((1, 3, h, w), np.float32)
                write_frame(frame.image, spec, out)
                frames.append(out[0])
                bar.update(1)
                if len(frames) >= max_frames:
                    break
            bar.close()
        cut = len(frames) - max(1, int(round(len(frames) * validation_fraction)))
        report.append({"source": str(uri), "frames": len(frames), "train": cut, "validation": len(frames) - cut})
        train += frames[:cut]
        held += frames[cut:]
    if len(held) < MIN_VALIDATION_FRAMES or len(train) < MIN_TRAINING_FRAMES:
        counts = ", ".join(f"{r['source']}: {r['frames']} frames" for r in report)
        raise DatasetError(f"{len(train) + len(held)} frames ({counts}) give {len(train)} for training and {len(held)} held out at "
                           f"--val-fraction {validation_fraction}; need at least {MIN_TRAINING_FRAMES} and {MIN_VALIDATION_FRAMES}: "
                           "add footage, raise --max-frames, or lower --every")
    return Footage(np.stack(train), np.stack(held), report)


@dataclass
class DistillResult:
    history: list[dict[str, float]]  # one row per validation
    best: dict[str, float]
    stopped: str  # why training ended
    steps: int
    teacher_sha256: str
    seconds: float


class Distiller:
    """Trains ``student`` in place from a frozen copy of itself (see the module docstring)."""

    def __init__(self, student: Any, mask_set: MaskSet, config: DistillConfig) -> None:
        self.torch = require("torch", "label-free fine-tuning")
        self.student, self.mask_set, self.config = student, mask_set, config
        self.teacher = copy.deepcopy(student).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_sha256 = weights_sha256(self.teacher)
        self.keep = self.torch.from_numpy(mask_set.keep_masks().astype(np.float32))  # (K, H, W): 0 inside mask k's windows
        self.generator = self.torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.optimizer = self.torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=config.lr,
                                                weight_decay=config.weight_decay)
        self.step, self.history, self.best, self.best_state = 0, [], {"mask_agreement": -1.0}, None

    # ------------------------------------------------------------------------------- training
    def fit(self, footage: Footage, *, labelled: tuple[np.ndarray, np.ndarray] | None = None, checkpoint: str | Path | None = None,
            progress: bool = True) -> DistillResult:
        torch, cfg = self.torch, self.config
        threads_before = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        start, stopped, stale = time.monotonic(), "step cap", 0
        images = torch.from_numpy(footage.train)
        held = footage.validation
        if not self.history:
            self._validate(held, time.monotonic() - start)
        bar = progress_bar(total=cfg.max_steps, desc="distilling", unit="step", enabled=progress)
        bar.update(self.step)  # a resumed run starts where it stopped
        try:
            while self.step < cfg.max_steps:
                if time.monotonic() - start > cfg.max_minutes * 60:
                    stopped = f"time cap ({cfg.max_minutes:g} min)"
                    break
                loss = self._train_step(images, labelled)
                self.step += 1
                bar.update(1)
                bar.set_postfix_str(f"loss {loss:.4f}, best mask agreement {self.best['mask_agreement']:.3f}", refresh=False)
                if self.step % cfg.validate_every and self.step < cfg.max_steps:
                    continue
                row = self._validate(held, time.monotonic() - start)
                if checkpoint:
                    self.save(checkpoint)
                if guarded_agreement(row) < cfg.min_teacher_agreement:
                    stopped = (f"diverged: teacher agreement {guarded_agreement(row):.3f} < {cfg.min_teacher_agreement} on "
                               f"{_guarded_frames(row)} at step {self.step}; the best checkpoint (step {self.best.get('step', 0)}) is kept")
                    log.warning("%s", stopped)
                    break
                stale = 0 if row["step"] == self.best.get("step") else stale + 1
                if stale >= cfg.patience:
                    stopped = f"early stop: no better mask agreement in {cfg.patience} validations"
                    break
        finally:
            bar.close()
            torch.set_num_threads(threads_before)
        if self.best_state is not None:
            self.student.load_state_dict(self.best_state)
        self.student.eval()
        return DistillResult(self.history, self.best, stopped, self.step, self.teacher_sha256, time.monotonic() - start)

    def _train_step(self, images: Any, labelled: tuple[np.ndarray, np.ndarray] | None) -> float:
        torch, cfg = self.torch, self.config
        self.student.train()
        _freeze_batchnorm(self.student)
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=self.generator)
        clean = self._augment(images[idx].clone())
        with torch.no_grad():
            teacher_logits = self.teacher(clean)
        target = torch.log_softmax(teacher_logits / cfg.temperature, dim=1).repeat(2, 1)
        confidence, pseudo = teacher_logits.softmax(1).max(1)
        pseudo, sure = pseudo.repeat(2), (confidence >= cfg.pseudo_label_confidence).float().repeat(2)
        masked = self._mask(clean.clone())
        logits = self.student(torch.cat([masked, clean]))
        student = torch.log_softmax(logits / cfg.temperature, dim=1)
        per_view = (torch.nn.functional.kl_div(student, target, log_target=True, reduction="none").sum(1) * cfg.temperature ** 2
                    + cfg.pseudo_label_weight * sure * torch.nn.functional.cross_entropy(logits, pseudo, reduction="none"))
        n = cfg.batch_size
        loss = per_view[:n].mean() + cfg.unmasked_weight * per_view[n:].mean()
        if labelled is not None:
            x, y = labelled
            pick = self.rng.integers(0, len(x), size=max(1, n // 2))
            lx = self._mask(torch.from_numpy(x[pick]).clone())
            loss = loss + cfg.labelled_weight * torch.nn.functional.cross_entropy(self.student(lx), torch.from_numpy(y[pick]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def _augment(self, x: Any) -> Any:
        """Flips and brightness/contrast jitter, on the normalized images (teacher and student see the same view)."""
        torch = self.torch
        flip = torch.rand(len(x), generator=self.generator) < 0.5
        x[flip] = torch.flip(x[flip], dims=[3])
        gain = 1 + (torch.rand(len(x), 1, 1, 1, generator=self.generator) - 0.5) * 0.4
        shift = (torch.rand(len(x), 1, 1, 1, generator=self.generator) - 0.5) * 0.4
        return x * gain + shift

    def _mask(self, x: Any) -> Any:
        """One- or two-mask views: the runtime's own windows for a ``grid_fraction`` of them, random positions otherwise."""
        cfg = self.config
        n = len(x)
        grid = self.rng.random(n) < cfg.grid_fraction
        two = self.rng.random(n) < cfg.two_mask_fraction
        k = len(self.mask_set)
        for i in np.flatnonzero(grid):
            for m in self.rng.choice(k, size=2 if two[i] else 1, replace=False):
                x[i] *= self.keep[m]
        size = tuple(self.mask_set.mask_size)
        for windows in (1, 2):
            rows = np.flatnonzero(~grid & (two == (windows == 2)))
            if len(rows):
                x[rows] = apply_windows(x[rows], size, random_centres(len(rows), x.shape[-2:], windows, self.generator))
        return x

    # ------------------------------------------------------------------------------- validation
    def _validate(self, held: np.ndarray, elapsed_s: float) -> dict[str, Any]:
        """Teacher agreement (unmasked: one forward per frame, so on every held-out frame) and mask agreement (all K
        one-mask labels equal: K forwards per frame, so on at most ``max_validation_frames`` evenly spaced ones)."""
        torch, cfg = self.torch, self.config
        self.student.eval()
        with torch.inference_mode():
            teacher, student = [], []
            for i in range(0, len(held), 32):
                x = torch.from_numpy(held[i:i + 32])
                teacher.append(self.teacher(x).softmax(1))
                student.append(self.student(x).argmax(1))
            probabilities, labels = torch.cat(teacher), torch.cat(student)
            confidence, answers = probabilities.max(1)
            agree, sure = labels == answers, confidence >= cfg.confident_probability
            masked = np.linspace(0, len(held) - 1, min(len(held), cfg.max_validation_frames)).round().astype(int)
            agree_masks = 0
            for i in masked:
                one_mask = self.student(torch.from_numpy(held[i])[None] * self.keep[:, None]).argmax(1)
                agree_masks += int((one_mask == one_mask[0]).all())
        confident = int(sure.sum())
        row = {"step": self.step, "mask_agreement": agree_masks / len(masked), "mask_frames": len(masked),
               "teacher_agreement": float(agree.float().mean()), "confident_frames": confident,
               "confident_teacher_agreement": float(agree[sure].float().mean()) if confident else None,
               "frames": len(held), "minutes": round(elapsed_s / 60, 2)}
        self.history.append(row)
        if row["mask_agreement"] > self.best["mask_agreement"] and guarded_agreement(row) >= self.config.min_teacher_agreement:
            self.best = dict(row)
            self.best_state = copy.deepcopy(self.student.state_dict())
        log.info("step %d: mask agreement %.3f on %d held-out frames, teacher agreement %.3f (%s)", self.step, row["mask_agreement"],
                 len(masked), guarded_agreement(row), _guarded_frames(row))
        return row

    # ------------------------------------------------------------------------------- checkpoints
    def save(self, path: str | Path) -> None:
        """Everything ``resume`` needs, as tensors plus JSON (read back without pickle), written atomically (a killed run
        keeps its last complete checkpoint)."""
        from ..util.files import writing

        meta = {"step": self.step, "history": self.history, "best": self.best, "teacher_sha256": self.teacher_sha256,
                "config": asdict(self.config), "rng": self.rng.bit_generator.state}
        state = {"format": CHECKPOINT_FORMAT, "meta": json.dumps(meta), "student": self.student.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "best_state": self.best_state, "generator": self.generator.get_state()}
        with writing(path, durable=True) as tmp:
            self.torch.save(state, str(tmp))

    def resume(self, path: str | Path) -> None:
        from ..util.torch_files import load_data_only

        state = load_data_only(path, what=f"--resume {path}")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"--resume {path}: not a pcedge --unlabeled checkpoint of this version (a --data one, weights only, "
                              "or one written before checkpoints became tensors + JSON?)")
        meta = json.loads(state["meta"])
        if meta["teacher_sha256"] != self.teacher_sha256:
            raise ConfigError(f"{path} was trained from another teacher (weights {meta['teacher_sha256'][:12]}, this model "
                              f"{self.teacher_sha256[:12]}): start it from the same --model/--checkpoint")
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.history, self.best, self.best_state = meta["step"], meta["history"], meta["best"], state["best_state"]
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = meta["rng"]
        log.info("resumed %s at step %d (best mask agreement %.3f)", path, self.step, self.best["mask_agreement"])


def guarded_agreement(row: dict[str, Any]) -> float:
    """The teacher agreement the divergence guard and the best-checkpoint choice use (see the module docstring)."""
    if row["confident_frames"] >= MIN_CONFIDENT_FRAMES:
        return row["confident_teacher_agreement"]
    return row["teacher_agreement"]


def _guarded_frames(row: dict[str, Any]) -> str:
    if row["confident_frames"] >= MIN_CONFIDENT_FRAMES:
        return f"the {row['confident_frames']} held-out frames where the teacher is confident"
    return f"all {row['frames']} held-out frames (only {row['confident_frames']} with a confident teacher)"


def _freeze_batchnorm(module: Any) -> None:
    torch = require("torch")
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
