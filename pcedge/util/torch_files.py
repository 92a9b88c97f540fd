"""Reading PyTorch files without running code from them: ``torch.load(weights_only=True)`` and a clear refusal.

A ``torch.save`` file is a pickle, and unpickling arbitrary classes runs whatever code the file names. With
``weights_only=True`` PyTorch's restricted unpickler admits tensors, numbers, strings, lists, tuples and dicts only,
which is all a state_dict or a pcedge checkpoint holds. A file that needs more (a pickled ``nn.Module``, numpy arrays,
any object) is refused with what it asked for, so the user can see what the file would have run.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from ..errors import UnsafeFileError
from .optional import require

NAMED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # how PyTorch's weights-only reader names a class or function it refused
SAFE_TORCH = (2, 6)  # before 2.6 a crafted file can run code through weights_only=True (CVE-2025-32434)


def load_data_only(path: str | Path, *, what: str) -> Any:
    """The contents of the ``torch.save`` file at ``path``, read with ``weights_only=True``; a file that needs arbitrary
    pickle raises :class:`UnsafeFileError` (``what`` names the file for the user: a flag and its value); a file that is
    not a pickle at all ValueError; other failures (missing, truncated) propagate as PyTorch raises them."""
    torch = require("torch", "reading PyTorch files")
    if tuple(int(part) for part in re.findall(r"\d+", torch.__version__)[:2]) < SAFE_TORCH:
        raise UnsafeFileError(f"torch {torch.__version__} cannot read {what} without risk: its weights_only reader can be made "
                              "to run code from the file (CVE-2025-32434, fixed in torch 2.6); pip install 'torch>=2.6'")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # not an object the file names: an opcode no torch.save writes, or not a pickle at all
            raise ValueError(f"not a PyTorch file of tensors ({' '.join(str(exc).split())[-120:]})") from None
        raise UnsafeFileError(f"{what} needs arbitrary pickle to load ({needed_global(exc)}), which would run code from the "
                              "file; pcedge reads only tensors, numbers, strings, lists and dicts (torch.load weights_only=True)") from None


def needed_global(exc: Exception) -> str:
    """What the file asked PyTorch's weights-only reader for, from its refusal that names it (``it names numpy...``)."""
    return "it names " + NAMED_GLOBAL.search(str(exc)).group(1)
