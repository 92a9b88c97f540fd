"""Masked self-distillation without labels (pcedge.training.distill, pcedge finetune --unlabeled) on a real small CNN
and real video frames: held-out validation, checkpoints and resume, divergence, bad input, the exported record."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the [export] extra; make test installs the CPU wheel)")

from pcedge.cli import main  # noqa: E402
from pcedge.errors import ConfigError, DatasetError  # noqa: E402
from pcedge.training.distill import MIN_CONFIDENT_FRAMES, DistillConfig, Distiller, guarded_agreement, read_footage  # noqa: E402
from pcedge.masks import MaskSpec  # noqa: E402
from pcedge.preprocess import PreprocessSpec  # noqa: E402
from tests.models import SmallCNN  # noqa: E402

SPEC = PreprocessSpec(input_size=(32, 32), crop_pct=0.875)


def photo_clip(path, frames: int = 40):
    """A real-photo pan (scikit-image's photos) as an MJPG file."""
    from pcedge.evaluation.bench import camera_frames

    views = camera_frames(frames, (96, 128))
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 96))
    for view in views:
        writer.write(view)
    writer.release()
    return path


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN().eval()


def test_footage_is_split_in_time_and_too_little_is_refused_with_the_counts(tmp_path):
    clip = photo_clip(tmp_path / "a.avi", 40)
    footage = read_footage([str(clip)], SPEC, validation_fraction=0.25, progress=False)
    assert footage.train.shape == (30, 3, 32, 32) and footage.validation.shape == (10, 3, 32, 32)
    assert footage.sources == [{"source": str(clip), "frames": 40, "train": 30, "validation": 10}]
    with pytest.raises(DatasetError, match=r"40 frames .* give 34 for training and 6 held out .* at least 16 and 8"):
        read_footage([str(clip)], SPEC, validation_fraction=0.15, progress=False)


def test_training_validates_keeps_the_best_and_resumes_where_it_stopped(tmp_path):
    footage = read_footage([str(photo_clip(tmp_path / "a.avi", 48))], SPEC, validation_fraction=0.25, progress=False)
    masks = MaskSpec("10%", 4).build((32, 32))
    config = DistillConfig(max_steps=6, batch_size=8, validate_every=3, lr=1e-3, patience=10)
    first = Distiller(student(), masks, config)
    result = first.fit(footage, checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert result.steps == 6 and [row["step"] for row in result.history] == [0, 3, 6]
    assert result.history[0]["teacher_agreement"] == 1.0  # the student starts as the teacher
    assert result.best["mask_agreement"] == max(r["mask_agreement"] for r in result.history if guarded_agreement(r) >= 0.9)
    longer = Distiller(student(), masks, DistillConfig(max_steps=9, batch_size=8, validate_every=3, lr=1e-3, patience=10))
    longer.resume(tmp_path / "ckpt.pt")
    resumed = longer.fit(footage, progress=False)
    assert resumed.steps == 9 and [row["step"] for row in resumed.history] == [0, 3, 6, 9]
    other = SmallCNN()
    with pytest.raises(ConfigError, match="another teacher"):
        Distiller(other, masks, config).resume(tmp_path / "ckpt.pt")


def test_the_pseudo_label_term_counts_only_where_the_teacher_is_confident(tmp_path):
    images = torch.from_numpy(read_footage([str(photo_clip(tmp_path / "a.avi", 32))], SPEC, validation_fraction=0.25,
                                           progress=False).train)
    masks = MaskSpec("10%", 4).build((32, 32))

    def first_loss(**config) -> float:
        distiller = Distiller(student(), masks, DistillConfig(batch_size=8, **config))
        return distiller._train_step(images, None)

    soft_only = first_loss(pseudo_label_weight=0.0)
    assert first_loss(pseudo_label_weight=1.0, pseudo_label_confidence=1.01) == pytest.approx(soft_only, rel=1e-6)  # never confident
    assert first_loss(pseudo_label_weight=1.0, pseudo_label_confidence=0.0) > soft_only + 1e-3  # always: cross-entropy added


def test_the_guard_counts_confident_teacher_frames_when_there_are_enough():
    row = {"teacher_agreement": 0.6, "confident_frames": MIN_CONFIDENT_FRAMES, "confident_teacher_agreement": 1.0, "frames": 48}
    assert guarded_agreement(row) == 1.0
    assert guarded_agreement({**row, "confident_frames": MIN_CONFIDENT_FRAMES - 1}) == 0.6
    assert guarded_agreement({**row, "confident_frames": 0, "confident_teacher_agreement": None}) == 0.6


def test_a_diverging_run_stops_and_keeps_the_best_checkpoint(tmp_path):
    footage = read_footage([str(photo_clip(tmp_path / "a.avi", 48))], SPEC, validation_fraction=0.25, progress=False)
    model = student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distiller = Distiller(model, MaskSpec("10%", 4).build((32, 32)),
                          DistillConfig(max_steps=200, batch_size=8, validate_every=5, lr=3.0, patience=50))
    result = distiller.fit(footage, progress=False)
    assert result.stopped.startswith("diverged: teacher agreement") and result.steps < 200
    assert result.best["step"] == 0  # only the start was acceptable: the student is the teacher again
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_finetune_unlabeled_refuses_a_teacher_without_preprocessing_then_exports_the_record(tmp_path, capsys):
    clip = photo_clip(tmp_path / "a.avi", 48)
    out = tmp_path / "student.onnx"
    base = ["finetune", "--model", "tests.models:SmallCNN", "--unlabeled", str(clip), "--out", str(out), "--patch", "10%",
            "--masks-per-axis", "4", "--val-fraction", "0.25", "--max-steps", "4", "--validate-every", "2", "--batch-size", "8",
            "--no-progress"]
    assert main(base) == 2
    assert "records no preprocessing: pass the teacher's --image-size" in capsys.readouterr().err
    assert main([*base, "--image-size", "32", "--crop-pct", "0.875", "--save-checkpoint", str(tmp_path / "c.pt")]) == 0
    assert (tmp_path / "c.pt").is_file()
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    training = json.loads(capsys.readouterr().out)["metadata"]["pcedge.training"]
    assert training["steps"] == 4 and training["labelled_images"] == 0 and "no labels" in training["recipe"]
    assert training["sources"][0]["validation"] == 12 and len(training["teacher_sha256"]) == 64
    assert main(["inspect", str(out)]) == 0
    assert "fine-tuned: masked self-distillation" in capsys.readouterr().out
    assert np.isfinite([r["mask_agreement"] for r in training["history"]]).all()
