"""Many cameras, one process: N streams on one engine against N single-stream processes, same frames, same run.

    python benchmarks/bm_streams.py [--model lite0.onnx] [--streams 1 2 4 8] [--frames 16] [--json streams.json]

Each stream is a real video file (MJPG, 1280x720 camera-like views of scikit-image's photos; stream 0
carries a pasted high-contrast patch, so one stream pays for second rounds). "one process" runs
``pcedge.video.stream_many`` over all N files with one engine, in engine calls of K images (the default)
and, "wide calls", of N*K images (every stream's frame in one call, the GPU setting); "N processes" runs N
``pcedge.video.stream`` processes at once, one file each, as a box of cameras runs today. Reported per
configuration: aggregate defended FPS (all frames / wall time), per-stream p50/p99 latency, mean first-round
engine batch, peak RSS (sum of the N processes' VmHWM against the one process's), and the decision check:
every frame's (label, case, level) in the one-process run equals its single-stream result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHILD = r"""
import json, sys, time
from pcedge.runtime.driver import PatchCleanser
from pcedge.util.machine import process_memory_mb
from pcedge.video import stream, stream_many
model, mode, files = sys.argv[1], sys.argv[2], sys.argv[3:]
per_call = len(files) if mode == "many-wide" else 1  # frames whose one-mask round fits one engine call
with PatchCleanser.from_onnx(model, backend="ort", max_batch=lambda k: k * per_call) as pc:
    rows, start = [], time.time()
    if mode.startswith("many"):
        for index, r, f in stream_many(files, pc):
            rows.append([index, f.index, r.label, r.case, r.level, r.timings_ms["total"], r.batch_sizes[0]])
    else:
        for r, f in stream(files[0], pc):
            rows.append([0, f.index, r.label, r.case, r.level, r.timings_ms["total"], r.batch_sizes[0]])
    end = time.time()
print(json.dumps({"rows": rows, "start": start, "end": end, "peak_rss_mb": process_memory_mb("VmHWM")}))
"""


def write_streams(folder: Path, streams: int, frames: int, model: Path) -> list[Path]:
    from pcedge.evaluation.bench import camera_frames, pasted_frames
    from pcedge.runtime.driver import PatchCleanser

    views = camera_frames(frames * max(streams, 1))
    with PatchCleanser.from_onnx(model, backend="ort") as pc:
        patched = pasted_frames(views[:frames], pc)
    paths = []
    for n in range(streams):
        shots = patched if n == 0 else views[n * frames : (n + 1) * frames]
        path = folder / f"stream{n}.avi"
        writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30, (shots[0].shape[1], shots[0].shape[0]))
        for shot in shots:
            writer.write(shot)
        writer.release()
        paths.append(path)
    return paths


def child(model: Path, mode: str, files: list[Path]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(model), mode, *map(str, files)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def collect(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"child failed: {stderr[-2000:]}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def latency(rows: list, stream: int) -> dict:
    lat = np.array([r[5] for r in rows if r[0] == stream])
    return {"p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def measure(model: Path, files: list[Path]) -> dict:
    n = len(files)
    start = time.perf_counter()
    (many,) = collect([child(model, "many", files)])
    many_wall = time.perf_counter() - start
    (wide,) = collect([child(model, "many-wide", files)]) if n > 1 else (many,)
    start = time.perf_counter()
    singles = collect([child(model, "one", [f]) for f in files])
    singles_wall = time.perf_counter() - start
    single_rows = [[s] + row[1:] for s, result in enumerate(singles) for row in result["rows"]]
    frames = len(many["rows"])
    alone = {(r[0], r[1]): tuple(r[2:5]) for r in single_rows}
    differences = sum(alone[(r[0], r[1])] != tuple(r[2:5]) for r in many["rows"] + wide["rows"])
    return {
        "streams": n, "frames": frames,
        "one_process": {"fps": round(frames / (many["end"] - many["start"]), 2), "wall_s": round(many_wall, 1),
                        "peak_rss_mb": round(many["peak_rss_mb"], 1),
                        "mean_first_round_batch": round(float(np.mean([r[6] for r in many["rows"]])), 1),
                        "per_stream": [latency(many["rows"], s) for s in range(n)]},
        "one_process_wide_calls": {"fps": round(len(wide["rows"]) / (wide["end"] - wide["start"]), 2),
                                   "peak_rss_mb": round(wide["peak_rss_mb"], 1),
                                   "mean_first_round_batch": round(float(np.mean([r[6] for r in wide["rows"]])), 1),
                                   "per_stream": [latency(wide["rows"], s) for s in range(n)]},
        "n_processes": {"fps": round(len(single_rows) / (max(s["end"] for s in singles) - min(s["start"] for s in singles)), 2), "wall_s": round(singles_wall, 1),
                        "peak_rss_mb": round(sum(s["peak_rss_mb"] for s in singles), 1),
                        "per_stream": [latency(single_rows, s) for s in range(n)]},
        "decision_differences": differences,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an ONNX model (default: the demo's EfficientNet-Lite0, exported once)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=16, help="frames per stream")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from pcedge.evaluation.demo import ensure_demo_model

    model = args.model or ensure_demo_model(Path("demo_out"))
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_streams(Path(tmp), max(args.streams), args.frames, model)
        for n in args.streams:
            row = measure(model, files[:n])
            report.append(row)
            one, many = row["n_processes"], row["one_process"]
            wide = row["one_process_wide_calls"]
            print(f"{n} streams: one process {many['fps']} FPS, {many['peak_rss_mb']} MB, batch {many['mean_first_round_batch']}; "
                  f"wide calls {wide['fps']} FPS, {wide['peak_rss_mb']} MB, batch {wide['mean_first_round_batch']}; "
                  f"{n} processes {one['fps']} FPS, {one['peak_rss_mb']} MB; FPS ratio {many['fps'] / one['fps']:.2f}, "
                  f"RSS ratio {many['peak_rss_mb'] / one['peak_rss_mb']:.2f}; decision differences {row['decision_differences']}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
