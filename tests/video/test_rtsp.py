"""Live streams against a real RTSP server on loopback (GStreamer's gst-rtsp-server, H.264 over RTP).

The server is run by Debian's python3 (tests/support/rtsp_server.py); the client is the project's
OpenCV (FFmpeg). Faults are real: the server is frozen with SIGSTOP (a stream that stalls without
closing) and killed and restarted (a camera that goes away and comes back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pcedge.video import SourceOptions, open_source
from tests.support.rtsp import RtspServer, rtsp_server_missing

ROOT = Path(__file__).resolve().parents[2]
SKIP = rtsp_server_missing()
pytestmark = pytest.mark.skipif(bool(SKIP), reason=f"no loopback RTSP server: {SKIP}")


@pytest.fixture
def server():
    srv = RtspServer().start()
    yield srv
    srv.stop()


def _take(src, count: int, timeout: float = 30):
    frames, deadline = [], time.monotonic() + timeout
    for frame in src:
        frames.append(frame)
        if len(frames) >= count or time.monotonic() > deadline:
            break
    return frames


def test_rtsp_stream_is_live_and_newest_first(server):
    with open_source(server.url) as src:
        assert src.live and src.description == f"stream {server.url}"
        frames = _take(src, 15)
        assert len(frames) == 15 and frames[0].image.shape == (240, 320, 3)
        time.sleep(1.0)  # a slow consumer: the source must not queue the frames it missed
        after = _take(src, 1)[0]
    assert after.index > frames[-1].index + 5, "after a 1 s pause the next frame must be the newest, not a queued one"
    assert src.stats.dropped >= after.index - frames[-1].index - 1 - 1


# This server takes ~2 s to open through FFmpeg (measured with both OpenCVs: stream probing), and an open cut short
# by its timeout still reports "opened" but then reads nothing; open_timeout_s=2 made reconnects fail one run in three.
RECOVERING = SourceOptions(stall_s=1.0, reconnect_s=20, open_timeout_s=5)


def test_rtsp_stall_is_detected_and_recovered(server):
    with open_source(server.url, RECOVERING) as src:
        assert len(_take(src, 5)) == 5
        server.freeze()  # the server freezes: the connection stays open, no data flows
        time.sleep(2.5)
        server.thaw()
        resumed = _take(src, 5)
    assert len(resumed) == 5
    assert src.stats.stalls >= 1 and src.stats.reconnects >= 1 and src.stats.gaps


def test_rtsp_server_restart_is_reconnected(server):
    with open_source(server.url, RECOVERING) as src:
        assert len(_take(src, 5)) == 5
        server.stop()
        time.sleep(1.5)
        server.start()  # the camera comes back on the same address
        resumed = _take(src, 5)
    assert len(resumed) == 5 and src.stats.reconnects >= 1
    assert src.stats.gaps[0]["seconds"] > 0.5


def test_rtsp_lost_for_good_ends_with_the_reason(server):
    options = SourceOptions(stall_s=0.5, reconnect_s=1.5, open_timeout_s=1)
    with open_source(server.url, options) as src:
        _take(src, 3)
        server.stop()
        list(src)
    assert "not back within 2 s" in src.stats.error or "giving up" in src.stats.error


def test_cli_run_on_rtsp(server, tmp_path):
    from tests.models import export_test_model

    model = export_test_model("region", tmp_path / "region.onnx")
    log_path = tmp_path / "frames.jsonl"
    proc = subprocess.run([sys.executable, "-m", "pcedge.cli", "run", "--model", str(model), "--source", server.url,
                           "--headless", "--max-frames", "20", "--log", str(log_path), "--patch", "5", "--masks-per-axis", "3"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert sum("index" in r for r in records) == 20 and records[-1]["event"] == "summary"
    assert "frames processed   20" in proc.stdout



def test_the_rtsp_probe_tells_a_live_server_from_a_frozen_or_absent_one(server):
    """Probed before OpenCV opens a stream: OpenCV opens captures one at a time, so a hung open would hold the others."""
    import socket

    from pcedge.video.rtsp_probe import rtsp_unanswered

    assert rtsp_unanswered(server.url, 5) == ""
    with socket.socket() as silent:  # accepts connections, never answers: a frozen camera
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        assert "no answer" in rtsp_unanswered(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x", 1)
        assert time.monotonic() - start < 3
    assert "refused" in rtsp_unanswered("rtsp://127.0.0.1:9/none", 1)
    server.freeze()
    try:
        assert "no answer" in rtsp_unanswered(server.url, 1)
    finally:
        server.thaw()
