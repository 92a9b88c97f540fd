"""OpenVINO's BF16/FP16 through pcedge quantize's agreement gate: refused for the bundled Lite0, or where the device has none."""

from __future__ import annotations

import pytest

from pcedge.cli import main
from pcedge.errors import ConfigError, EngineError
from pcedge.evaluation.bench import camera_frames, held_out_camera_frames
from pcedge.export.openvino_precision import gate_openvino_precision
from pcedge.export.quantize import AgreementError, write_with_record
from pcedge.runtime.openvino import shared_core

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'patchcleanser-edge[openvino]'; make test "
                                            "installs it)")
CAPABILITIES = [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
OPENVINO_NAMES = {"bf16": "BF16", "f16": "FP16"}  # the hint, and OpenVINO's (and pcedge's report's) name for it


@pytest.mark.parametrize("hint", ["bf16", "f16"])
def test_lite0_is_refused_with_the_measured_agreement_or_where_openvino_computes_f32(lite0_onnx, tmp_path, hint):
    out = tmp_path / f"lite0.{hint}.onnx"
    frames, held_out = camera_frames(4), held_out_camera_frames(5)  # held out as pcedge quantize's default holds them out
    if OPENVINO_NAMES[hint] in CAPABILITIES:  # AMX / AVX-512 BF16 or FP16 CPUs: a real reduced precision, measured
        with pytest.raises(AgreementError, match=rf"{OPENVINO_NAMES[hint]} and FP32 labels agree on only \d+\.\d% of 360 masked "
                                                 r"images .*fine-tuning with masks"):
            gate_openvino_precision(lite0_onnx, out, frames, held_out_frames=held_out, hint=hint)
    else:  # this CPU (AVX2): OpenVINO silently computes f32, so there is nothing to gate, and the request says what it found
        with pytest.raises(EngineError, match=rf"--precision {hint}: OpenVINO's CPU here computes fp32, not {hint} \(its "
                                              rf"capabilities: {', '.join(CAPABILITIES)}\), so there is nothing to gate"):
            gate_openvino_precision(lite0_onnx, out, frames, held_out_frames=held_out, hint=hint)
    assert not out.exists(), "a refused precision writes nothing"


def test_what_the_gate_cannot_measure_is_refused_before_any_work(region_onnx, tmp_path):
    frames = camera_frames(4)
    with pytest.raises(ConfigError, match="--precision 'f32': OpenVINO's reduced precisions are bf16, f16"):
        gate_openvino_precision(region_onnx, tmp_path / "x.onnx", frames, hint="f32")
    with pytest.raises(ConfigError, match="--device AUTO with --precision bf16: .* does not report what it computes in"):
        gate_openvino_precision(region_onnx, tmp_path / "x.onnx", frames, hint="bf16", device="AUTO")
    with pytest.raises(ConfigError, match="--min-agreement 95"):
        gate_openvino_precision(region_onnx, tmp_path / "x.onnx", frames, hint="bf16", min_agreement=95)
    gated = tmp_path / "gated.onnx"
    write_with_record(region_onnx, gated, {"engine": "openvino", "hint": "bf16", "precision": "bf16"})
    with pytest.raises(ConfigError, match="already quantized .*start from the FP32 model"):
        gate_openvino_precision(gated, tmp_path / "x.onnx", frames, hint="bf16")


def test_the_command_refuses_in_one_line(lite0_onnx, tmp_path, capsys):
    if "BF16" in CAPABILITIES:
        pytest.skip("this CPU has BF16 in OpenVINO: the refusal here is by agreement (the test above)")
    assert main(["quantize", "--model", str(lite0_onnx), "--out", str(tmp_path / "x.onnx"), "--precision", "bf16", "--frames", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pcedge quantize: error: --precision bf16: OpenVINO's CPU here computes fp32") and "\n" not in err
    assert main(["quantize", "--model", str(lite0_onnx), "--out", str(tmp_path / "x.onnx"), "--device", "GPU"]) == 2
    assert "--device chooses OpenVINO's device for --precision bf16 or f16" in capsys.readouterr().err
