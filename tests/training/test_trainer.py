"""Masked training (pcedge.training.trainer through pcedge finetune --data): exact resume, greedy views mixed and
recorded, the paper's schedule, stop signals, streamed class folders, bad input.

Real components throughout: Fashion-MNIST's real IDX files, real image folders (with a corrupt file), real torch
training, real signals to a real process; resume against an uninterrupted run, weight for weight. Torchrun's many
processes: tests/training/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.runtime.modelfile import read_onnx_metadata  # noqa: E402
from pcedge.training import training_state  # noqa: E402
from pcedge.training.recipes import RECIPES, Recipe, make_optimizer  # noqa: E402
from tests.conftest import FASHION  # noqa: E402
from tests.support.training import finetune, start_finetune, wait_for  # noqa: E402

FASHION_ARGS = ["--model", "fashion-cnn", "--data", str(FASHION), "--patch", "4", "--masks-per-axis", "4", "--no-progress"]
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                                   reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")


def same_run(a: tuple[Path, object], b: tuple[Path, object]) -> None:
    """Two runs' checkpoints hold the same weights and step, and their histories the same numbers (timings aside)."""
    (path_a, proc_a), (path_b, proc_b) = a, b
    state_a, state_b = (torch.load(p, weights_only=True) for p in (path_a, path_b))
    assert json.loads(state_a["meta"])["step"] == json.loads(state_b["meta"])["step"]
    assert all(torch.equal(state_a["model"][k], state_b["model"][k]) for k in state_a["model"])
    untimed = [[{k: v for k, v in row.items() if "seconds" not in k} for row in json.loads(p.stdout.splitlines()[-1])["history"]]
               for p in (proc_a, proc_b)]
    assert untimed[0] == untimed[1]  # the same losses, accuracies and held-out numbers, epoch by epoch


# ------------------------------------------------------------------------------------------ the command
@needs_fashion
def test_resume_after_a_step_cap_or_a_stop_signal_continues_exactly_and_refuses_another_run(tmp_path):
    common = [*FASHION_ARGS, "--limit", "600", "--epochs", "4", "--val-certify", "8", "--seed", "3", "-q"]
    straight = finetune(*common, "--out", str(tmp_path / "a.onnx"), "--save-checkpoint", str(tmp_path / "a.pt"))
    assert straight.returncode == 0, straight.stderr
    cut = finetune(*common, "--out", str(tmp_path / "b.onnx"), "--save-checkpoint", str(tmp_path / "b.pt"), "--max-steps", "7")
    assert cut.returncode == 0, cut.stderr
    assert json.loads(cut.stdout.splitlines()[-1])["stopped"].startswith("step cap (7 steps)")
    resumed = finetune(*common, "--out", str(tmp_path / "b.onnx"), "--resume", str(tmp_path / "b.pt"))
    assert resumed.returncode == 0, resumed.stderr
    same_run((tmp_path / "a.pt", straight), (tmp_path / "b.pt", resumed))

    running = start_finetune(*common, "--out", str(tmp_path / "c.onnx"), "--save-checkpoint", str(tmp_path / "c.pt"))
    wait_for(tmp_path / "c.pt", running)  # epoch 1 is checkpointed: the run is in epoch 2 (or validating epoch 1)
    running.send_signal(signal.SIGTERM)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == training_state.RESUME_EXIT_CODE == 75, stderr
    assert "stopped by SIGTERM after step" in stderr and f"--resume {tmp_path / 'c.pt'} continues" in stderr
    assert not (tmp_path / "c.onnx").exists()  # stopped: no export, only the checkpoint
    assert json.loads(torch.load(tmp_path / "c.pt", weights_only=True)["meta"])["step"] < 20
    again = finetune(*common, "--out", str(tmp_path / "c.onnx"), "--resume", str(tmp_path / "c.pt"))
    assert again.returncode == 0, again.stderr
    same_run((tmp_path / "a.pt", straight), (tmp_path / "c.pt", again))

    for change, words in ((["--patch", "3"], "another mask set"), (["--limit", "500"], "other training data"),
                          (["--masks", "greedy"], "other settings (masks: 'random' -> 'greedy')")):
        refused = finetune(*common, *change, "--out", str(tmp_path / "d.onnx"), "--resume", str(tmp_path / "b.pt"))
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
    assert not (tmp_path / "d.onnx").exists()


@given(epochs=st.integers(1, 12))
def test_the_paper_recipe_decays_once_at_half_the_epochs(epochs):
    """x0.1 once, after epoch epochs // 2 (StepLR decayed at every multiple: twice in 5 epochs, every epoch in 3)."""
    recipe = Recipe(**{**RECIPES["paper"].__dict__, "epochs": epochs})
    optimizer, scheduler = make_optimizer(torch.nn.Linear(2, 2), recipe, steps_per_epoch=10)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    half = recipe.decay_after
    assert half == max(1, epochs // 2) and rates == pytest.approx([0.01] * min(half, epochs) + [0.001] * (epochs - half))


@needs_fashion
def test_greedy_run_records_its_training_and_keeps_the_best_epoch(tmp_path):
    out = tmp_path / "g.onnx"
    proc = finetune(*FASHION_ARGS, "--limit", "400", "--epochs", "2", "--masks", "greedy", "--val-certify", "10", "--recipe", "paper",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert ("greedy worst two-mask views of the 16 10x10 masks, searched every 1 epoch(s), mixed: 25% unmasked, 25% 2 random 10x10 "
            "masks, 50% greedy") in proc.stderr and "recipe paper (sgd, 2 epochs, lr 0.01, batch 64, x0.1 after epoch 1" in proc.stderr
    record = json.loads(read_onnx_metadata(out)["pcedge.training"])
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2] and [row["lr"] for row in history] == pytest.approx([0.001, 0.001])
    assert all(120 < row["greedy_searched_images"] < 260 for row in history)  # the images shown greedy (half of 380) each epoch
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


def test_a_signal_to_every_process_of_the_job_stops_it_cleanly_with_loader_workers(tmp_path):
    """As Slurm does (and Ctrl-C in a terminal): the signal reaches the loader workers too, and the run still finishes its
    step and checkpoints (the workers ignore it: tests/training/test_training_data.py)."""
    root = _class_folder(tmp_path, corrupt=False)
    running = start_finetune("--model", "tests.models:SmallCNN", "--data", str(root), "--image-size", "32", "--mean", "0.5,0.5,0.5",
                             "--std", "0.5,0.5,0.5", "--crop-pct", "1", "--patch", "10%", "--epochs", "40", "--batch-size", "8",
                             "--workers", "2", "--val-fraction", "0", "--out", str(tmp_path / "f.onnx"), "--no-progress",
                             "--save-checkpoint", str(tmp_path / "f.pt"))
    wait_for(tmp_path / "f.pt", running)
    os.killpg(running.pid, signal.SIGUSR1)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 75 and "stopped by SIGUSR1" in stderr, stderr
    assert json.loads(torch.load(tmp_path / "f.pt", weights_only=True)["meta"])["step"] < 40 * 5


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
             (["--data", str(root), "--masks", "greedy", "--greedy-every", "2", "--augment"], "--greedy-every 2 with --augment: each epoch"),
             (["--data", str(root), "--greedy-mix", "0.5,0.5,0"], "mixes the views of --masks greedy; this run has --masks random"),
             (["--data", str(root), "--masks", "greedy", "--greedy-mix", "1,1,1"], "sum to 1"),
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


