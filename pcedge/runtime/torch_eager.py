"""PyTorch eager: the original research code's way, kept as the reference and the benchmark baseline.

``original_double_masking`` reproduces PatchCleanser's reference loop: one forward pass per mask with
``torch.where`` on the normalized image, then the second round one two-mask image at a time. It is
never the default; ``TorchEngine`` lets the pcedge driver run a torch module for comparisons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from ..masks import MaskSet
from .base import Engine, InputMetadata


class TorchEngine(Engine):
    """A torch ``nn.Module`` behind the engine protocol (host buffer; the model may live on CUDA)."""

    backend = "torch"

    def __init__(self, module: Any, input_size: tuple[int, int], *, max_batch: int = 36, device: str = "cpu", name: str | None = None) -> None:
        super().__init__(name)
        self.module = module
        self.torch_device = device
        self._meta = InputMetadata("images", (3, *input_size), np.dtype(np.float32), int(max_batch))
        self._host: np.ndarray | None = None

    @property
    def input_metadata(self) -> InputMetadata:
        return self._meta

    def _activate(self) -> None:
        torch = require("torch", "the torch backend")
        self._torch = torch
        self.module = self.module.eval().to(self.torch_device)
        self._host = np.zeros((self._meta.max_batch, *self._meta.shape), np.float32)

    def _deactivate(self) -> None:
        self._host = None

    def _buffer(self) -> np.ndarray:
        return self._host

    def _infer(self, n: int) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(self._host[:n]).to(self.torch_device))
            return logits.argmax(1).cpu().numpy()


def original_double_masking(model: Any, image: Any, mask_set: MaskSet) -> tuple[int, int]:
    """The reference implementation's double masking for one normalized (3, H, W) torch image.

    Returns (label, forward passes). First round: one forward per mask (batch 1, ``torch.where``);
    second round: for each disagreer mask, one forward per two-mask image until one disagrees.
    """
    torch = require("torch", "the original PyTorch baseline")
    keep = torch.from_numpy(mask_set.keep_masks()).to(image.device)[:, None]  # (K, 1, H, W)
    zero = torch.tensor(0.0, device=image.device)
    data = image[None]
    passes = 0
    with torch.inference_mode():
        one_mask = []
        for mask in keep:
            one_mask.append(int(model(torch.where(mask, data, zero)).argmax(1).item()))
            passes += 1
        pred_one_mask = np.array(one_mask)
        pred, cnt = np.unique(pred_one_mask, return_counts=True)
        if len(pred) == 1:
            return int(pred[0]), passes
        sorted_idx = np.argsort(cnt, kind="stable")
        majority_pred = pred[sorted_idx][-1]
        for i in np.flatnonzero(pred_one_mask != majority_pred):
            dis = pred_one_mask[i]
            passed = True
            for mask2 in keep:
                passes += 1
                if int(model(torch.where(torch.logical_and(keep[i], mask2), data, zero)).argmax(1).item()) != dis:
                    passed = False
                    break
            if passed:
                return int(dis), passes
        return int(majority_pred), passes
