"""Memory of the events recorder when its disk hangs: 16 camera-sized (1080p) live streams raising alarms again and
again, alarm episodes written to a folder whose file system stops answering for a minute.

    python benchmarks/bm_site_memory.py [--streams 16] [--block-seconds 60] [--json out.json]

The hung disk is a real one: the events folder is a bindfs (FUSE) mount of a temporary folder, and its bindfs
process is stopped (SIGSTOP) for ``--block-seconds``, so every file operation in it waits, as on a hung NFS mount.
The recorder's worker is stuck in its first write; the loop keeps defending and queueing. Reported every second:
the process's RSS, the bytes in the recorder's frame lane (bounded by ``capacity_bytes``), the frames it dropped,
the episodes written. Needs root and Debian's bindfs (``apt-get install bindfs``); says so and stops without them.

Each camera is a paced live source of preallocated 1080p frames (the same arrays each time: a real camera allocates
a new one per frame, which this process frees as soon as a newer frame replaces it; what matters here is what the
recorder keeps). Each shows the patch signature for 2 s out of every 6 s (offset per camera), so alarms rise and
clear all the time. The model is the test suite's small region CNN (so 16 streams run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.site.disk import EpisodeRecorder  # noqa: E402
from pcedge.site.episodes import EpisodeBook  # noqa: E402
from pcedge.util.machine import process_memory_mb  # noqa: E402
from pcedge.video import RunOptions, SourceOptions, run  # noqa: E402
from pcedge.video.base import Frame, FrameSource  # noqa: E402
from pcedge.video.sinks import annotator  # noqa: E402
from tests.models import export_test_model  # noqa: E402
from tests.runtime.test_driver import frames  # noqa: E402

SIZE = (1080, 1920)
FPS, PATCH_S, CYCLE_S = 15.0, 2.0, 6.0


class PacedCamera(FrameSource):
    """A live source: ``clean`` or ``patched`` 1080p frames at FPS, patched PATCH_S of every CYCLE_S."""

    live = True

    def __init__(self, name: str, clean: np.ndarray, patched: np.ndarray, offset_s: float, stop: threading.Event) -> None:
        super().__init__(name)
        self.clean, self.patched, self.offset_s, self.stop = clean, patched, offset_s, stop

    def __iter__(self):
        start, index = time.monotonic(), 0
        while not self.stop.is_set():
            due = start + index / FPS
            time.sleep(max(0.0, due - time.monotonic()))
            phase = (time.monotonic() - start + self.offset_s) % CYCLE_S
            self.stats.read += 1
            yield Frame(self.patched if phase < PATCH_S else self.clean, index, time.time())
            index += 1


def camera_frames(model: PatchCleanser) -> tuple[np.ndarray, np.ndarray]:
    """A clean and a patch-level frame at 1080p (small test frames scaled up; checked on the model)."""
    candidates = [cv2.resize(f, SIZE[::-1], interpolation=cv2.INTER_NEAREST) for f in frames(60, seed=3)]
    levels = [model.predict(c).level for c in candidates]
    return candidates[levels.index("clear")], candidates[levels.index("patch")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--healthy-seconds", type=float, default=15.0, help="before and after the hang")
    parser.add_argument("--block-seconds", type=float, default=60.0)
    parser.add_argument("--json", help="write the samples and the summary here")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("bindfs"):
        sys.exit("needs root and Debian's bindfs (apt-get install bindfs) to make a disk that hangs")
    work = Path(tempfile.mkdtemp(prefix="pcedge-bm-memory-"))
    backing, mount = work / "backing", work / "events-disk"
    backing.mkdir()
    mount.mkdir()
    fuse = subprocess.Popen(["bindfs", "-f", str(backing), str(mount)])
    stop, samples = threading.Event(), []
    try:
        for _ in range(100):
            if os.path.ismount(mount):
                break
            time.sleep(0.05)
        model_path = export_test_model("region", work / "region.onnx")
        with PatchCleanser.from_onnx(model_path, backend="ort", patch="5", masks_per_axis=3) as pc:
            clean, patched = camera_frames(pc)
            book = EpisodeBook(annotator(pc))
            recorder = EpisodeRecorder(mount / "events", book, clip_seconds=5.0)
            cameras = [PacedCamera(f"cam{n:02d}", clean, patched, CYCLE_S * n / args.streams, stop) for n in range(args.streams)]
            started = time.monotonic()
            runner = threading.Thread(target=run, args=(pc, cameras, SourceOptions(), RunOptions()),
                                      kwargs={"stop": stop, "sinks": [book, recorder]})
            runner.start()
            phases = [("healthy", args.healthy_seconds), ("disk hung", args.block_seconds), ("recovered", args.healthy_seconds)]
            for phase, seconds in phases:
                if phase == "disk hung":
                    fuse.send_signal(signal.SIGSTOP)
                if phase == "recovered":
                    fuse.send_signal(signal.SIGCONT)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    time.sleep(1.0)
                    samples.append({"t": round(time.monotonic() - started, 1), "phase": phase, "rss_mb": process_memory_mb("VmRSS"),
                                    "frame_lane_mb": round(recorder.queued_bytes / 2**20, 1), "dropped": recorder.dropped,
                                    "episodes_written": recorder.written,
                                    "frames": sum(c.stats.read for c in cameras)})
                    print(json.dumps(samples[-1]), flush=True)
            stop.set()
            runner.join(120)
    finally:
        stop.set()
        fuse.send_signal(signal.SIGCONT)
        subprocess.run(["fusermount3" if shutil.which("fusermount3") else "fusermount", "-u", str(mount)], check=False)
        fuse.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    rows = samples
    report = {phase: {"rss_mb_max": max(s["rss_mb"] for s in rows if s["phase"] == phase),
                      "rss_mb_last": [s["rss_mb"] for s in rows if s["phase"] == phase][-1],
                      "frame_lane_mb_max": max(s["frame_lane_mb"] for s in rows if s["phase"] == phase)}
              for phase in ("healthy", "disk hung", "recovered")}
    hung = [(row["t"], row["rss_mb"]) for row in rows if row["phase"] == "disk hung"]
    slope = float(np.polyfit([t for t, _ in hung], [r for _, r in hung], 1)[0]) * 60 if len(hung) > 2 else None
    report["disk hung"]["rss_mb_per_minute"] = None if slope is None else round(slope, 2)  # a least-squares line
    report.update({"streams": args.streams, "block_seconds": args.block_seconds, "peak_rss_mb": process_memory_mb("VmHWM"),
                   "dropped": recorder.dropped, "failed": recorder.failed, "episodes_written": recorder.written,
                   "snapshots_lost": recorder.snapshots_lost})
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"report": report, "samples": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
