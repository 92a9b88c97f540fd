"""Engine cache keys and invalidation, profile shapes (plain Python), and TensorRT itself where it exists."""

from __future__ import annotations

import importlib.util
import os

import pytest

from pcedge.errors import ConfigError
from pcedge.runtime.trt_cache import EngineCache, EngineKey, profile_shapes

KEY = EngineKey("ab" * 32, "10.3.0", "Orin", "8.7", "fp16", 1, 36, 1260)


def test_profile_shapes():
    assert profile_shapes(36) == (1, 36, 1260)
    assert profile_shapes(36, 128) == (1, 36, 128)
    assert profile_shapes(1) == (1, 1, 1)
    with pytest.raises(ConfigError):
        profile_shapes(36, 10)


def test_round_trip_and_every_kind_of_stale_or_corrupt_file(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.load(KEY) is None
    path = cache.save(KEY, b"engine-bytes")
    assert path is not None and cache.load(KEY) == b"engine-bytes"
    for other in (EngineKey("cd" * 32, *list(KEY.__dict__.values())[1:]),
                  EngineKey(KEY.onnx_sha256, "10.4.0", "Orin", "8.7", "fp16", 1, 36, 1260),
                  EngineKey(KEY.onnx_sha256, "10.3.0", "H100", "9.0", "fp16", 1, 36, 1260),
                  EngineKey(KEY.onnx_sha256, "10.3.0", "Orin", "8.7", "fp32", 1, 36, 1260)):
        assert cache.path_for(other) != path and cache.load(other) is None
    data = path.read_bytes()
    path.write_bytes(data[:-3])  # truncated
    assert cache.load(KEY) is None
    path.write_bytes(b"random junk")
    assert cache.load(KEY) is None
    path.write_bytes(data.replace(b"10.3.0", b"10.9.9"))  # a header for another version under this name
    assert cache.load(KEY) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions, so a read-only cache cannot be simulated")
def test_read_only_cache_degrades_to_memory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert EngineCache(folder).save(KEY, b"x") is None
    finally:
        folder.chmod(0o700)


def test_unwritable_cache_location_degrades_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    assert EngineCache(blocker / "trt").save(KEY, b"x") is None


@pytest.mark.trt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT is not installed (it cannot be installed on pcedge's dev/CI machines or lent GPUs)")
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    import numpy as np

    from pcedge.export import export_onnx
    from pcedge.runtime.ort import OrtEngine
    from pcedge.runtime.tensorrt import TensorRTEngine
    from tests.models import build

    path = tmp_path / "cnn.onnx"
    export_onnx(build("cnn"), path, image_size=32, exporter="torchscript")
    x = np.random.default_rng(0).standard_normal((9, 3, 32, 32)).astype(np.float32)
    with OrtEngine(path, max_batch=9) as ort_engine, TensorRTEngine(path, num_masks=9, precision="fp32", cache_dir=tmp_path) as trt_engine:
        ort_engine.input_buffer(9)[:] = x
        import cupy as cp

        cp.asarray(trt_engine.input_buffer(9))[...] = cp.asarray(x)
        assert np.array_equal(ort_engine.infer(9), trt_engine.infer(9))
