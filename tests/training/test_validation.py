"""Held-out validation (pcedge.training.validation): its certified accuracy and one-round agreement are the runtime's."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.defense import certification_pairs, is_certified  # noqa: E402
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.training.training_data import TrainingImages, make_loader  # noqa: E402
from pcedge.training.validation import validate  # noqa: E402
from tests.conftest import FASHION  # noqa: E402


def test_held_out_certification_matches_the_runtime_and_a_stop_cuts_it_short(fashion_trained):
    """validate()'s certified accuracy and one-round agreement equal those of the runtime's tables (ORT, C++ writer);
    a stop signal already set gives no numbers (the epoch stays pending)."""
    from pcedge.evaluation.datasets import load_dataset

    dataset = load_dataset(FASHION, split="test")
    images = TrainingImages(dataset, fashion_trained.spec, np.arange(24))
    with PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", patch="4", masks_per_axis=4, max_batch=136) as pc:
        tables = [pc.label_table(dataset.load(i)) for i in range(24)]
        keep = torch.from_numpy(pc.mask_set.keep_masks().astype(np.float32))
    labels = dataset.labels[:24]
    certified = sum(is_certified(t, int(label)) for t, label in zip(tables, labels))
    agreed = sum(len(set(np.diagonal(t))) == 1 for t in tables)
    loader = make_loader(images, None, 10, workers=0, pin_memory=False)
    row = validate(fashion_trained.module, loader, keep, certify_limit=24, device=torch.device("cpu"))
    assert row["certified_images"] == 24 and 0 < certified < 24  # real outcomes on both sides
    assert abs(row["certified_accuracy"] * 24 - certified) <= 1 and abs(row["one_round_agreement"] * 24 - agreed) <= 1
    assert len(certification_pairs(16)) == 136
    stop = threading.Event()
    stop.set()
    assert validate(fashion_trained.module, loader, keep, certify_limit=24, device=torch.device("cpu"), stop=stop) is None
