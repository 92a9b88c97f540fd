"""Webhooks against a real HTTP receiver on loopback: signed bodies for each episode, and a receiver that hangs never
slows the defense."""

from __future__ import annotations

import hashlib
import hmac
import time

from pcedge.site.build import SiteOptions, site_sinks
from pcedge.video import RunOptions, SourceOptions, run
from tests.site.conftest import Receiver, defended, receiver_name


def test_each_episode_is_posted_at_its_start_and_end_and_signed(region_onnx, alarm_clip):
    receiver = Receiver()
    try:
        with defended(region_onnx) as pc:
            sinks = site_sinks(SiteOptions(webhooks=[receiver.url], webhook_secret="s3cret"), pc)
            summary = run(pc, [str(alarm_clip)], SourceOptions(), RunOptions(), sinks=sinks)
        assert summary["sinks"][receiver_name(receiver)] == {"dropped": 0, "failed": 0, "delivered": 2}
        events = receiver.events()
        assert [e["type"] for e in events] == ["new", "end"] and events[0]["id"] == events[1]["id"]
        for headers, body, received in receiver.requests:
            timestamp = headers["X-Pcedge-Timestamp"]
            assert abs(int(timestamp) - received) <= 2, "the timestamp is the time of sending"
            expected = "sha256=" + hmac.new(b"s3cret", timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            assert headers["X-Pcedge-Signature"] == expected and headers["Content-Type"] == "application/json"
        assert receiver.requests[0][0]["X-Pcedge-Event"] == "new"
    finally:
        receiver.close()


def test_a_receiver_that_hangs_does_not_slow_the_run(region_onnx, alarm_clip):
    hung = Receiver(hang=True)  # takes each POST and never answers
    try:
        with defended(region_onnx) as pc:
            plain = run(pc, [str(alarm_clip)], SourceOptions(loop=True), RunOptions(max_frames=90))
            sinks = site_sinks(SiteOptions(webhooks=[hung.url], webhook_timeout_s=30.0), pc)
            start = time.monotonic()
            summary = run(pc, [str(alarm_clip)], SourceOptions(loop=True), RunOptions(max_frames=90), sinks=sinks)
            took = time.monotonic() - start
        assert summary["frames"] == plain["frames"] == 90 and summary["levels"] == plain["levels"]
        assert took < 30, f"the run waited on the hung receiver ({took:.1f} s; its timeout is 30 s)"
        report = summary["sinks"][receiver_name(hung)]
        assert report["delivered"] == 0 and report["dropped"] == summary["alarms_raised"] * 2
        assert len(hung.requests) >= 1, "the first event reached the receiver, which never answered"
    finally:
        hung.close()
