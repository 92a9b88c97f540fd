"""A stream's names: the one it is shown by, and the slug it becomes in topics, URLs, folders, files and metric labels.

Two rules keep a site's cameras apart and its secrets in: a default name is built from the redacted URI (host and
path, never credentials or a query string), and :func:`check_unique` refuses two streams whose slugs collide
(``Front Door`` and ``front_door``, or two cameras both ending in ``/live.sdp`` on hosts named alike), since their
topics, retained alarms, tiles, folders and metric series would otherwise merge without a word.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from ..errors import ConfigError
from .redact import redact, redact_url

_NOT_SLUG = re.compile(r"[^a-z0-9_-]+")


def slug(name: str) -> str:
    """``name`` as it appears in topics, URLs, folders, file names and labels: lowercase letters, digits, '-' and '_'
    (what Home Assistant accepts in an object id)."""
    return _NOT_SLUG.sub("_", name.lower()).strip("_") or "camera"


def default_name(uri: str, index: int) -> str:
    """The name of a stream given without ``name=``: a file's stem, a folder's name, ``host-path`` for a URL (e.g.
    ``10.0.0.5-stream1``, with the port when one is given), ``cameraN`` / ``csiN`` for devices, ``gstreamerN`` for a
    pipeline; never anything from a URL's credentials or query."""
    text = uri.strip()
    if text.startswith("gst:"):
        return f"gstreamer{index}"
    if "://" in text and not text.startswith(("file://", "v4l2://", "csi://")):
        parts = urlsplit(redact_url(text))
        try:
            port = f"-{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        segments = [s for s in parts.path.split("/") if s and s != "…"]
        return "-".join([f"{parts.hostname or parts.scheme}{port}", *segments]) or f"stream{index}"
    if text.startswith("csi://"):
        return f"csi{text[len('csi://'):]}"
    if text.isdigit():
        return f"camera{text}"
    path = Path(text.removeprefix("file://").removeprefix("v4l2://"))
    if any(ch in path.name for ch in "*?["):  # a glob of images: its folder
        path = path.parent
    return (path.stem if path.suffix else path.name) or f"stream{index}"


def parse_source(text: str, index: int) -> tuple[str, str]:
    """``name=URI`` as (name, URI); a bare URI (``=`` inside a URL or pipeline, or no name before it) gets
    :func:`default_name`. ``index`` is the source's place among the run's sources."""
    name, sep, uri = text.partition("=")
    if sep and name and "/" not in name and ":" not in name:
        return name, uri
    return default_name(text, index), text


def check_unique(names: Sequence[str], *, how_to_rename: str = "--source NAME=URI") -> None:
    """Refuse streams whose names or slugs collide, naming both and the way to tell them apart."""
    seen: dict[str, str] = {}
    for name in names:
        key = slug(name)
        if key in seen:
            first = seen[key]
            same = "the same name" if first == name else f"the same name '{key}' in topics, URLs, folders and labels"
            raise ConfigError(f"streams {redact(first)!r} and {redact(name)!r} would have {same}: give each its own name "
                              f"({how_to_rename})")
        seen[key] = name
