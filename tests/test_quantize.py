"""INT8 quantization: same labels on every CPU, agreement with FP32 measured on held-out masked images, refusal below it."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pcedge.errors import ConfigError, EngineError
from pcedge.evaluation.datasets import load_dataset
from pcedge.export.quantize import AgreementError, calibration_images, held_out_images, quantize_int8
from pcedge.masks import MaskSpec, create_mask_set
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.modelfile import read_onnx_metadata, read_spec, saturation_risk
from pcedge.util.machine import cpu_features
from tests.conftest import FASHION

EMULATED_CPU = "EPYC-Rome"  # AMD Zen 2: AVX2, no VNNI (the CPU where U8S8 models gave other labels)


@pytest.fixture(scope="module")
def calibration_frames():
    train = load_dataset(FASHION, split="train")
    return [train.load(i) for i in range(40)]


@pytest.fixture(scope="module")
def int8_model(fashion_trained, calibration_frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "fashion.int8.onnx"
    report = quantize_int8(fashion_trained.onnx_path, out, calibration_frames, masks=MaskSpec("4", 4))
    return out, report


@pytest.fixture(scope="module")
def full_8bit_model(fashion_trained, calibration_frames, tmp_path_factory):
    """What pcedge wrote before the u8s7 scheme: uint8 x int8 with full 8-bit weights (CPU-dependent labels)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    spec = read_spec(fashion_trained.onnx_path)
    images = calibration_images(calibration_frames, spec, masks=MaskSpec("4", 4))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(np.array_split(images, 20))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    out = tmp_path_factory.mktemp("u8s8") / "fashion.u8s8.onnx"
    quantize_static(str(fashion_trained.onnx_path), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
    return out


@pytest.fixture(scope="module")
def held_out(fashion_trained):
    test = load_dataset(FASHION, split="test")
    spec = read_spec(fashion_trained.onnx_path)
    one, two = held_out_images([test.load(i) for i in range(5)], spec, create_mask_set((28, 28), "4", masks_per_axis=4))
    return np.concatenate([one, two])


def int8_weight_ranges(path: Path) -> list[tuple[str, int, int]]:
    """(name, min, max) of every int8 weight that a DequantizeLinear feeds into a Conv, Gemm or MatMul."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {name for node in model.graph.node if node.op_type in ("Conv", "Gemm", "MatMul") for name in node.input}
    out = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] in consumers and node.input[0] in inits:
            w = inits[node.input[0]]
            if w.dtype == np.int8:
                out.append((node.input[0], int(w.min()), int(w.max())))
    return out


def test_int8_model_keeps_preprocessing_records_scheme_and_renews_its_hash(fashion_trained, int8_model):
    path, report = int8_model
    meta = read_onnx_metadata(path)
    assert PreprocessSpec.from_metadata(meta) == read_spec(fashion_trained.onnx_path)
    info = json.loads(meta["pcedge.quantization"])
    assert info["scheme"] == report.scheme == "u8s7" and not info["forced"]
    assert info["calibration_images"] == report.calibration_images == 30 * 4  # 30 of 40 frames calibrate, 10 are held out
    assert info["held_out_images"] == report.held_out_images == 10 * (16 + 16)
    assert info["label_agreement_fp32"] == round(report.agreement, 4)
    assert info["quantized_on"]["features"] == cpu_features() and info["quantized_on"]["int8_arithmetic"]
    assert info["source_sha256"] == read_onnx_metadata(fashion_trained.onnx_path)["pcedge.content_sha256"]
    model = onnx.load(str(path))
    stamped = meta["pcedge.content_sha256"]
    del model.metadata_props[-1]  # the hash entry is written last, over everything before it
    assert hashlib.sha256(model.SerializeToString()).hexdigest() == stamped
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by a service running as another user (umask 022)


def test_u8s7_weights_cannot_saturate_and_full_8bit_ones_can(int8_model, full_8bit_model):
    """A proof, not a sample: |w| <= 64 keeps every vpmaddubsw pair sum (2 x 255 x 64 = 32640) below 32767."""
    ranges = int8_weight_ranges(int8_model[0])
    assert ranges, "the INT8 model must have quantized Conv/Gemm weights"
    assert all(-64 <= lo and hi <= 64 for _, lo, hi in ranges), ranges
    full = int8_weight_ranges(full_8bit_model)
    assert any(lo < -64 or hi > 64 for _, lo, hi in full), "the check must be able to fail"


def test_int8_model_agrees_with_fp32_on_held_out_images(fashion_trained, int8_model):
    path, report = int8_model
    assert report.agreement >= 0.95 and min(report.one_mask_agreement, report.two_mask_agreement) >= 0.9
    test = load_dataset(FASHION, split="test")
    with PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", masks=MaskSpec("4", 4)) as fp32, \
            PatchCleanser.from_onnx(path, backend="ort", masks=MaskSpec("4", 4)) as int8:
        same = [fp32.predict(test.load(i)).label == int8.predict(test.load(i)).label for i in range(100, 160)]
    assert np.mean(same) >= 0.9


def test_below_min_agreement_nothing_is_written_unless_forced(fashion_trained, calibration_frames, int8_model, tmp_path):
    _, report = int8_model
    assert report.agreement < 1.0, "the refusal below needs a model that is not perfect"
    out = tmp_path / "refused.int8.onnx"
    with pytest.raises(AgreementError, match=r"agree on only .*below --min-agreement 1.*Likely cause.*--force"):
        quantize_int8(fashion_trained.onnx_path, out, calibration_frames, masks=MaskSpec("4", 4), min_agreement=1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    forced = quantize_int8(fashion_trained.onnx_path, out, calibration_frames, masks=MaskSpec("4", 4), min_agreement=1.0,
                           force=True)
    assert forced.forced and out.exists() and json.loads(read_onnx_metadata(out)["pcedge.quantization"])["forced"]


def test_old_full_8bit_models_are_flagged(full_8bit_model, int8_model):
    legacy = {"pcedge.quantization": json.dumps({"activations": "uint8", "weights": "int8 per-channel"})}
    assert "saturate" in saturation_risk(legacy, ["avx2"]) and "u8s7" in saturation_risk(legacy, ["avx2"])
    assert saturation_risk(read_onnx_metadata(int8_model[0])) is None
    assert saturation_risk({}) is None


def test_calibration_images_include_masked_versions(fashion_trained):
    spec = read_spec(fashion_trained.onnx_path)
    frame = np.full((28, 28), 200, np.uint8)
    images = calibration_images([frame], spec, masks=MaskSpec("4", 4), per_frame=4)
    zero = np.isclose(images, 0.0).all(axis=1)  # masked pixels are 0 after normalization in every channel
    assert not zero[0].any() and all(zero[i].any() for i in range(1, 4))
    one, two = held_out_images([frame], spec, create_mask_set((28, 28), "4", masks_per_axis=4))
    assert one.shape[0] == two.shape[0] == 16
    masked_pixels = lambda batch: np.isclose(batch, 0.0).all(axis=1).sum(axis=(1, 2))  # noqa: E731
    assert (masked_pixels(two) > masked_pixels(one).max()).all(), "two distinct masks hide more than one"


def test_quantize_refuses_what_it_cannot_do(fashion_trained, int8_model, tmp_path):
    frames = [np.zeros((28, 28), np.uint8)] * 4
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_int8(int8_model[0], tmp_path / "twice.onnx", frames, masks=MaskSpec("4", 4))
    with pytest.raises(ConfigError, match="one held-out frame"):
        quantize_int8(fashion_trained.onnx_path, tmp_path / "one.onnx", frames[:1], masks=MaskSpec("4", 4))
    with pytest.raises(ConfigError, match="--scheme 'u8s8'"):
        quantize_int8(fashion_trained.onnx_path, tmp_path / "x.onnx", frames, scheme="u8s8")
    with pytest.raises(ConfigError, match="--min-agreement 95"):
        quantize_int8(fashion_trained.onnx_path, tmp_path / "x.onnx", frames, min_agreement=95)
    with pytest.raises(EngineError, match="does not exist"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "x.onnx", frames)


# ------------------------------------------------------------------------------------ other CPUs
def _emulation_unavailable() -> str | None:
    if platform.machine() != "x86_64":
        return "emulating an x86 CPU without VNNI needs an x86_64 host"
    if shutil.which("qemu-x86_64") is None:
        return "qemu-x86_64 is not installed (Debian package qemu-user; make system-deps installs it)"
    return None


def labels_on_emulated_cpu(model: Path, images: np.ndarray, tmp_path: Path) -> np.ndarray:
    """ONNX Runtime's labels computed on an emulated AMD EPYC Rome (AVX2, no VNNI): real ORT kernels, other ISA."""
    np.save(tmp_path / "images.npy", images)
    script = ("import sys, numpy as np; from pcedge.export.quantize import onnx_labels; "
              "np.save(sys.argv[3], onnx_labels(sys.argv[1], np.load(sys.argv[2])))")
    out = tmp_path / "labels.npy"
    subprocess.run(["qemu-x86_64", "-cpu", EMULATED_CPU, sys.executable, "-c", script, str(model), str(tmp_path / "images.npy"),
                    str(out)], check=True, capture_output=True, timeout=600)
    return np.load(out)


@pytest.mark.slow
@pytest.mark.skipif(_emulation_unavailable() is not None, reason=str(_emulation_unavailable()))
def test_u8s7_labels_are_the_same_on_a_cpu_without_vnni(int8_model, held_out, tmp_path):
    """The same file, the same images, ONNX Runtime on this CPU and on an emulated AVX2-only CPU: the same labels."""
    from pcedge.export.quantize import onnx_labels

    images = held_out[:160]
    assert np.array_equal(labels_on_emulated_cpu(int8_model[0], images, tmp_path), onnx_labels(int8_model[0], images))


@pytest.mark.slow
@pytest.mark.skipif(_emulation_unavailable() is not None, reason=str(_emulation_unavailable()))
@pytest.mark.skipif(not any(f in cpu_features() for f in ("avx512_vnni", "avx_vnni")),
                    reason="this host has no VNNI either: both runs take the saturating path, so the control cannot differ")
def test_control_full_8bit_weights_give_other_labels_without_vnni(full_8bit_model, held_out, tmp_path):
    """The control for the test above: the old scheme's labels differ between a VNNI host and the emulated CPU,
    which shows that the emulation really runs another integer path (the bug the u8s7 scheme removes)."""
    from pcedge.export.quantize import onnx_labels

    images = held_out[:160]
    assert not np.array_equal(labels_on_emulated_cpu(full_8bit_model, images, tmp_path), onnx_labels(full_8bit_model, images))


def test_certificates_of_an_int8_model_name_its_scheme_and_the_cpu(int8_model, tmp_path):
    from pcedge.evaluation.certification import build_report, certify

    test = load_dataset(FASHION, split="test")
    with PatchCleanser.from_onnx(int8_model[0], backend="ort", masks=MaskSpec("4", 4)) as pc:
        tables = certify(pc, test, positions=np.arange(3), progress=False, model_path=int8_model[0])
    pipeline = build_report(tables, test)["pipeline"]
    assert pipeline["precision"] == "int8 u8s7" and pipeline["cpu_features"] == cpu_features()


def test_openvino_runs_the_int8_file_as_int8_and_it_still_passes_the_gate(fashion_trained, int8_model, held_out):
    """OpenVINO turns the QDQ pairs into its own INT8 kernels: its labels are its own, measured against FP32 again."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'patchcleanser-edge[openvino]')")
    from pcedge.evaluation.certification import pipeline_identity
    from pcedge.export.openvino_precision import engine_labels
    from pcedge.export.quantize import onnx_labels
    from pcedge.runtime.openvino import OpenVinoEngine

    path, report = int8_model
    with OpenVinoEngine(path, max_batch=32) as engine:
        assert engine.precision == "int8 u8s7" and engine.describe() == "openvino (CPU, int8 u8s7)"
        labels = engine_labels(engine, held_out)
    fp32, ort_int8 = onnx_labels(fashion_trained.onnx_path, held_out), onnx_labels(path, held_out)
    agreement, same_as_ort = float(np.mean(labels == fp32)), float(np.mean(labels == ort_int8))
    print(f"OpenVINO INT8 on {len(held_out)} held-out masked images: {agreement:.1%} agree with FP32 (ONNX Runtime INT8: "
          f"{report.agreement:.1%} on the gate's images), {same_as_ort:.1%} equal ONNX Runtime INT8's labels")
    assert agreement >= 0.95, f"OpenVINO's INT8 labels agree with FP32 on {agreement:.1%} only"
    with PatchCleanser.from_onnx(path, backend="openvino", masks=MaskSpec("4", 4)) as pc:
        pipeline = pipeline_identity(pc, read_onnx_metadata(path))
    assert pipeline["engine"] == "openvino (CPU, int8 u8s7)" and pipeline["precision"] == "int8 u8s7"
