"""Acceptance, served: the site's bad day (tests/support/site_faults.py) with the defense on a real tritonserver that is
killed (SIGKILL, as a crash) mid-run and restarted: every frame is answered or counted, per stream, and the two
servers' own request counts agree with what the client says it got.

A killed server's counts die with it, so the first server's count is read just before the kill, at a moment when
nothing can change it: the client is paused (SIGSTOP) for well under a second, its requests in flight are answered,
the count is read once it stands still, the server is killed, and the client resumes into the dead server. (Reading
it while the client ran raced the kill: a request answered between the read and SIGKILL made the test fail.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from tests.support.rtsp import rtsp_server_missing
from tests.support.site_faults import run_site
from tests.video.clips import write_numbered_clip

from .conftest import SERVER_PYTHON, require_server, tiny_bicubic_model

SKIP = rtsp_server_missing()
pytestmark = pytest.mark.skipif(bool(SKIP), reason=f"no loopback RTSP server: {SKIP}")
MAX_FRAMES = 200


class CountedServer:
    """A TritonServer whose answered requests are counted exactly before it is killed (see the module docstring)."""

    STILL_S = 0.3  # the count stands still this long: the paused client's requests in flight are all answered

    def __init__(self, server) -> None:
        self.server, self.answered_before_kill = server, 0

    def answered(self) -> int:
        with urllib.request.urlopen(f"{self.server.http_url}/v2/models/tiny/stats", timeout=10) as reply:
            stats = json.load(reply)["model_stats"][0]["inference_stats"]
        return int(stats["success"]["count"])

    def kill(self, client: subprocess.Popen) -> None:
        os.kill(client.pid, signal.SIGSTOP)
        try:
            count, since = self.answered(), time.monotonic()
            while time.monotonic() - since < self.STILL_S:
                time.sleep(0.05)
                now = self.answered()
                if now != count:
                    count, since = now, time.monotonic()
            self.answered_before_kill = count
            self.server.kill()
        finally:
            os.kill(client.pid, signal.SIGCONT)

    def start(self) -> None:
        self.server.start()


def test_a_server_killed_mid_run_loses_no_frame_uncounted(tmp_path):
    require_server()
    from pcedge.serve.client import warm_up
    from pcedge.serve.repository import RepositoryOptions, write_repository
    from pcedge.serve.server import TritonServer

    write_repository(tiny_bicubic_model(tmp_path), tmp_path / "repo", RepositoryOptions(name="tiny", classifier="python"))
    clip = write_numbered_clip(tmp_path / "file.avi", 300)
    with TritonServer(tmp_path / "repo", python=SERVER_PYTHON) as server:
        warm_up(server.grpc_url, "tiny")
        counted = CountedServer(server)
        site = run_site(server.model_uri("tiny"), clip, tmp_path / "run", max_frames=MAX_FRAMES, faults=True, served_server=counted)
        warm_up(server.grpc_url, "tiny")  # one frame on the restarted server too, like the first one's warm-up
        answered_after_restart = counted.answered()
    assert site.returncode == 0, site.stderr[-3000:]
    assert "server_killed" in site.faults and "server_restarted" in site.faults
    answered = lost = 0
    for stream in site.summary["streams"]:
        failed = stream["failed_frames"]
        assert stream["end"] == "max_frames" and stream["frames"] + sum(failed.values()) == MAX_FRAMES, stream["stream_name"]
        assert failed["refused"] == 0
        assert stream["source"]["read"] == stream["frames"] + stream["source"]["dropped"] + sum(failed.values())
        answered, lost = answered + stream["frames"], lost + failed["lost"]
    served = counted.answered_before_kill - 1 + answered_after_restart - 1  # minus each server's warm-up frame
    in_flight = len(site.summary["streams"])  # at most one request per stream was in flight at the kill
    assert answered <= served <= answered + lost + in_flight, (answered, lost, served)
    assert "server unreachable" in site.stderr and "reachable again" in site.stderr, "the client said what happened"
