"""Prometheus metrics scraped during a run match the run's log; alarm episodes on disk: snapshot, clip, record,
retention; the flags' values refused with their names."""

from __future__ import annotations

import json
import urllib.request

import cv2
import pytest

from pcedge.errors import ConfigError
from pcedge.site.build import SiteOptions, check_site, site_sinks
from pcedge.site.endpoints import parse_broker
from pcedge.video import RunOptions, Sink, SourceOptions, run
from tests.site.conftest import CLEAN, PATCHED, defended
from tests.video.clips import count_frames


def scrape(url: str, token: str = "") -> dict[str, float]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics_scraped_during_the_run_match_its_log(region_onnx, alarm_clip, tmp_path):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (the [site] extra; make test installs it)")
    scraped: list[tuple[int, dict[str, float]]] = []

    class ScrapeMidRun(Sink):
        """Scrapes /metrics from inside the loop at frame 20 (the loop waits: the counters cannot move meanwhile), after
        the metrics sink has seen that frame."""

        order = 5

        def __init__(self, metrics) -> None:
            self.metrics = metrics

        def frame(self, item):
            if item.stream.stats.frames == 20:
                scraped.append((20, scrape(f"http://127.0.0.1:{self.metrics.port}/metrics")))

    log_path = tmp_path / "frames.jsonl"
    with defended(region_onnx) as pc:
        sinks = site_sinks(SiteOptions(metrics="127.0.0.1:0"), pc)
        metrics = sinks[-1]
        summary = run(pc, [f"cam={alarm_clip}"], SourceOptions(), RunOptions(log_path=str(log_path)), sinks=sinks + [ScrapeMidRun(metrics)])
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = [r for r in records if "label" in r][:20]
    (_, values), = scraped
    for level in ("clear", "uncertain", "patch"):
        expected = sum(r["level"] == level for r in frames)
        assert values.get(f'pcedge_frames_total{{camera="cam",level="{level}"}}', 0) == expected, level
    assert values['pcedge_frame_latency_seconds_count{camera="cam"}'] == 20
    assert values['pcedge_frame_age_seconds_count{camera="cam"}'] == 20
    assert values["pcedge_second_round_images_total"] == sum(r["two_mask_passes"] for r in frames)
    raised = sum(r.get("event") == "alarm_raised" for r in records[: records.index(frames[-1]) + 1])
    assert values['pcedge_alarms_total{camera="cam"}'] == raised
    assert values['pcedge_alarm_active{camera="cam"}'] == float(frames[-1]["alarm"])
    assert values['pcedge_dropped_frames_total{camera="cam"}'] == 0 and values['pcedge_gaps_total{camera="cam"}'] == 0
    assert values["process_resident_memory_bytes"] > 1e7
    assert summary["frames"] == 2 * CLEAN + PATCHED


def test_metrics_on_another_address_need_the_token(region_onnx, alarm_clip):
    pytest.importorskip("prometheus_client", reason="prometheus-client is not installed (the [site] extra; make test installs it)")
    with pytest.raises(ConfigError, match="--metrics 0.0.0.0:0: listening on 0.0.0.0 .* needs --web-token"):
        check_site(SiteOptions(metrics="0.0.0.0:0"))
    with defended(region_onnx) as pc:
        metrics = site_sinks(SiteOptions(metrics="0.0.0.0:0", web_token="t0ken"), pc)[-1]
        metrics.start([])
        try:
            with pytest.raises(urllib.error.HTTPError, match="401"):
                scrape(f"http://127.0.0.1:{metrics.port}/metrics")
            assert "process_resident_memory_bytes" in scrape(f"http://127.0.0.1:{metrics.port}/metrics", token="t0ken")
        finally:
            metrics.close({})


def test_episodes_on_disk_hold_a_snapshot_a_clip_and_a_record(region_onnx, alarm_clip, tmp_path):
    events = tmp_path / "events"
    with defended(region_onnx) as pc:
        sinks = site_sinks(SiteOptions(events=str(events), clip_seconds=0.5), pc)
        summary = run(pc, [f"door={alarm_clip}"], SourceOptions(), RunOptions(fps_limit=20), sinks=sinks)
    assert summary["alarms_raised"] == 1 and summary["sinks"]["events on disk"] == {"dropped": 0, "failed": 0}
    assert json.loads((events / ".pcedge-events").read_text())["created_by"] == "pcedge"
    (folder,) = (events / "door").iterdir()
    record = json.loads((folder / "episode.json").read_text())
    assert record["type"] == "end" and record["id"] == folder.name and record["frames"] >= 3
    assert record["snapshot"] == str(folder / "snapshot.jpg") and record["clip"] == str(folder / "clip.mp4")
    assert cv2.imread(record["snapshot"]) is not None
    assert 7 <= count_frames(folder / "clip.mp4") <= 11, "0.5 s either side of the alarm, the 20 FPS thinned to CLIP_FPS (10)"
    assert not list(folder.glob("*.partial*")) and not list(folder.glob(".*"))


def test_retention_keeps_the_newest_episodes(region_onnx, alarm_clip, tmp_path):
    events = tmp_path / "events"
    with defended(region_onnx) as pc:
        sinks = site_sinks(SiteOptions(events=str(events), clip_seconds=0, events_keep=2), pc)
        summary = run(pc, [f"door={alarm_clip}"], SourceOptions(loop=True), RunOptions(max_frames=4 * (2 * CLEAN + PATCHED)), sinks=sinks)
    assert summary["alarms_raised"] == 4
    kept = sorted(p.name for p in (events / "door").iterdir())
    assert len(kept) == 2 and all((events / "door" / name / "episode.json").is_file() for name in kept)


@pytest.mark.parametrize("options,words", [
    (SiteOptions(mqtt="http://broker"), "--mqtt 'http://broker': use mqtt://"),
    (SiteOptions(mqtt="mqtt://u:pw@broker:99999"), "--mqtt 'mqtt://broker:99999': the port"),
    (SiteOptions(webhooks=["ftp://x"]), "--webhook 'ftp://x': use an http"),
    (SiteOptions(web="0.0.0.0:8080"), "--web 0.0.0.0:8080: listening on 0.0.0.0"),
    (SiteOptions(web="eighty"), "--web 'eighty': give PORT or HOST:PORT"),
    (SiteOptions(metrics="127.0.0.1:70000"), "--metrics '127.0.0.1:70000': the port must be"),
    (SiteOptions(webhook_secret="x"), "--webhook-secret signs webhook bodies"),
    (SiteOptions(mqtt="mqtt://b", mqtt_prefix="a/#"), "--mqtt-prefix"),
])
def test_bad_flag_values_are_refused_with_the_flags_name(options, words):
    with pytest.raises(ConfigError, match=words):
        check_site(options)


def test_credentials_never_show():
    broker = parse_broker("mqtts://cam:hunter%402@broker.lan")
    assert str(broker) == "mqtts://broker.lan:8883" and broker.password == "hunter@2" and broker.username == "cam"
    assert "hunter" not in repr(broker) and "hunter" not in repr(SiteOptions(mqtt="mqtt://u:hunter2@b", web_token="t0k"))
    assert "t0k" not in repr(SiteOptions(web_token="t0k", webhook_secret="s3c", webhooks=["https://h/api/webhook/abc"]))
