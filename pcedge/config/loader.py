"""``load_config(path)``: a site's YAML file as a validated :class:`RunConfig`, or every problem with its path and line.

The file is read whole, once, and only after it has stood still (size, modification time and inode unchanged for
``settle_s``): a file still being written (an editor saving in place, a deploy tool copying it, a SIGHUP that
arrives mid-write) is waited for, and one that keeps changing for ``wait_s`` is refused as "still being written".
So a half-written file is never half-applied: it is refused, or read complete. What the text means is
:mod:`.document` (YAML, environment variables, secrets) and :mod:`.issues` (validation).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import ConfigFileError, ConfigIssue
from .document import Document, parse_document
from .issues import validate_document
from .models import RunConfig

SETTLE_S = 0.2
"""How long a file must stand still before it is read."""
WAIT_S = 3.0
"""How long a file that keeps changing is waited for before it is refused."""
MAX_BYTES = 1 << 20
"""A configuration is a few kilobytes; a larger file is refused before it is parsed."""


def load_config(path: str | os.PathLike, *, settle_s: float = SETTLE_S, wait_s: float = WAIT_S) -> RunConfig:
    """The file at ``path`` as a :class:`RunConfig`; :class:`ConfigFileError` lists every problem (see the module
    docstring for when the file is read)."""
    return validate_document(read_document(path, settle_s=settle_s, wait_s=wait_s))


def read_document(path: str | os.PathLike, *, settle_s: float = SETTLE_S, wait_s: float = WAIT_S) -> Document:
    """The file's data with its lines, environment variables and secrets resolved (not yet validated: the flags
    beside a file are applied to it first, :mod:`.flags`); :class:`ConfigFileError` when it cannot be read or
    parsed (all its problems at once)."""
    source = str(path)
    data = read_settled(Path(path), settle_s=settle_s, wait_s=wait_s)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigFileError(source, [ConfigIssue("", line, "not UTF-8 text: save the file as UTF-8")]) from None
    doc = parse_document(text, source)
    if doc.data is None:
        raise ConfigFileError(source, doc.issues)  # nothing to validate: syntax, an empty file, not a mapping
    return doc


def read_settled(path: Path, *, settle_s: float = SETTLE_S, wait_s: float = WAIT_S) -> bytes:
    """The file's bytes, read once it has not changed for ``settle_s`` (by its modification time, or as watched here
    when that time is in the future), checked unchanged after the read; refused after ``wait_s`` of changes."""
    source = str(path)
    deadline = time.monotonic() + wait_s
    last, still_since = None, time.monotonic()
    while True:
        before = _signature(path, source)
        if before != last:
            last, still_since = before, time.monotonic()
        settled = time.time() - before[2] / 1e9 >= settle_s or time.monotonic() - still_since >= settle_s
        if settled:
            data, after = _read(path, source)
            if after == before == _signature(path, source) and len(data) == before[1]:
                return data
            last, still_since = None, time.monotonic()  # it changed while being read: wait for it again
        if time.monotonic() >= deadline:
            raise ConfigFileError(source, [ConfigIssue("", None, f"still being written (it kept changing for {wait_s:g} s): "
                                                                 "nothing was applied; save it whole, or write it elsewhere "
                                                                 "and move it into place")])
        time.sleep(min(0.05, settle_s / 4))


def _signature(path: Path, source: str) -> tuple[int, int, int]:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigFileError(source, [ConfigIssue("", None, "no such file (pcedge config init --camera NAME=URI --out "
                                                             f"{source} writes a starter)")]) from None
    except OSError as exc:
        raise ConfigFileError(source, [ConfigIssue("", None, f"cannot read it ({exc.strerror or exc})")]) from None
    if path.is_dir():
        raise ConfigFileError(source, [ConfigIssue("", None, "is a folder: give the configuration file (e.g. site.yml)")])
    if stat.st_size > MAX_BYTES:
        raise ConfigFileError(source, [ConfigIssue("", None, f"is {stat.st_size / 1e6:.1f} MB: a configuration is a few "
                                                             f"kilobytes (at most {MAX_BYTES >> 20} MiB); is it the right file?")])
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _read(path: Path, source: str) -> tuple[bytes, tuple[int, int, int]]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
            stat = os.fstat(handle.fileno())
    except OSError as exc:
        raise ConfigFileError(source, [ConfigIssue("", None, f"cannot read it ({exc.strerror or exc})")]) from None
    return data, (stat.st_ino, stat.st_size, stat.st_mtime_ns)
