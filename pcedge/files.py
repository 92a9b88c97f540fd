"""Files pcedge publishes (models, reports, tables): complete or absent, readable like any file the user writes.

Writers write to a temporary file beside the target and move it into place, so a crash never leaves
half a model. ``tempfile`` creates files with mode 0600; :func:`publish` gives them the mode the
user's umask gives a new file (0644 under the usual 022), so a service running as another user can
read an exported model.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_file_mode() -> int:
    """0o666 minus this process's umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(temporary: str | Path, target: str | Path) -> Path:
    """Give ``temporary`` the user's default file mode and move it over ``target`` atomically."""
    os.chmod(temporary, default_file_mode())
    os.replace(temporary, target)
    return Path(target)
