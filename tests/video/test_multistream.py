"""Several streams on one engine: every frame's result is what that frame alone gets, nothing lost, no stream held up."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pcedge.errors import ConfigError
from pcedge.runtime.driver import PatchCleanser
from pcedge.video import StreamSpec, stream_many
from pcedge.video.base import Frame, FrameSource
from pcedge.video.sinks import stream_outputs
from tests.video.clips import GivenFrames, count_frames, numbered_frame, read_index, write_numbered_clip

ROOT = Path(__file__).resolve().parents[2]
K = 9



@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return [write_numbered_clip(folder / f"cam{n}.avi", count, size=(96 + 16 * n, 128)) for n, count in enumerate((30, 18, 24))]


def defended(region_onnx, streams: int) -> PatchCleanser:
    return PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3, max_batch=streams * K)


class StalledCamera(FrameSource):
    """A live source that delivers a few frames and then stops delivering (a frozen camera), until closed."""

    live = True

    def __init__(self, frames: int) -> None:
        super().__init__("stalled camera")
        self._frames, self._closed = frames, threading.Event()

    def __iter__(self):
        for index in range(self._frames):
            self.stats.read += 1
            yield Frame(numbered_frame(index), index, time.time())
        self._closed.wait()  # stalled: no frame, no end

    def close(self) -> None:
        self._closed.set()


def test_every_frame_of_every_stream_gets_exactly_its_single_stream_result(region_onnx, clips):
    with defended(region_onnx, 3) as pc:
        seen: dict[int, list] = {0: [], 1: [], 2: []}
        for index, result, frame in stream_many([str(c) for c in clips], pc):
            seen[index].append((frame.index, result, frame.image))
        for n, count in enumerate((30, 18, 24)):
            assert [i for i, _, _ in seen[n]] == list(range(count)), f"stream {n} lost or reordered frames"
            for i, result, image in seen[n]:
                alone = pc.predict(image)
                assert (result.label, result.case, result.disagreers, result.level, result.two_mask_passes) == (
                    alone.label, alone.case, alone.disagreers, alone.level, alone.two_mask_passes)
                assert read_index(image) == i
        sizes = [s for n in seen for _, r, _ in seen[n] for s in r.batch_sizes[:1]]
        assert max(sizes) == 3 * K, "frames of different streams must share engine calls"
        cases = {r.case for n in seen for _, r, _ in seen[n]}
        assert {"disagreer", "majority"} & cases, "the second round must run in the batched steps"


def test_each_stream_keeps_its_own_alarm(region_onnx, clips):
    """A 2/2 alarm on a stream whose every frame is at the patch level is raised from its second frame on, while
    the stream beside it (never at the patch level), served in the same steps, never alarms."""
    from tests.runtime.test_driver import frames

    patched = frames(24, seed=3)[8]
    with defended(region_onnx, 2) as pc:
        assert pc.predict(patched).level == "patch"
        alarms: dict[int, list] = {0: [], 1: []}
        for index, result, _ in stream_many([GivenFrames([patched] * 12), StreamSpec(str(clips[1]), "clean")], pc, alarm="2/2"):
            alarms[index].append((result.level, result.stream_alarm.active))
        assert [a for _, a in alarms[0]] == [False] + [True] * 11
        assert all(level != "patch" and not active for level, active in alarms[1]) and len(alarms[1]) == 18


def test_a_stalled_stream_never_holds_the_others(region_onnx, clips):
    with defended(region_onnx, 2) as pc:
        stalled = StalledCamera(frames=2)
        start = time.monotonic()
        served = {0: 0, 1: 0}
        for index, _, _ in stream_many([stalled, StreamSpec(str(clips[0]), "file")], pc):
            served[index] += 1
            if served[1] == 30:
                break
        # a live source's frames are its newest at each step: the two it sent at once are one defended and one
        # counted as dropped (replaced before a step took it), or both defended
        assert served[1] == 30 and served[0] >= 1 and served[0] + stalled.stats.dropped == 2 and time.monotonic() - start < 30
        stalled.close()


def test_more_streams_than_one_call_holds_still_get_their_own_results(region_onnx, clips):
    """With calls of K images (the CPU default), three streams make three first-round calls per step."""
    with defended(region_onnx, 1) as pc:
        for index, result, frame in stream_many([str(c) for c in clips], pc):
            assert max(result.batch_sizes) <= K
            alone = pc.predict(frame.image)
            assert (result.label, result.case, result.disagreers) == (alone.label, alone.case, alone.disagreers)


def test_stream_names_and_outputs():
    assert StreamSpec.parse("door=rtsp://10.0.0.5/cam", 0) == StreamSpec("rtsp://10.0.0.5/cam", "door")
    assert StreamSpec.parse("rtsp://admin:pw@10.0.0.5/cam", 1).name == "10.0.0.5-cam"
    assert StreamSpec.parse("/videos/yard.mp4", 2).name == "yard"
    assert stream_outputs(["rec"], ["door", "yard"]) == ["rec/door.mp4", "rec/yard.mp4"]
    assert stream_outputs(["a.mp4", "b.mp4"], ["x", "y"]) == ["a.mp4", "b.mp4"]
    with pytest.raises(ConfigError, match="once per source"):
        stream_outputs(["a.mp4"], ["x", "y"])


def test_cli_runs_several_sources_with_one_log_and_one_video_each(region_onnx, clips, tmp_path):
    log_path, summary_path = tmp_path / "f.jsonl", tmp_path / "s.json"
    out = subprocess.run([sys.executable, "-m", "pcedge.cli", "run", "--model", str(region_onnx), "--source", f"front={clips[0]}",
                          "--source", str(clips[1]), "--output", str(tmp_path / "rec"), "--log", str(log_path),
                          "--json", str(summary_path), "--patch", "5", "--masks-per-axis", "3"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = [r for r in records if "index" in r]
    assert {(r["stream"], r["stream_name"]) for r in frames} == {(0, "front"), (1, "cam1")}
    assert sorted(r["index"] for r in frames if r["stream"] == 0) == list(range(30))
    assert sorted(r["index"] for r in frames if r["stream"] == 1) == list(range(18))
    summary = json.loads(summary_path.read_text())
    assert [s["frames"] for s in summary["streams"]] == [30, 18] and summary["frames"] == 48
    assert records[-1]["event"] == "summary" and "stream" not in records[-1]
    assert count_frames(tmp_path / "rec" / "front.mp4") == 30 and count_frames(tmp_path / "rec" / "cam1.mp4") == 18
    assert "all streams" in out.stdout and "front" in out.stdout


def test_sigterm_finishes_every_recording(region_onnx, clips, tmp_path):
    import os
    import signal

    log_path, summary_path = tmp_path / "f.jsonl", tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "pcedge.cli", "run", "--model", str(region_onnx), "--source", f"a={clips[0]}",
                             "--source", f"b={clips[1]}", "--loop", "--output", str(tmp_path / "rec"), "--log", str(log_path),
                             "--json", str(summary_path), "--patch", "5", "--masks-per-axis", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log_path.exists() or log_path.read_text().count("\n") < 40):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    summary = json.loads(summary_path.read_text())
    assert summary["interrupted"] is True
    for stream in summary["streams"]:
        assert stream["frames"] > 0 and count_frames(tmp_path / "rec" / f"{stream['stream_name']}.mp4") == stream["frames"]
