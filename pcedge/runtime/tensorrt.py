"""TensorRT engine (TensorRT 10 API; JetPack 6 ships 10.x) with device buffers from cuda-python.

Build: ONNX parser -> one optimization profile for the batch axis (min 1, opt K, max K*(K-1) capped) ->
FP16 where the GPU has fast FP16 (INT8 needs a calibration cache) -> serialized engine cached on disk
(pcedge.runtime.trt_cache), with a persistent timing cache. Run: ``set_input_shape``,
``set_tensor_address`` on buffers this engine owns and ``execute_async_v3`` on its own stream; the
one-mask batch (fixed shape) is captured once as a CUDA graph and replayed only while the context is at
the shape it was captured at (a second round's call at another batch changes the input shape; the next
one-mask call then runs plainly, restoring the shape, and later ones replay again).

TensorRT cannot be installed on pcedge's development and CI machines, so this module is exercised only
where TensorRT exists (tests marked ``trt`` skip with that reason elsewhere); everything around it
(cache keys, profile shapes, backend choice) is plain Python tested everywhere.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..util.optional import require
from .base import Engine, InputMetadata
from .cuda_runtime import check_call, cuda_device, cudart_module
from .modelfile import file_sha256
from .trt_cache import EngineCache, EngineKey, profile_shapes

log = logging.getLogger("pcedge.tensorrt")


def effective_precision(tensorrt_version: str, requested: str) -> str:
    """What the engine will really compute in. TensorRT 11 builds strongly typed networks only: the precision
    follows the ONNX file's tensor types (a pcedge export is FP32), and the FP16 builder flag is gone."""
    if requested == "fp16" and int(str(tensorrt_version).split(".")[0]) >= 11:
        log.warning("TensorRT %s builds strongly typed networks: this FP32 model runs in FP32 (export an FP16 model "
                    "for FP16)", tensorrt_version)
        return "fp32"
    return requested


class _DeviceBuffer:
    """cudaMalloc'd memory exposed as a CUDA array (``__cuda_array_interface__``) for the writers."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._cudart = cudart
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.dtype.itemsize
        self.ptr = int(check_call(cudart.cudaMalloc(self.nbytes), f"cudaMalloc({self.nbytes} bytes)", cudart))

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3, "strides": None}

    def __getitem__(self, index: slice) -> "_DeviceBuffer":
        view = object.__new__(_DeviceBuffer)
        view._cudart, view.dtype, view.ptr = self._cudart, self.dtype, self.ptr
        n = min(index.stop if index.stop is not None else self.shape[0], self.shape[0])
        view.shape = (n, *self.shape[1:])
        view.nbytes = int(np.prod(view.shape)) * self.dtype.itemsize
        return view

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFree(self.ptr)
            self.ptr = 0


class TensorRTEngine(Engine):
    """An ONNX classifier compiled by TensorRT, with its input binding owned by this object."""

    backend = "tensorrt"
    device = "cuda"

    def __init__(self, onnx_path: str | Path, *, num_masks: int, max_batch: int | None = None,
                 precision: str = "fp16", cache_dir: str | Path | None = None, cuda_graph: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        if precision not in ("fp32", "fp16", "int8"):
            raise EngineError(f"precision must be fp32, fp16 or int8, got {precision!r}")
        self.onnx_path = Path(onnx_path)
        self.num_masks = num_masks
        self.profile = profile_shapes(num_masks, max_batch)
        self.precision = precision
        self.cache = EngineCache(cache_dir)
        self.use_cuda_graph = cuda_graph
        self._meta: InputMetadata | None = None
        self._graph_exec = None
        self._shape = 0  # the batch size the context's input shape is set to (0: none yet)

    # ------------------------------------------------------------------------------- build / load
    def _activate(self) -> None:
        trt = require("tensorrt", "the TensorRT backend")
        cudart = cudart_module()
        self._trt, self._cudart = trt, cudart
        if not self.onnx_path.is_file():
            raise EngineError(f"{self.name}: model file {self.onnx_path} does not exist")
        device = cuda_device(cudart)
        props = check_call(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties", cudart)
        self.precision = effective_precision(trt.__version__, self.precision)
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        key = EngineKey(file_sha256(self.onnx_path), trt.__version__, gpu, f"{props.major}.{props.minor}",
                        self.precision, *self.profile)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        plan = self.cache.load(key)
        if plan is not None:
            log.info("%s: reusing cached engine %s", self.name, self.cache.path_for(key))
        else:
            plan = self._build(trt, key)
            self.cache.save(key, plan)
        self._engine = runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(f"{self.name}: TensorRT could not deserialize the engine (built for another version?)")
        self._context = self._engine.create_execution_context()
        self._bind(trt, cudart)

    def _build(self, trt, key: EngineKey) -> bytes:
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"{self.name}: TensorRT cannot parse {self.onnx_path}: {errors}")
        config = builder.create_builder_config()
        if self.precision == "fp16":  # TensorRT 10 only (effective_precision): 11 has neither the flag nor the query
            if builder.platform_has_fast_fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            else:
                log.warning("%s: this GPU has no fast FP16; building FP32", self.name)
        elif self.precision == "int8":
            raise EngineError(f"{self.name}: INT8 needs a calibration cache; build it with trtexec --int8 --calib=... and pass the plan")
        timing_path = self.cache.folder / "timing.cache"
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing, ignore_mismatch=True)
        inp = network.get_input(0)
        c, h, w = (int(d) for d in inp.shape[1:])
        profile = builder.create_optimization_profile()
        lo, opt, hi = self.profile
        profile.set_shape(inp.name, (lo, c, h, w), (opt, c, h, w), (hi, c, h, w))
        config.add_optimization_profile(profile)
        log.info("%s: building a %s TensorRT engine for %s (batch %d..%d); this takes minutes on a Jetson",
                 self.name, self.precision, self.onnx_path.name, lo, hi)
        start = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"{self.name}: TensorRT failed to build the engine (see the TensorRT log above)")
        log.info("%s: engine built in %.0f s", self.name, time.perf_counter() - start)
        try:
            self.cache.folder.mkdir(parents=True, exist_ok=True)
            timing_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
        except OSError as exc:
            log.warning("%s: cannot persist the timing cache (%s)", self.name, exc)
        return bytes(plan)

    def _bind(self, trt, cudart) -> None:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise EngineError(f"{self.name}: expected one input tensor, found {inputs}")
        self._input = inputs[0]
        self._output = "labels" if "labels" in outputs else outputs[0]
        shape = tuple(self._engine.get_tensor_shape(self._input))
        chw = tuple(int(d) for d in shape[1:])
        max_batch = self.profile[2]
        self._meta = InputMetadata(self._input, chw, np.dtype(np.float32), max_batch)
        self._stream = check_call(cudart.cudaStreamCreate(), "cudaStreamCreate", cudart)
        self._in_buf = _DeviceBuffer(cudart, (max_batch, *chw), np.float32)
        self._out_bufs = {}
        for name in outputs:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            tail = tuple(int(d) for d in self._engine.get_tensor_shape(name)[1:])
            self._out_bufs[name] = _DeviceBuffer(cudart, (max_batch, *tail), dtype)
            self._context.set_tensor_address(name, self._out_bufs[name].ptr)
        self._context.set_tensor_address(self._input, self._in_buf.ptr)
        self._host_out = np.empty(self._out_bufs[self._output].shape, self._out_bufs[self._output].dtype)
        self._graph_exec, self._shape = None, 0

    def _deactivate(self) -> None:
        if self._graph_exec is not None:
            self._cudart.cudaGraphExecDestroy(self._graph_exec)
        for buf in [self._in_buf, *self._out_bufs.values()]:
            buf.free()
        self._cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = None

    # ------------------------------------------------------------------------------- inference
    @property
    def input_metadata(self) -> InputMetadata:
        self._require_active("input_metadata")
        return self._meta

    @property
    def stream(self) -> int:
        """The CUDA stream the writers must launch on, so writes and inference stay ordered."""
        return int(self._stream)

    def describe(self) -> str:
        return f"tensorrt ({self.precision})"

    def identity(self) -> dict[str, Any]:
        return {"model_sha256": file_sha256(self.onnx_path), "engine": self.describe(), "profile": list(self.profile),
                "tensorrt": self._trt.__version__}

    def _buffer(self) -> _DeviceBuffer:
        return self._in_buf

    def _enqueue(self, n: int) -> None:
        if n != self._shape:
            self._context.set_input_shape(self._input, (n, *self._meta.shape))
            self._shape = n
        if not self._context.execute_async_v3(self._stream):
            raise EngineError(f"{self.name}: execute_async_v3 failed at batch {n}")

    def _infer(self, n: int) -> np.ndarray:
        cudart = self._cudart
        graphed = n == self.num_masks and self.use_cuda_graph
        if graphed and self._graph_exec is not None and self._shape == n:  # replayed only at the shape it was captured at
            check_call(cudart.cudaGraphLaunch(self._graph_exec, self._stream), "cudaGraphLaunch", cudart)
        else:
            self._enqueue(n)  # a plain run; TensorRT may allocate on the first enqueue of a shape, so capture after one
            if graphed and self._graph_exec is None:
                check_call(cudart.cudaStreamBeginCapture(self._stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                           "cudaStreamBeginCapture", cudart)
                self._enqueue(n)  # recorded, not run: this call's labels come from the plain run above
                graph = check_call(cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture", cudart)
                self._graph_exec = check_call(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate", cudart)
                cudart.cudaGraphDestroy(graph)  # the executable graph keeps what it needs
        out = self._out_bufs[self._output]
        nbytes = n * int(np.prod(out.shape[1:])) * out.dtype.itemsize
        check_call(cudart.cudaMemcpyAsync(self._host_out.ctypes.data, out.ptr, nbytes,
                                      cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync", cudart)
        check_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize", cudart)
        result = self._host_out[:n]
        return result if self._output == "labels" else result.argmax(axis=1)
