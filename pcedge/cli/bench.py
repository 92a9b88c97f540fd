"""pcedge bench: defended vs undefended vs the original PyTorch way, same frames, one run."""

from __future__ import annotations

import argparse
import logging

from .options import add_backend_options, add_mask_options, mask_spec_from_args, model_file, positive_int, save_report

log = logging.getLogger("pcedge")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.bench import BenchOptions, format_table, plot_latencies, run_bench

    options = BenchOptions(frames=args.frames, warmup=args.warmup, masks=mask_spec_from_args(args),
                           backends=tuple(args.backend or ["auto"]), device=args.device, torch_model=args.torch_model, attack_rate=args.attack_rate,
                           rss=not args.no_rss, optimize_patch=not args.no_optimized_patch)
    report = run_bench(args.model, options, report_line=lambda text: log.info("%s", text.lstrip("# ")))
    print(format_table(report))
    save_report(args, report, plot_latencies)
    return 0


PARSER = dict(
    help="defended vs undefended vs the original PyTorch way, on the same frames, in one run",
    description="Latency (mean/p50/p90/p99), FPS, per-stage times, second-round cost under attack and peak RSS.",
    epilog="examples:\n"
           "  pcedge bench --model lite0.onnx --frames 30 --json bench.json --plot bench.png\n"
           "  pcedge bench --model resnet18.onnx --torch-model benchmarks.models:resnet18 --backend ort --backend ort-cuda\n"
           "  pcedge bench --model lite0.onnx --backend ort --backend openvino --no-rss      # an Intel box: both CPU engines",
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=model_file, help="an ONNX model exported by pcedge export")
    add_backend_options(p, repeatable=True)
    add_mask_options(p)
    p.add_argument("--frames", type=positive_int, default=20, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames first")
    p.add_argument("--torch-model", help="the PyTorch source of the model, for the original baseline and the optimized patch "
                                         "(default: the bundled model named in the ONNX metadata)")
    p.add_argument("--attack-rate", type=float, default=0.0, help="also time a stream where this fraction of frames carries a patch")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--no-optimized-patch", action="store_true", help="skip the optimized-patch rows (they need torch and time)")
    p.add_argument("--json", help="write the full report (with per-frame samples) here")
    p.add_argument("--plot", help="draw the latency distributions (PNG)")
    p.set_defaults(backend=None)


