"""What each training image is shown: itself, random mask-sized windows, or its greedy worst two-mask view.

Double masking certifies an image only if the model labels it correctly with any two masks removed; models trained
on whole images rarely do. The paper's recipe is Cutout-style: each training image gets ``windows`` windows of the
mask set's size set to the value the defense uses (0 after normalization), each centred uniformly over the image and
clipped at the border, so partial windows at the edges, like the flush last masks, are seen too. Greedy views
(:mod:`.greedy_masks`) are the two masks of the deployed set the model currently gets most wrong.

Greedy views alone cost clean accuracy (issue 31: 1.36 points on Fashion-MNIST), so a greedy run mixes views: each
image of each epoch is shown unmasked, random-masked or greedy-masked with the fractions of :class:`ViewMix`
(``DEFAULT_GREEDY_MIX``, measured in benchmarks/RESULTS.md). Every draw (which view, where the windows go) is seeded by
(seed, epoch, dataset position) alone, never by the rank, batch or step: an image is shown the same view whichever
process, batch or loader worker meets it, so N torchrun processes show what one process shows with the same global
batch, and a resumed run what an uninterrupted one showed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..util.optional import require

torch = require("torch", "masked training")

UNMASKED, RANDOM, GREEDY = 0, 1, 2


@dataclass(frozen=True)
class ViewMix:
    """Fractions of images shown unmasked, with random windows, and with their greedy worst pair (summing to 1)."""

    unmasked: float
    random: float
    greedy: float

    def __post_init__(self) -> None:
        parts = (self.unmasked, self.random, self.greedy)
        if min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
            raise ConfigError(f"--greedy-mix {self.text}: give three fractions >= 0 that sum to 1 "
                              "(unmasked, random, greedy; e.g. 0.25,0.25,0.5)")

    @classmethod
    def parse(cls, text: str) -> "ViewMix":
        try:
            parts = [float(part) for part in text.split(",")]
        except ValueError:
            parts = []
        if len(parts) != 3:
            raise ConfigError(f"--greedy-mix {text!r}: give three fractions, unmasked,random,greedy (e.g. 0.25,0.25,0.5)")
        return cls(*parts)

    @property
    def text(self) -> str:
        return f"{self.unmasked:g},{self.random:g},{self.greedy:g}"


DEFAULT_GREEDY_MIX = ViewMix(0.25, 0.25, 0.5)
"""The views of a ``--masks greedy`` run unless ``--greedy-mix`` says otherwise (benchmarks/RESULTS.md, issue 38)."""


def plan_views(positions: np.ndarray, *, epoch: int, seed: int, mix: ViewMix, windows: int,
               image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per image of ``positions``: its view (UNMASKED, RANDOM or GREEDY) and the (windows, 2) centres of its random
    windows, drawn from a generator seeded by (seed, epoch, position) alone (see the module docstring)."""
    h, w = image_size
    kinds = np.empty(len(positions), np.int64)
    centres = np.empty((len(positions), windows, 2), np.int64)
    bounds = np.cumsum([mix.unmasked, mix.random])
    for i, position in enumerate(np.asarray(positions, np.int64).tolist()):
        generator = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + position) % (1 << 63))
        kinds[i] = int(np.searchsorted(bounds, float(torch.rand(1, generator=generator)), side="right"))
        centres[i] = random_centres(1, (h, w), windows, generator)[0].numpy()
    return kinds, centres


def random_centres(count: int, image_size: tuple[int, int], windows: int, generator: Any) -> Any:
    """(count, windows, 2) window centres (row, column), uniform over the image, drawn on the CPU ``generator``."""
    h, w = image_size
    rows = torch.randint(0, h, (count, windows), generator=generator)
    cols = torch.randint(0, w, (count, windows), generator=generator)
    return torch.stack([rows, cols], 2)


def apply_windows(batch: Any, mask_size: tuple[int, int], centres: Any) -> Any:
    """Zero, in place, the windows of ``mask_size`` centred at ``centres`` ((N, windows, 2), clipped at the border) in each
    image of the (N, C, H, W) ``batch``; returns it."""
    n, _, h, w = batch.shape
    mh, mw = mask_size
    device = batch.device
    centres = torch.as_tensor(centres, device=device).view(n, -1, 2)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    keep = torch.ones((n, h, w), dtype=torch.bool, device=device)
    for k in range(centres.shape[1]):
        y0 = (centres[:, k, 0] - mh // 2).view(n, 1, 1)
        x0 = (centres[:, k, 1] - mw // 2).view(n, 1, 1)
        keep &= ~((rows >= y0) & (rows < y0 + mh) & (cols >= x0) & (cols < x0 + mw))
    batch.mul_(keep.unsqueeze(1).to(batch.dtype))
    return batch
