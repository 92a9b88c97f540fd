"""The fine-tuning recipes and the optimizer and learning-rate schedule each one trains with.

- ``paper``: the PatchCleanser authors' fine-tuning: SGD, momentum 0.9, batch 64, 10 epochs with the learning rate
  x0.1 once, after half of them (epoch 5 of 10: ``MultiStepLR`` at epochs // 2, as the reference's ``StepLR(step_size=5)``
  over 10 epochs), lr 0.01 for ResNets (give 0.001 for ViTs), no label smoothing.
- ``adamw``: AdamW, lr 2e-3, weight decay 1e-4, one-cycle schedule (15% warm-up), label smoothing 0.1, batch 128:
  what trained the Fashion-MNIST benchmark models (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..util.optional import require

torch = require("torch", "fine-tuning")


@dataclass(frozen=True)
class Recipe:
    optimizer: str  # "sgd" | "adamw"
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: str  # "step-half" (x0.1 once, after half the epochs) | "one-cycle"
    label_smoothing: float

    @property
    def decay_after(self) -> int:
        """The epoch after which "step-half" multiplies the learning rate by 0.1, once."""
        return max(1, self.epochs // 2)


RECIPES = {"paper": Recipe("sgd", 10, 0.01, 64, 0.0, "step-half", 0.0),
           "adamw": Recipe("adamw", 3, 2e-3, 128, 1e-4, "one-cycle", 0.1)}


def make_optimizer(module: Any, recipe: Recipe, steps_per_epoch: int) -> tuple[Any, Any]:
    """The recipe's optimizer and learning-rate schedule: stepped per epoch (step-half) or per step (one-cycle)."""
    params = [p for p in module.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "step-half":  # one decay: StepLR(epochs // 2) decays again at every multiple (twice in 5 epochs)
        return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[recipe.decay_after], gamma=0.1)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                          pct_start=0.15)
