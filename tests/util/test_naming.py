"""Stream names: defaults from the redacted URI, one slug everywhere, and collisions refused before anything runs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcedge.errors import ConfigError
from pcedge.util.naming import check_unique, default_name, parse_source, slug
from pcedge.video.loop import StreamSpec, parse_streams


@pytest.mark.parametrize("uri,name", [
    ("rtsp://admin:s3cret@10.0.0.5/stream1", "10.0.0.5-stream1"),
    ("rtsp://10.0.0.7:8554/live.sdp?user=a&password=b", "10.0.0.7-8554-live.sdp"),
    ("http://cam.lan/Streaming/Channels/101", "cam.lan-Streaming-Channels-101"),
    ("/videos/yard.mp4", "yard"), ("frames/*.png", "frames"), ("0", "camera0"), ("/dev/video2", "video2"),
    ("csi://1", "csi1"), ("gst:rtspsrc location=rtsp://u:p@h/x ! decodebin ! appsink", "gstreamer3"),
])
def test_default_names_never_hold_credentials(uri, name):
    assert default_name(uri, 3) == name
    assert "s3cret" not in slug(name) and "password" not in name


@given(st.text(min_size=1, max_size=40))
def test_slugs_are_safe_everywhere(name):
    value = slug(name)
    assert value and set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") and value == slug(value)


@pytest.mark.parametrize("names,words", [
    (["Front Door", "front_door"], "'Front Door' and 'front_door' would have the same name 'front_door'"),
    (["door", "door"], "'door' and 'door' would have the same name:"),
])
def test_colliding_names_are_refused_naming_both(names, words):
    with pytest.raises(ConfigError, match=words):
        check_unique(names)


def test_two_cameras_with_the_same_path_on_hosts_named_alike_are_refused():
    with pytest.raises(ConfigError, match="--source NAME=URI"):
        parse_streams(["rtsp://10.0.0.7/live.sdp", "rtsp://10_0_0_7/live.sdp"])
    specs = parse_streams(["rtsp://10.0.0.7/live.sdp", "rtsp://10.0.0.8/live.sdp"])
    assert [s.name for s in specs] == ["10.0.0.7-live.sdp", "10.0.0.8-live.sdp"]
    assert parse_streams(["a=x.mp4", StreamSpec("y.mp4", "b")])[1].name == "b"


@pytest.mark.parametrize("text", ["door=rtsp://10.0.0.5/s1", "Front Door=0", "rtsp://u:p@h/x?a=b", "clip.mp4",
                                  "gst:rtspsrc location=rtsp://h/x ! appsink", "a/b=c.mp4", "http://h/x=y"])
def test_a_config_reads_a_source_as_the_stream_loop_does(text):
    """``name=URI`` or a bare URI, read by pcedge.config (without OpenCV) exactly as StreamSpec.parse reads it."""
    spec = StreamSpec.parse(text, 2)
    assert parse_source(text, 2) == (spec.name, spec.uri)
