"""Greedy masks under torchrun: are two processes' pairs one process's, and what does the shared cache save?

Runs ``pcedge finetune --masks greedy --greedy-every 2 --greedy-mix 0,0,1`` (every image greedy, as before the mix
existed) on Fashion-MNIST for 2 epochs, alone and under ``torchrun --nproc-per-node 2`` (gloo, CPU), for fashion-cnn
(with BatchNorm) and the tests' PlainCNN (without), then compares the greedy pairs in the two checkpoints image by
image. The same two-process run of the code before issue 38 (``--before``: a source tree, e.g. ``git archive c62a5a1``,
whose ranks cached only their own pairs) gives the search seconds the shared cache saves in the reusing epoch.

    python benchmarks/ddp_greedy.py --before /tmp/base38 --out benchmarks/results/ddp_greedy.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/usr/share/datasets/fashion-mnist")
MODELS = {"fashion-cnn": ["--model", "fashion-cnn"],
          "plain-cnn": ["--model", "tests.models:PlainCNN", "--image-size", "28", "--crop-pct", "1", "--mean", "0.286,0.286,0.286",
                        "--std", "0.353,0.353,0.353"]}


def finetune(source: Path, args: list[str], processes: int, workdir: Path) -> tuple[dict, float]:
    """One run of ``pcedge finetune`` from the tree at ``source``; its final JSON line and wall seconds."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    start = time.perf_counter()  # torchrun gives each process one thread; one process alone uses torch's default (the cores)
    proc = subprocess.run([*launcher, "-m", "pcedge", "finetune", *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(source)), cwd=workdir)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.splitlines()[-1]), round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a source tree of pcedge before the shared cache (skipped if absent)")
    parser.add_argument("--limit", type=int, default=12000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ddp_greedy"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp_greedy.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    common = ["--data", str(DATA), "--patch", "2%", "--masks-per-axis", "6", "--limit", str(args.limit), "--epochs", "2", "--masks", "greedy",
              "--greedy-every", "2", "--val-fraction", "0", "--val-certify", "0", "--no-progress", "-q"]
    results: dict = {"command": "pcedge finetune " + " ".join(common) + " --greedy-mix 0,0,1", "models": {}}
    for name, model in MODELS.items():
        row = {}
        for processes in (1, 2):
            checkpoint = args.work / f"{name}_{processes}.pt"
            out, seconds = finetune(ROOT, [*model, *common, "--greedy-mix", "0,0,1", "--save-checkpoint", str(checkpoint),
                                           "--out", str(args.work / f"{name}_{processes}.onnx")], processes, args.work)
            row[f"{processes}_process"] = {"seconds": seconds, "epochs": [{k: r[k] for k in ("greedy_search_seconds", "greedy_searched_images",
                                                                                            "seconds", "loss")} for r in out["history"]]}
            print(name, processes, row[f"{processes}_process"], flush=True)
        one, two = (torch.load(args.work / f"{name}_{n}.pt", weights_only=True)["greedy_pairs"].numpy() for n in (1, 2))
        searched = (one >= 0).all(1) & (two >= 0).all(1)
        row["pairs"] = {"images": int(searched.sum()), "identical": int((one[searched] == two[searched]).all(1).sum()),
                        "first_mask_identical": int((one[searched, 0] == two[searched, 0]).sum())}
        print(name, row["pairs"], flush=True)
        results["models"][name] = row
    if args.before and args.before.is_dir():
        out, seconds = finetune(args.before, [*MODELS["fashion-cnn"], *common, "--out", str(args.work / "before.onnx")], 2, args.work)
        results["before_2_process"] = {"source": str(args.before), "seconds": seconds,
                                       "epochs": [{k: r[k] for k in ("greedy_search_seconds", "seconds", "loss")} for r in out["history"]]}
        print("before", results["before_2_process"], flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
