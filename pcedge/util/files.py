"""Files pcedge publishes (models, reports, tables): complete or absent, readable like any file the user writes.

Writers write to a temporary file beside the target and move it into place, so a crash never leaves
half a model. ``tempfile`` creates files with mode 0600; :func:`publish` gives them the mode the
user's umask gives a new file (0644 under the usual 022), so a service running as another user can
read an exported model.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


@contextmanager
def writing(target: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``target`` to write; published over ``target`` when the block ends without an
    error, removed otherwise. Every file pcedge writes goes through here.

    ``durable``: the data and the rename reach the disk before the block returns (fsync of the file, then of its
    folder). Without it a power loss or a node reset soon after can keep the rename but not the data, and an empty
    file replaces the good one: what a training checkpoint, the only copy of hours of work, must never risk."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        if durable:
            _fsync(temporary, os.O_RDONLY)
        publish(temporary, target)
        if durable:
            _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(target: str | Path, text: str) -> Path:
    """A text file, written whole or not at all."""
    with writing(target) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | Path, data: object) -> Path:
    """A JSON report file (indented, one trailing newline), written whole or not at all."""
    return write_text(target, json.dumps(data, indent=2) + "\n")
