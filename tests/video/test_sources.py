"""Frame sources on real files and real OpenCV captures: nothing dropped from files, newest-frame for live."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from pcedge.errors import ConfigError, SourceError
from pcedge.video.base import open_capture
from pcedge.video.sources import LiveSource, SourceOptions, SourceSpec, open_source, parse_source
from pcedge.video.uri import opencv_has_gstreamer
from tests.video.clips import numbered_frame, read_index, write_numbered_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_numbered_clip(tmp_path_factory.mktemp("clips") / "numbered.mp4", 40)


def test_parse_source_kinds(tmp_path, clip):
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", numbered_frame(1))[1].tobytes())
    assert parse_source("0") == SourceSpec("camera", 0, "0")
    assert parse_source("/dev/video2").location == "/dev/video2"
    assert parse_source("v4l2:///dev/video1") == SourceSpec("camera", "/dev/video1", "v4l2:///dev/video1")
    assert parse_source("rtsp://10.0.0.2:8554/cam").kind == "network"
    assert parse_source("rtp://@:5000").kind == "network"
    assert parse_source("gst:videotestsrc ! appsink").location == "videotestsrc ! appsink"
    csi = parse_source("csi://1", SourceOptions(width=1920, height=1080, fps=30))
    assert csi.kind == "gstreamer" and "sensor-id=1" in csi.location and "width=1920" in csi.location
    assert parse_source(clip).kind == "video"
    assert parse_source(f"file://{clip}").kind == "video"
    assert parse_source(tmp_path).kind == "images"
    assert parse_source(str(tmp_path / "*.png")).location == [tmp_path / "a.png"]
    assert parse_source(tmp_path / "a.png").kind == "image"


@pytest.mark.parametrize("uri, words", [
    ("", "empty source"),
    ("/no/such/file.mp4", "no such file"),
    ("csi://left", "csi://N"),
])
def test_bad_source_uris(uri, words):
    with pytest.raises(SourceError, match=words):
        parse_source(uri)


def test_empty_folder_and_glob_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SourceError, match="no image files"):
        parse_source(tmp_path)
    with pytest.raises(SourceError, match="matches no image files"):
        parse_source(str(tmp_path / "*.jpg"))


def test_missing_camera_names_the_device():
    with pytest.raises(SourceError, match=r"camera 63: /dev/video63 does not exist"):
        open_source("63")


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer: the no-GStreamer message cannot be shown")
def test_gstreamer_source_without_gstreamer_says_so():
    with pytest.raises(SourceError, match="no GStreamer support"):
        open_source("gst:videotestsrc ! videoconvert ! appsink")


def test_unreachable_stream_fails_fast_with_the_url():
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open stream rtsp://127\.0\.0\.1:9/none"):
        open_source("rtsp://127.0.0.1:9/none", SourceOptions(open_timeout_s=2))
    assert time.monotonic() - start < 10


def test_video_file_delivers_every_frame_in_order(clip):
    with open_source(clip) as src:
        got = [(f.index, read_index(f.image)) for f in src]
    assert got == [(i, i) for i in range(40)]
    assert src.stats.read == 40 and src.stats.dropped == 0 and not src.live
    assert src.fps == pytest.approx(25, abs=0.5)


@pytest.mark.parametrize("name, fourcc", [("clip.avi", "MJPG"), ("clip.mkv", "FFV1"), ("clip.avi", "FFV1"), ("clip.mov", "mp4v")])
def test_every_container_and_codec_is_read_completely(tmp_path, name, fourcc):
    path = write_numbered_clip(tmp_path / name, 12, fourcc=fourcc)
    with open_source(path) as src:
        assert [read_index(f.image) for f in src] == list(range(12))


def test_a_file_cut_off_mid_stream_ends_cleanly(tmp_path):
    """A recording that was cut (a full disk, a crash): every decodable frame, then a clean end."""
    whole = write_numbered_clip(tmp_path / "whole.avi", 40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with open_source(cut) as src:
        got = [read_index(f.image) for f in src]
    assert 5 < len(got) < 40 and got == list(range(len(got)))


def test_video_file_loops(clip):
    with open_source(clip, SourceOptions(loop=True)) as src:
        got = [read_index(f.image) for _, f in zip(range(100), src)]
    assert got == [i % 40 for i in range(100)]


def test_corrupt_video_file_is_an_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="broken.mp4"):
        list(open_source(bad))


def test_image_folder_counts_unreadable_files(tmp_path):
    for i in (3, 1, 2):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), numbered_frame(i))
    (tmp_path / "img0.jpg").write_bytes(b"definitely not a jpeg")
    gray = cv2.cvtColor(numbered_frame(4), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(tmp_path / "img4.png"), gray)
    with open_source(tmp_path) as src:
        frames = list(src)
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img3.png", "img4.png"]
    assert [read_index(f.image if f.image.ndim == 3 else f.image[..., None].repeat(3, 2)) for f in frames] == [1, 2, 3, 4]
    assert src.stats.unreadable == [str(tmp_path / "img0.jpg")]


def test_source_options_are_validated():
    with pytest.raises(ConfigError, match="FOURCC"):
        SourceOptions(codec="H264x")
    with pytest.raises(ConfigError, match=">= 0"):
        SourceOptions(width=-1)


# ------------------------------------------------------------------------------------------ live capture thread
def _file_camera(clip, options):
    """A real OpenCV capture of a file, used as a camera that delivers frames as fast as it can."""
    return lambda: open_capture(str(clip), cv2.CAP_FFMPEG, options, f"test camera {clip}")


def test_live_source_keeps_only_the_newest_frame(clip):
    options = SourceOptions(reconnect_s=0)
    src = LiveSource(SourceSpec("camera", str(clip), str(clip)), options, opener=_file_camera(clip, options))
    seen, ages = [], []
    for frame in src:
        ages.append(time.time() - frame.captured_at)
        seen.append((frame.index, read_index(frame.image)))
        time.sleep(0.02)  # a model slower than the camera
    src.close()
    assert max(ages) < 0.25, f"stale frames were served (oldest {max(ages):.3f} s): latency must stay bounded"
    indices = [i for i, _ in seen]
    assert indices == sorted(set(indices)), "frames must arrive newest-first, never repeated or reordered"
    assert all(i == content for i, content in seen)
    assert src.stats.read == 40
    assert src.stats.dropped == 40 - len(seen) and src.stats.dropped > 0
    assert src.stats.error.endswith("lost and not back within 0 s")


def test_live_source_reconnects_after_an_outage_and_records_the_gap(clip):
    options = SourceOptions(reconnect_s=10)
    real_open = _file_camera(clip, options)
    attempts = {"n": 0}

    def flaky_camera():
        attempts["n"] += 1
        if attempts["n"] in (2, 3):  # unplugged: the first two reopen attempts fail
            raise SourceError("camera unplugged")
        return real_open()

    src = LiveSource(SourceSpec("camera", "flaky", "flaky"), options, opener=flaky_camera)
    frames = []
    for frame in src:
        frames.append(frame)
        if len(frames) >= 3 and src.stats.reconnects >= 1:
            break
        time.sleep(0.005)
    src.close()
    assert src.stats.reconnects >= 1 and attempts["n"] >= 4
    gap = src.stats.gaps[0]
    assert gap["seconds"] >= 0.25 + 0.5 - 0.05  # two failed attempts with backoff 0.25 s, 0.5 s
    assert [f.index for f in frames] == sorted({f.index for f in frames})


def test_live_source_close_stops_the_thread(clip):
    options = SourceOptions(reconnect_s=30)
    src = LiveSource(SourceSpec("camera", "c", "c"), options, opener=_file_camera(clip, options))
    next(iter(src))
    src.close()
    assert not src._thread.is_alive()
    assert list(src) == []


def test_watchdog_notices_a_stalled_source(clip):
    """A capture whose read() blocks (no timeout in its backend) is noticed by the consumer's watchdog."""
    release = threading.Event()

    class BlockingRead:
        """A real capture whose read() hangs after the first frame, like a frozen camera driver."""

        def __init__(self):
            self.cap = open_capture(str(clip), cv2.CAP_FFMPEG, SourceOptions(), "clip")
            self.calls = 0

        def read(self):
            self.calls += 1
            if self.calls > 1:
                release.wait(30)
                return False, None
            return self.cap.read()

        def get(self, prop):
            return self.cap.get(prop)

        def release(self):
            release.set()
            self.cap.release()

    options = SourceOptions(stall_s=0.5, reconnect_s=0, open_timeout_s=0.5)
    src = LiveSource(SourceSpec("camera", "frozen", "frozen"), options, opener=BlockingRead)
    start = time.monotonic()
    frames = list(src)
    assert len(frames) == 1
    assert src.stats.stalls == 1 and "giving up" in src.stats.error
    assert 0.9 <= time.monotonic() - start < 5
    release.set()
    src.close()
