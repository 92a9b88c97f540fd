"""Training checkpoints (pcedge.training.training_state): tensors + JSON read without pickle, refusals that say why."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs torch (the [export] extra)")

from pcedge.errors import ConfigError, UnsafeFileError  # noqa: E402
from pcedge.training import training_state  # noqa: E402

IDENTITY = {"architecture": "a", "initial_weights": "w", "mask_set": {}, "preprocess": "p", "data": {}, "settings": {"masks": "greedy"}}


def test_a_checkpoint_is_tensors_and_json_and_comes_back_whole(tmp_path):
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2])
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    meta = {"identity": IDENTITY, "processes": 2, "history": [{"loss": 0.1 + 0.2, "val": None}], "unreadable": [7]}
    training_state.save(tmp_path / "c.pt", {"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict(), "pairs": torch.zeros(3, 2, dtype=torch.int16)}, meta)
    state = training_state.load(tmp_path / "c.pt", IDENTITY, processes=2)
    assert state["meta"] == meta and torch.equal(state["model"]["weight"], module.weight)
    restored = torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD(module.parameters(), lr=0.1), milestones=[2])
    restored.load_state_dict(state["scheduler"])
    assert restored.milestones == scheduler.milestones


def test_a_checkpoint_that_needs_pickle_is_refused_with_what_it_asked_for(tmp_path):
    pickled = tmp_path / "old.pt"
    torch.save({"format": training_state.FORMAT, "meta": "{}", "epoch_sums": np.zeros(4)}, pickled)  # numpy: arbitrary pickle
    with pytest.raises(UnsafeFileError, match=r"--resume .*old.pt needs arbitrary pickle to load \(it names numpy.*\), which would run code"):
        training_state.load(pickled, IDENTITY, processes=1)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    with pytest.raises(UnsafeFileError, match="it names torch.nn.modules.linear.Linear"):
        training_state.load(module, IDENTITY, processes=1)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        training_state.load(tmp_path / "garbage.pt", IDENTITY, processes=1)


def test_a_torch_whose_safe_reader_can_be_bypassed_reads_nothing(tmp_path, monkeypatch):
    """Before torch 2.6 a crafted file runs code through ``weights_only=True`` (CVE-2025-32434): refused before reading."""
    checkpoint = tmp_path / "run.pt"
    training_state.save(checkpoint, {"model": {"w": torch.zeros(2)}}, {"identity": IDENTITY, "processes": 1})
    monkeypatch.setattr(torch, "__version__", "2.5.1+cpu")
    with pytest.raises(UnsafeFileError, match=r"torch 2.5.1\+cpu cannot read --resume .*run.pt without risk.*CVE-2025-32434"):
        training_state.load(checkpoint, IDENTITY, processes=1)


def test_another_run_or_process_count_is_refused_naming_both(tmp_path):
    training_state.save(tmp_path / "c.pt", {}, {"identity": IDENTITY, "processes": 2})
    with pytest.raises(ConfigError, match=r"written by a run of 2 process\(es\) and this run has 1: .* torchrun --nproc-per-node 2"):
        training_state.load(tmp_path / "c.pt", IDENTITY, processes=1)
    other = dict(IDENTITY, settings={"masks": "random"})
    with pytest.raises(ConfigError, match=r"other settings \(masks: 'greedy' -> 'random'\)"):
        training_state.load(tmp_path / "c.pt", other, processes=2)
