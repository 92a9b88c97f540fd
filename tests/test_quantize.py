"""INT8 quantization: a working model, same preprocessing, renewed hash, measured agreement with FP32."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest

from pcedge.datasets import load_dataset
from pcedge.errors import ConfigError, EngineError
from pcedge.preprocess import PreprocessSpec, read_onnx_metadata
from pcedge.quantize import calibration_images, quantize_int8
from pcedge.runtime.driver import PatchCleanser
from tests.conftest import FASHION


@pytest.fixture(scope="module")
def int8_model(fashion_trained, tmp_path_factory):
    train = load_dataset(FASHION, split="train")
    frames = [train.load(i) for i in range(40)]
    out = tmp_path_factory.mktemp("int8") / "fashion.int8.onnx"
    report = quantize_int8(fashion_trained.onnx_path, out, frames, patch="4", masks_per_axis=4)
    return out, report


def test_int8_model_keeps_preprocessing_and_renews_its_hash(fashion_trained, int8_model):
    path, report = int8_model
    meta = read_onnx_metadata(path)
    assert PreprocessSpec.from_metadata(meta) == PreprocessSpec.from_onnx(fashion_trained.onnx_path)
    info = json.loads(meta["pcedge.quantization"])
    assert info["calibration_images"] == report.calibration_images == 160
    assert info["source_sha256"] == read_onnx_metadata(fashion_trained.onnx_path)["pcedge.content_sha256"]
    model = onnx.load(str(path))
    stamped = meta["pcedge.content_sha256"]
    del model.metadata_props[-1]  # the hash entry is written last, over everything before it
    assert hashlib.sha256(model.SerializeToString()).hexdigest() == stamped
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def test_int8_model_agrees_with_fp32_on_held_out_images(fashion_trained, int8_model):
    path, report = int8_model
    assert report.label_agreement >= 0.9
    test = load_dataset(FASHION, split="test")
    with PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", patch="4", masks_per_axis=4) as fp32, \
            PatchCleanser.from_onnx(path, backend="ort", patch="4", masks_per_axis=4) as int8:
        same = [fp32.predict(test.load(i)).label == int8.predict(test.load(i)).label for i in range(60)]
    assert np.mean(same) >= 0.9


def test_calibration_images_include_masked_versions(fashion_trained):
    spec = PreprocessSpec.from_onnx(fashion_trained.onnx_path)
    frame = np.full((28, 28), 200, np.uint8)
    images = calibration_images([frame], spec, patch="4", masks_per_axis=4, per_frame=4)
    zero = np.isclose(images, 0.0).all(axis=1)  # masked pixels are 0 after normalization in every channel
    assert not zero[0].any() and all(zero[i].any() for i in range(1, 4))


def test_quantize_refuses_what_it_cannot_do(fashion_trained, int8_model, tmp_path):
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_int8(int8_model[0], tmp_path / "twice.onnx", [np.zeros((28, 28), np.uint8)], patch="4", masks_per_axis=4)
    with pytest.raises(ConfigError, match="at least one frame"):
        quantize_int8(fashion_trained.onnx_path, tmp_path / "none.onnx", [], patch="4", masks_per_axis=4)
    with pytest.raises(EngineError, match="does not exist"):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "x.onnx", [np.zeros((28, 28), np.uint8)])
