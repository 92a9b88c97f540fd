"""Training under torchrun (pcedge.training.distributed and the trainer's collectives): real torchrun, real processes,
gloo on the CPU, a small BatchNorm-free CNN and 96 real Fashion-MNIST images.

Two processes with the same seed and global batch find the same greedy pairs as one, and search an image once; a run
cut mid-epoch and resumed is the uninterrupted run weight for weight; a stop signal, to torchrun or to one rank only,
stops every rank after the same step with one checkpoint; another process count is refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.training.training_state import RESUME_EXIT_CODE  # noqa: E402
from tests.conftest import FASHION  # noqa: E402
from tests.support.training import fashion_npz, finetune, start_finetune, wait_for  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").exists(),
                                                   reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")]
EPOCHS, STEPS_PER_EPOCH = 12, 6  # 84 training images (12 held out) in global batches of 16


def arguments(data: Path, *extra: str) -> list[str]:
    return ["--model", "tests.models:PlainCNN", "--data", str(data), "--image-size", "28", "--crop-pct", "1", "--mean", "0.3,0.3,0.3",
            "--std", "0.35,0.35,0.35", "--patch", "4", "--masks-per-axis", "4", "--masks", "greedy", "--greedy-every", "2",
            "--batch-size", "16", "--epochs", str(EPOCHS), "--val-fraction", "0.125", "--val-certify", "4", "--seed", "1", "--no-progress",
            "-q", *extra]


def state(path: Path) -> dict:
    loaded = torch.load(path, weights_only=True)
    return loaded | {"meta": json.loads(loaded["meta"])}


def untimed(proc) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in json.loads(proc.stdout.splitlines()[-1])["history"]]


def assert_same_run(a: Path, b: Path) -> None:
    first, second = state(a), state(b)
    assert first["meta"]["step"] == second["meta"]["step"] == EPOCHS * STEPS_PER_EPOCH
    assert all(torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    assert torch.equal(first["greedy_pairs"], second["greedy_pairs"])
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(first["meta"]["history"]) == strip(second["meta"]["history"])


def said(stderr: str) -> str:
    """What the processes said, for a failure's message: every line but warnings' and tracebacks' indented ones."""
    return "\n".join(line for line in stderr.splitlines() if line.strip() and not line.startswith(" ") and "Warning" not in line)[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One uninterrupted run alone and one under torchrun with two processes, same seed and global batch."""
    root = tmp_path_factory.mktemp("ddp")
    data = fashion_npz(FASHION, root / "fashion96.npz", 96)
    one = finetune(*arguments(data, "--out", str(root / "one.onnx"), "--save-checkpoint", str(root / "one.pt")))
    assert one.returncode == 0, one.stderr
    two = finetune(*arguments(data, "--out", str(root / "two.onnx"), "--save-checkpoint", str(root / "two.pt")), torchrun=2)
    assert two.returncode == 0, said(two.stderr)
    return {"data": data, "root": root, "one": one, "two": two}


def test_two_processes_find_one_processs_greedy_pairs_and_search_each_image_once(runs):
    one, two = state(runs["root"] / "one.pt"), state(runs["root"] / "two.pt")
    pairs = two["greedy_pairs"].numpy()
    assert np.array_equal(pairs, one["greedy_pairs"].numpy()) and (pairs >= 0).sum() > 100  # shared, and the same
    history = untimed(runs["two"])
    assert all(row["ranks_identical"] for row in history)
    searched = [row["greedy_searched_images"] for row in history]
    assert searched[1::2] == [0] * (EPOCHS // 2) and min(searched[::2]) > 40  # cached epochs find every pair: no search
    assert searched == [row["greedy_searched_images"] for row in untimed(runs["one"])]
    for name in one["model"]:  # DDP averages gradients in another order: the same training up to float rounding
        torch.testing.assert_close(two["model"][name], one["model"][name], rtol=1e-4, atol=1e-5)
    assert runs["two"].stderr.count("# training tests.models:PlainCNN") == 1  # rank 0 alone speaks


def test_a_run_cut_mid_epoch_resumes_to_the_uninterrupted_run_and_refuses_another_process_count(runs, tmp_path):
    base = arguments(runs["data"], "--out", str(tmp_path / "cut.onnx"))
    cut = finetune(*base, "--save-checkpoint", str(tmp_path / "cut.pt"), "--max-steps", "9", torchrun=2)  # epoch 2, step 3 of 6
    assert cut.returncode == 0, said(cut.stderr)
    assert state(tmp_path / "cut.pt")["meta"]["batch_in_epoch"] == 3
    resumed = finetune(*base, "--resume", str(tmp_path / "cut.pt"), torchrun=2)
    assert resumed.returncode == 0, said(resumed.stderr)
    assert_same_run(runs["root"] / "two.pt", tmp_path / "cut.pt")
    assert untimed(resumed) == untimed(runs["two"])
    alone = finetune(*base, "--resume", str(tmp_path / "cut.pt"))
    assert alone.returncode == 2 and "written by a run of 2 process(es) and this run has 1" in alone.stderr, alone.stderr
    odd = finetune(*arguments(runs["data"], "--batch-size", "15", "--out", str(tmp_path / "x.onnx")), torchrun=2)
    assert odd.returncode != 0 and "--batch-size 15 is not divisible by the 2 processes" in odd.stderr


def test_sigterm_to_torchrun_checkpoints_every_rank_and_the_resumed_run_is_exact(runs, tmp_path):
    base = arguments(runs["data"], "--out", str(tmp_path / "s.onnx"))
    running = start_finetune(*base, "--save-checkpoint", str(tmp_path / "s.pt"), torchrun=2)
    wait_for(tmp_path / "s.pt", running)  # epoch 1 checkpointed: training is under way
    running.send_signal(signal.SIGTERM)  # torchrun forwards it to both workers
    _, stderr = running.communicate(timeout=120)
    assert running.returncode != 0 and "stopped by SIGTERM after step" in stderr, said(stderr)
    stopped = state(tmp_path / "s.pt")
    assert 0 < stopped["meta"]["step"] < EPOCHS * STEPS_PER_EPOCH and stopped["epoch_sums"].shape == (2, 5)
    assert not (tmp_path / "s.onnx").exists()
    resumed = finetune(*base, "--resume", str(tmp_path / "s.pt"), torchrun=2)
    assert resumed.returncode == 0, said(resumed.stderr)
    assert_same_run(runs["root"] / "two.pt", tmp_path / "s.pt")


def test_a_signal_to_one_rank_stops_both_after_the_same_step_with_the_resume_code(runs, tmp_path):
    running = start_finetune(*arguments(runs["data"], "--out", str(tmp_path / "u.onnx"), "--save-checkpoint", str(tmp_path / "u.pt")),
                             torchrun=2)
    wait_for(tmp_path / "u.pt", running)
    workers = [int(p) for p in Path(f"/proc/{running.pid}/task/{running.pid}/children").read_text().split()]
    os.kill(next(pid for pid in workers if rank_of(pid) == 1), signal.SIGUSR1)  # as Slurm's --signal=USR1 reaches a task; rank 0 learns it from rank 1
    _, stderr = running.communicate(timeout=120)
    assert running.returncode != 0, said(stderr)
    assert len(re.findall(rf"exitcode\s*:\s*{RESUME_EXIT_CODE}", stderr)) >= 1, said(stderr)  # torchrun reports the workers' code
    assert "stopped by a stop signal (on another process)" in stderr  # rank 0, told by rank 1
    stopped = state(tmp_path / "u.pt")
    assert 0 < stopped["meta"]["step"] < EPOCHS * STEPS_PER_EPOCH
    assert stopped["epoch_sums"][0, 2] == stopped["epoch_sums"][1, 2]  # both ranks stopped after the same step


def rank_of(pid: int) -> int:
    """A torchrun worker's rank, from its environment."""
    items = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return int(dict(item.split("=", 1) for item in items if "=" in item)["RANK"])
