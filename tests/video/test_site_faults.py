"""Acceptance: every camera stands alone through a late camera, a killed server, a frozen stream (real RTSP servers).

Four loopback RTSP cameras and one file in one ``pcedge run`` (tests/support/site_faults.py): A is down at start
and comes up 12 s after the launch, B's server is killed at 8 s and restarted 3 s later, C stops sending for 10 s
without closing, D is healthy. benchmarks/bm_site_faults.py measures the same scenario against a fault-free run.
"""

from __future__ import annotations

import pytest

from tests.models import export_test_model
from tests.support.rtsp import rtsp_server_missing
from tests.support.site_faults import A_UP_S, C_FROZEN_S, run_site
from tests.video.clips import write_numbered_clip

SKIP = rtsp_server_missing()
pytestmark = pytest.mark.skipif(bool(SKIP), reason=f"no loopback RTSP server: {SKIP}")
MAX_FRAMES = 300  # 20 s of a 15 FPS camera: A (up at 10 s) and C (frozen 10 s) reach it well after the faults


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    model = export_test_model("region", folder / "region.onnx")
    clip = write_numbered_clip(folder / "file.avi", 400)
    return run_site(str(model), clip, folder / "run", max_frames=MAX_FRAMES, faults=True,
                    extra_args=("--patch", "5", "--masks-per-axis", "3"))


def test_the_run_ends_well_with_every_stream_at_its_own_n(site):
    assert site.returncode == 0, site.stderr[-3000:]
    assert {s["stream_name"]: (s["frames"], s["end"]) for s in site.summary["streams"]} == {
        name: (MAX_FRAMES, "max_frames") for name in ("a", "b", "c", "d", "file")}


def test_the_healthy_camera_and_the_file_start_at_once_and_d_keeps_its_pace(site):
    first = {name: min(r["timestamp"] + r["age_ms"] / 1e3 for r in site.frames(name)) - site.started for name in ("d", "file")}
    # the file's first result comes at once; D's after the cameras opened before it: OpenCV opens FFmpeg captures one
    # at a time and each of these servers takes ~2 s (measured 6.2 s here; RESULTS.md, issue 29), hence the margin
    assert first["file"] < 3 and first["d"] < 12, f"first results {first} s after the launch"
    fault_start, fault_end = site.faults["b_killed"], site.faults["c_thawed"]
    during = site.rate("d", fault_start, fault_end)
    last_d = max(r["timestamp"] for r in site.frames("d"))
    after = site.rate("d", fault_end, last_d)
    assert during >= 0.8 * after, f"camera D ran at {during:.1f} FPS during the faults, {after:.1f} after them"


def test_each_fault_is_a_counted_gap_on_its_own_camera(site):
    a, b, c, d = (site.stream(name)["source"] for name in ("a", "b", "c", "d"))
    assert a["gap_count"] == 1 and a["gaps"][0]["seconds"] >= A_UP_S - 2, "A: down at start, one outage until it came up"
    assert b["gap_count"] >= 1, b  # a reconnect, or (if B's first open was still queued at the kill) a retried open
    assert c["stalls"] >= 1 and c["gap_count"] >= 1 and max(g["seconds"] for g in c["gaps"]) >= C_FROZEN_S - 3, c
    assert d["gap_count"] == 0 and d["reconnects"] == 0 and d["stalls"] == 0
    first_a = min(r["timestamp"] for r in site.frames("a"))
    assert first_a >= site.faults["a_up"], "A's first frame came after it came up"
    b_frames = sorted(r["timestamp"] for r in site.frames("b"))
    assert max(later - earlier for earlier, later in zip(b_frames, b_frames[1:])) >= 2.5, "B delivered nothing while it was down"


def test_every_frame_a_camera_delivered_is_defended_or_counted(site):
    for name in ("a", "b", "c", "d", "file"):
        stream = site.stream(name)
        source, failed = stream["source"], sum(stream["failed_frames"].values())
        assert source["read"] == stream["frames"] + source["dropped"] + failed, name
        logged = site.frames(name)
        assert len(logged) == stream["frames"] and logged[-1]["dropped"] <= source["dropped"], name
        gaps = [r for r in site.records if r.get("stream_name") == name and r.get("event") == "gap"]
        assert len(gaps) == source["gap_count"], f"{name}: every outage is a gap line in the log"
    assert site.stream("file")["source"]["dropped"] == 0
