"""Micro-benchmark of the masked-batch writers (K = 36 one-mask images of 3x224x224).

Compares, in one run on the same buffers: the C++ writer, numpy's ``np.where`` broadcast (what research
code does) and a plain ``np.copyto`` of the same output bytes (the memory-bandwidth ceiling). Reports the
median and p90 over repeats and GB/s of output written; ratios are against the plain copy measured in
the same run. With a CUDA GPU, CuPy and the built kernel, the CUDA writer is timed with CUDA events.

    python benchmarks/masking.py [--repeats 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.kernels import CudaMaskWriter, cuda_writer_available, write_masked, write_masked_frame


def timed(fn, repeats: int, warmup: int = 5) -> np.ndarray:
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for r in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples[r] = time.perf_counter() - t0
    return samples * 1e3


def cpu_rows(ms: MaskSet, dtype, repeats: int) -> list[dict]:
    k = len(ms)
    image = np.random.default_rng(0).standard_normal((3, *ms.image_size)).astype(dtype)
    out = np.empty((k, 3, *ms.image_size), dtype)
    source = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    keep = ms.keep_masks()[:, None]  # (K, 1, H, W)
    zero = dtype(0)
    selection = np.arange(k)
    frame = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    spec = PreprocessSpec(input_size=ms.image_size)
    cases = {
        "plain copy (ceiling)": lambda: np.copyto(out, source),
        "numpy np.where": lambda: np.where(keep, image[None], zero),
        "C++ writer": lambda: write_masked(image, ms, selection, out),
        "C++ writer, 1 thread": lambda: write_masked(image, ms, selection, out, num_threads=1),
        "C++ frame->batch (480x640 BGR)": lambda: write_masked_frame(frame, spec, ms, selection, out),
    }
    nbytes = out.nbytes
    rows = []
    for name, fn in cases.items():
        ms_samples = timed(fn, repeats)
        rows.append({"name": name, "dtype": np.dtype(dtype).name, "p50_ms": float(np.median(ms_samples)),
                     "p90_ms": float(np.percentile(ms_samples, 90)), "gbps": nbytes / np.median(ms_samples) / 1e6})
    return rows


def cuda_rows(ms: MaskSet, dtype, repeats: int) -> list[dict]:
    import cupy as cp

    k = len(ms)
    image = cp.asarray(np.random.default_rng(0).standard_normal((3, *ms.image_size)).astype(dtype))
    out = cp.empty((k, 3, *ms.image_size), dtype)
    source = cp.asarray(np.random.default_rng(1).standard_normal(out.shape).astype(dtype))
    frame = cp.asarray(np.random.default_rng(2).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    writer = CudaMaskWriter(ms, max_images=k)
    spec = PreprocessSpec(input_size=ms.image_size)
    selection = np.arange(k)
    cases = {
        "CUDA plain copy (ceiling)": lambda: cp.copyto(out, source),
        "CUDA writer": lambda: writer.write_masked(image, selection, out),
        "CUDA frame->batch (1080p BGR)": lambda: writer.write_masked_frame(frame, spec, selection, out),
    }
    rows = []
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    for name, fn in cases.items():
        for _ in range(10):
            fn()
        samples = np.empty(repeats)
        for r in range(repeats):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            samples[r] = cp.cuda.get_elapsed_time(start, stop)
        rows.append({"name": name, "dtype": np.dtype(dtype).name, "p50_ms": float(np.median(samples)),
                     "p90_ms": float(np.percentile(samples, 90)), "gbps": out.nbytes / np.median(samples) / 1e6})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args()
    ms = MaskSet.square(224, patch_fraction=0.02, masks_per_axis=6)
    rows = []
    for dtype in (np.float32, np.float16):
        rows += cpu_rows(ms, dtype, args.repeats)
        if cuda_writer_available():
            rows += cuda_rows(ms, dtype, args.repeats)
    print(f"# masked-batch writers, K={len(ms)}, 3x224x224, {platform.processor() or platform.machine()}")
    print(f"{'writer':34s} {'dtype':8s} {'p50 ms':>8s} {'p90 ms':>8s} {'GB/s':>7s} {'vs copy':>8s} {'vs numpy':>9s}")
    for row in rows:
        same = [r for r in rows if r["dtype"] == row["dtype"]]
        prefix = "CUDA" if row["name"].startswith("CUDA") else ""
        copy = next(r for r in same if r["name"] == (f"{prefix} plain copy (ceiling)".strip()))
        numpy_row = next(r for r in same if r["name"] == "numpy np.where")
        row["vs_copy"] = row["p50_ms"] / copy["p50_ms"]
        row["speedup_vs_numpy"] = numpy_row["p50_ms"] / row["p50_ms"]
        print(f"{row['name']:34s} {row['dtype']:8s} {row['p50_ms']:8.3f} {row['p90_ms']:8.3f} {row['gbps']:7.1f} "
              f"{row['vs_copy']:7.2f}x {row['speedup_vs_numpy']:8.1f}x")
    if not cuda_writer_available():
        print("CUDA writer: not measured (no GPU with the built kernel on this machine)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
