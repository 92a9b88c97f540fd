"""The ``--events`` folder is pcedge's, provably, and retention deletes only what pcedge wrote there.

A folder becomes pcedge's when pcedge first uses it: it must be new or empty, and pcedge writes a marker
(:data:`MARKER`) at its root. A folder that holds anything without the marker (a camera's recordings, someone's
photos) is refused at start, before the model loads, since retention deletes old episodes in it. An unwritable
folder is refused then too.

Inside, an episode is ``<camera slug>/<episode id>/`` holding ``snapshot.jpg``, ``clip.mp4`` and ``episode.json``.
Retention considers only folders whose names match pcedge's patterns and whose ``episode.json`` names that very
episode; it removes only the files pcedge writes there (and its own unfinished temporary files), then the folder
if nothing else is left. A symlink, a foreign file or a folder that does not prove itself is never touched.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..util.files import write_json
from .episodes import EPISODE_ID

log = logging.getLogger("pcedge.site")
MARKER = ".pcedge-events"
EPISODE_FILES = ("snapshot.jpg", "clip.mp4", "episode.json", "clip.partial.mp4")  # the last: a clip cut short
_CAMERA = re.compile(r"[a-z0-9_-]+")
_UNFINISHED = re.compile(r"\.(?:%s)\..+\.tmp" % "|".join(re.escape(name) for name in EPISODE_FILES))  # util.files.writing's


@dataclass(frozen=True)
class StoredEpisode:
    """An episode folder pcedge wrote: where, when it began, and the bytes of its files."""

    folder: Path
    start_time: float
    nbytes: int


def claim(folder: str | Path, flag: str = "--events") -> Path:
    """Make ``folder`` pcedge's events folder (see the module docstring) or refuse it with the reason and the fix."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: not a folder")
    marker = path / MARKER
    if path.is_dir() and not marker.is_file():
        inside = sorted(p.name for p in path.iterdir())
        if inside:
            shown = ", ".join(inside[:5]) + (f" and {len(inside) - 5} more" if len(inside) > 5 else "")
            raise ConfigError(f"{flag} {path}: this folder holds files pcedge did not put there ({shown}); pcedge deletes old "
                              "episodes in its events folder, so it uses only a new or empty folder (which it marks as its "
                              f"own with {MARKER}): give another path, e.g. {path / 'pcedge-events'}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        if not marker.is_file():
            write_json(marker, {"created_by": "pcedge", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "purpose": "alarm episodes; pcedge deletes only the episode folders it wrote here"})
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: pcedge cannot write there ({exc.strerror or exc}): give a folder this user can "
                          "write") from None
    return path


def stored_episodes(root: Path) -> list[StoredEpisode]:
    """Every episode folder under ``root`` that proves it is pcedge's (see the module docstring), oldest first."""
    found = []
    for camera in _subfolders(root):
        if not _CAMERA.fullmatch(camera.name):
            continue
        for folder in _subfolders(camera):
            match = EPISODE_ID.fullmatch(folder.name)
            if match is None or match.group("camera") != camera.name or not _names_itself(folder):
                continue
            nbytes = sum(f.stat().st_size for f in folder.iterdir() if f.is_file() and not f.is_symlink())
            found.append(StoredEpisode(folder, float(match.group("start")), nbytes))
    return sorted(found, key=lambda e: e.start_time)


def remove(episode: StoredEpisode) -> bool:
    """Delete the files pcedge writes in ``episode.folder``, then the folder if nothing else is in it; True if it went
    (or was gone already: someone cleaned up by hand)."""
    if episode.folder.is_symlink():  # it was a folder when listed: never follow what replaced it
        return False
    try:
        entries = list(episode.folder.iterdir())
    except FileNotFoundError:
        return True
    for entry in entries:
        if (entry.name in EPISODE_FILES or _UNFINISHED.fullmatch(entry.name)) and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
    try:
        episode.folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        left = sorted(p.name for p in episode.folder.iterdir())
        log.warning("alarm episodes: kept %s: it holds files pcedge did not write (%s)", episode.folder, ", ".join(left[:5]))
        return False
    return True


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _names_itself(folder: Path) -> bool:
    """``folder/episode.json`` is a regular file whose ``id`` is the folder's name."""
    record = folder / "episode.json"
    if not record.is_file() or record.is_symlink():
        return False
    try:
        return json.loads(record.read_text(encoding="utf-8")).get("id") == folder.name
    except (OSError, ValueError, AttributeError):
        return False

