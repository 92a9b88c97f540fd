"""Held-out validation that measures what the defense needs: clean accuracy, one-round agreement, certified accuracy.

Clean accuracy alone picks the wrong checkpoint: masked training trades a little of it for the margin that
masks need. Every epoch the held-out images are classified unmasked (clean accuracy) and, for up to
``certify_limit`` of them, under all K(K+1)/2 two-mask views of the deployed mask set (the certification
table, diagonal = the K one-mask views), computed in batches without gradients. An image is *certified* when
every view gives its true label (pcedge.defense.is_certified), and *agrees in one round* when all K one-mask
views give the same label (the frames the defense answers with no second round). The PyTorch model is
evaluated, not the exported one: the numbers can differ from ``pcedge certify``'s in the last float bits.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterable

import numpy as np

from ..defense import certification_pairs
from ..util.optional import require
from .greedy_masks import views_per_call

torch = require("torch", "validation")


def validate(model: Any, batches: Iterable[tuple[Any, Any, Any]], keep: Any, *, certify_limit: int, device: Any,
             autocast: Any = None, stop: threading.Event | None = None) -> dict[str, float | int] | None:
    """Clean accuracy over every batch of ``batches`` ((images, labels, positions), label -1 = unreadable, skipped);
    one-round agreement and certified accuracy over the first ``certify_limit`` images. None when ``stop`` is set
    before the last batch (a stop signal: a certified validation can outlast a scheduler's grace period)."""
    pairs = torch.from_numpy(certification_pairs(keep.shape[0]).astype(np.int64)).to(device)
    pair_keep = keep[pairs[:, 0]] * keep[pairs[:, 1]]  # (P, H, W)
    diagonal = pairs[:, 0] == pairs[:, 1]
    was_training = model.training
    model.eval()
    seen = correct = certified = agreed = tabled = 0
    try:
        with torch.no_grad():
            for images, labels, _ in batches:
                if stop is not None and stop.is_set():
                    return None
                good = labels >= 0
                images, labels = images[good].to(device, non_blocking=True), labels[good].to(device, non_blocking=True)
                with autocast() if autocast else contextlib.nullcontext():
                    correct += int((model(images).argmax(1) == labels).sum())
                seen += len(labels)
                take = min(len(labels), certify_limit - tabled)
                if take > 0:
                    views = _view_labels(model, images[:take], pair_keep, autocast)  # (n, P)
                    certified += int((views == labels[:take, None]).all(1).sum())
                    one_mask = views[:, diagonal]
                    agreed += int((one_mask == one_mask[:, :1]).all(1).sum())
                    tabled += take
    finally:
        model.train(was_training)
    return {"images": seen, "clean_accuracy": correct / seen if seen else 0.0, "certified_images": tabled,
            "one_round_agreement": agreed / tabled if tabled else None, "certified_accuracy": certified / tabled if tabled else None}


def _view_labels(model: Any, images: Any, pair_keep: Any, autocast: Any) -> Any:
    """(N, P) labels of each image under each two-mask view of ``pair_keep``, in forward passes of at most as many views
    as the greedy search takes (``views_per_call``: 1024 small images, 167 at 224 x 224)."""
    p = pair_keep.shape[0]
    per_call = views_per_call(pair_keep.shape[-2:])
    out = torch.empty(len(images) * p, dtype=torch.long, device=images.device)  # (image, view) pairs, row-major
    for start in range(0, len(out), per_call):
        index = torch.arange(start, min(start + per_call, len(out)), device=images.device)
        views = images[index // p] * pair_keep[index % p].unsqueeze(1).to(images.dtype)
        with autocast() if autocast else contextlib.nullcontext():
            out[start : start + len(index)] = model(views).argmax(1)
    return out.view(len(images), p)
