"""OpenVINO beside ONNX Runtime on this CPU, in one run (issue 40).

    python benchmarks/bm_openvino.py [--model lite0.onnx] [--frames 24] [--json openvino.json]

1. Machine: the CPU, its INT8/BF16/FP16 flags, and what OpenVINO reports it computes in (OPTIMIZATION_CAPABILITIES).
2. FP32 labels: OpenVINO against ONNX Runtime on the one- and two-mask images of camera-like frames (equal labels,
   the largest logit difference, and any difference with its margin).
3. Defended frame, one camera: ``PatchCleanser.predict`` per frame for ``ort``, ``openvino`` and ``auto`` (each with the
   second-round schedule from its own latency curve, measured afresh in a temporary cache), interleaved frame by
   frame so the machine's drift biases none of them; p50/p99 and whether every engine returned the same decisions.
4. Four cameras: ``predict_batch`` of four frames per step (what the stream loop does with four cameras), FPS per
   engine, interleaved step by step; and the one-mask round of four cameras at the engine level: one synchronous call
   per camera, one call for all, and OpenVINO's throughput streams with asynchronous infer requests. Then OpenVINO's
   batch axis unbounded against bounded (what the engine compiles).
5. Reduced precision through the gate (``pcedge quantize --precision bf16|f16``) for the bundled Lite0 and a
   Fashion-MNIST model trained with masks (mask-robust, trained here in seconds), and the speed of each hint.
6. INT8: ``pcedge quantize``'s ONNX Runtime INT8 (u8s7; forced where the gate refuses it) against OpenVINO running the
   same INT8 file, and against NNCF's OpenVINO INT8 where ``nncf`` imports: agreement with FP32 and batch-36 speed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pcedge.runtime.openvino import shared_core  # noqa: E402 - one Core per process (its docstring says why)

FASHION = Path("/usr/share/datasets/fashion-mnist")


def pct(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p99_ms": round(float(np.percentile(a, 99)), 1),
            "mean_ms": round(float(a.mean()), 1)}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each function, taken in turn ``repeats`` times: each turn makes one untimed call, then the timed
    one, so that the previous function's threads (ONNX Runtime's spin after a call) never slow a timed call."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            fn()
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def machine() -> dict[str, Any]:
    import openvino as ov

    from pcedge.util.machine import cpu_features, machine_info

    core = shared_core()
    flags = open("/proc/cpuinfo", encoding="utf-8").read()
    return {**machine_info(), "openvino": ov.__version__,
            "openvino_devices": {d: [str(c) for c in core.get_property(d, "OPTIMIZATION_CAPABILITIES")] for d in core.available_devices},
            "absent_flags": [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_fp16")
                             if f" {f}" not in flags],
            "cpu_features": cpu_features()}


def fp32_labels(model: Path, frames: list[np.ndarray]) -> dict[str, Any]:
    """Section 2: OpenVINO FP32 vs ONNX Runtime FP32 labels and logits on masked images."""
    import onnxruntime as ort

    from pcedge.export.openvino_precision import engine_labels
    from pcedge.export.quantize import held_out_images
    from pcedge.masks import MaskSpec
    from pcedge.runtime.modelfile import read_spec
    from pcedge.runtime.openvino import OpenVinoEngine

    spec = read_spec(model)
    one, two = held_out_images(frames, spec, MaskSpec().build(spec.input_size))
    images = np.concatenate([one, two])
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(["logits"], {"images": images[i : i + 36]})[0] for i in range(0, len(images), 36)])
    compiled = shared_core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = np.concatenate([compiled(images[i : i + 36])["logits"] for i in range(0, len(images), 36)])
    with OpenVinoEngine(model) as engine:
        labels = engine_labels(engine, images)
    top = np.sort(reference, axis=1)
    differ = np.flatnonzero(labels != reference.argmax(1))
    return {"images": len(images), "one_mask": len(one), "two_mask": len(two), "equal_labels": int(len(images) - len(differ)),
            "max_logit_difference": float(np.abs(logits - reference).max()),
            "differences": [{"image": int(i), "margin": float(top[i, -1] - top[i, -2])} for i in differ]}


def defended(model: Path, frames: list[np.ndarray], cameras: int) -> dict[str, Any]:
    """Sections 3 and 4: the defended frame and four cameras per step, per engine, interleaved."""
    from pcedge.runtime.driver import PatchCleanser

    # auto first: it measures both CPU engines' curves together (interleaved); ort and openvino then find them cached
    engines = {name: PatchCleanser.from_onnx(model, backend=name) for name in ("auto", "ort", "openvino")}
    try:
        out: dict[str, Any] = {"engines": {name: pc.engine.describe() for name, pc in engines.items()},
                               "schedules": {name: pc.schedule for name, pc in engines.items()}}
        results: dict[str, list] = {name: [] for name in engines}
        samples: dict[str, list[float]] = {name: [] for name in engines}
        for frame in frames[:1]:
            for pc in engines.values():
                pc.predict(frame)
        for frame in frames:
            for name, pc in engines.items():
                start = time.perf_counter()
                results[name].append(pc.predict(frame))
                samples[name].append((time.perf_counter() - start) * 1e3)
        out["one_camera"] = {name: {**pct(s), "fps": round(1000 / float(np.mean(s)), 2)} for name, s in samples.items()}
        decisions = {name: [(r.label, r.case, r.level) for r in rs] for name, rs in results.items()}
        out["same_decisions"] = all(d == decisions["ort"] for d in decisions.values())
        out["two_mask_images_per_frame"] = round(float(np.mean([r.two_mask_passes for r in results["ort"]])), 2)
        steps = [frames[i : i + cameras] for i in range(0, len(frames) - cameras + 1, cameras)]
        for name in ("ort", "openvino"):  # every camera's one-mask round in one call (the GPU setting), for comparison
            engines[f"{name}, {cameras}K per call"] = PatchCleanser.from_onnx(model, backend=name, max_batch=lambda k: k * cameras)
        step_ms: dict[str, list[float]] = {name: [] for name in engines}
        for pc in engines.values():
            pc.predict_batch(steps[0])
        for step in steps:
            for name, pc in engines.items():
                start = time.perf_counter()
                pc.predict_batch(step)
                step_ms[name].append((time.perf_counter() - start) * 1e3)
        out[f"{cameras}_cameras"] = {name: {"fps": round(cameras * 1000 / float(np.mean(s)), 2), "step": pct(s), "steps": len(s)}
                                     for name, s in step_ms.items()}
        return out
    finally:
        for pc in engines.values():
            pc.close()


def one_mask_round_of_cameras(model: Path, cameras: int, repeats: int) -> dict[str, Any]:
    """Section 4 at the engine level: the one-mask images of ``cameras`` frames (K each), every way of calling."""
    import onnxruntime as ort
    import openvino as ov

    k = 36
    images = np.random.default_rng(0).standard_normal((cameras * k, 3, 224, 224)).astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    core = shared_core()
    network = core.read_model(str(model))
    network.reshape({network.input(0): ov.PartialShape([ov.Dimension(1, cameras * k), 3, 224, 224])})
    latency = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = latency.create_infer_request()
    throughput = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"})
    streams = int(throughput.get_property("NUM_STREAMS"))
    requests = [throughput.create_infer_request() for _ in range(cameras)]

    def asynchronous(parts: int) -> Callable[[], None]:
        def run() -> None:
            size = len(images) // parts
            for n in range(parts):
                requests[n].start_async({0: images[n * size : (n + 1) * size]}, share_inputs=True)
            for n in range(parts):
                requests[n].wait()
        return run

    calls = {
        "ort: one call per camera": lambda: [session.run(["labels"], {"images": images[n * k : (n + 1) * k]}) for n in range(cameras)],
        "ort: one call for all": lambda: session.run(["labels"], {"images": images}),
        "openvino: one call per camera": lambda: [request.infer({0: images[n * k : (n + 1) * k]}, share_inputs=True)
                                                  for n in range(cameras)],
        "openvino: one call for all": lambda: request.infer({0: images}, share_inputs=True),
        f"openvino: throughput, {streams} streams, {streams} async requests": asynchronous(streams),
        f"openvino: throughput, {streams} streams, {cameras} async requests": asynchronous(cameras),
    }
    times = interleaved(calls, repeats)
    return {"images": len(images), "throughput_streams": streams, "calls": {name: pct(s) for name, s in times.items()}}


def batch_axis(model: Path, repeats: int) -> dict[str, Any]:
    """Why the engine bounds the batch axis: the same model compiled with an unbounded dynamic batch and bounded to
    1..36, timed at batch 36 and 1, interleaved."""
    import openvino as ov

    core = shared_core()
    images = np.random.default_rng(0).standard_normal((36, 3, 224, 224)).astype(np.float32)
    calls = {}
    for kind in ("unbounded", "bounded 1..36"):
        network = core.read_model(str(model))
        if kind != "unbounded":
            network.reshape({network.input(0): ov.PartialShape([ov.Dimension(1, 36), 3, 224, 224])})
        request = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        for n in (36, 1):
            calls[f"{kind}, batch {n}"] = (lambda r, b: lambda: r.infer({0: b}, share_inputs=True))(request, images[:n])
    return {name: pct(s) for name, s in interleaved(calls, repeats).items()}


def reduced_precision(model: Path, frames: list[np.ndarray], held_out: list[np.ndarray], masks: Any, repeats: int) -> dict[str, Any]:
    """Section 5: each OpenVINO hint through the gate, and its speed at batch K (the precision the compiled model reports)."""

    from pcedge.errors import PcedgeError
    from pcedge.export.openvino_precision import gate_openvino_precision
    from pcedge.runtime.modelfile import read_spec

    spec = read_spec(model)
    k = len(masks.build(spec.input_size))
    out: dict[str, Any] = {}
    images = np.random.default_rng(0).standard_normal((k, 3, *spec.input_size)).astype(np.float32)
    core, calls = shared_core(), {}
    for hint in ("f32", "bf16", "f16"):
        compiled = core.compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
        out[hint] = {"computes": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}
        request = compiled.create_infer_request()
        calls[hint] = (lambda r: lambda: r.infer({0: images}, share_inputs=True))(request)
        if hint != "f32":
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    report = gate_openvino_precision(model, Path(tmp) / "gated.onnx", frames, held_out_frames=held_out, hint=hint,
                                                     masks=masks)
                    out[hint]["gate"] = report.summary()
                except PcedgeError as exc:
                    out[hint]["gate"] = f"refused: {exc}"
    for hint, samples in interleaved(calls, repeats).items():
        out[hint][f"batch_{k}"] = pct(samples)
    return out


def int8(model: Path, frames: list[np.ndarray], held_out: list[np.ndarray], masks: Any, repeats: int) -> dict[str, Any]:
    """Section 6: ONNX Runtime INT8 (pcedge quantize) vs OpenVINO on that file vs NNCF's OpenVINO INT8, where it imports."""
    import onnxruntime as ort

    from pcedge.export.quantize import calibration_images, held_out_images, onnx_labels, quantize_int8
    from pcedge.runtime.modelfile import read_spec

    spec = read_spec(model)
    mask_set = masks.build(spec.input_size)
    one, two = held_out_images(held_out, spec, mask_set)
    images = np.concatenate([one, two])
    reference = onnx_labels(model, images)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        int8_path = Path(tmp) / "int8.onnx"
        report = quantize_int8(model, int8_path, frames, held_out_frames=held_out, masks=masks, force=True)
        out["ort_int8_gate"] = report.summary() + (" (forced: below the gate)" if report.forced else "")
        core = shared_core()
        ov_int8 = core.compile_model(str(int8_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        ort_int8_labels = onnx_labels(int8_path, images)
        ov_int8_labels = np.concatenate([ov_int8(images[i : i + 36])["labels"] for i in range(0, len(images), 36)])
        out["agreement_with_fp32"] = {"ort int8": round(float(np.mean(ort_int8_labels == reference)), 4),
                                      "openvino on the same int8 file": round(float(np.mean(ov_int8_labels == reference)), 4)}
        out["openvino_vs_ort_int8_same_labels"] = round(float(np.mean(ov_int8_labels == ort_int8_labels)), 4)
        batch = images[: len(mask_set)]
        fp32 = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        quantized = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"])
        ov_fp32 = core.compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        ov_q = ov_int8.create_infer_request()
        calls = {"ort fp32": lambda: fp32.run(["labels"], {"images": batch}),
                 "ort int8": lambda: quantized.run(["labels"], {"images": batch}),
                 "openvino fp32": lambda: ov_fp32.infer({0: batch}, share_inputs=True),
                 "openvino on the ort int8 file": lambda: ov_q.infer({0: batch}, share_inputs=True)}
        try:
            import nncf
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

            calibration = calibration_images(frames, spec, masks=masks)
            nncf_model = nncf.quantize(core.read_model(str(model)), nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))]),
                                       subset_size=len(calibration),
                                       advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
            nncf_compiled = core.compile_model(nncf_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            nncf_labels = np.concatenate([nncf_compiled(images[i : i + 36])["labels"] for i in range(0, len(images), 36)])
            out["agreement_with_fp32"][f"nncf {nncf.__version__} int8 (overflow fix on every layer)"] = round(float(np.mean(nncf_labels == reference)), 4)
            nncf_request = nncf_compiled.create_infer_request()
            calls["openvino nncf int8"] = lambda: nncf_request.infer({0: batch}, share_inputs=True)
        except ImportError as exc:
            out["nncf"] = f"not measured: {exc}"
        out[f"batch_{len(batch)}"] = {name: pct(s) for name, s in interleaved(calls, repeats).items()}
    return out


def fashion_masked_model(folder: Path) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """A fashion-cnn trained with masks (the test suite's recipe, on 12,000 real images), and its calibration / held-out frames."""
    import torch

    from pcedge.evaluation.datasets import load_dataset
    from pcedge.export import export_onnx, load_model
    from pcedge.export.finetune import preprocess_dataset, train_in_memory
    from pcedge.export.trainer import TrainConfig
    from pcedge.masks import create_mask_set
    from pcedge.preprocess import PreprocessSpec

    torch.manual_seed(0)
    loaded = load_model("fashion-cnn")
    d = loaded.defaults
    spec = PreprocessSpec(input_size=d["image_size"], crop_pct=1.0, mean=d["mean"], std=d["std"], class_names=d["labels"])
    images, labels = preprocess_dataset(load_dataset(FASHION, split="train"), spec, np.arange(12000), progress=False)
    train_in_memory(loaded.module, create_mask_set((28, 28), "2%", masks_per_axis=6), images, labels,
                    TrainConfig(epochs=3, lr=3e-3), progress=False)
    path = folder / "fashion_masked.onnx"
    export_onnx(loaded.module, path, image_size=28, mean=d["mean"], std=d["std"], crop_pct=1.0, labels=d["labels"],
                exporter="torchscript", source_name="fashion-cnn (masked, bm_openvino)")
    test = load_dataset(FASHION, split="test")
    return path, [test.load(i) for i in range(48)], [test.load(i) for i in range(48, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an ONNX model (default: the demo's EfficientNet-Lite0, exported once)")
    parser.add_argument("--frames", type=int, default=24, help="camera-like frames for the defended rows")
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per engine-level configuration")
    parser.add_argument("--no-fashion", action="store_true", help="skip the mask-robust Fashion-MNIST model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["PCEDGE_CACHE"] = tempfile.mkdtemp(prefix="bm_openvino_")  # latency curves measured in this run, not reused
    from pcedge.evaluation.bench import camera_frames, held_out_camera_frames
    from pcedge.evaluation.demo import ensure_demo_model
    from pcedge.masks import MaskSpec

    model = args.model or ensure_demo_model(Path("demo_out"))
    frames, held_out = camera_frames(max(args.frames, 16)), held_out_camera_frames(5)
    report: dict[str, Any] = {"machine": machine(), "model": str(model)}
    print(json.dumps(report["machine"], indent=1), flush=True)
    for name, run in [("fp32_labels", lambda: fp32_labels(model, held_out[:4])),
                      ("defended", lambda: defended(model, frames[: args.frames], args.cameras)),
                      ("one_mask_round_of_cameras", lambda: one_mask_round_of_cameras(model, args.cameras, args.repeats)),
                      ("batch_axis", lambda: batch_axis(model, args.repeats)),
                      ("reduced_precision", lambda: reduced_precision(model, frames[:16], held_out, MaskSpec(), args.repeats)),
                      ("int8", lambda: int8(model, frames[:16], held_out, MaskSpec(), args.repeats))]:
        report[name] = run()
        print(f"== {name}\n{json.dumps(report[name], indent=1)}", flush=True)
    if not args.no_fashion and (FASHION / "train-images-idx3-ubyte.gz").exists():
        with tempfile.TemporaryDirectory() as tmp:
            fashion, calibration, held = fashion_masked_model(Path(tmp))
            masks = MaskSpec("2%", 6)
            report["fashion_masked"] = {"reduced_precision": reduced_precision(fashion, calibration, held, masks, args.repeats * 4),
                                        "int8": int8(fashion, calibration, held, masks, args.repeats * 4)}
        print(f"== fashion_masked\n{json.dumps(report['fashion_masked'], indent=1)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
