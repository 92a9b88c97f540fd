"""OpenVINO engine: Intel CPUs, integrated GPUs and NPUs, behind the same protocol as ONNX Runtime.

The input buffer is a host numpy array the C++ writer fills in place; OpenVINO reads it without a copy
(``share_inputs``), and copies it to the device itself where the device is a GPU or an NPU. The model's batch
axis is bounded to 1..max_batch before compiling, as OpenVINO recommends for dynamic shapes (it plans memory for
the largest; measured no slower than unbounded, benchmarks/RESULTS.md "Issue 40").

**Precision is explicit.** OpenVINO's CPU plugin computes in BF16 by default on CPUs with AMX or AVX-512 BF16,
which changes labels whose margin is small (on masked images of a model not fine-tuned with masks, often). This
engine sets the inference precision hint to f32 unless the model file carries a reduced precision that passed
the agreement gate (``pcedge quantize --precision bf16|f16``, recorded in its metadata), and reads back what the
compiled model really computes in: a device without BF16 or FP16 silently runs f32, and the engine says so
(``precision``, ``describe()``), so a certificate names what ran.

**INT8 files** from ``pcedge quantize`` (QDQ, u8s7) run as INT8 here too (OpenVINO turns their quantize/dequantize
pairs into its own INT8 kernels): measured 1.8x faster than ONNX Runtime's INT8 on this AVX2 CPU, with the same
agreement with FP32 (benchmarks/RESULTS.md, "Issue 40"). Their 7-bit weights cannot saturate either. The labels are
OpenVINO's, not ONNX Runtime's (96-100% equal where measured): certify the INT8 model with the engine that runs it.

**One Core per process** (:func:`shared_core`). Each ``ov.Core``'s CPU plugin replaces the calling thread's alternate
signal stack with one it maps, and puts the previous one back when that Core is destroyed. Two Cores destroyed in the
order they were made (not the reverse) leave the thread on the first plugin's stack after it was unmapped: the next
signal with a handler (SIGCHLD, SIGHUP's reload, SIGTERM's stop) kills the process with SIGSEGV and no traceback
(OpenVINO 2026.4.1; found as a silent crash of the test suite). One Core kept for the process's life never does.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..util.optional import require
from .base import Engine, InputMetadata, classifier_input, require_finite_scores
from .modelfile import OPENVINO_HINTS, file_sha256, gated_precision, int8_record

log = logging.getLogger("pcedge.openvino")

DEVICES = ("CPU", "GPU", "NPU", "AUTO")
"""The device kinds ``--device`` names (OpenVINO also takes an index, e.g. GPU.1, where a box has several)."""


def check_device(device: str, available: list[str]) -> None:
    """Refuse a device OpenVINO does not report here, naming the ones it does (AUTO needs any)."""
    if device == "AUTO" and available:
        return
    if device in available or any(name.split(".")[0] == device for name in available):
        return
    raise EngineError(f"--device {device}: OpenVINO finds no such device here (it has {', '.join(available) or 'none'}); "
                      f"choose one of those, e.g. --device {available[0] if available else 'CPU'}")


_CORE_LOCK = threading.Lock()
_CORE: Any = None


def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use and kept until the process exits (module docstring: a
    second Core's plugin, destroyed out of order, leaves a thread on an unmapped signal stack). Use it for every
    OpenVINO call in pcedge, its tests and benchmarks."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = require("openvino", "the OpenVINO backend").Core()
        return _CORE


class OpenVinoEngine(Engine):
    """An exported pcedge ONNX model (or any [N, 3, H, W] classifier) on OpenVINO."""

    backend = "openvino"
    device = "cpu"  # where the input buffer lives (the host); ``target`` is the OpenVINO device that computes

    def __init__(self, model_path: str | Path, *, max_batch: int = 36, target: str = "CPU", threads: int | None = None,
                 hint: str | None = None, name: str | None = None) -> None:
        """``hint``: OpenVINO's inference precision (f32, bf16, f16); None runs what the file says (f32, or the reduced
        precision it passed the agreement gate for). The gate itself passes one to measure it."""
        if hint is not None and hint not in OPENVINO_HINTS:
            raise EngineError(f"OpenVINO precision {hint!r}: choose one of {', '.join(OPENVINO_HINTS)}")
        super().__init__(name)
        self.model_path = Path(model_path)
        self.target = target
        self._max_batch = int(max_batch)
        self._threads = threads
        self._hint = hint
        self.precision = "fp32"  # what the compiled model computes in, read back at activation
        self.execution_devices: list[str] = []
        self._core = None
        self._compiled = None
        self._request = None
        self._output = None
        self._meta: InputMetadata | None = None
        self._host: np.ndarray | None = None

    # ------------------------------------------------------------------------------- lifecycle
    def _activate(self) -> None:
        ov = require("openvino", "the OpenVINO backend")
        if not self.model_path.is_file():
            raise EngineError(f"{self.name}: model file {self.model_path} does not exist")
        core = self._core = shared_core()
        check_device(self.target, list(core.available_devices))
        try:
            model = core.read_model(str(self.model_path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise EngineError(f"{self.name}: cannot load {self.model_path} ({str(exc).splitlines()[0]})") from exc
        self._meta = self._read_metadata(model)
        metadata = self._file_metadata(model)
        hint = self._hint or self._hint_from_file(metadata)
        model.reshape({model.input(0): ov.PartialShape([ov.Dimension(1, self._max_batch), *self._meta.shape])})
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self._threads and self.target == "CPU":
            config["INFERENCE_NUM_THREADS"] = self._threads
        try:
            self._compiled = core.compile_model(model, self.target, config)
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"{self.name}: OpenVINO cannot compile {self.model_path.name} for {self.target} "
                              f"({str(exc).splitlines()[0]})") from exc
        self.execution_devices = [str(d) for d in self._compiled.get_property("EXECUTION_DEVICES")]
        int8 = int8_record(metadata)
        self.precision = f"int8 {int8.get('scheme', '(no scheme recorded)')}" if int8 else self._compiled_precision(hint)
        names = [port.get_any_name() for port in self._compiled.outputs]
        self._output = self._compiled.output("labels" if "labels" in names else names[0])
        scores = next((n for n in names if n != "labels"), None)
        if scores is not None:
            port = self._compiled.output(scores)
            require_finite_scores(self.name, self.model_path.name, self._meta.shape, lambda probe: self._compiled(probe)[port])
        self._request = self._compiled.create_infer_request()
        self._host = np.zeros((self._max_batch, *self._meta.shape), dtype=np.float32)
        log.debug("%s: %s on %s, %s, max batch %d", self.name, self.model_path.name, ",".join(self.execution_devices),
                  self.precision, self._max_batch)

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None
        self._core = None
        self._host = None

    def _read_metadata(self, model: Any) -> InputMetadata:
        if len(model.inputs) != 1:
            raise EngineError(f"{self.name}: the model has {len(model.inputs)} inputs; a classifier takes one image batch")
        port = model.input(0)
        shape = port.get_partial_shape()
        dims = [None if d.is_dynamic else d.get_length() for d in shape] if shape.rank.is_static else []
        element = port.get_element_type().get_type_name()
        return classifier_input(self.name, port.get_any_name(), dims, element == "f32", element, self._max_batch)

    @staticmethod
    def _file_metadata(model: Any) -> dict[str, str]:
        """The ONNX file's metadata, which OpenVINO keeps as the model's "framework" runtime info."""
        rt_info = model.get_rt_info()
        return {key: value.astype(str) for key, value in rt_info["framework"].items()} if "framework" in rt_info else {}

    def _hint_from_file(self, metadata: dict[str, str]) -> str:
        """f32, or the reduced precision this file passed the agreement gate for."""
        gate = gated_precision(metadata)
        if gate is None:
            return "f32"
        if gate.get("forced"):
            log.warning("%s: %s runs at %s, written with --force below the agreement gate (%.1f%% of held-out masked images)",
                        self.name, self.model_path.name, gate["hint"], 100 * gate.get("label_agreement_fp32", 0))
        return gate["hint"]

    def _compiled_precision(self, hint: str) -> str:
        """pcedge's name for what the compiled model computes in. A device that ignored the file's hint is said once (a caller
        that passed ``hint`` reads ``precision`` itself, as the agreement gate does). AUTO does not report it (it may move
        the model between devices): there the hint it passed on is all that is known."""
        try:
            ran = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        except RuntimeError:
            log.debug("%s: %s does not report its precision; it was asked for %s", self.name, self.target, hint)
            return OPENVINO_HINTS[hint]
        if ran != hint and self._hint is None:
            log.warning("%s: %s computes in %s here, not %s: OpenVINO's %s has %s", self.name, self.model_path.name, ran, hint,
                        self.execution_devices[0], ", ".join(self.capabilities()))
        return OPENVINO_HINTS.get(ran, ran)

    def capabilities(self) -> list[str]:
        """OpenVINO's OPTIMIZATION_CAPABILITIES of the device that computes (e.g. FP32, INT8, BF16, FP16): its precisions."""
        if self._core is None:
            raise EngineError(f"{self.name}: activate the engine before capabilities()")
        return [str(c) for c in self._core.get_property(self.execution_devices[0], "OPTIMIZATION_CAPABILITIES")]

    # ------------------------------------------------------------------------------- inference
    @property
    def input_metadata(self) -> InputMetadata:
        self._require_active("input_metadata")
        return self._meta

    def describe(self) -> str:
        where = ",".join(self.execution_devices) if self.execution_devices else self.target
        return f"openvino ({where}, {self.precision})"

    def identity(self) -> dict[str, Any]:
        import openvino as ov

        return {"model_sha256": file_sha256(self.model_path), "engine": self.describe(), "precision": self.precision,
                "threads": self._threads, "max_batch": self._max_batch, "openvino": ov.__version__}

    def _buffer(self) -> Any:
        return self._host

    def _infer(self, n: int) -> np.ndarray:
        out = self._request.infer({0: self._host[:n]}, share_inputs=True)[self._output]
        return out if self._output.get_any_name() == "labels" else np.asarray(out).argmax(axis=1)
