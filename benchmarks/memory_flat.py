"""Memory of an endless stream: ``pcedge run`` over 15,000 and over 150,000 frames of a tiny looped clip.

    python benchmarks/memory_flat.py [--short 15000] [--long 150000] [--json memory.json]

Each run is a fresh process running the real command (``pcedge run --loop --max-frames N --headless``,
with a JSON-lines log, so the per-frame log path runs too) and reports its peak RSS (VmHWM) at the end.
A run whose memory grows with the frames it has seen shows it here: 10x the frames, more memory. The
goal (house issue): the long run's peak within 2 MB of the short run's. The model is fashion-cnn with
random weights (small, so 150,000 frames take minutes), the clip 30 frames of 64x64 noise (MJPG).
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
from benchmarks.soak import default_model  # noqa: E402

CHILD = """
import sys
from pcedge.cli import main
from pcedge.util.machine import process_memory_mb
code = main(sys.argv[1:])
print("PEAK_RSS_MB", process_memory_mb("VmHWM"), "RSS_MB", process_memory_mb("VmRSS"), file=sys.stderr)
sys.exit(code)
"""


def tiny_clip(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 64))
    rng = np.random.default_rng(0)
    for _ in range(30):
        writer.write(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def run(model: Path, clip: Path, frames: int, folder: Path) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, "run", "--model", str(model), "--source", str(clip), "--loop", "--headless",
                          "--max-frames", str(frames), "--patch", "4", "--masks-per-axis", "3", "-q",
                          "--log", str(folder / f"frames_{frames}.jsonl"), "--json", str(folder / f"summary_{frames}.json")],
                         capture_output=True, text=True, check=True)
    line = next(line for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_MB"))
    _, peak, _, rss = line.split()
    summary = json.loads((folder / f"summary_{frames}.json").read_text())
    return {"frames": summary["frames"], "peak_rss_mb": float(peak), "final_rss_mb": float(rss),
            "seconds": round(time.perf_counter() - start, 1), "fps": summary["fps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=15_000)
    parser.add_argument("--long", type=int, default=150_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, clip = default_model(folder), tiny_clip(folder / "tiny.avi")
        short, long = run(model, clip, args.short, folder), run(model, clip, args.long, folder)
    report = {"short": short, "long": long, "peak_growth_mb": round(long["peak_rss_mb"] - short["peak_rss_mb"], 2),
              "goal_mb": 2.0}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
