"""The one file writer (pcedge.util.files): whole or absent, and durable where a file is the only copy of long work."""

from __future__ import annotations

import os

import pytest

from pcedge.util.files import writing


@pytest.mark.parametrize("durable", [False, True])
def test_a_durable_file_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch, durable):
    """A power loss after a plain rename can keep the new name and lose its data (an empty checkpoint replaces a good
    one): a durable write syncs the data, then renames, then syncs the folder that holds the name."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    target = tmp_path / "run.pt"
    target.write_bytes(b"the good checkpoint")
    with writing(target, durable=durable) as temporary:
        temporary.write_bytes(b"the next checkpoint")
    assert target.read_bytes() == b"the next checkpoint" and [p.name for p in tmp_path.iterdir()] == ["run.pt"]
    if durable:
        assert len(events) == 3 and events[0].startswith(f"fsync {tmp_path}/.run.pt.") and events[1:] == ["replace", f"fsync {tmp_path}"]
    else:
        assert events == ["replace"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "run.pt"
    target.write_bytes(b"the good checkpoint")
    with pytest.raises(RuntimeError), writing(target, durable=True) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("the disk is full")
    assert target.read_bytes() == b"the good checkpoint" and [p.name for p in tmp_path.iterdir()] == ["run.pt"]
