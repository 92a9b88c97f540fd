"""Config files written for real in tmp folders, with real environment variables and credential folders."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

from pcedge.util import secrets


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """``write(text, name="site.yml")``: the dedented text as a file that has stood still for a while (its
    modification time ten seconds ago), so the loader reads it at once."""
    def write_file(text: str, name: str = "site.yml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        past = time.time() - 10
        os.utime(path, (past, past))
        return path

    return write_file


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """``credentials(name, value)``: a secret in a real $CREDENTIALS_DIRECTORY (as systemd's LoadCredential= makes)."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))

    def put(name: str, value: str) -> Path:
        (folder / name).write_text(value + "\n", encoding="utf-8")
        return folder / name

    return put


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the once-per-run warnings afresh, and no PCEDGE_* variable from the caller's environment."""
    monkeypatch.setattr(secrets, "_warned", set())
    for name in [n for n in os.environ if n.startswith("PCEDGE_") or n == "CREDENTIALS_DIRECTORY"]:
        monkeypatch.delenv(name)


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    """A file for --model (its parser checks that the file exists; nothing here loads it)."""
    path = tmp_path / "lite0.onnx"
    path.write_bytes(b"not loaded by these tests")
    return str(path)
