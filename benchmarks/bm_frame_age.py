"""How old a live frame is when its defended result comes out, with one and with several cameras.

    python benchmarks/bm_frame_age.py [--model demo_out/efficientnet_lite0.onnx] [--cameras 1 4] [--seconds 40]
                                      [--json benchmarks/results/frame_age_cpu.json]

Cameras are loopback RTSP servers (tests/support/rtsp.py: Debian's gst-rtsp-server, 320x240 H.264 at 15 FPS),
read by pcedge's live sources (OpenCV's FFmpeg). One camera runs through ``pcedge.video.stream``, several
through ``pcedge.video.stream_many`` (what ``pcedge run`` does with one and with several ``--source``), on
one ONNX Runtime CPU engine. A frame's age at decision is the time from its capture (``frame.captured_at``)
to the moment its result is handed out; a step's duration is the defended frame's total time (the driver
step that served it, shared with the other cameras' frames of that step). Reported per camera: p50/p99 age,
p50 step, and the ratio p50 age / p50 step (1.0 would be a frame captured the instant its step began).

Only the library's iterator API is used, so the same script measures an older tree (PYTHONPATH=<checkout>).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.rtsp import RtspServer, rtsp_server_missing  # noqa: E402


def measure(model: Path, cameras: int, seconds: float, warmup_s: float = 5.0) -> dict:
    from pcedge.runtime.driver import PatchCleanser
    from pcedge.video import stream, stream_many

    servers = [RtspServer().start() for _ in range(cameras)]
    ages: list[list[float]] = [[] for _ in range(cameras)]
    steps: list[list[float]] = [[] for _ in range(cameras)]
    try:
        with PatchCleanser.from_onnx(model, backend="ort") as pc:
            loop = stream(servers[0].url, pc) if cameras == 1 else stream_many([s.url for s in servers], pc)
            items = ((0, *pair) for pair in loop) if cameras == 1 else loop
            start = time.monotonic()
            for index, result, frame in items:
                now = time.monotonic()
                if now - start >= warmup_s:
                    ages[index].append((time.time() - frame.captured_at) * 1e3)
                    steps[index].append(result.timings_ms["total"])
                if now - start >= warmup_s + seconds:
                    break
            loop.close()  # release the cameras before their servers stop
    finally:
        for server in servers:
            server.stop()
    rows = []
    for n in range(cameras):
        age, step = np.array(ages[n]), np.array(steps[n])
        rows.append({"camera": n, "frames": len(age), "age_p50_ms": round(float(np.percentile(age, 50)), 1),
                     "age_p99_ms": round(float(np.percentile(age, 99)), 1), "step_p50_ms": round(float(np.percentile(step, 50)), 1),
                     "age_over_step": round(float(np.percentile(age, 50) / np.percentile(step, 50)), 2)})
    return {"cameras": cameras, "per_camera": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "demo_out" / "efficientnet_lite0.onnx")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=40.0, help="measured seconds per configuration (after 5 s of warm-up)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = rtsp_server_missing()
    if missing:
        raise SystemExit(f"no loopback RTSP cameras: {missing}")
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: run make demo (it exports EfficientNet-Lite0), or give --model")
    report = []
    for cameras in args.cameras:
        row = measure(args.model, cameras, args.seconds)
        report.append(row)
        for cam in row["per_camera"]:
            print(f"{cameras} camera(s), camera {cam['camera']}: {cam['frames']} frames, age p50 {cam['age_p50_ms']} ms, "
                  f"p99 {cam['age_p99_ms']} ms, step p50 {cam['step_p50_ms']} ms, age/step {cam['age_over_step']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
