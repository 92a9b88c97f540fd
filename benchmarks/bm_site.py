"""What the site's sinks cost the defense, and how fast an alarm reaches the site.

    python benchmarks/bm_site.py [--model demo_out/efficientnet_lite0.onnx] [--frames 60] [--pairs 2]
                                 [--json benchmarks/results/site_cpu.json] [--screenshot docs/live_view.png]

Four streams, each the demo's camera clip reduced to a cycle (a clean view, then the cup with the shipped
adversarial patch: the stream alarm rises and clears once per cycle), looped to ``--frames`` frames per stream,
EfficientNet-Lite0 on ONNX Runtime CPU, in one ``pcedge.video.run``. Runs alternate without sinks and with every
sink on (MQTT to a local Mosquitto, a webhook to a local receiver, /metrics scraped every second, the live view
watched by a headless Chromium, episodes on disk), ``--pairs`` times each, because this machine drifts by 10-20%
within minutes. Reported: defended FPS of each run and the ratio of the medians; the decisions' equality between
the runs; the latency from the frame that raised an alarm (its decision time) to the MQTT ``new`` event at a
subscriber and to the webhook's arrival at the receiver (p50, p99); the live view's JPEGs encoded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcedge.evaluation.demo import CLIP_FPS, CLIP_SIZE, PATCH_ANCHOR, PATCHED_PHOTO, SECONDS_PER_PHOTO, shipped_patch  # noqa: E402
from pcedge.evaluation.democlip import make_demo_clip  # noqa: E402
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.site.build import SiteOptions, site_sinks  # noqa: E402
from pcedge.video import RunOptions, Sink, SourceOptions, run  # noqa: E402
from tests.site.conftest import Broker, Receiver, Subscriber  # noqa: E402

CAMERAS = ("door", "yard", "gate", "dock")


def cycle_clip(folder: Path) -> list[Path]:
    """The demo clip's last clean view and its patched segment, as one lossless cycle, and the same cycle started
    half-way (so two cameras alarm while the other two are clear)."""
    full = folder / "demo.avi"
    segments = make_demo_clip(full, shipped_patch(), patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE,
                              fps=CLIP_FPS, seconds_per_photo=SECONDS_PER_PHOTO)
    cap, frames = cv2.VideoCapture(str(full)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    clean, patched = segments[-2], segments[-1]
    cycle = frames[clean.start : clean.stop] + frames[patched.start : patched.stop]
    clips = []
    for name, frames in (("cycle.avi", cycle), ("cycle_half.avi", cycle[len(cycle) // 2 :] + cycle[: len(cycle) // 2])):
        out = folder / name
        writer = cv2.VideoWriter(str(out), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), CLIP_FPS, (CLIP_SIZE[1], CLIP_SIZE[0]))
        for frame in frames:
            writer.write(frame)
        writer.release()
        clips.append(out)
    return clips


def decision_times(log_path: Path) -> tuple[list[tuple], dict[str, list[float]], float]:
    """Every frame's decision, per camera the decision time of each frame that raised the alarm, and the defended
    frames per second between the first and the last decision (start-up and shut-down left out)."""
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    frames = {(r["stream_name"], r["index"]): r for r in records if "label" in r and "event" not in r}
    raised: dict[str, list[float]] = {}
    for r in records:
        if r.get("event") == "alarm_raised":
            frame = frames[(r["stream_name"], r["frame"])]
            raised.setdefault(r["stream_name"], []).append(frame["timestamp"] + frame["age_ms"] / 1e3)
    decisions = sorted((k, f["label"], f["case"], f["level"], f["alarm"]) for k, f in frames.items())
    done = sorted(f["timestamp"] + f["age_ms"] / 1e3 for f in frames.values())
    return decisions, raised, (len(done) - 1) / (done[-1] - done[0])


def cpu_seconds(prefix: str) -> float:
    """User + system CPU seconds of every process whose name starts with ``prefix`` (Linux /proc)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            if name.startswith(prefix):
                values = fields[1].split()
                total += (int(values[11]) + int(values[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def one_run(model: Path, clips: list[Path], frames: int, folder: Path, with_sinks: bool, screenshot: Path | None,
            watch: bool = True) -> dict:
    sources = [f"{name}={clips[n % 2]}" for n, name in enumerate(CAMERAS)]
    log_path = folder / f"{'site' if with_sinks else 'plain'}-{time.time():.0f}.jsonl"
    extras: dict = {}
    with PatchCleanser.from_onnx(model, backend="ort") as pc:
        sinks: list = []
        if with_sinks:
            broker = Broker(folder).start()
            receiver = Receiver()
            subscriber = Subscriber(broker.port, "pcedge/events")
            received: list[tuple[float, dict]] = []
            subscriber.client.on_message = lambda c, u, m: received.append((time.time(), json.loads(m.payload)))
            options = SiteOptions(mqtt=broker.url, webhooks=[receiver.url], metrics="127.0.0.1:0", web="127.0.0.1:0",
                                  events=str(folder / "events"), clip_seconds=2.0, stats_interval_s=10.0)
            sinks = site_sinks(options, pc)
            metrics = next(s for s in sinks if s.name == "metrics")
            view = sinks[-1]
            sinks += [_Scraper(metrics)] + ([_Browser(view, screenshot)] if watch else [])  # they start once the servers listen
        own, browser = resource.getrusage(resource.RUSAGE_SELF), cpu_seconds("chrom")
        summary = run(pc, sources, SourceOptions(loop=True), RunOptions(max_frames=frames, log_path=str(log_path)), sinks=sinks)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {"pcedge_cpu_s": round(after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime, 1),
               "browser_cpu_s": round(cpu_seconds("chrom") - browser, 1)}
    decisions, raised, fps = decision_times(log_path)
    if with_sinks:
        time.sleep(1.0)
        mqtt_new = {}
        for at, event in received:
            if event["type"] == "new":
                mqtt_new.setdefault(event["camera"], []).append(at)
        hooks = {}
        for _, body, at in receiver.requests:
            event = json.loads(body)
            if event["type"] == "new":
                hooks.setdefault(event["camera"], []).append(at)
        extras = {"alarm_to_mqtt_ms": _latencies(raised, mqtt_new), "alarm_to_webhook_ms": _latencies(raised, hooks),
                  "live_view_jpegs": view.encoded, "sinks": summary.get("sinks", {})}
        subscriber.close()
        receiver.close()
        broker.stop()
    return {"with_sinks": with_sinks, "fps": round(fps, 3), "decisions": decisions,
            "alarms": sum(len(v) for v in raised.values()), **cpu, **extras}


def _latencies(raised: dict[str, list[float]], arrived: dict[str, list[float]]) -> list[float]:
    out = []
    for camera, times in raised.items():
        for t_raise, t_arrive in zip(times, arrived.get(camera, [])):
            out.append(round((t_arrive - t_raise) * 1e3, 1))
    return out


class _Scraper(Sink):
    """Prometheus's part: /metrics scraped every second."""

    name = "scraper (benchmark)"

    def __init__(self, metrics) -> None:
        self.metrics, self.done, self.scrapes = metrics, threading.Event(), 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, streams) -> None:
        self.thread.start()

    def close(self, summary) -> None:
        self.done.set()
        self.thread.join(10)

    def _loop(self) -> None:
        while not self.done.wait(1.0):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics.port}/metrics", timeout=5) as reply:
                    reply.read()
                self.scrapes += 1
            except OSError:  # the run is ending: the metrics server closed before this sink
                return



class _Browser(Sink):
    """One operator watching the live view in a headless Chromium."""

    name = "browser (benchmark)"

    def __init__(self, view, screenshot: Path | None) -> None:
        from tests.site.test_web import browser

        self.view, self.driver, self.screenshot = view, browser(), screenshot
        self.shot = threading.Timer(3.0, self._shoot)  # after the first alarm: the page polls once a second

    def start(self, streams) -> None:
        self.driver.get(f"http://127.0.0.1:{self.view.port}/")

    def frame(self, item) -> None:
        state = item.result.stream_alarm
        if state is not None and state.raised and not self.shot.is_alive() and not self.shot.finished.is_set():
            self.shot.start()

    def _shoot(self) -> None:
        self.shot.finished.set()
        if self.screenshot is not None:
            self.screenshot.write_bytes(self.driver.get_screenshot_as_png())

    def close(self, summary) -> None:
        self.shot.cancel()
        self.driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "demo_out" / "efficientnet_lite0.onnx")
    parser.add_argument("--frames", type=int, default=60, help="frames per stream per run")
    parser.add_argument("--pairs", type=int, default=2, help="runs without and with sinks, alternating")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--screenshot", type=Path, help="save the live view as the browser showed it (PNG)")
    parser.add_argument("--no-browser", action="store_true", help="every sink, but nobody watching the live view (the browser "
                                                                 "runs on the same cores as the defense here)")
    args = parser.parse_args()
    if not shutil.which("mosquitto") and not Path("/usr/sbin/mosquitto").exists():
        raise SystemExit("needs Debian's mosquitto (make system-deps)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = cycle_clip(folder)
        runs = []
        for pair in range(args.pairs):
            for with_sinks in (False, True):
                row = one_run(args.model, clips, args.frames, folder, with_sinks, args.screenshot if pair == 0 else None,
                              watch=not args.no_browser)
                runs.append(row)
                print(f"pair {pair}, sinks {'on ' if with_sinks else 'off'}: {row['fps']} FPS, {row['alarms']} alarms, "
                      f"CPU s: pcedge {row['pcedge_cpu_s']}, browser {row['browser_cpu_s']}"
                      + (f", alarm->MQTT {row['alarm_to_mqtt_ms']} ms, alarm->webhook {row['alarm_to_webhook_ms']} ms"
                         if with_sinks else ""), flush=True)
    plain = [r for r in runs if not r["with_sinks"]]
    site = [r for r in runs if r["with_sinks"]]
    same = all(r["decisions"] == plain[0]["decisions"] for r in runs)
    mqtt = [v for r in site for v in r["alarm_to_mqtt_ms"]]
    hook = [v for r in site for v in r["alarm_to_webhook_ms"]]
    report = {
        "fps_without": [r["fps"] for r in plain], "fps_with": [r["fps"] for r in site],
        "fps_ratio_of_medians": round(float(np.median([r["fps"] for r in site]) / np.median([r["fps"] for r in plain])), 3),
        "decisions_identical": same,
        "alarm_to_mqtt_ms": {"n": len(mqtt), "p50": float(np.percentile(mqtt, 50)), "p99": float(np.percentile(mqtt, 99))} if mqtt else None,
        "alarm_to_webhook_ms": {"n": len(hook), "p50": float(np.percentile(hook, 50)), "p99": float(np.percentile(hook, 99))} if hook else None,
        "live_view_jpegs": [r["live_view_jpegs"] for r in site], "sinks": [r["sinks"] for r in site],
        "browser_watching": not args.no_browser, "pcedge_cpu_s_without": [r["pcedge_cpu_s"] for r in plain],
        "pcedge_cpu_s_with": [r["pcedge_cpu_s"] for r in site], "browser_cpu_s": [r["browser_cpu_s"] for r in site],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "sinks"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
