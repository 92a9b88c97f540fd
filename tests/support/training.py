"""Running ``pcedge finetune`` as users do, alone or under torchrun, for the training tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "OMP_NUM_THREADS": "1",
       "PYTHONFAULTHANDLER": "1"}  # a process that aborts says where


def finetune_command(*args: str, torchrun: int = 0) -> list[str]:
    """The command line; torchrun without --master-port picks a free port (c10d rendezvous on localhost)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun)] if torchrun else [sys.executable]
    return [*launcher, "-m", "pcedge", "finetune", *args]


def finetune(*args: str, timeout: int = 300, torchrun: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(finetune_command(*args, torchrun=torchrun), capture_output=True, text=True, timeout=timeout, env=ENV)


def start_finetune(*args: str, torchrun: int = 0, signals: Sequence[str] = ()) -> subprocess.Popen:
    """A run in the background (its own process group), torchrun forwarding ``signals`` besides its defaults."""
    command = finetune_command(*args, torchrun=torchrun)
    if torchrun and signals:
        command[3:3] = ["--signals-to-handle", ",".join(["SIGTERM", "SIGINT", *signals])]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)


def fashion_npz(source: Path, path: Path, count: int) -> Path:
    """The first ``count`` Fashion-MNIST test images and labels as an .npz (a small real dataset)."""
    from pcedge.evaluation.datasets import read_idx

    np.savez(path, images=read_idx(source / "t10k-images-idx3-ubyte.gz")[:count],
             labels=read_idx(source / "t10k-labels-idx1-ubyte.gz")[:count].astype(np.int64))
    return path


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists (a checkpoint being written), failing with the process's output if it ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
