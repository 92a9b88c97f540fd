"""Greedy (worst-case) masks: train each image under the two-mask view the model currently gets most wrong.

Random Cutout windows rarely hit the view that breaks a certificate; the certified-patch literature's answer
("MultiSizeGreedyCutout"; PatchDEMUX's ``generate_greedy_cutouts.py`` computes the same offline) is to search
for it. For each image: the one-mask view (of the deployed mask set's K) with the highest loss, then, given that
mask, the second mask whose two-mask view has the highest loss: 2K forward passes per image, batched, without
gradients, with the model in eval mode (BatchNorm's running statistics untouched). Only the mask set's own
windows are searched: those are the views certification checks.

The search is refreshed every ``greedy_every`` epochs; in between, each image's pair is reused from
:class:`GreedyCache`. Under torchrun every rank stores every rank's pairs as they are found (the trainer gathers them
each step), so the cache is the same on every rank and an epoch that reuses it finds each image's pair whichever
rank the sampler gives the image to; it is saved in checkpoints, so a resumed run uses the same pairs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from ..errors import InternalError
from ..util.optional import require

torch = require("torch", "greedy masks")

SEARCH_IMAGES = 1024
"""Masked images per forward pass of the search at most (small images: larger calls were slower on CPUs)."""
SEARCH_PIXELS = 1 << 23
"""...and at most this many pixels per call: 167 views at 224 x 224. Measured on Lite0: 1024 views per call peaked at
6.0 GB of RSS (the activations of the first layers); see benchmarks/RESULTS.md."""


def worst_two_masks(model: Any, images: Any, labels: Any, keep: Any, *, autocast: Any = None) -> Any:
    """(N, 2) int64 mask indices: per image the greedy worst first mask and the worst second given the first.

    ``keep`` is the (K, H, W) float tensor of the mask set (0 inside mask k's windows), on the images' device;
    ``autocast`` a context factory for mixed precision (None: full precision).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            first = _view_losses(model, images, labels, keep, None, autocast).argmax(1)
            second = _view_losses(model, images, labels, keep, first, autocast).argmax(1)
    finally:
        model.train(was_training)
    return torch.stack([first, second], 1)


def _view_losses(model: Any, images: Any, labels: Any, keep: Any, first: Any, autocast: Any) -> Any:
    """(N, K) cross-entropy of each image under each mask k (with ``first[i]`` applied too, when given), in chunks."""
    n, k = len(images), keep.shape[0]
    per_chunk = max(1, views_per_call(keep.shape[-2:]) // k)
    losses = torch.empty((n, k), device=images.device)
    for start in range(0, n, per_chunk):
        x = images[start : start + per_chunk]
        keeps = keep.unsqueeze(0) if first is None else keep[first[start : start + per_chunk]].unsqueeze(1) * keep.unsqueeze(0)
        views = (x.unsqueeze(1) * keeps.unsqueeze(2).to(x.dtype)).flatten(0, 1)
        target = labels[start : start + per_chunk].repeat_interleave(k)
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(views)
        losses[start : start + per_chunk] = torch.nn.functional.cross_entropy(logits.float(), target, reduction="none").view(-1, k)
    return losses


def views_per_call(size: tuple[int, int]) -> int:
    """Masked images one forward pass may take: ``SEARCH_IMAGES``, fewer for large images (``SEARCH_PIXELS``)."""
    return min(SEARCH_IMAGES, max(1, SEARCH_PIXELS // (size[0] * size[1])))


def apply_mask_pairs(images: Any, pairs: Any, keep: Any) -> Any:
    """``images`` (N, C, H, W) with each image's two masks of ``pairs`` (N, 2) applied, in place."""
    images.mul_((keep[pairs[:, 0]] * keep[pairs[:, 1]]).unsqueeze(1).to(images.dtype))
    return images


class GreedyCache:
    """Each training image's current worst pair (-1: not searched yet), by its position in the dataset."""

    def __init__(self, size: int) -> None:
        self.pairs = np.full((size, 2), -1, np.int16)

    def store(self, positions: np.ndarray, pairs: np.ndarray) -> None:
        """The (N, 2) ``pairs`` of ``positions``; rows of -1 (not searched) are left out."""
        found = pairs[:, 0] >= 0
        self.pairs[positions[found]] = pairs[found].astype(np.int16)

    def holds(self, positions: np.ndarray) -> np.ndarray:
        """Which of ``positions`` have a pair."""
        return self.pairs[positions, 0] >= 0

    def lookup(self, positions: np.ndarray) -> np.ndarray:
        """The (N, 2) int64 pairs of ``positions``, every one of which must have been searched."""
        found = self.pairs[positions]
        if (found < 0).any():
            raise InternalError(f"greedy pairs asked for before they were searched: positions {positions[found[:, 0] < 0][:5].tolist()}")
        return found.astype(np.int64)
