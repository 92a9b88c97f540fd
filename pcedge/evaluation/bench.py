"""``pcedge bench``: what the defense costs, side by side in one process, on the same frames.

Rows, each timed per frame over the same camera-like frames (1280x720 views of real photos):
1. undefended, batch 1: frame -> input -> one inference (an unprotected camera);
2. undefended, batch K: the same frame written K times, one batch-K inference (the lower bound of the
   defense's first round);
3. original: the research code's way (PyTorch eager, one forward per mask, second round at batch 1),
   only when the PyTorch model is known (``--torch-model``, or a bundled model named in the metadata);
4. defended, per backend, clean frames, with per-stage times (masking, first round, decision, second round);
5. defended on attacked frames: a pasted patch, and a patch optimized against the undefended PyTorch
   model where torch is available, with the number of second-round passes.
Peak RSS is measured in child processes (one per runtime) because a process's peak never goes down.
Numbers are measured here, never estimated; a row that cannot run says why.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from ..alarm import LEVELS
from ..errors import ConfigError
from ..masks import MaskSpec
from ..runtime.driver import PatchCleanser
from ..util.machine import machine_info, process_memory_mb
from ..util.progress import progress

FRAME_SIZE = (720, 1280)


@dataclass
class BenchOptions:
    frames: int = 20
    warmup: int = 3
    masks: MaskSpec = MaskSpec()
    backends: tuple[str, ...] = ("auto",)
    device: str = "CPU"  # OpenVINO's device, for the openvino backend (and auto's comparison with it)
    torch_model: str | None = None  # a model source (pcedge export's --model syntax) for the original baseline and the attack
    attack_rate: float = 0.0  # > 0: also a mixed stream where this fraction of frames is attacked
    rss: bool = True
    optimize_patch: bool = True


@dataclass
class Row:
    name: str
    backend: str
    samples_ms: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        a = np.asarray(self.samples_ms)
        return {"name": self.name, "backend": self.backend, "frames": int(a.size), "mean_ms": round(float(a.mean()), 3),
                "p50_ms": round(float(np.percentile(a, 50)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
                "p99_ms": round(float(np.percentile(a, 99)), 3), "fps": round(1000.0 / float(a.mean()), 2), **self.extra,
                "samples_ms": [round(float(v), 3) for v in a]}


def camera_frames(count: int, size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """Camera-like frames: pan-and-zoom views of scikit-image's photos (smooth synthetic frames without it)."""
    try:
        from .democlip import camera_view, load_photos

        photos = list(load_photos().values())
        return [camera_view(photos[i % len(photos)], (i // len(photos)) / max(count // len(photos), 1), size)[0] for i in range(count)]
    except ImportError:
        rng = np.random.default_rng(0)
        return [cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), size[::-1], interpolation=cv2.INTER_CUBIC)
                for _ in range(count)]


def held_out_camera_frames(count: int, size: tuple[int, int] = FRAME_SIZE) -> list[np.ndarray]:
    """Camera-like views of other photos than :func:`camera_frames` (foolbox's ImageNet samples): frames that
    calibration or tuning on ``camera_frames`` has never seen."""
    from .democlip import camera_view
    from .sample_data import foolbox_samples

    photos = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path, _ in foolbox_samples("imagenet")]
    return [camera_view(photos[i % len(photos)], 0.5 * (i // len(photos)) % 1.0, size)[0] for i in range(count)]


def timed(fn: Callable[[np.ndarray], Any], frames: list[np.ndarray], warmup: int, desc: str = "") -> tuple[list[float], list[Any]]:
    """Per-frame milliseconds of ``fn`` after ``warmup`` untimed calls, and its outputs (a progress bar while it runs)."""
    (samples, outputs), = timed_together([fn], frames, warmup, desc)
    return samples, outputs


def timed_together(fns: list[Callable[[np.ndarray], Any]], frames: list[np.ndarray], warmup: int,
                   desc: str = "") -> list[tuple[list[float], list[Any]]]:
    """Like :func:`timed` for several functions, interleaved frame by frame: a ratio between them is then not
    biased by the machine's speed drifting between two runs (shared 2-core machines drift by 20% in minutes)."""
    for frame in frames[:warmup]:
        for fn in fns:
            fn(frame)
    measured: list[tuple[list[float], list[Any]]] = [([], []) for _ in fns]
    for frame in progress(frames, desc=desc or "timing", unit="frame", enabled=bool(desc)):
        for fn, (samples, outputs) in zip(fns, measured):
            t0 = time.perf_counter()
            outputs.append(fn(frame))
            samples.append((time.perf_counter() - t0) * 1e3)
    return measured


# ------------------------------------------------------------------------------------------ attacked frames
def paste_in_frame(frame: np.ndarray, patch_rgb: np.ndarray, model_yx: tuple[int, int], pc: PatchCleanser) -> np.ndarray:
    """Put a model-space patch into the camera frame where the model will see it (within the threat model)."""
    from .democlip import max_patch_side_in_frame, paste

    geo = pc.spec.geometry(*frame.shape[:2])
    scale = frame.shape[0] / geo.resized_h
    side = max(1, max_patch_side_in_frame(frame.shape[:2], pc.mask_set.threat.shapes[0][0], pc.spec))
    y, x = int((model_yx[0] + geo.top) * scale), int((model_yx[1] + geo.left) * scale)
    return paste(frame, cv2.resize(patch_rgb[:, :, ::-1], (side, side), interpolation=cv2.INTER_NEAREST), x, y)


def pasted_frames(frames: list[np.ndarray], pc: PatchCleanser) -> list[np.ndarray]:
    """A high-contrast real-photo patch at the model input's centre of each frame."""
    ph, pw = pc.mask_set.threat.shapes[0]
    source = frames[len(frames) // 2]
    patch = cv2.resize(source, (pw, ph), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    h, w = pc.spec.input_size
    return [paste_in_frame(f, patch, ((h - ph) // 2, (w - pw) // 2), pc) for f in frames]


def optimized_frames(frames: list[np.ndarray], pc: PatchCleanser, torch_model: Any, count: int) -> list[np.ndarray]:
    """Patches optimized against the undefended PyTorch model on the model-input view of each frame."""
    from .attacks import attack_image

    out = []
    for frame in frames[:count]:
        geo = pc.spec.geometry(*frame.shape[:2])
        h, w = pc.spec.input_size
        view = cv2.resize(frame, (geo.resized_w, geo.resized_h), interpolation=cv2.INTER_LINEAR)[geo.top : geo.top + h, geo.left : geo.left + w]
        label = int(pc.predict_undefended(frame))
        ph, pw = pc.mask_set.threat.shapes[0]
        attack = attack_image(torch_model, view[:, :, ::-1].copy(), label, pc.spec, (ph - 1, pw - 1), steps=10, top=1,
                              positions=_coarse_positions((h, w), (ph - 1, pw - 1)))
        y, x = attack.position
        out.append(paste_in_frame(frame, attack.image[y : y + ph - 1, x : x + pw - 1], attack.position, pc))
    return out


def _coarse_positions(size: tuple[int, int], patch: tuple[int, int]) -> list[tuple[int, int]]:
    from .attacks import grid_positions

    return grid_positions(size, patch, max(size) // 3)  # 9 restarts: the attack is costly at 224x224 on a CPU


# ------------------------------------------------------------------------------------------ peak RSS
def _rss_child(model: str, backend: str, device: str, masks: MaskSpec, mode: str, frames: int, queue: Any) -> None:
    """Runs in a fresh process: load one runtime, run frames, report the peak RSS in MB."""
    pc = PatchCleanser.from_onnx(model, backend=backend, device=device, masks=masks)
    k = len(pc.mask_set)
    for frame in camera_frames(frames):
        if mode == "defended":
            pc.predict(frame)
        else:
            pc.undefended_labels(frame, k)
    pc.close()
    queue.put(process_memory_mb("VmHWM"))


def peak_rss_mb(model: str, backend: str, options: BenchOptions, mode: str) -> float | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_rss_child, args=(model, backend, options.device, options.masks, mode, 5, queue))
    proc.start()
    proc.join(timeout=600)
    return round(queue.get(timeout=5), 1) if proc.exitcode == 0 else None


# ------------------------------------------------------------------------------------------ the run
def load_torch_model(source: str | None, model_path: str | Path) -> tuple[Any, str]:
    """(module, why-not): the PyTorch model for the original baseline and the optimized attack."""
    from ..runtime.modelfile import read_onnx_metadata
    from ..util.optional import is_available

    if not is_available("torch"):
        return None, "not measured: torch is not installed"
    source = source or read_onnx_metadata(model_path).get("pcedge.source_model")
    from ..export.sources import BUNDLED, load_model

    if not source or (":" not in source and source not in BUNDLED):
        return None, "not measured: the PyTorch model is unknown (pass --torch-model)"
    return load_model(source).module.eval(), ""


def run_bench(model_path: str | Path, options: BenchOptions, report_line: Callable[[str], None] = print) -> dict[str, Any]:
    if options.frames < 1 or options.warmup < 0 or not 0 <= options.attack_rate <= 1:
        raise ConfigError("frames >= 1, warmup >= 0 and 0 <= attack_rate <= 1 are required")
    frames = camera_frames(options.frames)
    rows: list[Row] = []
    notes: list[str] = []
    curves: dict[str, Any] = {}
    torch_model, why_no_torch = load_torch_model(options.torch_model, model_path)
    if why_no_torch:
        notes.append(f"original PyTorch baseline and optimized patch: {why_no_torch}")
    baseline_backend = None
    for backend in options.backends:
        with PatchCleanser.from_onnx(model_path, backend=backend, device=options.device, masks=options.masks) as pc:
            name, k = pc.engine.describe(), len(pc.mask_set)
            report_line(f"# {name}: K={k}, {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}; second round: "
                        f"{pc.schedule}")
            if pc.latency_curve is not None:
                curves[name] = {**pc.latency_curve.as_dict(), "schedule": pc.schedule}
            # the undefended rows and the defended clean row are timed interleaved: their ratios are the goals
            (batch_1, _), (batch_k, _), clean = timed_together(
                [lambda f: pc.undefended_labels(f, 1), lambda f: pc.undefended_labels(f, k), pc.predict], frames, options.warmup,
                f"undefended batch 1 and {k}, defended")
            rows.append(Row("undefended batch 1", name, batch_1))
            rows.append(Row(f"undefended batch {k}", name, batch_k))
            for label, stream in [("clean", frames), ("pasted patch", pasted_frames(frames, pc))] + (
                    [("optimized patch", optimized_frames(frames, pc, torch_model, min(len(frames), 4)))]
                    if torch_model is not None and options.optimize_patch else []):
                samples, results = clean if label == "clean" else timed(pc.predict, stream, min(options.warmup, len(stream) - 1),
                                                                        f"defended, {label}")
                stages = {s: round(float(np.median([r.timings_ms[s] for r in results])), 3)
                          for s in ("masking", "first_round", "decision", "second_round")}
                agreed = [t for t, r in zip(samples, results) if r.case == "agreed"]
                rows.append(Row(f"defended, {label}", name, samples, {
                    "stage_p50_ms": stages,
                    "agreed_frames": len(agreed), "agreed_p50_ms": round(float(np.median(agreed)), 3) if agreed else None,
                    "levels": {level: round(float(np.mean([r.level == level for r in results])), 3) for level in LEVELS},
                    "second_round_passes_mean": round(float(np.mean([r.two_mask_passes for r in results])), 2),
                    "second_round_passes_max": int(max(r.two_mask_passes for r in results)),
                    "disagreers_mean": round(float(np.mean([len(r.disagreers) for r in results])), 2)}))
            if options.attack_rate > 0:
                attacked = pasted_frames(frames, pc)
                rng = np.random.default_rng(0)
                mixed = [attacked[i] if rng.random() < options.attack_rate else f for i, f in enumerate(frames)]
                title = f"defended, stream {int(options.attack_rate * 100)}% attacked"
                rows.append(Row(title, name, timed(pc.predict, mixed, options.warmup, title)[0]))
            if torch_model is not None and baseline_backend is None:
                baseline_backend = name
                rows.append(_original_row(torch_model, pc, frames, options))
            if options.rss and pc.engine.device == "cpu":
                report_line("# measuring peak RSS in child processes")
                for row in rows:
                    if row.backend == name and row.name == f"undefended batch {k}":
                        row.extra["peak_rss_mb"] = peak_rss_mb(str(model_path), backend, options, "undefended")
                    if row.backend == name and row.name == "defended, clean":
                        row.extra["peak_rss_mb"] = peak_rss_mb(str(model_path), backend, options, "defended")
    results = [r.summary() for r in rows]
    return {"machine": machine_info(), "model": str(model_path), "options": asdict(options),
            "results": results, "ratios": ratios(results), "latency_curves": curves, "notes": notes}


def _original_row(torch_model: Any, pc: PatchCleanser, frames: list[np.ndarray], options: BenchOptions) -> Row:
    import torch

    from ..preprocess import preprocess_reference
    from ..runtime.torch_eager import original_double_masking

    torch.set_num_threads(max(1, torch.get_num_threads()))
    count = min(len(frames), 8)  # ~K forwards at batch 1 per frame: slow by design

    def original(frame: np.ndarray) -> tuple[int, int]:
        return original_double_masking(torch_model, torch.from_numpy(preprocess_reference(frame, pc.spec)), pc.mask_set)

    samples, outputs = timed(original, frames[:count], min(1, options.warmup))
    return Row("original (PyTorch eager, per-mask batch 1)", "torch cpu", samples,
               {"passes_mean": round(float(np.mean([p for _, p in outputs])), 1)})


def ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios the goals are stated in, per backend (p50 unless named)."""
    out: dict[str, Any] = {}
    by = {(r["backend"], r["name"]): r for r in results}
    original = next((r for r in results if r["name"].startswith("original")), None)
    for (backend, name), row in by.items():
        if name != "defended, clean":
            continue
        under = next((r for (b, n), r in by.items() if b == backend and n.startswith("undefended batch ") and n != "undefended batch 1"), None)
        entry: dict[str, Any] = {}
        if under:
            entry["defended_vs_undefended_batch"] = round(row["p50_ms"] / under["p50_ms"], 3)
            if row.get("agreed_p50_ms"):  # frames where the masks agreed: the first round alone
                entry["defended_agreed_vs_undefended_batch"] = round(row["agreed_p50_ms"] / under["p50_ms"], 3)
            if row.get("peak_rss_mb") and under.get("peak_rss_mb"):
                entry["peak_rss_defended_vs_undefended_batch"] = round(row["peak_rss_mb"] / under["peak_rss_mb"], 3)
        if original:
            entry["defended_vs_original"] = round(original["p50_ms"] / row["p50_ms"], 2)
        for attacked in ("pasted patch", "optimized patch"):
            a = by.get((backend, f"defended, {attacked}"))
            if a:
                key = attacked.split()[0]
                entry[f"attacked_vs_clean_p50_{key}"] = round(a["p50_ms"] / row["p50_ms"], 3)
                entry[f"attacked_vs_clean_p99_{key}"] = round(a["p99_ms"] / row["p99_ms"], 3)
        out[backend] = entry
    return out


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'configuration':44s} {'backend':26s} {'mean':>8s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'FPS':>7s} {'RSS MB':>7s}  notes"]
    for r in report["results"]:
        notes = []
        if "second_round_passes_mean" in r:
            notes.append(f"patch level {100 * r['levels']['patch']:.0f}%, uncertain {100 * r['levels']['uncertain']:.0f}%, "
                         f"2-mask images {r['second_round_passes_mean']:.1f} (max {r['second_round_passes_max']})"
                         + (f", agreed frames p50 {r['agreed_p50_ms']:.1f}" if r.get("agreed_p50_ms") else ""))
        if "passes_mean" in r:
            notes.append(f"{r['passes_mean']:.0f} forwards/frame")
        rss = f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-"
        lines.append(f"{r['name'][:44]:44s} {r['backend'][:26]:26s} {r['mean_ms']:8.1f} {r['p50_ms']:8.1f} {r['p90_ms']:8.1f} "
                     f"{r['p99_ms']:8.1f} {r['fps']:7.1f} {rss:>7s}  {'; '.join(notes)}")
    for backend, entry in report["ratios"].items():
        lines.append(f"ratios [{backend}]: " + ", ".join(f"{k} {v}" for k, v in entry.items()))
    for backend, curve in report.get("latency_curves", {}).items():
        lines.append(f"latency per batch [{backend}]: " + ", ".join(f"b{b} {t:.1f} ms" for b, t in zip(curve["batches"], curve["ms"]))
                     + f"; second round: {curve['schedule']}")
    lines += [f"note: {n}" for n in report["notes"]]
    m = report["machine"]
    lines.append(f"machine: {m['cpu']} ({m['cores']} cores), GPU {m['gpu']}; " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()))
    return "\n".join(lines)


def plot_latencies(report: dict[str, Any], path: str | Path) -> None:
    """Per-frame latency distribution of every configuration (box p25-p75, whiskers p1-p99)."""
    from ..util.optional import require

    plt = require("matplotlib.pyplot", "--plot")
    rows = report["results"]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    ax.boxplot([r["samples_ms"] for r in rows], vert=False, whis=(1, 99), showmeans=True,
               tick_labels=[f"{r['name']} [{r['backend'].split(' ')[0]}]" for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("latency per frame, ms (log scale); triangle = mean")
    m = report["machine"]
    ax.set_title(f"{Path(report['model']).name} on {m['cpu']} ({m['cores']} cores), GPU {m['gpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
