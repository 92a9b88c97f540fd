"""A site changed while it runs, and what regions cost: ``pcedge run --config`` in its own process, as a service runs.

    python benchmarks/bm_reload.py [--reloads 5] [--repeats 3] [--only regions|reloads] [--json out.json]

**Reloads.** Four loopback RTSP cameras (320x240 H.264 at 15 FPS) run from a file; every 8 s the file is rewritten and
SIGHUP sent: one camera is removed, a new one added, a third changed (its fps limit), two left untouched, then back.
From the frame log: frames the untouched cameras lost to each reload (their sources' drop counters across the
reload, against the same span just before it: a live camera drops frames whenever a step is busier than its frame
period, reload or not), their longest pause around it against their p99 before, and the seconds from SIGHUP to the new
camera's first result.

**Regions.** One 1080p camera defended as four regions (its four quadrants) against four cameras of the same
footage (four decodes), each in its own process over the same 150 frames of a 1080p video file, the two layouts
alternating ``--repeats`` times: defended frames per second (all streams) and the process's peak RSS.

The model is the test suite's small region CNN (patch 5, 3x3 masks), so the loop's own costs show. Needs Debian's
gst-rtsp-server (tests/support/rtsp.py) for the reloads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.models import export_test_model  # noqa: E402
from tests.support.rtsp import RtspServer, rtsp_server_missing  # noqa: E402

CHILD = """
import sys
from pcedge.cli import main
from pcedge.util.machine import process_memory_mb
code = main(sys.argv[1:])
print("PEAK_RSS_MB", process_memory_mb("VmHWM"), file=sys.stderr)
sys.exit(code)
"""
HEAD = """model:
  path: {model}
  masks: {{patch: "5", per_axis: 3}}
run: {{headless: true}}
logging: {{log: {log}, level: quiet}}
"""


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def reloads(model: Path, work: Path, count: int) -> dict:
    cameras = {name: RtspServer().start() for name in ("a", "b", "c", "d", "e")}
    log, config = work / "reload.jsonl", work / "site.yml"

    def write(names: list[str], slow: str) -> None:
        lines = [f"  {n}: {{source: \"{cameras[n].url}\"{', fps_limit: 5' if n == slow else ''}}}" for n in names]
        config.write_text(HEAD.format(model=model, log=log) + "cameras:\n" + "\n".join(lines) + "\n")

    layouts = [(["a", "b", "c", "d"], ""), (["a", "b", "c", "e"], "c")]
    write(*layouts[0])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "pcedge", "run", "--config", str(config)], env=env, stderr=subprocess.PIPE, text=True)
    sent: list[float] = []
    try:
        time.sleep(10)
        for n in range(count):
            write(*layouts[(n + 1) % 2])
            sent.append(time.time())
            proc.send_signal(signal.SIGHUP)
            time.sleep(8)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        proc.kill()
        for camera in cameras.values():
            camera.stop()
    seen = records(log)
    applied = [r["timestamp"] for r in seen if r.get("event") == "config_reloaded"]
    rows = []
    for n, (signal_at, done) in enumerate(zip(sent, applied)):
        new = "e" if n % 2 == 0 else "d"
        first = min(r["timestamp"] + r["age_ms"] / 1e3 for r in seen if r.get("stream_name") == new and "label" in r
                    and r["timestamp"] > signal_at)
        row = {"reload": n + 1, "applied_s": round(done - signal_at, 3), "new_camera_first_result_s": round(first - signal_at, 3)}
        for name in ("a", "b"):
            frames = [r for r in seen if r.get("stream_name") == name and "label" in r and "event" not in r]
            span = 4.0
            during = [r for r in frames if signal_at - 0.5 <= r["timestamp"] <= done + span]
            before = [r for r in frames if signal_at - 0.5 - (done + span - signal_at + 0.5) <= r["timestamp"] < signal_at - 0.5]
            gaps_before = np.diff([r["timestamp"] for r in before])
            row[name] = {"dropped_during": during[-1]["dropped"] - during[0]["dropped"],
                         "dropped_same_span_before": before[-1]["dropped"] - before[0]["dropped"],
                         "longest_pause_ms": round(1e3 * float(np.max(np.diff([r["timestamp"] for r in during]))), 1),
                         "pause_p99_before_ms": round(1e3 * float(np.percentile(gaps_before, 99)), 1)}
        rows.append(row)
    return {"reloads": rows, "new_camera_first_result_s_median": statistics.median(r["new_camera_first_result_s"] for r in rows)}


def regions(model: Path, work: Path, repeats: int) -> dict:
    clip = work / "1080p.avi"
    writer = cv2.VideoWriter(str(clip), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 15, (1920, 1080))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    for n in range(150):
        writer.write(np.roll(base, 8 * n, axis=1))
    writer.release()
    quadrants = {"nw": [0, 0, 0.5, 0.5], "ne": [0.5, 0, 0.5, 0.5], "sw": [0, 0.5, 0.5, 0.5], "se": [0.5, 0.5, 0.5, 0.5]}
    layouts = {
        "one camera, four regions": f"cameras:\n  cam:\n    source: {clip}\n    regions:\n"
                                    + "".join(f"      {q}: {{box: {box}}}\n" for q, box in quadrants.items()),
        "four cameras": "cameras:\n" + "".join(f"  cam{n}: {{source: {clip}}}\n" for n in range(4)),
    }
    out: dict[str, list[dict]] = {name: [] for name in layouts}
    for name, cameras in [item for _ in range(repeats) for item in layouts.items()]:  # alternating: drift hits both
        config = work / "regions.yml"
        config.write_text(HEAD.format(model=model, log=work / "regions.jsonl") + cameras)
        started = time.monotonic()
        child = subprocess.run([sys.executable, "-c", CHILD, "run", "--config", str(config), "--json", str(work / "s.json")],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - started
        summary = json.loads((work / "s.json").read_text())
        peak = next(float(line.split()[1]) for line in child.stderr.splitlines() if line.startswith("PEAK_RSS_MB"))
        out[name].append({"frames": summary["frames"], "fps_all_streams": summary["fps"], "wall_s": round(wall, 1),
                          "peak_rss_mb": peak})
        print(name, out[name][-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each regions layout, alternating")
    parser.add_argument("--only", choices=["regions", "reloads"], help="measure one part")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pcedge-bm-reload-"))
    model = export_test_model("region", work / "region.onnx")
    result: dict = {}
    if args.only != "reloads":
        result["regions"] = regions(model, work, args.repeats)
    if args.only != "regions":
        missing = rtsp_server_missing()
        result["reloads"] = f"not measured: {missing}" if missing else reloads(model, work, args.reloads)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
