"""Every site sink on, a broker that is not there and a webhook receiver that hangs: the defense defends the same
frames with the same decisions as without any sink, and the run ends well."""

from __future__ import annotations

import json

import pytest

from pcedge.site.build import SiteOptions, site_sinks
from pcedge.video import RunOptions, SourceOptions, run
from tests.site.conftest import Receiver, defended, free_port, receiver_name
from tests.video.clips import write_numbered_clip

DECISION = ("stream", "index", "label", "case", "level", "disagreers", "alarm")


def decisions(log_path) -> list[tuple]:
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    return sorted(tuple(json.dumps(r.get(k)) for k in DECISION) for r in records if "label" in r and "event" not in r)


def test_a_dead_broker_and_a_hung_webhook_change_nothing_in_the_defense(region_onnx, alarm_clip, tmp_path):
    for module in ("paho.mqtt.client", "prometheus_client", "aiohttp"):
        pytest.importorskip(module, reason=f"{module} is not installed (the [site] extra; make test installs it)")
    sources = [f"door={alarm_clip}", f"yard={write_numbered_clip(tmp_path / 'yard.avi', 45)}", f"gate={alarm_clip}"]
    hung = Receiver(hang=True)
    try:
        with defended(region_onnx) as pc:
            plain = run(pc, sources, SourceOptions(), RunOptions(log_path=str(tmp_path / "plain.jsonl")))
            options = SiteOptions(mqtt=f"mqtt://127.0.0.1:{free_port()}", webhooks=[hung.url], metrics="127.0.0.1:0", web="127.0.0.1:0",
                                  events=str(tmp_path / "events"), clip_seconds=1.0, stats_interval_s=0.2)
            summary = run(pc, sources, SourceOptions(), RunOptions(log_path=str(tmp_path / "site.jsonl")),
                          sinks=site_sinks(options, pc))
    finally:
        hung.close()
    assert decisions(tmp_path / "site.jsonl") == decisions(tmp_path / "plain.jsonl")
    assert [s["frames"] for s in summary["streams"]] == [s["frames"] for s in plain["streams"]] == [30, 45, 30]
    assert sum(s["alarms_raised"] for s in summary["streams"]) == 2
    sinks = summary["sinks"]
    assert sinks["mqtt"]["dropped"] > 0, "the broker was never there: its messages were dropped and counted"
    assert sinks[receiver_name(hung)]["delivered"] == 0
    assert "switched_off" not in json.dumps(sinks), sinks
    assert len(list((tmp_path / "events").glob("*/*/episode.json"))) == 2
