"""Backend names, their order for ``auto``, and the one place an engine is chosen and created.

``auto`` tries TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU. A backend that is not installed
or cannot start is skipped (the reasons at debug level, ``-v``); the engine that runs says which it is
(``describe()``), the commands print it once, and the driver records it in every result, so a fallback
is never silent. A backend named explicitly that cannot run is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import EngineError, MissingDependencyError
from .base import Engine

log = logging.getLogger("pcedge.backends")

MODEL_FILE_BACKENDS = ("auto", "tensorrt", "ort-trt", "ort-cuda", "ort")
"""The backends that run an ONNX file (what ``--backend`` offers)."""
BACKENDS = (*MODEL_FILE_BACKENDS, "torch")
AUTO_ORDER = ("tensorrt", "ort-cuda", "ort")


def resolve_backends(name: str) -> tuple[str, ...]:
    """The backends to try, in order, for a user's choice."""
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        raise EngineError("the torch backend runs a PyTorch module, not an ONNX file: use pcedge.runtime.torch_eager.TorchEngine")
    return AUTO_ORDER if name == "auto" else (name,)


def create_engine(model_path: str | Path, backend: str = "auto", *, num_masks: int, max_batch: int | None = None,
                  fp16: bool = True, threads: int | None = None) -> Engine:
    """Create (and activate) the first backend of ``backend``'s order that works here."""
    from .ort import OrtEngine

    order = resolve_backends(backend)
    failures = []
    for name in order:
        try:
            if name == "tensorrt":
                from .tensorrt import TensorRTEngine

                engine: Engine = TensorRTEngine(model_path, num_masks=num_masks, max_batch=max_batch,
                                                precision="fp16" if fp16 else "fp32")
            else:
                engine = OrtEngine(model_path, backend=name, max_batch=max_batch or num_masks,
                                   fp16=fp16, threads=threads)
            engine.activate()
        except (MissingDependencyError, EngineError) as exc:
            if len(order) == 1:
                raise
            failures.append(f"{name}: {exc}")
            log.debug("backend %s unavailable: %s", name, exc)
            continue
        if failures:  # the normal path of "auto" on a machine without a GPU: said at debug level, with the reasons
            log.debug("using %s; skipped: %s", engine.describe(), "; ".join(failures))
        return engine
    raise EngineError("no backend could run the model:\n  " + "\n  ".join(failures))
