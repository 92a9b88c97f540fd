"""Exported graphs use only what TensorRT 10's ONNX parser supports (its published matrix), so they build on a Jetson.

TensorRT cannot run here; its parser's support matrix can be read. ``tests/data/tensorrt10_onnx_operators.txt``
lists the operators marked supported in onnx/onnx-tensorrt's docs/operators.md for TensorRT 10 (opsets 9-20).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.models import export_test_model

SUPPORTED = {line.strip() for line in (Path(__file__).parents[1] / "data" / "tensorrt10_onnx_operators.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
OPSETS = range(9, 21)


def graph_ops(path: Path) -> tuple[set[tuple[str, str]], int]:
    """(domain, op) of every node, subgraphs included, and the default-domain opset."""
    model = onnx.load(str(path))
    ops: set[tuple[str, str]] = set()

    def walk(graph) -> None:
        for node in graph.node:
            ops.add((node.domain or "", node.op_type))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return ops, opset


def assert_tensorrt_10_parses(path: Path) -> None:
    ops, opset = graph_ops(path)
    assert opset in OPSETS, f"{path.name}: opset {opset}, TensorRT 10 parses opsets 9-20"
    foreign = sorted(f"{d}::{op}" for d, op in ops if d not in ("", "ai.onnx"))
    unsupported = sorted(op for d, op in ops if d in ("", "ai.onnx") and op not in SUPPORTED)
    assert not foreign and not unsupported, f"{path.name}: not in TensorRT 10's ONNX support matrix: {foreign + unsupported}"


def test_the_matrix_is_the_real_one():
    assert {"Conv", "Gemm", "ArgMax", "Clip", "MatMul", "Softmax", "LayerNormalization"} <= SUPPORTED
    assert "QLinearConv" not in SUPPORTED and "ConvInteger" not in SUPPORTED  # so the check can fail


@pytest.mark.parametrize("arch", ["cnn", "resnet", "vit", "region"])
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_test_models_export_to_what_tensorrt_10_parses(tmp_path, arch, exporter):
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    assert_tensorrt_10_parses(export_test_model(arch, tmp_path / f"{arch}.onnx", exporter=exporter))


def test_the_bundled_demo_model_exports_to_what_tensorrt_10_parses(lite0_onnx):
    assert_tensorrt_10_parses(lite0_onnx)
