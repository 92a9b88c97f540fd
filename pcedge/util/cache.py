"""Where pcedge keeps what it computes once per machine: ``$PCEDGE_CACHE``, else ``~/.cache/pcedge``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache root, or a folder under it (not created here)."""
    return Path(os.environ.get("PCEDGE_CACHE", Path.home() / ".cache" / "pcedge")).joinpath(*parts)
