"""Alarm levels and second-round cost on clean and attacked frames, two schedules, one run (issue 12).

For each sequence of frames, in order, with a stream alarm of the default window:
- clean: 1280x720 camera-like views of scikit-image photos (``pcedge.evaluation.bench.camera_frames``) and of
  foolbox's ImageNet photos; the demo clip's clean segments (a video: consecutive frames of one scene);
  the same clip re-encoded lossily as real cameras do (H.264 at 800 kbit/s through GStreamer's x264enc,
  and MJPEG at quality 80 through OpenCV);
- inside the threat model: the demo clip's patched segment (a patch optimized against the undefended
  model in camera space), its lossy re-encodes, and a pasted real-photo patch on the camera frames;
- beyond the threat model: the demo patch at twice its side (4x the area) on the same views.
Per sequence and schedule (``auto``: the cost-aware default, ``per-disagreer``: one call per
disagreeing mask, the old default): share of frames at each alarm level, share of frames with the
stream alarm raised, two-mask images per frame, latency mean/p50/p99 and the ratio to one undefended
batch-K inference measured in the same run. The two schedules' decisions are checked to be identical.
For patched sequences, the share of frames where the patch fools the undefended model (its label leaves
the cup's classes, or differs from its label on the same frame without the patch) says whether the
attack still works after the camera's compression.

    python benchmarks/bm_alarm.py --model demo_out/efficientnet_lite0.onnx --json benchmarks/results/alarm_cpu.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pcedge.alarm import DEFAULT_WINDOW, LEVELS, StreamAlarm  # noqa: E402
from pcedge.evaluation.demo import AVOID, CLIP_FPS, CLIP_SIZE, PATCH_ANCHOR, PATCHED_PHOTO, SECONDS_PER_PHOTO, shipped_patch  # noqa: E402
from pcedge.evaluation.bench import camera_frames, held_out_camera_frames, pasted_frames  # noqa: E402
from pcedge.evaluation.democlip import make_demo_clip  # noqa: E402
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.util.machine import machine_info  # noqa: E402

SCHEDULES = ("auto", "per-disagreer")


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def reencode_h264(frames: list[np.ndarray], folder: Path, kbps: int = 800) -> list[np.ndarray] | None:
    """H.264 at ``kbps`` (x264enc, as an IP camera streams it), decoded again by OpenCV; None without GStreamer."""
    if shutil.which("gst-launch-1.0") is None:
        return None
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:05d}.png"), frame)
    out = folder / "h264.mp4"
    subprocess.run(["gst-launch-1.0", "-q", "multifilesrc", f"location={folder}/f%05d.png", "index=0",
                    f"caps=image/png,framerate={CLIP_FPS}/1", "!", "pngdec", "!", "videoconvert", "!",
                    "x264enc", f"bitrate={kbps}", "speed-preset=veryfast", "key-int-max=30", "!", "mp4mux", "!",
                    "filesink", f"location={out}"], check=True, capture_output=True, timeout=600)
    decoded = read_all(out)
    return decoded if len(decoded) == len(frames) else None


def reencode_mjpeg(frames: list[np.ndarray], quality: int = 80) -> list[np.ndarray]:
    """Each frame through JPEG at ``quality``, as an MJPEG USB camera delivers it."""
    return [cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_COLOR) for f in frames]


def sequences(pc: PatchCleanser, workdir: Path, count: int) -> dict[str, tuple[str, list[np.ndarray]]]:
    """name -> (threat: clean / inside / beyond, frames in stream order)."""
    patch = shipped_patch()
    clip, big_clip = workdir / "clip.avi", workdir / "clip_big_patch.avi"
    segments = make_demo_clip(clip, patch, patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE, fps=CLIP_FPS,
                              seconds_per_photo=SECONDS_PER_PHOTO)
    big = cv2.resize(patch, (2 * patch.shape[1], 2 * patch.shape[0]), interpolation=cv2.INTER_LINEAR)
    make_demo_clip(big_clip, big, patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE, fps=CLIP_FPS,
                   seconds_per_photo=SECONDS_PER_PHOTO)
    frames, big_frames = read_all(clip), read_all(big_clip)
    patched = segments[-1]
    clean_clip, attacked_clip = frames[: patched.start], frames[patched.start : patched.stop]
    h264_dir = workdir / "h264"
    h264_dir.mkdir()
    h264 = reencode_h264(frames, h264_dir)
    camera = camera_frames(count) + held_out_camera_frames(count)
    out = {
        "camera views (30 photos' views)": ("clean", camera),
        "demo clip, clean segments (FFV1)": ("clean", clean_clip),
        "demo clip, clean, MJPEG q80": ("clean", reencode_mjpeg(clean_clip)),
        "demo clip, patched segment (FFV1)": ("inside", attacked_clip),
        "demo clip, patched, MJPEG q80": ("inside", reencode_mjpeg(attacked_clip)),
        "camera views + pasted photo patch": ("inside", pasted_frames(camera, pc)),
        "demo clip, 2x patch side (FFV1)": ("beyond", big_frames[patched.start : patched.stop]),
    }
    if h264 is not None:
        out["demo clip, clean, H.264 800 kbit/s"] = ("clean", h264[: patched.start])
        out["demo clip, patched, H.264 800 kbit/s"] = ("inside", h264[patched.start : patched.stop])
    return out


def fooled_share(pc: PatchCleanser, name: str, frames: list[np.ndarray], seqs: dict) -> float | None:
    """For patched sequences: how often the patch changes the undefended model's label (None for clean ones)."""
    threat = seqs[name][0]
    if threat == "clean":
        return None
    labels = [pc.predict_undefended(f) for f in frames]
    if name.startswith("camera views"):  # the same views without the patch are the reference
        clean = [pc.predict_undefended(f) for f in seqs["camera views (30 photos' views)"][1]]
        return round(float(np.mean([a != b for a, b in zip(labels, clean)])), 4)
    return round(float(np.mean([label not in AVOID for label in labels])), 4)  # the demo patch: off the cup's classes


def run_sequence(pc: PatchCleanser, frames: list[np.ndarray]) -> dict:
    alarm = StreamAlarm.from_text(DEFAULT_WINDOW)
    levels, alarmed, passes, latency, decisions = [], [], [], [], []
    for frame in frames:
        t0 = time.perf_counter()
        result = pc.predict(frame)
        latency.append((time.perf_counter() - t0) * 1e3)
        state = alarm.update(result.level)
        levels.append(result.level)
        alarmed.append(state.active)
        passes.append(result.two_mask_passes)
        decisions.append((result.label, result.case))
    lat = np.asarray(latency)
    return {"frames": len(frames), "levels": {lv: round(levels.count(lv) / len(frames), 4) for lv in LEVELS},
            "stream_alarm_rate": round(float(np.mean(alarmed)), 4), "alarms_raised": alarm.raised_count,
            "two_mask_images_mean": round(float(np.mean(passes)), 2), "two_mask_images_max": int(max(passes)),
            "mean_ms": round(float(lat.mean()), 1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "decisions": decisions}


def undefended_batch_ms(pc: PatchCleanser, frames: list[np.ndarray]) -> float:
    k = len(pc.mask_set)
    times = []
    for frame in frames:
        t0 = time.perf_counter()
        pc.undefended_labels(frame, k)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "demo_out" / "efficientnet_lite0.onnx")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--camera-frames", type=int, default=15, help="views of each photo set (x2 sets)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    start = time.time()
    report = {"machine": machine_info(), "model": str(args.model), "window": DEFAULT_WINDOW, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        with PatchCleanser.from_onnx(args.model, backend=args.backend, second_round="per-disagreer") as pc:
            seqs = sequences(pc, Path(tmp), args.camera_frames)
            report["undefended_batch_k_ms"] = round(undefended_batch_ms(pc, seqs["camera views (30 photos' views)"][1]), 1)
            fooled = {name: fooled_share(pc, name, frames, seqs) for name, (_, frames) in seqs.items()}
        results = {}
        for schedule in SCHEDULES:
            with PatchCleanser.from_onnx(args.model, backend=args.backend, second_round=schedule) as pc:
                report.setdefault("schedules", {})[schedule] = pc.schedule
                for name, (_, frames) in seqs.items():
                    print(f"# {schedule}: {name} ({len(frames)} frames)", file=sys.stderr, flush=True)
                    results[(schedule, name)] = run_sequence(pc, frames)
    base = report["undefended_batch_k_ms"]
    for name, (threat, _) in seqs.items():
        auto, old = results[("auto", name)], results[("per-disagreer", name)]
        assert auto["decisions"] == old["decisions"], f"{name}: the schedules decided differently"
        for schedule, r in (("auto", auto), ("per-disagreer", old)):
            report["rows"].append({"sequence": name, "threat": threat, "schedule": schedule, "undefended_fooled": fooled[name],
                                   **{k: v for k, v in r.items() if k != "decisions"},
                                   "mean_vs_undefended_batch": round(r["mean_ms"] / base, 2),
                                   "two_mask_images_vs_per_disagreer": round(r["two_mask_images_mean"] / max(old["two_mask_images_mean"], 1e-9), 3)})
    report["seconds"] = round(time.time() - start)
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def markdown(report: dict) -> str:
    lines = [f"undefended batch-K inference: {report['undefended_batch_k_ms']} ms (p50); stream alarm window {report['window']}; "
             f"schedules: " + "; ".join(f"{k} = {v}" for k, v in report["schedules"].items()), "",
             "| sequence | threat | undefended fooled | schedule | frames | clear | uncertain | **patch** | stream alarm "
             "| 2-mask images/frame (vs old) | mean ms | p50 | p99 | mean / undefended bK |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lv = r["levels"]
        fooled = "-" if r["undefended_fooled"] is None else f"{100 * r['undefended_fooled']:.0f}%"
        lines.append(f"| {r['sequence']} | {r['threat']} | {fooled} | {r['schedule']} | {r['frames']} | {100 * lv['clear']:.0f}% | "
                     f"{100 * lv['uncertain']:.0f}% | **{100 * lv['patch']:.0f}%** | {100 * r['stream_alarm_rate']:.0f}% | "
                     f"{r['two_mask_images_mean']:.1f} ({r['two_mask_images_vs_per_disagreer']:.2f}x) | {r['mean_ms']:.0f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_vs_undefended_batch']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
