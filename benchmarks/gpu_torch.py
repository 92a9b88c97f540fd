"""GPU comparison on PyTorch CUDA (no TensorRT on the lent machines): the defense's cost, side by side.

For ResNet-18- and ResNet-50-shaped models (random weights), on the same 1080p BGR frames:
  undefended batch 1, undefended batch K (the defense's lower bound), the original research code's way
  (one torch.where + forward per mask, second round at batch 1), and pcedge's driver (CUDA frame kernel
  writing K masked images in place into the model's input tensor, one batch-K forward, numpy decision).

    python benchmarks/gpu_torch.py [--frames 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import resnet18, resnet50  # noqa: E402

from pcedge.masks import MaskSet  # noqa: E402
from pcedge.preprocess import PreprocessSpec, preprocess_reference  # noqa: E402
from pcedge.runtime.driver import PatchCleanser  # noqa: E402
from pcedge.runtime.torch_eager import TorchEngine, original_double_masking  # noqa: E402


def stats(samples_ms: list[float]) -> dict:
    a = np.asarray(samples_ms)
    return {"mean_ms": float(a.mean()), "p50_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "fps": float(1e3 / a.mean())}


def timed(fn, frames, warmup: int = 5) -> list[float]:
    for f in frames[:warmup]:
        fn(f)
    out = []
    for f in frames:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(f)
        torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args()
    device = "cuda"
    spec = PreprocessSpec()
    ms = MaskSet.square(224, patch_fraction=0.02, masks_per_axis=6)
    k = len(ms)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(args.frames)]
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "K": k, "rows": []}
    for name, build in (("resnet18", resnet18), ("resnet50", resnet50)):
        torch.manual_seed(0)
        model = build().to(device).eval()
        batch1 = torch.randn(1, 3, 224, 224, device=device)
        batchk = torch.randn(k, 3, 224, 224, device=device)

        def undefended(_f, x=batch1):
            with torch.inference_mode():
                model(x).argmax(1).cpu()

        def undefended_k(_f, x=batchk):
            with torch.inference_mode():
                model(x).argmax(1).cpu()

        def original(f):
            image = torch.from_numpy(preprocess_reference(f, spec)).to(device)
            original_double_masking(model, image, ms)

        engine = TorchEngine(model, (224, 224), max_batch=k, device=device)
        pc = PatchCleanser(engine, ms, spec)
        passes = []

        def defended(f):
            passes.append(pc.predict(f).two_mask_passes)

        rows = {
            "undefended batch 1": timed(undefended, frames),
            f"undefended batch {k}": timed(undefended_k, frames),
            "original (torch eager, 1 fwd/mask)": timed(original, frames[: max(10, args.frames // 5)]),
            "pcedge defended (CUDA writer + torch)": timed(defended, frames),
        }
        for label, samples in rows.items():
            results["rows"].append({"model": name, "name": label, **stats(samples)})
        base = stats(rows[f"undefended batch {k}"])["p50_ms"]
        ours = stats(rows["pcedge defended (CUDA writer + torch)"])["p50_ms"]
        orig = stats(rows["original (torch eager, 1 fwd/mask)"])["p50_ms"]
        results["rows"].append({"model": name, "name": "ratios", "defended_vs_undefended_batch": ours / base,
                                "defended_vs_original": ours / orig, "second_round_passes_mean": float(np.mean(passes))})
    print(f"# {results['device']}, torch {results['torch']}, K={k}, 1080p BGR frames, fp32")
    print(f"{'model':9s} {'configuration':40s} {'mean':>8s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'FPS':>8s}")
    for r in results["rows"]:
        if r["name"] == "ratios":
            print(f"{r['model']:9s} defended / undefended batch K = {r['defended_vs_undefended_batch']:.2f}x; "
                  f"defended / original = {r['defended_vs_original']:.3f}x ({1 / r['defended_vs_original']:.1f}x faster); "
                  f"mean second-round passes {r['second_round_passes_mean']:.1f}")
        else:
            print(f"{r['model']:9s} {r['name']:40s} {r['mean_ms']:8.2f} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} {r['p99_ms']:8.2f} {r['fps']:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
