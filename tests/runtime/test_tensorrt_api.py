"""The TensorRT and CUDA APIs as they really are, without a GPU: the names pcedge calls exist in the real bindings.

TensorRT's Python bindings are real wheels on PyPI (``tensorrt-cu12-bindings``); only its libraries are
not downloadable, so ``import tensorrt`` fails here. The bindings' ``tensorrt.so`` still carries every
class, method, property, enum value and keyword-argument name as a NUL-terminated string literal (the
linker may store "num_errors" as the tail of "get_num_errors", so a name is present when its bytes and
a NUL occur anywhere), which is what these tests read. Checked: JetPack 6's 10.3, the newest 10.x, and 11.4 (where precision moved to strongly typed
networks). Not checked: argument order and types (pybind11 builds signatures at run time).
The cuda-python tests call the real ``cuda-bindings`` wheel, which runs without a GPU.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from pcedge.errors import EngineError
from pcedge.runtime import tensorrt as trt_engine
from pcedge.runtime.ort import provider_options
from tests.support.wheels import wheel_contents

SOURCE = Path(trt_engine.__file__)
VERSIONS = {"10.3": "tensorrt-cu12-bindings==10.3.0", "10.16": "tensorrt-cu12-bindings==10.16.1.11",
            "11.4": "tensorrt-cu12-bindings==11.4.0.106"}
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "profile", "runtime", "inp", "timing"}
ENGINE_ATTRS = {"_engine", "_context"}  # self._engine (ICudaEngine), self._context (IExecutionContext)
TRT10_ONLY = {"platform_has_fast_fp16", "FP16"}  # gone in 11 (BuilderFlag.FP16 too): reached only on 10.x (effective_precision)
PYTHON_LEVEL = {"nptype", "__version__"}  # defined in the bindings' __init__.py, not in tensorrt.so


class Bindings:
    """One TensorRT version's tensorrt.so (bytes) and its package's __init__.py."""

    def __init__(self, version: str) -> None:
        folder = wheel_contents(VERSIONS[version], f"tensorrt-bindings-{version}", platforms=("manylinux_2_17_x86_64", "manylinux_2_28_x86_64"))
        self.data = next(folder.rglob("tensorrt*.so")).read_bytes()
        self.init = next(folder.rglob("__init__.py")).read_text()

    def has_literal(self, name: str) -> bool:
        return name.encode() + b"\0" in self.data

    def has(self, name: str) -> bool:
        """Defined by the extension, or in Python by the package (nptype, __version__)."""
        return self.has_literal(name) or (name in PYTHON_LEVEL and (f"def {name}" in self.init or f"{name} =" in self.init))

    def mentions(self, text: str) -> bool:
        return text.encode() in self.data


def _root(node: ast.AST) -> ast.AST:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node


def _on_trt_object(node: ast.Attribute) -> bool:
    value = node.value
    while isinstance(value, ast.Call):
        value = value.func.value if isinstance(value.func, ast.Attribute) else value.func
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self":
        return value.attr in ENGINE_ATTRS
    root = _root(node)
    return isinstance(root, ast.Name) and root.id in TRT_OBJECTS


def names_pcedge_uses() -> tuple[set[str], set[str]]:
    """(attribute names, keyword-argument names) that pcedge/runtime/tensorrt.py uses on TensorRT objects."""
    tree = ast.parse(SOURCE.read_text())
    attrs, keywords = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _on_trt_object(node):
            attrs.add(node.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _on_trt_object(node.func):
            keywords |= {k.arg for k in node.keywords if k.arg}
    return attrs, keywords


def test_the_collector_sees_the_engine_code():
    attrs, keywords = names_pcedge_uses()
    expected = {"Builder", "OnnxParser", "create_network", "create_builder_config", "set_flag", "BuilderFlag", "FP16",
                "build_serialized_network", "deserialize_cuda_engine", "create_execution_context", "set_input_shape",
                "set_tensor_address", "execute_async_v3", "get_tensor_mode", "TensorIOMode", "num_io_tensors",
                "create_optimization_profile", "set_shape", "add_optimization_profile", "create_timing_cache",
                "set_timing_cache", "get_timing_cache", "serialize", "Logger", "WARNING", "nptype", "__version__",
                "platform_has_fast_fp16", "num_errors", "get_error", "parse"}
    assert expected <= attrs, expected - attrs
    assert keywords == {"ignore_mismatch"}


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_tensorrt_name_pcedge_uses_exists_in_the_real_bindings(version):
    real = Bindings(version)
    attrs, keywords = names_pcedge_uses()
    expected = attrs - (TRT10_ONLY if version.startswith("11") else set())
    missing = sorted(name for name in expected if not real.has(name))
    assert not missing, f"TensorRT {version} bindings lack {missing}"
    unknown = sorted(k for k in keywords if not real.has_literal(k))
    assert not unknown, f"TensorRT {version}: keyword arguments {unknown} unknown"
    assert not real.has_literal("a_name_pcedge_never_uses_xyz"), "the check must be able to fail"


def test_tensorrt_11_dropped_what_pcedge_avoids_there():
    """Why effective_precision exists: 11.x has no platform_has_fast_fp16 and no FP16 builder flag (strong typing)."""
    for version in ("10.3", "10.16"):
        real = Bindings(version)
        assert all(real.has_literal(n) for n in TRT10_ONLY) and real.mentions("Enable FP16 layer selection"), version
    real = Bindings("11.4")
    assert not any(real.has_literal(n) for n in TRT10_ONLY) and not real.mentions("Enable FP16 layer selection")
    assert real.mentions("Strongly typed mode is always enabled")


def test_effective_precision_follows_the_tensorrt_version(caplog):
    assert trt_engine.effective_precision("10.3.0", "fp16") == "fp16"
    assert trt_engine.effective_precision("11.4.0.106", "fp16") == "fp32"
    assert "strongly typed" in caplog.text
    assert trt_engine.effective_precision("11.4.0.106", "fp32") == "fp32"


# ------------------------------------------------------------------------------------------ cuda-python
def test_no_gpu_gives_one_clear_error_from_the_real_cuda_python():
    from pcedge.errors import MissingDependencyError
    from pcedge.runtime.cuda_runtime import create_stream, cuda_device, cudart_module

    try:
        cudart = cudart_module()
    except MissingDependencyError:
        pytest.skip("cuda-python (cuda-bindings) is not installed here (requirements-dev.txt installs it)")
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == 0 and count:
        pytest.skip("a CUDA device is present here")
    for call in (lambda: cuda_device(cudart), lambda: create_stream(cudart)):
        with pytest.raises(EngineError, match=r"^no usable CUDA device: .*\((cudaError\w+), \d+\)\. The GPU backends need"):
            call()
    with pytest.raises(EngineError, match=r"^CUDA call cudaMalloc\(24 bytes\) failed: cudaError\w+ \(\d+\)$"):
        trt_engine._DeviceBuffer(cudart, (2, 3), np.float32)


# ------------------------------------------------------------------------------------------ stream ordering
def test_gpu_providers_compute_on_the_stream_the_writer_uses(tmp_path):
    """ONNX Runtime's CUDA and TensorRT providers get pcedge's stream as their compute stream (the writer's)."""
    for backend, names in (("ort-cuda", ["CUDAExecutionProvider"]), ("ort-trt", ["TensorrtExecutionProvider", "CUDAExecutionProvider"])):
        options = dict(o for o in provider_options(backend, tmp_path, False, stream=0x7F001234) if isinstance(o, tuple))
        for name in names:
            assert options[name]["user_compute_stream"] == str(0x7F001234) and options[name]["has_user_compute_stream"] == "1"
    cpu = provider_options("ort", tmp_path, False)
    assert cpu == ["CPUExecutionProvider"]
    assert all("user_compute_stream" not in o[1] for o in provider_options("ort-cuda", tmp_path, False) if isinstance(o, tuple))
