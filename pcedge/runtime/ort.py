"""ONNX Runtime engine: CPU, CUDA and TensorRT execution providers behind one class.

The input buffer is allocated once. On the CPU it is a numpy array the writer fills in place and ORT
reads without a copy; with the CUDA or TensorRT provider it is a device OrtValue bound through IO
binding, so masked images never travel through the host. There, ONNX Runtime computes on a CUDA stream
this engine owns (``user_compute_stream``) and the CUDA writer launches on the same stream (``stream``),
so the writes are ordered before the inference that reads them (ONNX Runtime would otherwise compute on
a stream of its own while the writer used the legacy default stream). Which provider really runs is read back from
the session and logged: ORT silently falls back to the CPU when a GPU provider cannot load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from .base import Engine, InputMetadata, classifier_input, require_finite_scores

PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def provider_options(backend: str, cache_dir: Path, fp16: bool, stream: int = 0) -> list[Any]:
    """Providers with sensible options: engine and timing caches on disk, FP16 where asked, and pcedge's own CUDA
    stream as the compute stream of the GPU providers (``user_compute_stream``), so the CUDA writer's masked
    images and ONNX Runtime's inference run in order on one stream without a device-wide synchronization."""
    on_stream = {"has_user_compute_stream": "1", "user_compute_stream": str(stream)} if stream else {}
    options: list[Any] = []
    for name in PROVIDERS[backend]:
        if name == "TensorrtExecutionProvider":
            options.append((name, {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_fp16_enable": fp16,
                **on_stream,
            }))
        elif name == "CUDAExecutionProvider":
            options.append((name, {"cudnn_conv_algo_search": "HEURISTIC", **on_stream}))
        else:
            options.append(name)
    return options


class OrtEngine(Engine):
    """An exported pcedge ONNX model (or any [N, 3, H, W] classifier) on ONNX Runtime."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        backend: str = "ort",
        max_batch: int = 36,
        fp16: bool = False,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        name: str | None = None,
        spinning: bool = True,
    ) -> None:
        if backend not in PROVIDERS:
            raise EngineError(f"unknown ONNX Runtime backend {backend!r}; choose one of {sorted(PROVIDERS)}")
        self.backend = backend
        self.device = "cpu" if backend == "ort" else "cuda"
        self.precision = "fp16" if fp16 and backend == "ort-trt" else "fp32"  # the CPU and CUDA providers ignore fp16
        super().__init__(name)
        self.model_path = Path(model_path)
        self._max_batch = int(max_batch)
        self._fp16 = fp16
        self._threads = threads
        self._spinning = spinning  # False: idle threads sleep (a server sharing its cores with other work)
        self._cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "pcedge" / "ort-trt"
        self._session = None
        self._meta: InputMetadata | None = None
        self._host: np.ndarray | None = None
        self._device_value = None
        self._binding = None
        self._output = "labels"
        self._stream = 0
        self._cudart = None
        self.providers: list[str] = []

    # ------------------------------------------------------------------------------- lifecycle
    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.model_path.is_file():
            raise EngineError(f"{self.name}: model file {self.model_path} does not exist")
        available = ort.get_available_providers()
        wanted = PROVIDERS[self.backend][0]
        if wanted not in available:
            raise EngineError(
                f"{self.name}: {wanted} is not available in this onnxruntime ({', '.join(available)}); "
                "install onnxruntime-gpu for ort-cuda/ort-trt, or use --backend ort"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._threads:
            options.intra_op_num_threads = self._threads
        if not self._spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.backend == "ort-trt":
            self._cache_dir.mkdir(parents=True, exist_ok=True)
        if self.device == "cuda":
            from .cuda_runtime import create_stream, cudart_module

            self._cudart = cudart_module()
            self._stream = create_stream(self._cudart)
        try:
            self._session = ort.InferenceSession(str(self.model_path), options,
                                                 providers=provider_options(self.backend, self._cache_dir, self._fp16,
                                                                            self._stream))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise EngineError(f"{self.name}: cannot load {self.model_path} ({str(exc).splitlines()[0]})") from exc
        self.providers = self._session.get_providers()
        if self.providers[0] != wanted:
            self.log.warning("%s fell back to %s (wanted %s)", self.name, self.providers[0], wanted)
        self._meta = self._read_metadata()
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "labels" if "labels" in outputs else outputs[0]
        self._check_outputs_finite(outputs)
        shape = (self._max_batch, *self._meta.shape)
        if self.device == "cpu":
            self._host = np.zeros(shape, dtype=np.float32)
        else:
            self._device_value = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            self._binding = self._session.io_binding()
        self.log.debug("%s: %s on %s, max batch %d", self.name, self.model_path.name, self.providers[0], self._max_batch)

    def _deactivate(self) -> None:
        self._session = None
        self._host = None
        self._device_value = None
        self._binding = None
        if self._stream:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = 0

    @property
    def stream(self) -> int:
        """The CUDA stream ONNX Runtime computes on and the CUDA writer must launch on (0 on the CPU)."""
        return self._stream

    def _check_outputs_finite(self, outputs: list[str]) -> None:
        scores = next((name for name in outputs if name != "labels"), None)
        if scores is not None:
            require_finite_scores(self.name, self.model_path.name, self._meta.shape,
                                  lambda probe: self._session.run([scores], {self._meta.name: probe})[0])

    def _read_metadata(self) -> InputMetadata:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise EngineError(f"{self.name}: the model has {len(inputs)} inputs; a classifier takes one image batch")
        inp = inputs[0]
        dims = [d if isinstance(d, int) else None for d in inp.shape]
        return classifier_input(self.name, inp.name, dims, inp.type == "tensor(float)", inp.type, self._max_batch)

    # ------------------------------------------------------------------------------- inference
    @property
    def input_metadata(self) -> InputMetadata:
        self._require_active("input_metadata")
        return self._meta

    def describe(self) -> str:
        return f"{self.backend} ({self.providers[0] if self.providers else 'inactive'})"

    def identity(self) -> dict[str, Any]:
        import onnxruntime as ort

        from .modelfile import file_sha256

        return {"model_sha256": file_sha256(self.model_path), "engine": self.describe(), "fp16": self._fp16,
                "threads": self._threads, "max_batch": self._max_batch, "onnxruntime": ort.__version__}

    def run_outputs(self, images: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """The session on a given (N, C, H, W) float32 batch, for named outputs: the served classifier's call
        (Triton hands it the images; the in-place buffer is for the masking writer)."""
        self._require_active("run_outputs")
        unknown = set(names) - {o.name for o in self._session.get_outputs()}
        if unknown:
            raise EngineError(f"{self.name}: the model has no output {', '.join(sorted(unknown))}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self._meta.shape:
            raise EngineError(f"{self.name}: images must be (N, {', '.join(map(str, self._meta.shape))}), got {images.shape}")
        return dict(zip(names, self._session.run(list(names), {self._meta.name: images})))

    def _buffer(self) -> Any:
        return self._host if self.device == "cpu" else _OrtDeviceView(self._device_value, self._meta)

    def _infer(self, n: int) -> np.ndarray:
        if self.device == "cpu":
            out = self._session.run([self._output], {self._meta.name: self._host[:n]})[0]
        else:
            self._binding.bind_input(self._meta.name, "cuda", 0, np.float32, [n, *self._meta.shape],
                                     self._device_value.data_ptr())
            self._binding.bind_output(self._output, "cpu")
            self._session.run_with_iobinding(self._binding)
            out = self._binding.copy_outputs_to_cpu()[0]
        return out if self._output == "labels" else np.asarray(out).argmax(axis=1)


class _OrtDeviceView:
    """A device OrtValue seen as a (max_batch, C, H, W) CUDA array for the CUDA writer (no copy)."""

    def __init__(self, value, meta: InputMetadata) -> None:
        self._value = value  # keeps the device memory alive while the view is used
        self.shape = (meta.max_batch, *meta.shape)
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": "<f4", "data": (value.data_ptr(), False),
                                         "version": 3, "strides": None}

    def __getitem__(self, index: slice) -> "_OrtDeviceView":
        if not isinstance(index, slice) or index.start not in (None, 0) or index.step not in (None, 1):
            raise EngineError("device input buffers can only be sliced as [:n]")
        view = object.__new__(_OrtDeviceView)
        view._value = self._value
        n = min(index.stop if index.stop is not None else self.shape[0], self.shape[0])
        view.shape = (n, *self.shape[1:])
        view.__cuda_array_interface__ = {**self.__cuda_array_interface__, "shape": view.shape}
        return view

