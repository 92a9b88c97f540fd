"""The events folder is pcedge's and only pcedge's episodes are ever deleted there: a folder holding someone's files is
refused before the model loads, retention leaves alone whatever does not prove itself pcedge's, and a full disk
recovers by deleting pcedge's oldest episodes (real folders, files, symlinks and a real small tmpfs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pcedge.errors import ConfigError
from pcedge.site.build import SiteOptions, site_sinks
from pcedge.site.events_folder import MARKER, claim, stored_episodes
from pcedge.video import RunOptions, Sink, SourceOptions, run
from tests.site.conftest import CLEAN, PATCHED, defended

ROOT = Path(__file__).resolve().parents[2]


def someone_elses(folder: Path) -> dict[Path, bytes]:
    """What the issue measured being deleted: an NVR's day folders and a photo album, with their contents."""
    files = {folder / "cam1" / "2024-06-01" / "v.mp4": b"recording 1", folder / "cam1" / "2024-06-02" / "v.mp4": b"recording 2",
             folder / "photos" / "holiday" / "a.jpg": b"photo"}
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def pcedge_episode(root: Path, camera: str, start: float, nbytes: int = 1000) -> Path:
    """An episode folder as pcedge writes it (what retention may delete)."""
    folder = root / camera / f"{start:.6f}-{camera}"
    folder.mkdir(parents=True)
    (folder / "episode.json").write_text(json.dumps({"type": "end", "id": folder.name, "camera": camera}))
    (folder / "snapshot.jpg").write_bytes(os.urandom(nbytes))
    return folder


def test_a_folder_holding_someone_elses_files_is_refused_and_left_as_it_was(tmp_path):
    files = someone_elses(tmp_path / "nvr")
    with pytest.raises(ConfigError, match=r"--events .*nvr: this folder holds files pcedge did not put there \(cam1, photos\)"):
        claim(tmp_path / "nvr")
    assert all(path.read_bytes() == data for path, data in files.items()) and not (tmp_path / "nvr" / MARKER).exists()


def test_the_command_refuses_it_before_the_model_loads(tmp_path, region_onnx):
    someone_elses(tmp_path / "nvr")
    out = subprocess.run([sys.executable, "-m", "pcedge", "run", "--model", str(region_onnx), "--source", str(tmp_path / "x.mp4"),
                          "--events", str(tmp_path / "nvr"), "--headless"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 2 and "holds files pcedge did not put there" in out.stderr
    assert "engine:" not in out.stderr, "refused before the model loaded"


@pytest.mark.parametrize("where", ["new", "empty"])
def test_a_new_or_empty_folder_becomes_pcedges(tmp_path, where):
    folder = tmp_path / "events"
    if where == "empty":
        folder.mkdir()
    assert claim(folder) == folder and json.loads((folder / MARKER).read_text())["created_by"] == "pcedge"
    (folder / "door").mkdir()
    claim(folder)  # pcedge's own folder, with things in it: accepted again


def test_an_unwritable_folder_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match="pcedge cannot write there"):
        claim(tmp_path / "a-file" / "events")


def test_retention_deletes_only_what_proves_itself_pcedges(tmp_path, region_onnx, alarm_clip):
    events = claim(tmp_path / "events")
    outside = tmp_path / "outside" / "1700000000.000000-door"
    outside.mkdir(parents=True)
    (outside / "episode.json").write_text(json.dumps({"id": outside.name}))
    foreign = {
        **someone_elses(events),  # put there after pcedge claimed the folder
        events / "door" / "1700000001.000000-door" / "clip.mp4": b"no record: not an episode",
        events / "door" / "1700000002.000000-door" / "episode.json": json.dumps({"id": "another"}).encode(),
        events / "Door" / "1700000003.000000-Door" / "episode.json": json.dumps({"id": "1700000003.000000-Door"}).encode(),
        events / "notes.txt": b"the operator's notes",
    }
    for path, data in foreign.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (events / "door" / "1700000004.000000-door").symlink_to(outside, target_is_directory=True)
    old = [pcedge_episode(events, "door", 1700000100.0 + i) for i in range(3)]
    (old[1] / "operator-note.txt").write_text("keep me")  # a file of someone's inside one of pcedge's episodes
    with defended(region_onnx) as pc:
        sinks = site_sinks(SiteOptions(events=str(events), clip_seconds=0, events_keep=1), pc)
        summary = run(pc, [f"door={alarm_clip}"], SourceOptions(), RunOptions(), sinks=sinks)
    assert summary["alarms_raised"] == 1 and summary["sinks"]["events on disk"] == {"dropped": 0, "failed": 0}
    assert all(path.read_bytes() == data for path, data in foreign.items()), "nothing that is not pcedge's was touched"
    assert (outside / "episode.json").is_file() and (events / "door" / "1700000004.000000-door").is_symlink()
    assert not old[0].exists() and not old[2].exists()
    assert sorted(p.name for p in old[1].iterdir()) == ["operator-note.txt"], "pcedge's files went, the note stayed"
    (newest,) = stored_episodes(events)
    assert json.loads((newest.folder / "episode.json").read_text())["type"] == "end"


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (a disk that fills up), unmounted after the test."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({result.stderr.strip() or 'needs root'})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_recovers_by_deleting_pcedges_oldest_episodes(small_disk, region_onnx, alarm_clip):
    from pcedge.site.disk import EpisodeRecorder
    from pcedge.site.episodes import EpisodeBook
    from pcedge.video.sinks import annotator

    events = claim(small_disk / "events")
    ballast = small_disk / "someone-elses.bin"
    ballast.write_bytes(os.urandom(1 << 20))
    old = [pcedge_episode(events, "door", 1700000100.0 + i, nbytes=400_000) for i in range(4)]
    assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize < 600_000, "the disk is nearly full"
    with defended(region_onnx) as pc:
        book = EpisodeBook(annotator(pc))
        recorder = EpisodeRecorder(events, book, clip_seconds=0.5, keep=100, min_free_bytes=900_000)
        summary = run(pc, [f"door={alarm_clip}"], SourceOptions(), RunOptions(fps_limit=20), sinks=[book, recorder])
    assert summary["alarms_raised"] == 1 and recorder.failed == 0 and recorder.written == 1
    assert ballast.stat().st_size == 1 << 20, "someone else's file is never what makes room"
    gone = [folder for folder in old if not folder.exists()]
    assert 1 <= len(gone) < len(old) and gone == old[: len(gone)], "the oldest went first, only as many as needed"
    newest = stored_episodes(events)[-1].folder
    assert {p.name for p in newest.iterdir()} == {"episode.json", "snapshot.jpg", "clip.mp4"}


def test_episodes_the_book_forgot_keep_no_snapshot_in_memory(region_onnx, alarm_clip, monkeypatch):
    """A disk or broker away for hours holds every episode since in its queue: only the book's recent ones keep their
    JPEG, so memory stays bounded by RECENT snapshots, whatever the queues hold."""
    from pcedge.site import episodes
    from pcedge.video.sinks import annotator

    monkeypatch.setattr(episodes, "RECENT", 2)
    with defended(region_onnx) as pc:
        book = episodes.EpisodeBook(annotator(pc))
        held: list = []

        class Holder(Sink):
            order = 2

            def frame(self, item):
                transition = book.transition(item)
                if transition is not None and transition.kind == "new":
                    held.append(transition.episode)  # as a hung publisher's queue would

        summary = run(pc, [f"door={alarm_clip}"], SourceOptions(loop=True), RunOptions(max_frames=4 * (2 * CLEAN + PATCHED)),
                      sinks=[book, Holder()])
    assert summary["alarms_raised"] == 4 and len(held) == 4
    assert [bool(e.snapshot()) for e in held] == [False, False, True, True]


def test_an_episode_someone_removed_by_hand_is_simply_gone(tmp_path):
    from pcedge.site.events_folder import remove

    events = claim(tmp_path / "events")
    pcedge_episode(events, "door", 1700000100.0)
    (episode,) = stored_episodes(events)
    shutil.rmtree(episode.folder)
    assert remove(episode) is True
