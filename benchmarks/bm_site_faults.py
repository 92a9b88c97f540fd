"""A site's bad day against a good one: four real RTSP cameras and a file, with and without faults, same run.

    python benchmarks/bm_site_faults.py [--model M.onnx --mask-args "--patch 5 --masks-per-axis 3"] [--max-frames 300]
                                        [--json benchmarks/results/site_faults_cpu.json]

The scenario is tests/support/site_faults.py (the acceptance test's): camera A down at start and up 12 s after
the launch, B's server killed at 8 s and back 3 s later, C silent for 10 s without closing, D healthy, and a
file; all in one ``pcedge run --max-frames N``. The fault-free run has the same cameras and file, all up.
Reported: when D and the file gave their first results (seconds after the launch), D's frames per second
during the faults (8 s to 18 s) against the same window of the fault-free run, each stream's frames, dropped
frames, gaps and frame age (p50/p99), the accounting check (read = defended + dropped + failed) and the exit
codes. Without ``--model`` the test suite's small CNN is used (steps of a few ms: every camera runs at its
15 FPS, so a slowdown would show); with the demo model the CPU is the limit instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.rtsp import rtsp_server_missing  # noqa: E402
from tests.support.site_faults import CAMERAS, FAULT_AT_S, SiteRun, run_site  # noqa: E402
from tests.video.clips import write_numbered_clip  # noqa: E402

WINDOW = (FAULT_AT_S, FAULT_AT_S + 10.0)  # the fault window, seconds after the launch


def describe(run: SiteRun) -> dict:
    streams = {}
    for s in run.summary.get("streams", []):
        src = s["source"]
        streams[s["stream_name"]] = {"frames": s["frames"], "dropped": src["dropped"], "gaps": src["gap_count"],
                                     "gap_s": round(sum(g["seconds"] for g in src["gaps"]), 1), "end": s["end"],
                                     "age_p50_ms": s["age_p50_ms"], "age_p99_ms": s["age_p99_ms"],
                                     "adds_up": src["read"] == s["frames"] + src["dropped"] + sum(s["failed_frames"].values())}
    first = {name: round(min(r["timestamp"] + r["age_ms"] / 1e3 for r in run.frames(name)) - run.started, 2)
             for name in ("d", "file") if run.frames(name)}
    return {"exit_code": run.returncode, "first_result_s": first,
            "d_fps_in_window": round(run.rate("d", run.started + WINDOW[0], run.started + WINDOW[1]), 2), "streams": streams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an ONNX model (default: the test suite's small CNN, exported here)")
    parser.add_argument("--mask-args", default="", help="mask flags for pcedge run (default for the small CNN: --patch 5 --masks-per-axis 3)")
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    missing = rtsp_server_missing()
    if missing:
        raise SystemExit(f"no loopback RTSP cameras: {missing}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, mask_args = args.model, shlex.split(args.mask_args)
        if model is None:
            from tests.models import export_test_model

            model = str(export_test_model("region", folder / "region.onnx"))
            mask_args = mask_args or ["--patch", "5", "--masks-per-axis", "3"]
        clip = write_numbered_clip(folder / "file.avi", args.max_frames + 100)
        report = {}
        for label, faults in (("fault_free", False), ("faults", True)):
            run = run_site(model, clip, folder / label, max_frames=args.max_frames, faults=faults, extra_args=tuple(mask_args),
                           timeout_s=900)
            report[label] = describe(run)
            print(f"{label}: exit {run.returncode}, first results {report[label]['first_result_s']} s, "
                  f"D {report[label]['d_fps_in_window']} FPS in {WINDOW[0]:.0f}-{WINDOW[1]:.0f} s", flush=True)
            for name in (*CAMERAS, "file"):
                row = report[label]["streams"].get(name)
                if row:
                    print(f"  {name:5s} {row}", flush=True)
    ratio = report["faults"]["d_fps_in_window"] / max(report["fault_free"]["d_fps_in_window"], 1e-9)
    report["d_fps_ratio"] = round(ratio, 3)
    print(f"D's FPS during the faults / fault-free: {ratio:.2f} (goal >= 0.8)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
