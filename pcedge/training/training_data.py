"""Training images as a stream: read, augmented and preprocessed per item, so memory does not grow with the dataset.

The old path preprocessed every image into one float32 array before the first step (ImageNet's 1.28 M images
would be about 770 GB). Here a torch ``Dataset`` over pcedge's dataset loaders (class folders, IDX, .npz) reads
one image when the ``DataLoader`` asks for it, in its worker processes, and writes it with the runtime's own
writer (the pixels the deployed model sees). Train-time augmentation, when on, happens on the decoded frame
before the writer: a random resized crop (area 25-100%, aspect 3/4-4/3) and a horizontal flip, drawn from a
generator seeded by (seed, epoch, position), so an item is the same whichever worker reads it and a resumed
run sees the images an uninterrupted one would have.

An image that cannot be decoded yields label -1; the trainer drops it from its batch and counts and lists it
(:attr:`Dataset.unreadable` lives in the worker that met it, so the trainer keeps its own list).
The sampler is pcedge's own (:class:`EpochSampler`): a seeded permutation per epoch, split between
distributed ranks as ``DistributedSampler`` splits it, that can start part-way through an epoch (exact resume).
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any, Iterator

import numpy as np

from ..errors import ConfigError
from ..evaluation.datasets import Dataset, selection_sha256
from ..preprocess import PreprocessSpec
from ..runtime.kernels import write_frame
from ..util.optional import require

torch = require("torch", "fine-tuning")

UNREADABLE = -1
CROP_AREA, CROP_ASPECT = (0.25, 1.0), (3 / 4, 4 / 3)


class TrainingImages(torch.utils.data.Dataset):
    """Item ``i``: (float32 (3, H, W) image, label, dataset position) of ``positions[i]``; label -1 when unreadable."""

    def __init__(self, dataset: Dataset, spec: PreprocessSpec, positions: np.ndarray, *, augment: bool = False, seed: int = 0) -> None:
        self.dataset, self.spec, self.positions = dataset, spec, np.asarray(positions, np.int64)
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self) -> int:
        return len(self.positions)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation draws differ per epoch (set before the epoch's loader iterator starts its workers)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        position = int(self.positions[index])
        frame = self.dataset.load(position)
        out = np.empty((1, 3, *self.spec.input_size), np.float32)
        if frame is None:
            out.fill(0)
            return torch.from_numpy(out[0]), UNREADABLE, position
        if self.augment:
            frame = random_resized_crop_and_flip(frame, np.random.default_rng((self.seed, self.epoch, position)))
        write_frame(np.ascontiguousarray(frame), self.spec, out)
        return torch.from_numpy(out[0]), self.dataset.item(position)[0], position


def random_resized_crop_and_flip(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (``CROP_AREA`` of the frame, aspect ``CROP_ASPECT``), flipped left-right half the time; the writer
    then resizes it to the model's input as it resizes every frame (torchvision's RandomResizedCrop, on the raw frame)."""
    h, w = frame.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*CROP_AREA)
        aspect = math.exp(rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
        ch, cw = int(round(math.sqrt(area / aspect))), int(round(math.sqrt(area * aspect)))
        if 0 < ch <= h and 0 < cw <= w:
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            frame = frame[y : y + ch, x : x + cw]
            break
    return frame[:, ::-1] if rng.random() < 0.5 else frame


class EpochSampler(torch.utils.data.Sampler):
    """Indices of one epoch for one rank: a permutation seeded by (seed, epoch), padded to a multiple of ``world``
    by repeating it from the start, and dealt round-robin (as ``DistributedSampler``), from item ``start`` on (resume)."""

    def __init__(self, size: int, *, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True) -> None:
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def per_rank(self) -> int:
        return math.ceil(self.size / self.world)

    def __len__(self) -> int:
        return self.per_rank() - self.start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        padding = self.per_rank() * self.world - self.size
        order += (order * math.ceil(padding / self.size))[:padding] if padding else []
        return iter(order[self.rank :: self.world][self.start :])


def default_workers(dataset: Dataset) -> int:
    """Loader processes: none for datasets held in memory (IDX, .npz: nothing to decode), else half the CPUs (at most 8)."""
    if dataset.in_memory:
        return 0
    return min(8, max(1, (os.cpu_count() or 2) // 2))


def make_loader(images: torch.utils.data.Dataset, sampler: EpochSampler | None, batch_size: int, *, workers: int,
                pin_memory: bool) -> torch.utils.data.DataLoader:
    """Batches of (images, labels, positions); ``persistent_workers`` off so that each epoch's workers see its epoch."""
    return torch.utils.data.DataLoader(images, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       pin_memory=pin_memory, drop_last=False, worker_init_fn=ignore_stop_signals if workers else None,
                                       prefetch_factor=4 if workers else None)


def ignore_stop_signals(_worker: int) -> None:
    """In a loader worker: the training process decides when to stop. Slurm signals every process of a job and a
    terminal's Ctrl-C reaches the whole process group; a worker killed by it would fail the step that was to finish."""
    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def split_held_out(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of ``count`` items: a seeded ``fraction`` held out for validation, both sorted."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {fraction}")
    held = np.sort(np.random.default_rng(seed).permutation(count)[: int(round(count * fraction))])
    return np.setdiff1d(np.arange(count), held), held


def data_identity(train: Dataset, train_positions: np.ndarray, validation: Dataset | None, val_positions: np.ndarray) -> dict[str, Any]:
    """What a run trains and validates on (the datasets and a hash of each selection), as its checkpoints record it."""
    return {"train": train.identity, "train_positions": selection_sha256(train_positions),
            "validation": validation.identity if validation is not None else None, "validation_positions": selection_sha256(val_positions)}
