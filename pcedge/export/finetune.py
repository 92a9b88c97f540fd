"""Fine-tune a classifier with masks, as PatchCleanser's paper does, so masked images stay classifiable.

Double masking certifies an image only if the model labels it correctly with any two masks removed;
models trained on whole images rarely do. The paper's recipe is Cutout-style augmentation: each
training image gets random windows of the mask set's size set to the value the defense uses (0 after
normalization). Here each image gets ``windows`` such windows (2 by default: the two-mask images of the
second round), each placed Cutout-style (centre uniform over the image, clipped at the border), so
partial windows at the edges, like the flush last masks, are seen too.

Images are preprocessed by the runtime's own writer (not torchvision), so training sees exactly the
pixels the deployed model will see. Needs torch (the ``[export]`` extra).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetError
from ..evaluation.datasets import Dataset
from ..preprocess import PreprocessSpec
from ..runtime.kernels import write_frame
from ..util.optional import require
from ..util.progress import progress as progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    seed: int = 0
    mask_size: tuple[int, int] | None = None  # None: plain training (no masks)
    windows: int = 2  # masks per training image (the paper's two-mask images)
    threads: int = 0  # torch CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.windows < 0:
            raise ConfigError("epochs, batch_size >= 1, lr > 0 and windows >= 0 are required")


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


def apply_random_masks(batch: Any, mask_size: tuple[int, int], windows: int, generator: Any) -> Any:
    """Zero ``windows`` Cutout-style windows of ``mask_size`` per image of a (N, C, H, W) tensor, in place."""
    torch = require("torch", "masked fine-tuning")
    n, _, h, w = batch.shape
    mh, mw = mask_size
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    keep = torch.ones((n, h, w), dtype=torch.bool)
    for _ in range(windows):
        cy = torch.randint(0, h, (n, 1, 1), generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), generator=generator)
        y0, x0 = cy - mh // 2, cx - mw // 2
        inside = (rows >= y0) & (rows < y0 + mh) & (cols >= x0) & (cols < x0 + mw)
        keep &= ~inside
    batch.mul_(keep.unsqueeze(1).to(batch.dtype))
    return batch


def train(model: Any, images: np.ndarray, labels: np.ndarray, config: FinetuneConfig, *, progress: bool = True,
          checkpoint: str | Path | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place (AdamW, cosine schedule, label smoothing 0.1); returns per-epoch stats.

    ``checkpoint`` (a .pt path) receives the state_dict and the config after every epoch.
    """
    torch = require("torch", "fine-tuning")
    threads_before = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(torch, model, images, labels, config, progress, checkpoint)
    finally:
        torch.set_num_threads(threads_before)


def _train(torch: Any, model: Any, images: np.ndarray, labels: np.ndarray, config: FinetuneConfig, progress: bool,
           checkpoint: str | Path | None) -> list[dict[str, float]]:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * int(np.ceil(len(x_all) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.15)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    history = []
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=generator)
        seen = correct = 0
        total_loss = 0.0
        start = time.perf_counter()
        bar = progress_bar(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           enabled=progress)
        for offset in bar:
            idx = order[offset : offset + config.batch_size]
            x = x_all[idx].clone()
            if config.mask_size is not None and config.windows:
                apply_random_masks(x, config.mask_size, config.windows, generator)
            y = y_all[idx]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            total_loss += float(loss.detach()) * len(y)
            bar.set_postfix_str(f"loss {total_loss / seen:.3f}, accuracy {correct / seen:.3f}", refresh=False)
        stats = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": correct / seen, "seconds": time.perf_counter() - start}
        history.append(stats)
        log.info("epoch %d: loss %.4f, train accuracy %.4f (%.0f s)", epoch + 1, stats["loss"], stats["train_accuracy"], stats["seconds"])
        if checkpoint:
            torch.save({"state_dict": model.state_dict(), "config": asdict(config), "history": history}, str(checkpoint))
    model.eval()
    return history


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
