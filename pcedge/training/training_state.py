"""Training checkpoints: everything needed to continue exactly, read without running code, refused for another run.

A checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the epoch and the step (within the
epoch too, for a checkpoint taken by ``--max-steps`` or a stop signal), an epoch trained but not yet validated (a
signal that came during validation), the greedy-mask cache (the same on every rank: pairs are shared as they are
searched), every rank's sums of the epoch so far (each rank resumes its own), the images any rank found unreadable,
the held-out history and the best weights so far. Random draws (views, augmentation, dropout) are seeded from (seed,
epoch, position) and (seed, rank, step), so the step *is* the random state: a resumed CPU run reproduces an
uninterrupted one bit for bit, under torchrun too (tested). The run's ``identity`` (architecture, starting weights,
mask set, preprocessing, training data and the settings that shape the run) and its process count must match on
``--resume``; the refusal names what differs.

The file is tensors plus JSON: ``torch.save`` of a dict whose values are tensors, PyTorch's own state dicts (tensors
and numbers) and one JSON string, read back with ``torch.load(weights_only=True)`` (:mod:`pcedge.util.torch_files`):
a checkpoint that needs arbitrary pickle, which would run code, is refused with what it asked for. Written through
pcedge's atomic writer: a crash mid-save leaves the previous checkpoint.

A run stopped by SIGTERM, SIGUSR1 or SIGINT (a preempted cluster job, Slurm's ``--signal``, Ctrl-C) finishes its
step, writes its checkpoint and exits with :data:`RESUME_EXIT_CODE`.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..util.files import writing
from ..util.optional import require
from ..util.torch_files import load_data_only

torch = require("torch", "fine-tuning checkpoints")

FORMAT = "pcedge.train/2"
RESUMABLE_CHANGES = ("device", "amp", "workers", "max_steps", "threads", "val_certify")  # may differ on --resume
RESUME_EXIT_CODE = os.EX_TEMPFAIL
"""75, sysexits' "temporary failure, try again": stopped by a signal with a checkpoint written; --resume continues."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
"""Signals that stop training after the current step with a checkpoint (Kubernetes and Slurm send SIGTERM before
killing a job; Slurm's ``--signal=USR1@SECONDS`` sends SIGUSR1 ahead of the time limit)."""


def weights_sha256(module: Any) -> str:
    """A hash of a module's weights and buffers (what a run records as its starting point)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def architecture_sha256(module: Any) -> str:
    """A hash of parameter and buffer names and shapes: the same network, whatever its weights."""
    text = ";".join(f"{name}:{tuple(t.shape)}" for name, t in sorted(module.state_dict().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def run_identity(module: Any, mask_set: Any, spec: Any, data: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it, as JSON reads it back (tuples become lists)."""
    identity = {"architecture": architecture_sha256(module), "initial_weights": weights_sha256(module), "mask_set": mask_set.to_dict(),
                "preprocess": spec.to_metadata(), "data": data,
                "settings": {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}}
    return json.loads(json.dumps(identity))


def save(path: str | Path, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """A checkpoint of ``tensors`` (tensors and PyTorch state dicts) and ``meta`` (JSON) to ``path``, whole or not at all."""
    with writing(path, durable=True) as temporary:
        torch.save({"format": FORMAT, "meta": json.dumps(meta), **tensors}, str(temporary))


def load(path: str | Path, identity: dict[str, Any], processes: int) -> dict[str, Any]:
    """The checkpoint at ``path`` (its JSON part parsed into ``state["meta"]``) if a run with this ``identity`` and this
    many ``processes`` made it; otherwise a ConfigError naming why (UnsafeFileError when it needs arbitrary pickle)."""
    try:
        state = load_data_only(path, what=f"--resume {path}")
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"--resume {path}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"--resume {path}: not a pcedge finetune checkpoint of this version (an --unlabeled one, weights "
                          "only, or one written before checkpoints became tensors + JSON? weights to start from go in --checkpoint)")
    state["meta"] = meta = json.loads(state["meta"])
    saved = meta["identity"]
    what = {"architecture": "another model architecture", "initial_weights": "other starting weights (--model/--checkpoint)",
            "mask_set": "another mask set (--patch, --masks-per-axis, ...)", "preprocess": "other preprocessing",
            "data": "other training data (--data, --split, --limit, --seed, --val-*)"}
    differs = [text for key, text in what.items() if saved.get(key) != identity.get(key)]
    settings = sorted(k for k in set(saved["settings"]) | set(identity["settings"])
                      if saved["settings"].get(k) != identity["settings"].get(k))
    if settings:
        differs.append("other settings (" + ", ".join(f"{k}: {saved['settings'].get(k)!r} -> {identity['settings'].get(k)!r}"
                                                     for k in settings) + ")")
    if differs:
        raise ConfigError(f"--resume {path} was made with {'; '.join(differs)}: it cannot continue this run "
                          "(start a new one, or give the options it was made with)")
    if meta["processes"] != processes:
        how = "without torchrun" if meta["processes"] == 1 else f"under torchrun --nproc-per-node {meta['processes']} (in all)"
        raise ConfigError(f"--resume {path} was written by a run of {meta['processes']} process(es) and this run has {processes}: "
                          "each process's share of a batch, its sums and its random draws belong to the process count, so it "
                          f"cannot continue exactly; resume it {how}")
    return state
