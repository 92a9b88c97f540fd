"""Training on a small set held in memory (tests, benchmarks), and its helpers: preprocessing a dataset into one array
with the runtime's own writer, and plain accuracy.

The training itself is :class:`pcedge.training.trainer.Trainer` (what ``pcedge finetune --data`` runs, streaming its
data); here it runs in this process over a ``TensorDataset``, without validation. Images are preprocessed by the
runtime's C++ writer (not torchvision), so training sees exactly the pixels the deployed model will see. Needs torch
(the ``[export]`` extra).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..evaluation.datasets import Dataset
from ..preprocess import PreprocessSpec
from ..runtime.kernels import write_frame
from ..util.optional import require
from ..util.progress import progress as progress_bar

log = logging.getLogger(__name__)


def preprocess_dataset(dataset: Dataset, spec: PreprocessSpec, positions: np.ndarray | None = None,
                       progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, H, W) float32 normalized images and (N,) labels, written by the runtime's C++ writer."""
    positions = np.arange(len(dataset)) if positions is None else positions
    h, w = spec.input_size
    images = np.empty((len(positions), 3, h, w), np.float32)
    labels = np.empty(len(positions), np.int64)
    kept = 0
    for p in progress_bar(positions, desc="preprocessing", unit="image", enabled=progress):
        frame = dataset.load(int(p))
        if frame is None:
            continue
        write_frame(frame, spec, images[kept : kept + 1])
        labels[kept] = dataset.item(int(p))[0]
        kept += 1
    if kept == 0:
        raise DatasetError(f"{dataset.name}: no readable images to train on")
    return images[:kept], labels[:kept]


def train_in_memory(module: Any, mask_set: Any, images: np.ndarray, labels: np.ndarray, config: Any, *,
                    progress: bool = True) -> Any:
    """Train ``module`` in place on preprocessed ``images`` held in memory (tests, benchmarks: small sets already written by
    :func:`preprocess_dataset`), in this process on ``config.device``, without validation; returns the TrainResult."""
    torch = require("torch", "fine-tuning")
    from .distributed import Processes, parse_device
    from .trainer import Trainer

    items = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels), torch.arange(len(labels)))
    identity = {"data": f"{len(labels)} images in memory"}
    trainer = Trainer(module, mask_set, config, items, None, Processes(device=parse_device(config.device)), identity=identity,
                      cache_size=len(labels))
    return trainer.fit(progress=progress)


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, batch_size: int = 512) -> float:
    """Plain accuracy of the PyTorch model on preprocessed images (a sanity figure beside certification)."""
    torch = require("torch", "evaluation")
    model.eval()
    correct = 0
    with torch.inference_mode():
        for offset in range(0, len(images), batch_size):
            logits = model(torch.from_numpy(images[offset : offset + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[offset : offset + batch_size]).sum())
    return correct / len(images)
