"""CPU latency of the defended driver vs the undefended model on the same ONNX Runtime session.

    python benchmarks/cpu_driver.py --model demo_out/efficientnet_lite0.onnx [--frames 20]

Rows: undefended batch 1, undefended batch K (the defense's lower bound), and the defended driver on
clean frames (scikit-image photos and foolbox ImageNet samples), with medians and p90.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pcedge.evaluation.sample_data import foolbox_samples
from pcedge.runtime.driver import PatchCleanser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    frames = [cv2.imread(str(p)) for p, _ in foolbox_samples("imagenet")][: args.frames]
    with PatchCleanser.from_onnx(args.model, backend="ort", patch="2%", masks_per_axis=6) as pc:
        k = len(pc.mask_set)
        engine = pc.engine
        rows = {"undefended batch 1": [], f"undefended batch {k}": [], "defended, all frames": [], "defended, agreed frames": []}
        for frame in frames[:3]:
            pc.predict(frame)
        for frame in frames:
            t0 = time.perf_counter()
            pc.predict_undefended(frame)
            rows["undefended batch 1"].append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            engine.infer(k)
            rows[f"undefended batch {k}"].append((time.perf_counter() - t0) * 1e3)
            result = pc.predict(frame)
            rows["defended, all frames"].append(result.timings_ms["total"])
            if result.case == "agreed":
                rows["defended, agreed frames"].append(result.timings_ms["total"])
        print(f"# {engine.describe()}, K={k}, {len(frames)} frames")
        print(f"{'configuration':28s} {'n':>3s} {'p50 ms':>8s} {'p90 ms':>8s}")
        for name, samples in rows.items():
            if samples:
                print(f"{name:28s} {len(samples):3d} {np.median(samples):8.1f} {np.percentile(samples, 90):8.1f}")
        clean = np.median(rows["defended, agreed frames"]) if rows["defended, agreed frames"] else float("nan")
        print(f"agreed-frame defended / undefended batch {k}: {clean / np.median(rows[f'undefended batch {k}']):.3f}x")


if __name__ == "__main__":
    main()
