"""Endurance: a live stream through the defended runtime for minutes (hours on a device), with faults.

    python benchmarks/soak.py --minutes 3 [--model model.onnx] [--json soak.json]

The source is a real OpenCV capture (a video file written here, read by the live capture thread, so
frames are dropped when the model is slower than the camera) that is "unplugged" periodically: the
file ends and reopening fails for a while, so the reconnect logic runs for real. Every few seconds one
fault is injected into the consumer: a bad frame (empty, float, wrong shape), a corrupt model file
being loaded, or the recording disk "filling" (the writer's free-space floor raised above the free
space), after which recording is restarted. Reported: frames processed, faults injected and recovered,
peak and final RSS, RSS growth after warm-up, and frames lost without being counted
(captured - processed - dropped, which must be 0 or 1: the frame in hand when the run stopped).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pcedge.errors import PcedgeError, SourceError
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.ort import OrtEngine
from pcedge.util.machine import process_memory_mb
from pcedge.video.base import open_capture
from pcedge.video.outputs import DISK_CHECK_EVERY, FolderOutput
from pcedge.video.overlay import draw_overlay
from pcedge.video.sources import LiveSource, SourceOptions, SourceSpec

RSS_GROWTH_BOUND_MB = 64.0


def make_clip(path: Path, frames: int = 150) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (320, 240), interpolation=cv2.INTER_CUBIC)
    for i in range(frames):
        writer.write(np.roll(base, 4 * i, axis=1))
    writer.release()
    return path


def default_model(folder: Path) -> Path:
    """fashion-cnn with random weights: small, so that many frames go through in a short soak."""
    from pcedge.export import export_onnx, load_model

    loaded = load_model("fashion-cnn")
    path = folder / "fashion_cnn_random.onnx"
    export_onnx(loaded.module, path, spec=loaded.preprocessing(), exporter="torchscript", source_name="fashion-cnn")
    return path


class UnpluggingCamera:
    """Opens a real capture of the clip; every ``every``-th time the clip ends, the camera stays
    'unplugged' for ``outage`` seconds (reopening fails), then comes back."""

    def __init__(self, clip: Path, options: SourceOptions, every: int, outage: float) -> None:
        self.clip, self.options, self.every, self.outage = clip, options, every, outage
        self.sessions = 0
        self.down_since: float | None = None
        self.outages = 0

    def __call__(self):
        now = time.monotonic()
        if self.down_since is None and self.sessions and self.sessions % self.every == 0:
            self.down_since = now
        if self.down_since is not None:
            if now - self.down_since < self.outage:
                raise SourceError("camera unplugged (injected)")
            self.down_since = None
            self.outages += 1
            self.sessions += 1  # the outage is over; count the session so the next outage is `every` later
        else:
            self.sessions += 1
        return open_capture(str(self.clip), cv2.CAP_FFMPEG, self.options, f"camera {self.clip}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--model", type=Path, help="an ONNX model (default: fashion-cnn with random weights)")
    parser.add_argument("--fault-every", type=float, default=5.0, help="seconds between injected consumer faults")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pcedge-soak-"))
    model = args.model or default_model(tmp)
    clip = make_clip(tmp / "clip.avi")
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 3])

    options = SourceOptions(reconnect_s=30, stall_s=2, fps=30)  # paced like a 30 FPS camera
    camera = UnpluggingCamera(clip, options, every=3, outage=2.0)
    source = LiveSource(SourceSpec("camera", "soak", "soak"), options, opener=camera)
    faults = {"bad_frame": [0, 0], "corrupt_model": [0, 0], "disk_full": [0, 0]}  # [injected, recovered]
    output = FolderOutput(tmp / "recording")
    processed, rss_samples = 0, []
    started = last_fault = last_rss = time.monotonic()
    warm_rss = None
    kinds = list(faults)
    with PatchCleanser.from_onnx(model, backend="ort", patch="2%", masks_per_axis=6) as pc:
        for frame in source:
            now = time.monotonic()
            if now - started > args.minutes * 60:
                break
            result = pc.predict(frame.image)
            processed += 1
            output.write(draw_overlay(frame.image, result))
            if processed % 50 == 0 and output.written > 200:  # keep the recording folder small
                for old in sorted((tmp / "recording").glob("*.jpg"))[:-50]:
                    old.unlink()
            if now - last_fault > args.fault_every:
                last_fault = now
                kind = kinds[int(now) % len(kinds)]
                faults[kind][0] += 1
                faults[kind][1] += inject(kind, pc, output, tmp)
                if kind == "disk_full" and output.failed:
                    output = FolderOutput(tmp / "recording")  # the disk has room again: recording restarts
            if now - last_rss > 5:
                last_rss = now
                rss_samples.append(round(process_memory_mb(), 1))
                if warm_rss is None and now - started > 20:
                    warm_rss = rss_samples[-1]
    source.close()
    output.close()
    stats = source.stats
    final = process_memory_mb()
    report = {
        "minutes": round((time.monotonic() - started) / 60, 2), "model": str(model), "frames_processed": processed,
        "frames_captured": stats.read, "frames_dropped": stats.dropped,
        "frames_lost_uncounted": stats.read - stats.dropped - processed,
        "reconnects": stats.reconnects, "camera_outages": camera.outages,
        "outage_gaps_s": [g["seconds"] for g in stats.gaps if g["seconds"] > 1.0], "source_error": stats.error,
        "faults": {k: {"injected": v[0], "recovered": v[1]} for k, v in faults.items()},
        "rss_mb": {"peak": round(process_memory_mb("VmHWM"), 1), "final": round(final, 1), "after_warmup": warm_rss,
                   "growth_after_warmup": None if warm_rss is None else round(final - warm_rss, 1), "bound": RSS_GROWTH_BOUND_MB,
                   "samples": rss_samples},
    }
    ok = (report["frames_lost_uncounted"] in (0, 1) and all(v[0] == v[1] for v in faults.values())
          and (warm_rss is None or final - warm_rss <= RSS_GROWTH_BOUND_MB))
    report["verdict"] = "pass" if ok else "FAIL"
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb"} | {"rss_mb": {k: v for k, v in report["rss_mb"].items() if k != "samples"}}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    raise SystemExit(0 if ok else 1)


def inject(kind: str, pc: PatchCleanser, output: FolderOutput, tmp: Path) -> int:
    """Inject one fault; 1 when it was refused with a clear error (or recovered) and the runtime still works."""
    if kind == "bad_frame":
        for bad in (np.zeros((0, 4, 3), np.uint8), np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 5), np.uint8)):
            try:
                pc.predict(bad)
                return 0
            except PcedgeError:
                pass
    elif kind == "corrupt_model":
        try:
            OrtEngine(tmp / "truncated.onnx").activate()
            return 0
        except PcedgeError:
            pass
    elif kind == "disk_full":
        output.min_free_bytes = 1 << 62  # more than any disk has free: the next space check fails
        for _ in range(DISK_CHECK_EVERY + 1):
            output.write(np.zeros((8, 8, 3), np.uint8))
        if not output.failed:
            return 0
    pc.predict(np.zeros((64, 64, 3), np.uint8))  # and the runtime still answers
    return 1


if __name__ == "__main__":
    main()
