"""PyTorch eager: the original research code's way, kept as the reference and the benchmark baseline.

``original_double_masking`` reproduces PatchCleanser's reference loop: one forward pass per mask with
``torch.where`` on the normalized image, then the second round one two-mask image at a time. It is
never the default; ``TorchEngine`` lets the pcedge driver run a torch module for comparisons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..masks import MaskSet
from ..util.optional import require
from .base import Engine, InputMetadata


class TorchEngine(Engine):
    """A torch ``nn.Module`` behind the engine protocol.

    On "cpu" the input buffer is a numpy array; on "cuda" it is a CUDA tensor that the CUDA writer
    fills in place (torch tensors expose ``__cuda_array_interface__``), so frames go host -> GPU once.
    """

    backend = "torch"

    def __init__(self, module: Any, input_size: tuple[int, int], *, max_batch: int = 36, device: str = "cpu", name: str | None = None) -> None:
        super().__init__(name)
        self.module = module
        self.torch_device = device
        self.device = "cuda" if str(device).startswith("cuda") else "cpu"
        self._meta = InputMetadata("images", (3, *input_size), np.dtype(np.float32), int(max_batch))
        self._input = None

    @property
    def input_metadata(self) -> InputMetadata:
        return self._meta

    def _activate(self) -> None:
        torch = require("torch", "the torch backend")
        self._torch = torch
        self.module = self.module.eval().to(self.torch_device)
        shape = (self._meta.max_batch, *self._meta.shape)
        if self.device == "cuda":
            self._input = torch.zeros(shape, dtype=torch.float32, device=self.torch_device)
        else:
            self._input = torch.from_numpy(np.zeros(shape, np.float32))

    def _deactivate(self) -> None:
        self._input = None

    @property
    def stream(self) -> int:
        """Torch's current stream on the device: where the CUDA writer launches, so writes and the forward stay ordered."""
        if self.device != "cuda" or not self.is_active:
            return 0
        return int(self._torch.cuda.current_stream(self.torch_device).cuda_stream)

    def _buffer(self) -> Any:
        return self._input if self.device == "cuda" else self._input.numpy()

    def _infer(self, n: int) -> np.ndarray:
        with self._torch.inference_mode():
            return self.module(self._input[:n]).argmax(1).cpu().numpy()


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
