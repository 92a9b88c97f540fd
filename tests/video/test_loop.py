"""The stream loop on real models and real files: per-stream stops, fresh live frames, failures that stay in their
stream, sinks that cannot stop the defense, and counts that add up."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from pcedge.errors import EngineError
from pcedge.runtime.driver import PatchCleanser
from pcedge.video import Defended, RunOptions, Sink, SourceOptions, StreamLoop, run
from pcedge.video.base import open_capture
from pcedge.video.live import LiveSource
from pcedge.video.uri import SourceSpec
from tests.video.clips import GivenFrames, numbered_frame, write_numbered_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {n: write_numbered_clip(folder / f"c{n}.avi", n) for n in (5, 40)}


def defended(region_onnx) -> PatchCleanser:
    return PatchCleanser.from_onnx(region_onnx, backend="ort", patch="5", masks_per_axis=3)


def test_max_frames_ends_each_stream_at_its_own_n(region_onnx, clips):
    with defended(region_onnx) as pc:
        summary = run(pc, [str(clips[5]), str(clips[40])], SourceOptions(), RunOptions(max_frames=10))
    short, long = summary["streams"]
    assert (short["frames"], short["end"]) == (5, "end")
    assert (long["frames"], long["end"]) == (10, "max_frames")
    assert long["source"]["read"] == 10, "a file is not read past the frames it will defend"


def test_a_camera_down_at_start_never_holds_the_file_beside_it(region_onnx, clips, tmp_path):
    log_path = tmp_path / "frames.jsonl"
    options = SourceOptions(reconnect_s=2, open_timeout_s=1)
    with defended(region_onnx) as pc:
        start = time.monotonic()
        summary = run(pc, [str(clips[40]), "dead=rtsp://127.0.0.1:9/none"], options, RunOptions(log_path=str(log_path)))
    file, dead = summary["streams"]
    assert file["frames"] == 40 and file["end"] == "end"
    assert dead["end"] == "lost" and "never opened, retried for 2 s" in dead["source"]["error"]
    assert dead["source"]["gap_count"] == 1 and summary["all_live_lost"]
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    first_frame = next(i for i, r in enumerate(records) if "index" in r and r["stream"] == 0)
    lost = next(i for i, r in enumerate(records) if r.get("event") == "ended" and r["stream"] == 1)
    assert first_frame < lost, "the file was defended while the camera was still being retried"
    assert time.monotonic() - start < 20


def test_a_frame_the_writer_refuses_is_that_frames_counted_failure(region_onnx, tmp_path):
    good = [numbered_frame(i) for i in range(6)]
    bad = np.zeros((96, 128, 5), np.uint8)  # five channels: no camera format
    source = GivenFrames(good[:3] + [bad] + good[3:])
    log_path = tmp_path / "frames.jsonl"
    with defended(region_onnx) as pc:
        summary = run(pc, [source], SourceOptions(), RunOptions(log_path=str(log_path)))
        alone = [pc.predict(image) for image in good]
    assert summary["frames"] == 6 and summary["failed_frames"] == {"refused": 1, "lost": 0, "unsent": 0}
    assert summary["source"]["read"] == summary["frames"] + sum(summary["failed_frames"].values())
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    errors = [r for r in records if r.get("event") == "frame_error"]
    assert len(errors) == 1 and errors[0]["index"] == 3 and "(H, W, 3)" in errors[0]["reason"]
    assert [r["label"] for r in records if "label" in r] == [a.label for a in alone]


def test_a_full_disk_for_the_log_and_a_failing_sink_never_stop_the_defense(region_onnx, clips, caplog):
    class Broken(Sink):
        name = "broken publisher"

        def frame(self, item):
            raise RuntimeError("the broker went away")

    with defended(region_onnx) as pc:
        summary = run(pc, [str(clips[40])], SourceOptions(), RunOptions(log_path="/dev/full"), sinks=[Broken()])
    assert summary["frames"] == 40
    assert summary["sinks"] == {"broken publisher": {"switched_off": "RuntimeError: the broker went away"},
                                "frame log": {"switched_off": "OSError: /dev/full: No space left on device"}}
    assert "frame log failed and is switched off (the defense goes on)" in caplog.text


def test_an_engine_failure_stops_the_run_and_still_writes_the_summary(region_onnx, clips, tmp_path):
    class FailingEngine:
        """The real driver until its third step, then the engine fails (the device went away)."""

        def __init__(self, pc):
            self.pc, self.steps = pc, 0

        def __getattr__(self, name):
            return getattr(self.pc, name)

        def predict_each(self, frames):
            self.steps += 1
            if self.steps == 3:
                raise EngineError("the device was lost")
            return self.pc.predict_each(frames)

    log_path = tmp_path / "frames.jsonl"
    with defended(region_onnx) as pc:
        with pytest.raises(EngineError, match="device was lost"):
            run(FailingEngine(pc), [str(clips[40])], SourceOptions(), RunOptions(log_path=str(log_path)))
    last = json.loads(log_path.read_text().splitlines()[-1])
    assert last["event"] == "summary" and last["frames"] == 2 and last["error"] == "the device was lost"


class SlowModel:
    """The real driver, each step made ``delay_s`` slower (a CPU model on a fast camera)."""

    def __init__(self, pc, delay_s: float) -> None:
        self.pc, self.delay_s = pc, delay_s

    def predict_each(self, frames):
        time.sleep(self.delay_s)
        outcomes = self.pc.predict_each(frames)
        for outcome in outcomes:
            outcome.timings_ms["total"] += self.delay_s * 1e3
        return outcomes


def test_a_live_stream_defends_its_newest_frame_and_counts_the_rest(region_onnx, clips):
    """A 50 FPS camera and a step of 150 ms: each defended frame was captured within a camera period or two of its
    step's start (not a step earlier), and every captured frame is defended or counted as dropped."""
    options = SourceOptions(fps=50, reconnect_s=0)
    camera = LiveSource(SourceSpec("camera", "clip", "clip"), options,
                        opener=lambda: open_capture(str(clips[40]), 1900, options, "clip camera"))  # 1900: cv2.CAP_FFMPEG
    with defended(region_onnx) as pc:
        items = [item for item in StreamLoop(SlowModel(pc, 0.15), [camera]) if isinstance(item, Defended)]
    camera.close()
    assert len(items) >= 4
    extra = [item.age_ms - item.result.timings_ms["total"] for item in items]  # capture -> step start
    assert float(np.median(extra)) < 60, f"frames waited {extra} ms before their step: not the newest"
    assert camera.stats.read == len(items) + camera.stats.dropped


def test_stop_ends_every_stream_and_the_log_says_so(region_onnx, clips, tmp_path):
    stop = threading.Event()

    class StopAfter(Sink):
        def frame(self, item):
            if item.stream.stats.frames == 5:
                stop.set()

    log_path = tmp_path / "frames.jsonl"
    with defended(region_onnx) as pc:
        summary = run(pc, [str(clips[40])], SourceOptions(), RunOptions(log_path=str(log_path)), stop=stop, sinks=[StopAfter()])
    assert summary["interrupted"] and summary["end"] == "stopped" and summary["frames"] == 5
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert {"event": "ended", "reason": "stopped"} in records


STOP_WHILE_DECODING = """
import sys, threading
from pcedge.video.feeds import Feed
from pcedge.video.sources import open_source
from pcedge.video.uri import SourceOptions
for attempt in range(300):
    wake, taken = threading.Event(), 0
    mine = open_source(sys.argv[1], SourceOptions()) if attempt % 2 else None  # a source the caller opened and closes
    feed = Feed(mine or sys.argv[1], SourceOptions(), wake)
    feed.start()
    while taken < attempt % 7 and not feed.ended:
        if feed.poll() is None:
            wake.wait(0.05)
            wake.clear()
        else:
            taken += 1
    feed.close()
    feed.join(5)
    if mine is not None:
        mine.close()
"""


def test_a_file_stopped_while_its_next_frame_decodes_is_released_after_the_read(tmp_path):
    """A file is read one frame ahead, so a stream stopped (end of the run, a reload that removes it, ``--max-frames``)
    usually finds its reader inside ``read()``: releasing the capture then crashed the process (SIGSEGV about once in
    a few hundred stops). The feed releases a file it opened after its reader left, and its ``join`` waits for the
    reader before a caller closes a file it opened itself. Run in a child so a crash is this test's failure."""
    import subprocess
    import sys
    from pathlib import Path

    clip = write_numbered_clip(tmp_path / "c.avi", 60, size=(640, 480))
    out = subprocess.run([sys.executable, "-c", STOP_WHILE_DECODING, str(clip)], capture_output=True, text=True, timeout=240,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
