"""GStreamer sources with a real GStreamer (1.22, through an OpenCV built with it), as a Jetson reads cameras.

pip's OpenCV has no GStreamer, so in the main environment these skip; the JetPack-like lane (``make
test-jetpack``: Debian's python3, numpy 1.24 and python3-opencv 4.6 with GStreamer, in a venv made with
--system-site-packages) runs them. The CSI pipeline is exactly the string built for a Jetson, with the
Jetson-only elements (nvarguscamerasrc, the NVMM caps feature, nvvidconv) swapped for desktop ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pcedge.video import SourceOptions, open_source
from pcedge.video.uri import JETSON_ONLY_ELEMENTS, csi_pipeline, opencv_has_gstreamer, parse_source, rtsp_pipeline
from tests.models import export_test_model
from tests.video.clips import count_frames

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not opencv_has_gstreamer(), reason="this OpenCV has no GStreamer (pip's never has): the "
                                "JetPack-like lane, make test-jetpack, runs these with Debian's OpenCV and GStreamer 1.22")

BGR_TAIL = "videoconvert ! video/x-raw,format=BGR ! appsink drop=1 max-buffers=1 sync=false"


def on_desktop(pipeline: str) -> str:
    """A Jetson pipeline with its Jetson-only elements replaced by desktop GStreamer's; nothing else changes."""
    out = pipeline
    for old, new in (("nvarguscamerasrc sensor-id=0", "videotestsrc is-live=true pattern=ball"), ("(memory:NVMM)", ""),
                     ("nvv4l2decoder ! nvvidconv", "avdec_h264 ! videoconvert"), ("nvvidconv", "videoconvert")):
        out = out.replace(old, new)
    assert not any(element in out for element in JETSON_ONLY_ELEMENTS), out
    return out


def first_frames(uri: str, count: int, options: SourceOptions | None = None) -> tuple[list, dict]:
    with open_source(uri, options or SourceOptions(reconnect_s=0, stall_s=10)) as source:
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == count:
                break
        return frames, source.stats.as_dict()


def test_gst_pipeline_negotiates_bgr_frames_of_the_requested_size():
    frames, _ = first_frames(f"gst:videotestsrc pattern=smpte ! video/x-raw,format=I420,width=320,height=240 ! {BGR_TAIL}", 5)
    assert len(frames) == 5
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].image.std() > 10, "the SMPTE bars must arrive, not a blank frame"


def test_csi_pipeline_as_built_for_a_jetson_runs_with_its_jetson_elements_swapped():
    options = SourceOptions(width=640, height=360, fps=30, reconnect_s=0, stall_s=10)
    jetson = csi_pipeline(0, options)
    assert jetson.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=640,height=360,framerate=30/1")
    frames, _ = first_frames("gst:" + on_desktop(jetson), 3, options)
    assert [f.image.shape for f in frames] == [(360, 640, 3)] * 3


def test_slow_consumer_gets_the_newest_frame_and_counts_the_rest():
    """appsink drop=1 max-buffers=1 plus the capture thread: a model slower than the camera never falls behind."""
    uri = f"gst:videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1 ! {BGR_TAIL}"
    with open_source(uri, SourceOptions(reconnect_s=0, stall_s=10)) as source:
        ages = []
        for n, frame in enumerate(source):
            ages.append(time.time() - frame.captured_at)
            time.sleep(0.25)  # a 4 FPS model on a 30 FPS camera
            if n == 7:
                break
        dropped = source.stats.dropped
    assert dropped >= 20, f"about 6 of every 7 frames should be dropped, got {dropped}"
    assert max(ages[1:]) < 0.2, f"frames must be fresh when handed out, ages {ages}"


def _rtsp_ready() -> str:
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "assert all(Gst.ElementFactory.find(e) for e in ('x264enc', 'rtph264pay', 'avdec_h264', 'rtspsrc'))")
    result = subprocess.run(["/usr/bin/python3", "-c", probe], capture_output=True, text=True)
    return "" if result.returncode == 0 else ("needs the loopback RTSP server's packages and gstreamer1.0-libav (avdec_h264): "
                                              "make system-deps")


@pytest.mark.skipif(bool(_rtsp_ready()), reason=_rtsp_ready() or "ready")
def test_rtsp_through_gstreamer_beside_ffmpeg():
    from tests.support.rtsp import RtspServer

    server = RtspServer().start()
    try:
        spec = parse_source(server.url, SourceOptions(rtsp_backend="gstreamer"))
        assert spec.kind == "gstreamer" and spec.location == rtsp_pipeline(server.url, jetson=False)
        for backend in ("gstreamer", "ffmpeg"):
            frames, stats = first_frames(server.url, 5, SourceOptions(rtsp_backend=backend, reconnect_s=0, stall_s=10))
            assert [f.image.shape for f in frames] == [(240, 320, 3)] * 5, backend
            assert stats["read"] >= 5
        frames, _ = first_frames("gst:" + on_desktop(rtsp_pipeline(server.url, jetson=True)), 3)  # the Jetson string
        assert [f.image.shape for f in frames] == [(240, 320, 3)] * 3
    finally:
        server.stop()


def test_pcedge_run_end_to_end_on_a_gstreamer_source(tmp_path):
    model = export_test_model("cnn", tmp_path / "cnn.onnx")
    out, log = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    source = f"gst:videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! {BGR_TAIL}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pcedge", "run", "--model", str(model), "--source", source, "--output", str(out),
                             "--log", str(log), "--max-frames", "25", "--patch", "5", "--masks-per-axis", "3", "-q"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum("index" in r and "event" not in r for r in records) == 25 and records[-1]["event"] == "summary"
    assert count_frames(out) == 25
