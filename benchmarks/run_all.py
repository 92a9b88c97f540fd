"""The standard benchmark set; rewrites the generated section of benchmarks/RESULTS.md.

    python benchmarks/run_all.py [--quick]

Runs, on this machine, ``pcedge bench`` on the bundled EfficientNet-Lite0 demo model with its real
weights and ResNet-18- and ResNet-50-shaped models with random weights (which cost what the real ones
cost), Lite0 and ResNet-18 also as INT8 copies (``pcedge quantize``), and the masked-batch writer
micro-benchmark, then replaces the text between the
``run_all`` markers in RESULTS.md with the tables, the ratios against the goals and the machine. The
raw JSON reports and latency plots go to benchmarks/results/<machine>/. Hand-written sections of
RESULTS.md (GPU sessions, certification) are kept as they are.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from pcedge.evaluation.bench import BenchOptions, format_table, plot_latencies, run_bench
from pcedge.export import export_onnx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # benchmarks.models, for the export and for --torch-model
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
GOALS = {
    "defended_agreed_vs_undefended_batch": ("<= 1.10 (goal 1.05)", lambda v: v <= 1.10),
    "defended_vs_original": (">= 3 on a CPU, >= 10 on a GPU", lambda v: v >= 3),
    "peak_rss_defended_vs_undefended_batch": ("<= 1.3", lambda v: v <= 1.3),
}


def export_resnet(name: str) -> Path:
    """ResNet-shaped model with random weights (seeded): same cost as the real one, no download.

    Written to the pcedge cache (tens of MB: not for the repository).
    """
    from pcedge.util.cache import cache_dir

    path = cache_dir() / "bench-models" / f"{name}_random.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    from benchmarks import models

    torch.manual_seed(0)
    export_onnx(getattr(models, name)(), path, image_size=224, labels=[f"class {i}" for i in range(1000)],
                exporter="torchscript", source_name=f"benchmarks.models:{name}")
    return path


def int8(model: Path) -> tuple[Path | None, str]:
    """An INT8 copy made as ``pcedge quantize`` makes it by default (scheme u8s7, calibrated on camera-like views,
    agreement measured on views of other photos), cached; (None, why) when quantize refuses it."""
    from pcedge.evaluation.bench import camera_frames, held_out_camera_frames
    from pcedge.export.quantize import AgreementError, quantize_int8
    from pcedge.runtime.modelfile import read_onnx_metadata
    from pcedge.util.cache import cache_dir

    path = cache_dir() / "bench-models" / f"{model.stem}.int8.onnx"
    if path.exists() and '"scheme": "u8s7"' in read_onnx_metadata(path).get("pcedge.quantization", ""):
        return path, "cached"
    try:
        report = quantize_int8(model, path, camera_frames(16), held_out_frames=held_out_camera_frames(6))
    except AgreementError as exc:
        print(f"pcedge quantize refused {model.name}: {exc}", flush=True)
        return None, str(exc)
    print(report.summary(), flush=True)
    return path, report.summary()


def demo_model(out: Path) -> Path:
    from pcedge.evaluation.demo import ensure_demo_model

    return ensure_demo_model(out)


def markdown(reports: list[tuple[str, dict]], writer_text: str, seconds: float, refused: list[tuple[str, str]]) -> str:
    m = reports[0][1]["machine"]
    lines = [BEGIN, "", f"## Standard set (`python benchmarks/run_all.py`), generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu']}; {m['os']}, Python {m['python']}; "
             + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + f". Took {seconds / 60:.1f} min.", ""]
    if m["gpu"] == "none":
        lines += ["GPU rows: **not measured: no GPU** on this machine (GPU numbers from lent machines are in their own sections below).", ""]
    for title, report in reports:
        opts = report["options"]
        lines += [f"### {title}", "", f"`pcedge bench --model {Path(report['model']).name} --frames {opts['frames']} --warmup {opts['warmup']}"
                  + (f" --torch-model {opts['torch_model']}" if opts["torch_model"] else "") + "` "
                  f"(1280x720 camera-like frames, patch {opts['masks']['patch']}, {opts['masks']['masks_per_axis']} masks per axis)", "",
                  "| configuration | backend | mean ms | p50 | p90 | p99 | FPS | peak RSS MB | notes |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in report["results"]:
            notes = []
            if "stage_p50_ms" in r:
                s = r["stage_p50_ms"]
                notes.append(f"stages p50: mask {s['masking']:.1f}, 1st {s['first_round']:.1f}, decide {s['decision']:.2f}, "
                             f"2nd {s['second_round']:.1f}; patch level {100 * r['levels']['patch']:.0f}%, uncertain "
                             f"{100 * r['levels']['uncertain']:.0f}%, 2nd-round images mean "
                             f"{r['second_round_passes_mean']} max {r['second_round_passes_max']}; frames where masks agreed: "
                             f"{r['agreed_frames']}" + (f", their p50 {r['agreed_p50_ms']:.1f}" if r["agreed_p50_ms"] else ""))
            if "passes_mean" in r:
                notes.append(f"{r['passes_mean']} forwards per frame")
            rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else ""
            lines.append(f"| {r['name']} | {r['backend']} | {r['mean_ms']:.1f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['fps']:.2f} | {rss} | {'; '.join(notes)} |")
        lines.append("")
        for backend, ratios in report["ratios"].items():
            parts = []
            for key, value in ratios.items():
                goal = GOALS.get(key)
                parts.append(f"{key} **{value}**" + (f" (goal {goal[0]}: {'met' if goal[1](value) else 'NOT met'})" if goal else ""))
            lines.append(f"Ratios [{backend}]: " + "; ".join(parts) + ".")
        for backend, curve in report.get("latency_curves", {}).items():
            lines.append(f"Latency per batch [{backend}]: " + ", ".join(f"b{b} {t:.1f} ms" for b, t in zip(curve["batches"], curve["ms"]))
                         + f"; second round: {curve['schedule']}.")
        lines += [f"Note: {n}" for n in report["notes"]] + [""]
    for title, note in refused:
        lines += [f"### {title}", "", f"Not benchmarked: `pcedge quantize` refused to write it. {note}", ""]
    lines += ["### Masked-batch writers (`python benchmarks/masking.py --repeats 100`)", "", "```", writer_text.strip(), "```", "", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer frames (a smoke run, not for RESULTS.md)")
    parser.add_argument("--no-write", action="store_true", help="print, do not rewrite RESULTS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    out = HERE / "results" / ("cpu_" + platform.machine())
    out.mkdir(parents=True, exist_ok=True)
    frames = 4 if args.quick else 20
    lite0, resnet18 = demo_model(ROOT / "demo_out"), export_resnet("resnet18")
    (lite0_int8, lite0_note), (resnet18_int8, resnet18_note) = int8(lite0), int8(resnet18)
    plan = [
        ("EfficientNet-Lite0 (demo model, real ImageNet weights)", lite0, None, frames),
        ("EfficientNet-Lite0 INT8 (pcedge quantize; original = the FP32 PyTorch model)", lite0_int8, None, frames),
        ("ResNet-18 shape (random weights)", resnet18, "benchmarks.models:resnet18", frames),
        ("ResNet-18 shape INT8 (pcedge quantize; original = FP32 PyTorch)", resnet18_int8, "benchmarks.models:resnet18", frames),
        ("ResNet-50 shape (random weights)", export_resnet("resnet50"), "benchmarks.models:resnet50", max(2, frames // 2)),
    ]
    refused = [(title, note) for (title, model, _, _), note in zip(plan, ["", lite0_note, "", resnet18_note, ""]) if model is None]
    plan = [entry for entry in plan if entry[1] is not None]
    reports = []
    for title, model, torch_source, n in plan:
        print(f"== {title}", flush=True)
        report = run_bench(model, BenchOptions(frames=n, warmup=2, torch_model=torch_source,
                                               optimize_patch=torch_source is None))  # random weights: no label to attack
        print(format_table(report), flush=True)
        stem = Path(model).stem
        (out / f"bench_{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        plot_latencies(report, out / f"bench_{stem}.png")
        reports.append((title, report))
    writer = subprocess.run([sys.executable, str(HERE / "masking.py"), "--repeats", "20" if args.quick else "100",
                             "--json", str(out / "masking.json")], capture_output=True, text=True, check=True).stdout
    section = markdown(reports, writer, time.perf_counter() - start, refused)
    if args.no_write or args.quick:
        print(section)
        return
    results = HERE / "RESULTS.md"
    text = results.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text, encoding="utf-8")
    print(f"rewrote the generated section of {results}")


if __name__ == "__main__":
    main()
