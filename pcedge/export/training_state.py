"""Training checkpoints: everything needed to continue exactly, and a refusal when they belong to another run.

A checkpoint holds the model, optimizer, scheduler and gradient-scaler states, the epoch and the step (within the
epoch too, for a checkpoint taken by ``--max-steps`` or a stop signal), the greedy-mask cache, the held-out history,
the best weights so far and the images found unreadable. Random draws (masks, augmentation, dropout) are seeded from
(seed, rank, epoch, step), so the step *is* the random state: a resumed CPU run with a fixed seed reproduces an
uninterrupted one bit for bit (tested). Its ``identity`` (architecture, starting weights, mask set, preprocessing,
training data and the settings that shape the run) must match on ``--resume``; the refusal names what differs.
Written through pcedge's atomic writer: a crash mid-save leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..util.files import writing
from ..util.optional import require

torch = require("torch", "fine-tuning checkpoints")

FORMAT = "pcedge.train/1"
RESUMABLE_CHANGES = ("device", "amp", "workers", "max_steps", "threads", "val_certify")  # may differ on --resume


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
    """What a checkpoint must share with the run that resumes it."""
    return {"architecture": architecture_sha256(module), "initial_weights": weights_sha256(module), "mask_set": mask_set.to_dict(),
            "preprocess": spec.to_metadata(), "data": data,
            "settings": {k: v for k, v in config.items() if k not in RESUMABLE_CHANGES}}


def save(path: str | Path, state: dict[str, Any]) -> None:
    """``state`` (see the module docstring) to ``path``, whole or not at all."""
    with writing(path) as temporary:
        torch.save({"format": FORMAT, **state}, str(temporary))


def load(path: str | Path, identity: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint at ``path`` if it was made by a run with this ``identity``; otherwise a ConfigError naming why."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ConfigError(f"--resume {path}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"--resume {path}: not a pcedge finetune checkpoint (an --unlabeled one, or weights only? "
                          "weights to start from go in --checkpoint)")
    saved = state["identity"]
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
    return state
