"""Masked training at scale (pcedge finetune --data): streaming data, greedy masks, validation, exact resume, torchrun.

Real components throughout: Fashion-MNIST's real IDX files, real image folders (with a corrupt file), real
torch training, torchrun's real process group (gloo). The greedy search and the held-out certification are
checked against brute force written out here; resume against an uninterrupted run, weight for weight.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.defense import certification_pairs, is_certified  # noqa: E402
from pcedge.errors import ConfigError  # noqa: E402
from pcedge.export import greedy_masks  # noqa: E402
from pcedge.export.greedy_masks import worst_two_masks  # noqa: E402
from pcedge.export.training_data import EpochSampler, TrainingImages, make_loader, split_held_out  # noqa: E402
from pcedge.export.validation import validate  # noqa: E402
from pcedge.masks import create_mask_set  # noqa: E402
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.runtime.modelfile import read_onnx_metadata  # noqa: E402
from tests.conftest import FASHION  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
FASHION_ARGS = ["--model", "fashion-cnn", "--data", str(FASHION), "--patch", "4", "--masks-per-axis", "4", "--no-progress"]
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")


def finetune(*args: str, timeout: int = 300, torchrun: int = 0) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun), "--master-port", "29533"] if torchrun else [sys.executable]
    return subprocess.run([*launcher, "-m", "pcedge", "finetune", *args], capture_output=True, text=True, timeout=timeout, env=ENV)


class Linear(torch.nn.Module):
    """A real (tiny) classifier whose losses differ for every mask: a seeded linear layer over the pixels."""

    def __init__(self, seed: int, size: int = 12, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = torch.nn.Linear(3 * size * size, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


# ------------------------------------------------------------------------------------------ greedy masks
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), chunk=st.integers(1, 40), per_axis=st.integers(2, 4))
def test_greedy_pairs_are_the_brute_force_worst_views(seed, n, chunk, per_axis, monkeypatch_module):
    """First mask = argmax of the K one-mask losses; second = argmax over j of the loss with masks (first, j), in any chunking."""
    monkeypatch_module.setattr(greedy_masks, "SEARCH_IMAGES", chunk)
    masks = create_mask_set((12, 12), 2, masks_per_axis=per_axis)
    keep = torch.from_numpy(masks.keep_masks().astype(np.float32))
    model, gen = Linear(seed), torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 12, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    pairs = worst_two_masks(model, x, y, keep)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        for i in range(n):
            first = [float(loss(model(x[i : i + 1] * keep[k]), y[i : i + 1])) for k in range(len(masks))]
            f = int(np.argmax(first))
            second = [float(loss(model(x[i : i + 1] * keep[f] * keep[j]), y[i : i + 1])) for j in range(len(masks))]
            assert int(pairs[i, 0]) == f and first[f] == pytest.approx(max(first), rel=1e-5)
            assert second[int(pairs[i, 1])] == pytest.approx(max(second), rel=1e-5)
    assert model.training  # the search leaves the model as it found it


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


# ------------------------------------------------------------------------------------------ sampler and data
@given(size=st.integers(1, 60), world=st.integers(1, 4), seed=st.integers(0, 99), epoch=st.integers(0, 5), data=st.data())
def test_sampler_ranks_share_one_permutation_and_resume_mid_epoch(size, world, seed, epoch, data):
    per_rank = []
    for rank in range(world):
        sampler = EpochSampler(size, seed=seed, rank=rank, world=world)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
        start = data.draw(st.integers(0, len(per_rank[-1])))
        sampler.set_epoch(epoch, start=start)
        assert list(sampler) == per_rank[-1][start:] and len(sampler) == len(per_rank[-1]) - start
    assert len({len(r) for r in per_rank}) == 1  # every rank takes as many steps (DDP needs it)
    every = sorted(i for r in per_rank for i in r)
    assert set(every) == set(range(size)) and len(every) == -(-size // world) * world  # all images, padded to a multiple of world


@needs_fashion
def test_items_are_the_same_in_any_worker_and_augmentation_is_seeded(tmp_path):
    from pcedge.evaluation.datasets import load_dataset
    from pcedge.export import load_model

    spec = load_model("fashion-cnn").preprocessing({})
    dataset = load_dataset(FASHION, split="test")
    images = TrainingImages(dataset, spec, np.arange(64), augment=True, seed=5)
    batches = {}
    for workers in (0, 2):
        sampler = EpochSampler(64, seed=1)
        batches[workers] = [b for b in make_loader(images, sampler, 16, workers=workers, pin_memory=False)]
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    first = images[3][0]
    images.set_epoch(1)
    assert not torch.equal(first, images[3][0])  # another epoch, another crop
    images.set_epoch(0)
    assert torch.equal(first, images[3][0])
    kept, held = split_held_out(100, 0.1, 0)
    assert len(held) == 10 and not set(kept) & set(held) and len(kept) + len(held) == 100
    with pytest.raises(ConfigError, match="--val-fraction"):
        split_held_out(10, 1.5, 0)


# ------------------------------------------------------------------------------------------ validation
@needs_fashion
def test_held_out_certification_matches_the_runtime(fashion_trained):
    """validate()'s certified accuracy and one-round agreement equal those of the runtime's tables (ORT, C++ writer)."""
    from pcedge.evaluation.datasets import load_dataset

    dataset = load_dataset(FASHION, split="test")
    images = TrainingImages(dataset, fashion_trained.spec, np.arange(24))
    with PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", patch="4", masks_per_axis=4, max_batch=136) as pc:
        tables = [pc.label_table(dataset.load(i)) for i in range(24)]
        keep = torch.from_numpy(pc.mask_set.keep_masks().astype(np.float32))
    labels = dataset.labels[:24]
    certified = sum(is_certified(t, int(label)) for t, label in zip(tables, labels))
    agreed = sum(len(set(np.diagonal(t))) == 1 for t in tables)
    row = validate(fashion_trained.module, make_loader(images, None, 10, workers=0, pin_memory=False), keep, certify_limit=24,
                   device=torch.device("cpu"))
    assert row["certified_images"] == 24 and 0 < certified < 24  # real outcomes on both sides
    assert abs(row["certified_accuracy"] * 24 - certified) <= 1 and abs(row["one_round_agreement"] * 24 - agreed) <= 1
    assert len(certification_pairs(16)) == 136


# ------------------------------------------------------------------------------------------ the command
@needs_fashion
def test_resume_continues_exactly_and_refuses_another_run(tmp_path):
    common = [*FASHION_ARGS, "--limit", "600", "--epochs", "2", "--val-certify", "8", "--seed", "3", "-q"]
    straight = finetune(*common, "--out", str(tmp_path / "a.onnx"), "--save-checkpoint", str(tmp_path / "a.pt"))
    assert straight.returncode == 0, straight.stderr
    cut = finetune(*common, "--out", str(tmp_path / "b.onnx"), "--save-checkpoint", str(tmp_path / "b.pt"), "--max-steps", "6")
    assert cut.returncode == 0, cut.stderr
    assert json.loads(cut.stdout.splitlines()[-1])["stopped"].startswith("step cap (6 steps)")
    resumed = finetune(*common, "--out", str(tmp_path / "b.onnx"), "--resume", str(tmp_path / "b.pt"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=False) for n in "ab")
    assert a["step"] == b["step"] == 10 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    untimed = [[{k: v for k, v in row.items() if "seconds" not in k} for row in json.loads(p.stdout.splitlines()[-1])["history"]]
               for p in (straight, resumed)]
    assert untimed[0] == untimed[1]  # the same losses, accuracies and held-out numbers, epoch by epoch
    for change, words in ((["--patch", "3"], "another mask set"), (["--limit", "500"], "other training data"),
                          (["--masks", "greedy"], "other settings (masks: 'random' -> 'greedy')")):
        refused = finetune(*common, *change, "--out", str(tmp_path / "c.onnx"), "--resume", str(tmp_path / "b.pt"))
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert not (tmp_path / "c.onnx").exists()


@needs_fashion
def test_greedy_run_records_its_training_and_keeps_the_best_epoch(tmp_path):
    out = tmp_path / "g.onnx"
    proc = finetune(*FASHION_ARGS, "--limit", "400", "--epochs", "2", "--masks", "greedy", "--val-certify", "10", "--recipe", "paper",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "greedy worst two-mask views of the 16 10x10 masks" in proc.stderr and "recipe paper (sgd, 2 epochs, lr 0.01, batch 64" in proc.stderr
    record = json.loads(read_onnx_metadata(out)["pcedge.training"])
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2] and all(row["greedy_search_seconds"] > 0 for row in history)
    best = max(history, key=lambda r: (r["val_certified_accuracy"], r["val_clean_accuracy"]))
    assert record["best"]["epoch"] == best["epoch"] and record["validation_images"] == 20 and record["unreadable"] == []


def _class_folder(tmp_path: Path, corrupt: bool) -> Path:
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for cls in range(3):
        (root / str(cls)).mkdir(parents=True)
        for i in range(12):
            image = np.full((40, 48, 3), 60 * cls, np.uint8) + rng.integers(0, 40, (40, 48, 3), dtype=np.uint8)
            cv2.imwrite(str(root / str(cls) / f"{i}.png"), image)
    if corrupt:
        (root / "1" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def test_class_folder_streams_with_workers_and_lists_unreadable_images(tmp_path):
    root = _class_folder(tmp_path, corrupt=True)
    out = tmp_path / "f.onnx"
    proc = finetune("--model", "tests.models:SmallCNN", "--data", str(root), "--image-size", "32", "--mean", "0.5,0.5,0.5",
                    "--std", "0.5,0.5,0.5", "--crop-pct", "1", "--patch", "10%", "--epochs", "1", "--batch-size", "8", "--workers", "2",
                    "--augment", "--val-fraction", "0.2", "--val-certify", "4", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(read_onnx_metadata(out)["pcedge.training"])
    assert record["unreadable"] == ["1/broken.png"] and "1 unreadable image(s) skipped, e.g. 1/broken.png" in proc.stderr
    assert record["augmentation"].startswith("random resized crop") and record["config"]["workers"] == 2


def test_bad_input_is_refused_with_what_to_do(tmp_path):
    root = _class_folder(tmp_path, corrupt=False)
    base = ["--model", "tests.models:SmallCNN", "--image-size", "32", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--crop-pct", "1",
            "--patch", "10%", "--out", str(tmp_path / "x.onnx")]
    many = tmp_path / "many.npz"
    np.savez(many, images=np.zeros((20, 32, 32, 3), np.uint8), labels=np.arange(20) % 12)
    cases = [(["--data", str(many)], "labels up to 11 (12 classes) but tests.models:SmallCNN outputs 10 classes"),
             (["--data", str(root), "--device", "cuda:7"], "--device cuda:7"),
             (["--data", str(root), "--amp", "fp16"], "--amp fp16 needs --device cuda"),
             (["--data", str(root), "--val-data", str(root), "--val-fraction", "0.1"], "not both"),
             (["--data", str(tmp_path / "nothing")], "no such file or folder")]
    for args, words in cases:
        proc = finetune(*base, *args)
        assert proc.returncode != 0 and words in proc.stderr, (args, proc.stderr)
    unreadable = tmp_path / "bad"
    (unreadable / "0").mkdir(parents=True)
    for i in range(4):
        (unreadable / "0" / f"{i}.jpg").write_bytes(b"not a jpeg")
    proc = finetune(*base, "--data", str(unreadable), "--val-fraction", "0")
    assert proc.returncode == 1 and "no readable image in a whole epoch" in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------ torchrun
@needs_fashion
def test_torchrun_two_processes_train_identical_weights(tmp_path):
    out = tmp_path / "ddp.onnx"
    proc = finetune(*FASHION_ARGS, "--limit", "512", "--epochs", "2", "--val-certify", "8", "--out", str(out),
                    "--save-checkpoint", str(tmp_path / "ddp.pt"), torchrun=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(read_onnx_metadata(out)["pcedge.training"])
    assert record["processes"] == 2 and all(row["ranks_identical"] for row in record["history"])
    assert proc.stderr.count("# training fashion-cnn") == 1  # rank 0 alone speaks
    refused = finetune(*FASHION_ARGS, "--limit", "64", "--batch-size", "65", "--out", str(tmp_path / "x.onnx"), torchrun=2, timeout=300)
    assert refused.returncode != 0 and "--batch-size 65 is not divisible by the 2 processes" in refused.stderr

