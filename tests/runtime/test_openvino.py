"""The OpenVINO engine on the real runtime and this CPU: ONNX Runtime's FP32 labels, explicit precision, honest devices."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from pcedge.errors import EngineError
from pcedge.evaluation.bench import camera_frames
from pcedge.export.openvino_precision import engine_labels
from pcedge.export.quantize import held_out_images
from pcedge.masks import MaskSpec
from pcedge.runtime.backends import OPENVINO_MARGIN, create_engine
from pcedge.runtime.latency import LatencyCurveCache, engine_latency_curves, second_round_largest
from pcedge.runtime.modelfile import read_spec
from pcedge.runtime.openvino import DEVICES, OpenVinoEngine, shared_core
from pcedge.runtime.ort import OrtEngine

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'patchcleanser-edge[openvino]'; make test "
                                            "installs it)")


def ort_logits(model, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"images": images[i : i + 36]})[0] for i in range(0, len(images), 36)])


def openvino_logits(model, images: np.ndarray) -> np.ndarray:
    """OpenVINO's own FP32 logits (the engine returns labels only), compiled as the engine compiles: f32, bounded batch."""
    core = shared_core()
    network = core.read_model(str(model))
    network.reshape({network.input(0): ov.PartialShape([ov.Dimension(1, 36), *images.shape[1:]])})
    compiled = core.compile_model(network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    return np.concatenate([compiled(images[i : i + 36])["logits"] for i in range(0, len(images), 36)])


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per image: how far a label is from changing."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2]


def test_labels_equal_onnx_runtime_at_every_batch_size(region_onnx):
    images = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    expected = ort_logits(region_onnx, images)
    with OpenVinoEngine(region_onnx, max_batch=8) as engine:
        assert engine.describe() == "openvino (CPU, fp32)" and engine.precision == "fp32"
        assert engine.input_metadata.shape == (3, 32, 32) and engine.max_batch == 8
        for n in (1, 3, 8):  # the dynamic batch: any size up to max_batch, in the writer's own buffer
            engine.input_buffer(n)[...] = images[:n]
            labels = engine.infer(n)
            assert labels.dtype == np.int64 and labels.shape == (n,)
            assert np.array_equal(labels, expected[:n].argmax(axis=1))
        identity = engine.identity()
        assert identity["precision"] == "fp32" and identity["openvino"] == ov.__version__ and len(identity["model_sha256"]) == 64
        with pytest.raises(EngineError, match="outside 1..8"):
            engine.infer(9)


def test_exact_ties_go_to_the_first_class_as_onnx_runtime_breaks_them(region_onnx):
    """Masked images tie exactly (a fully masked region scores 0): OpenVINO's TopK must pick ONNX Runtime's ArgMax label."""
    images = np.full((4, 3, 32, 32), -1.0, np.float32)
    images[0] = 0.0  # every region ties
    images[1, :, 8:16, 8:16] = images[1, :, 16:24, 0:8] = 1.0  # regions 5 and 8 tie
    images[2, :, 24:, 24:] = images[2, :, :8, :8] = 0.0  # regions 0 and 15 tie
    images[3, :, :, 16:] = 0.5  # eight regions tie
    with OpenVinoEngine(region_onnx, max_batch=4) as engine:
        engine.input_buffer(4)[...] = images
        labels = engine.infer(4)
    assert labels.tolist() == ort_logits(region_onnx, images).argmax(axis=1).tolist() == [0, 5, 0, 2]


def test_devices_openvino_does_not_find_are_refused_naming_those_it_does(region_onnx):
    available = shared_core().available_devices
    absent = [d for d in DEVICES if d != "AUTO" and not any(a.split(".")[0] == d for a in available)]
    if not absent:
        pytest.skip(f"OpenVINO finds every device kind here ({', '.join(available)})")
    with pytest.raises(EngineError, match=rf"--device {absent[0]}: OpenVINO finds no such device here \(it has {available[0]}"):
        OpenVinoEngine(region_onnx, target=absent[0]).activate()
    with pytest.raises(EngineError, match="with --backend openvino"):
        create_engine(region_onnx, "ort", num_masks=9, device=absent[0])


def test_a_model_without_a_dynamic_batch_is_refused(tmp_path):
    import torch

    from tests.models import build

    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(build("cnn"), (torch.zeros(4, 3, 32, 32),), str(fixed), input_names=["images"], dynamo=False)
    with pytest.raises(EngineError, match="batch axis is fixed to 4; PatchCleanser needs a dynamic batch"):
        OpenVinoEngine(fixed).activate()


@pytest.mark.slow
def test_lite0_masked_labels_equal_onnx_runtime_fp32_where_the_margin_is_above_noise(lite0_onnx):
    """One- and two-mask images of real photos, as the defense's two rounds classify them."""
    spec = read_spec(lite0_onnx)
    one, two = held_out_images(camera_frames(2), spec, MaskSpec().build(spec.input_size))
    images = np.concatenate([one, two])
    with OpenVinoEngine(lite0_onnx, max_batch=36) as engine:
        labels = engine_labels(engine, images)
    reference = ort_logits(lite0_onnx, images)
    noise = float(np.abs(openvino_logits(lite0_onnx, images) - reference).max())
    assert noise < 1e-3, f"OpenVINO FP32 logits differ from ONNX Runtime's by {noise:.2e}: not FP32"
    differ = np.flatnonzero(labels != reference.argmax(axis=1))
    shown = ", ".join(f"image {i}: margin {margins(reference)[i]:.1e}" for i in differ)
    print(f"OpenVINO vs ONNX Runtime FP32 on {len(images)} masked Lite0 images: {len(images) - len(differ)} equal labels "
          f"(one-mask {np.mean(labels[:len(one)] == reference[:len(one)].argmax(1)):.1%}, two-mask "
          f"{np.mean(labels[len(one):] == reference[len(one):].argmax(1)):.1%}); largest logit difference {noise:.1e}"
          + (f"; differences: {shown}" if shown else ""))
    assert all(margins(reference)[i] <= 2 * noise for i in differ), f"labels differ above float32 noise: {shown}"


def test_auto_takes_openvino_only_where_its_cached_curve_is_faster_and_says_why(region_onnx, tmp_path, caplog):
    cache = LatencyCurveCache(tmp_path)
    with caplog.at_level(logging.INFO, logger="pcedge.backends"):
        engine = create_engine(region_onnx, "auto", num_masks=9, latency_cache=cache)
    try:
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("auto: "))
        assert "an image takes" in line and "openvino (CPU, fp32)" in line and "ort (CPUExecutionProvider)" in line
        with OrtEngine(region_onnx, max_batch=9, fp16=True) as ort_engine, OpenVinoEngine(region_onnx, max_batch=9) as ov_engine:
            (ort_curve, ort_origin), (ov_curve, ov_origin) = engine_latency_curves([ort_engine, ov_engine], second_round_largest(9, 9), cache)
        assert ort_origin.startswith("cached ") and ov_origin.startswith("cached "), "auto measured the curves the second round uses"
        faster = ov_curve.ms_per_image() <= (1 - OPENVINO_MARGIN) * ort_curve.ms_per_image()
        assert engine.backend == ("openvino" if faster else "ort") and line.startswith(f"auto: {engine.describe()};")
    finally:
        engine.deactivate()


def test_auto_without_openvino_runs_onnx_runtime(region_onnx, tmp_path):
    code = ("import sys; sys.modules['openvino'] = None\n"  # what an environment without OpenVINO sees: ImportError
            "from pcedge.runtime.backends import create_engine\n"
            f"engine = create_engine({str(region_onnx)!r}, 'auto', num_masks=9)\nprint(engine.describe())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PCEDGE_CACHE": str(tmp_path)})
    assert out.stdout.strip() == "ort (CPUExecutionProvider)"
    assert not list(tmp_path.glob("latency/curve-*.json")), "nothing to compare: no curve is measured"


def test_a_file_gated_for_bf16_runs_at_what_the_device_computes_and_says_so(region_onnx, tmp_path, caplog):
    """A file whose record says it passed the gate for bf16 (as pcedge quantize writes it where the CPU has BF16)."""
    from pcedge.export.quantize import write_with_record

    gated = tmp_path / "region.bf16.onnx"
    write_with_record(region_onnx, gated, {"method": "openvino inference precision hint", "engine": "openvino", "hint": "bf16",
                                           "precision": "bf16", "label_agreement_fp32": 1.0, "forced": False})
    capabilities = [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    with caplog.at_level(logging.WARNING, logger="pcedge.openvino"), OpenVinoEngine(gated) as engine:
        if "BF16" in capabilities:
            assert engine.precision == "bf16" and engine.describe() == "openvino (CPU, bf16)"
        else:  # OpenVINO computes f32 on this CPU: the engine reports what ran, and says why once
            assert engine.precision == "fp32" and engine.describe() == "openvino (CPU, fp32)"
            assert f"computes in f32 here, not bf16: OpenVINO's CPU has {', '.join(capabilities)}" in caplog.text
    with OrtEngine(gated) as engine:
        assert engine.precision == "fp32", "ONNX Runtime ignores OpenVINO's record"
    from pcedge.cli.inspect import inspect_onnx

    assert "OpenVINO bf16 (runs at bf16 on --backend openvino, f32 elsewhere), agreement with FP32 100.0%" in inspect_onnx(gated)["text"]
    assert json.loads(json.dumps(inspect_onnx(gated)["metadata"]["pcedge.quantization"]))["hint"] == "bf16"


@pytest.mark.slow
def test_pcedge_run_backend_openvino_raises_the_alarm_on_the_patched_segment_only(lite0_onnx, tmp_path):
    """The demo clip, shortened (7 frames per photo: the cat, the cup, then the cup with the demo's patch), through the real
    command, with the second round's schedule from OpenVINO's own latency curve."""
    from pcedge.evaluation.demo import CLIP_FPS, CLIP_SIZE, PATCH_ANCHOR, PATCHED_PHOTO, shipped_patch
    from pcedge.evaluation.democlip import make_demo_clip

    clip, log = tmp_path / "clip.avi", tmp_path / "frames.jsonl"
    segments = make_demo_clip(clip, shipped_patch(), patched_photo=PATCHED_PHOTO, patch_anchor=PATCH_ANCHOR, size=CLIP_SIZE,
                              fps=CLIP_FPS, seconds_per_photo=0.6, photos=("chelsea", PATCHED_PHOTO))
    out = subprocess.run([sys.executable, "-m", "pcedge", "run", "--model", str(lite0_onnx), "--backend", "openvino", "--source",
                          str(clip), "--headless", "--log", str(log), "--json", str(tmp_path / "summary.json")],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PCEDGE_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "engine: openvino (CPU, fp32)" in out.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["engine"] == "openvino (CPU, fp32)"
    frames = {r["index"]: r for r in map(json.loads, log.read_text().splitlines()) if "event" not in r}
    assert len(frames) == segments[-1].stop
    for segment in segments:
        records = [frames[i] for i in range(segment.start, segment.stop)]
        if segment.patched:
            assert sum(r["level"] == "patch" for r in records) >= len(records) // 2 and any(r["alarm"] for r in records)
            assert sum(r["class_name"] == "espresso" for r in records) >= len(records) // 2, "the defended label stays espresso"
        else:
            assert not any(r["level"] == "patch" or r["alarm"] for r in records), f"a false alarm on {segment.photo}"


ENGINES_THEN_A_SIGNAL = """
import gc, os, signal, sys
from pcedge.runtime.openvino import OpenVinoEngine
first, second = OpenVinoEngine(sys.argv[1]).activate(), OpenVinoEngine(sys.argv[1]).activate()
first.deactivate(); second.deactivate()  # in the order they were made: the order that broke
del first, second; gc.collect()
heard = []
signal.signal(signal.SIGUSR1, lambda *_: heard.append(1))
os.kill(os.getpid(), signal.SIGUSR1)
print("signal handled" if heard else "signal lost")
"""


def test_engines_closed_in_any_order_leave_signals_deliverable(region_onnx):
    """Each OpenVINO Core's CPU plugin swaps the thread's alternate signal stack and puts the old one back when the Core
    goes: two engines with a Core each, closed first-made-first, left the main thread on an unmapped stack, and the
    next handled signal (a child's SIGCHLD, SIGHUP, SIGTERM) killed the process with SIGSEGV and no traceback. The
    engines share one Core (``shared_core``); run in a child so the old crash is this test's failure."""
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", ENGINES_THEN_A_SIGNAL, str(region_onnx)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "signal handled", f"exit {out.returncode}: {out.stderr[-2000:]}"
