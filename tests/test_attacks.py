"""Adaptive patch attacks against the whole defended pipeline: nothing certified is ever mislabelled.

A small model trained with masks on real Fashion-MNIST images; for each test image we compute its
certificate through the real runtime, then attack it (three objectives, every grid position as a
restart) against the PyTorch model, quantize the patched image to uint8 and replay it through the real
runtime (ONNX Runtime, the C++ writer, double masking). The theorem: a certified image keeps its label.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pcedge.defense import is_certified
from pcedge.errors import ConfigError, InsecureMaskSetError
from pcedge.evaluation.attacks import OBJECTIVES, attack_image, grid_positions
from pcedge.evaluation.datasets import load_dataset
from pcedge.masks import ThreatModel
from pcedge.runtime.driver import PatchCleanser
from tests.conftest import FASHION

PATCH = (4, 4)  # 2% of 28x28


@pytest.fixture(scope="module")
def defended(fashion_trained):
    pc = PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", patch="4", masks_per_axis=4, max_batch=136)
    yield pc
    pc.close()


@pytest.fixture(scope="module")
def fashion_test_images(fashion_trained):
    dataset = load_dataset(FASHION, split="test")
    return [(dataset.load(i), dataset.item(i)[0]) for i in range(40)]


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def test_no_certified_image_is_ever_mislabelled(fashion_trained, defended, fashion_test_images):
    certified = undefended_broken = attempts = 0
    for gray, label in fashion_test_images:
        if certified == 6 or not is_certified(defended.label_table(gray), label):
            continue
        certified += 1
        for objective in OBJECTIVES:
            attacked = attack_image(fashion_trained.module, rgb(gray), label, fashion_trained.spec, PATCH,
                                    objective=objective, mask_set=defended.mask_set, steps=16, seed=certified)
            attempts += 1
            undefended_broken += attacked.undefended_label != label
            frame = attacked.image[:, :, ::-1].copy()  # RGB -> the BGR frame a camera delivers
            result = defended.predict(frame)
            assert result.label == label, (f"certified image mislabelled under a {objective} patch at {attacked.position}: "
                                           f"{result.label} != {label} ({result.case})")
            assert defended.predict_undefended(frame) == attacked.undefended_label, "ONNX and PyTorch disagree on the attack"
    assert certified >= 5, f"only {certified} of {len(fashion_test_images)} images certified: the test would prove little"
    assert undefended_broken > 0, "the attack never fooled the undefended model: it is too weak to test anything"


def test_attack_is_real_against_the_undefended_model(fashion_trained, fashion_test_images):
    """Success rate on the plain model, over correctly classified images: the attack has teeth."""
    import torch

    fooled = tried = 0
    for gray, label in fashion_test_images[:20]:
        x = (torch.from_numpy(rgb(gray).astype(np.float32) / 255).permute(2, 0, 1)[None] - 0.286) / 0.353
        if int(fashion_trained.module(x).argmax(1)) != label:
            continue
        tried += 1
        fooled += attack_image(fashion_trained.module, rgb(gray), label, fashion_trained.spec, PATCH, steps=24).undefended_label != label
    assert tried >= 10 and fooled / tried >= 0.2


def test_a_patch_larger_than_the_threat_model_is_not_covered(defended):
    """Masks built for a 4x4 patch do not claim 6x6 patches: the proof refuses, naming the gap."""
    with pytest.raises(InsecureMaskSetError):
        defended.mask_set.verify(ThreatModel(((6, 6),)))
    assert defended.mask_set.verify(ThreatModel((PATCH,))).min_masks_covering >= 1


def test_grid_positions_cover_the_border():
    positions = grid_positions((28, 28), (4, 4), 3)
    assert (24, 24) in positions and (0, 0) in positions
    assert all(0 <= y <= 24 and 0 <= x <= 24 for y, x in positions)
    with pytest.raises(ConfigError):
        grid_positions((28, 28), (4, 4), 0)


def test_attack_arguments_are_checked(fashion_trained):
    image = np.zeros((28, 28, 3), np.uint8)
    with pytest.raises(ConfigError, match="objective"):
        attack_image(fashion_trained.module, image, 0, fashion_trained.spec, PATCH, objective="nope")
    with pytest.raises(ConfigError, match="needs the mask set"):
        attack_image(fashion_trained.module, image, 0, fashion_trained.spec, PATCH, objective="masked")
    with pytest.raises(ConfigError, match="does not fit"):
        attack_image(fashion_trained.module, image, 0, fashion_trained.spec, (40, 40))


def test_frame_patch_is_optimized_where_the_camera_sees_it(fashion_trained, fashion_test_images):
    """The camera-space patch: right shape, deterministic, and it lowers the true class on its views."""
    import torch

    from pcedge.evaluation.attacks import frame_patch

    gray, label = fashion_test_images[0]
    frame = cv2.resize(rgb(gray), (56, 56), interpolation=cv2.INTER_NEAREST)  # a 2x camera view of the item
    views = [(frame, 20, 20), (frame, 24, 16)]
    patch = frame_patch(fashion_trained.module, views, 8, fashion_trained.spec, [label], steps=30, step_size=0.1)
    assert patch.shape == (8, 8, 3) and patch.dtype == np.uint8
    assert np.array_equal(patch, frame_patch(fashion_trained.module, views, 8, fashion_trained.spec, [label], steps=30, step_size=0.1))

    def true_class_logit(img: np.ndarray) -> float:
        small = cv2.resize(img, (28, 28), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
        x = (torch.from_numpy(small.astype(np.float32) / 255).permute(2, 0, 1)[None] - 0.286) / 0.353
        with torch.no_grad():
            return float(torch.log_softmax(fashion_trained.module(x), 1)[0, label])

    random_patch = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pasted = lambda p: np.concatenate([frame[:20], np.concatenate([frame[20:28, :20], p, frame[20:28, 28:]], 1), frame[28:]])  # noqa: E731
    assert true_class_logit(pasted(patch)) < true_class_logit(pasted(random_patch))
    with pytest.raises(ConfigError, match="does not fit"):
        frame_patch(fashion_trained.module, [(frame, 50, 50)], 8, fashion_trained.spec, [label], steps=1)
