"""Backend names, their order for ``auto``, and the one place an engine is chosen and created.

``auto`` tries TensorRT, then ONNX Runtime CUDA, then the CPU: ONNX Runtime, or OpenVINO where it is installed and
this machine's latency curves (the cached measurement the second round's schedule uses) say it classifies an image
faster (by :data:`OPENVINO_MARGIN` at least); that choice is said once, with both times. A backend that is not
installed or cannot start is skipped (the reasons at debug level, ``-v``); the engine that runs says which it is
(``describe()``), the commands print it once, and the driver records it in every result, so a fallback is never
silent. A backend named explicitly that cannot run is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import EngineError, MissingDependencyError, PcedgeError
from .base import Engine
from .latency import LatencyCurveCache, engine_latency_curves, second_round_largest

log = logging.getLogger("pcedge.backends")

MODEL_FILE_BACKENDS = ("auto", "tensorrt", "ort-trt", "ort-cuda", "ort", "openvino")
"""The backends that run an ONNX file (what ``--backend`` offers)."""
BACKENDS = (*MODEL_FILE_BACKENDS, "torch")
AUTO_ORDER = ("tensorrt", "ort-cuda", "ort")
OPENVINO_MARGIN = 0.05
"""``auto`` takes OpenVINO over ONNX Runtime on a CPU only when its time per image is measured at least this much
shorter: two engines at parity swap places from one measurement to the next (benchmarks/RESULTS.md, "Issue 40"), and
ONNX Runtime is the path every other part of pcedge is tested on."""


def resolve_backends(name: str) -> tuple[str, ...]:
    """The backends to try, in order, for a user's choice."""
    if name not in BACKENDS:
        raise EngineError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "torch":
        raise EngineError("the torch backend runs a PyTorch module, not an ONNX file: use pcedge.runtime.torch_eager.TorchEngine")
    return AUTO_ORDER if name == "auto" else (name,)


def create_engine(model_path: str | Path, backend: str = "auto", *, num_masks: int, max_batch: int | None = None,
                  fp16: bool = True, threads: int | None = None, device: str = "CPU",
                  latency_cache: LatencyCurveCache | None = None) -> Engine:
    """Create (and activate) the first backend of ``backend``'s order that works here.

    ``device`` is OpenVINO's (CPU, GPU, NPU, AUTO): for ``openvino``, and for ``auto``'s comparison of OpenVINO with
    ONNX Runtime on the CPU. ``latency_cache``: where that comparison finds (or keeps) its latency curves.
    """
    order = resolve_backends(backend)
    if device != "CPU" and backend not in ("openvino", "auto"):
        raise EngineError(f"--device {device} chooses OpenVINO's device: use it with --backend openvino (or auto), not {backend}")
    failures = []
    for name in order:
        try:
            engine = _create(name, model_path, num_masks=num_masks, max_batch=max_batch, fp16=fp16, threads=threads, device=device)
            engine.activate()
        except (MissingDependencyError, EngineError) as exc:
            if len(order) == 1:
                raise
            failures.append(f"{name}: {exc}")
            log.debug("backend %s unavailable: %s", name, exc)
            continue
        if failures:  # the normal path of "auto" on a machine without a GPU: said at debug level, with the reasons
            log.debug("using %s; skipped: %s", engine.describe(), "; ".join(failures))
        if backend == "auto" and name == "ort":
            return faster_cpu_engine(engine, model_path, num_masks=num_masks, threads=threads, device=device, cache=latency_cache)
        return engine
    raise EngineError("no backend could run the model:\n  " + "\n  ".join(failures))


def _create(name: str, model_path: str | Path, *, num_masks: int, max_batch: int | None, fp16: bool, threads: int | None,
            device: str) -> Engine:
    if name == "tensorrt":
        from .tensorrt import TensorRTEngine

        return TensorRTEngine(model_path, num_masks=num_masks, max_batch=max_batch, precision="fp16" if fp16 else "fp32")
    if name == "openvino":
        from .openvino import OpenVinoEngine

        return OpenVinoEngine(model_path, max_batch=max_batch or num_masks, target=device, threads=threads)
    from .ort import OrtEngine

    return OrtEngine(model_path, backend=name, max_batch=max_batch or num_masks, fp16=fp16, threads=threads)


def faster_cpu_engine(ort_engine: Engine, model_path: str | Path, *, num_masks: int, threads: int | None = None,
                      device: str = "CPU", cache: LatencyCurveCache | None = None) -> Engine:
    """``ort_engine`` (active), or an OpenVINO engine where OpenVINO is installed and measured faster on this machine.

    Both engines' latency curves are the ones the second round's schedule uses (same largest batch, same cache; measured
    together, interleaved, where not cached yet), so the comparison costs nothing after the first run on a machine; the
    engine not chosen is closed. The choice and its numbers are logged once.
    """
    from .openvino import OpenVinoEngine

    try:
        candidate = OpenVinoEngine(model_path, max_batch=ort_engine.max_batch, target=device, threads=threads).activate()
    except MissingDependencyError:
        log.debug("auto: OpenVINO is not installed; ONNX Runtime runs on the CPU")
        return ort_engine
    except EngineError as exc:
        log.info("auto: %s, since OpenVINO cannot run this model here (%s)", ort_engine.describe(), exc)
        return ort_engine
    largest = second_round_largest(ort_engine.max_batch, num_masks)
    try:
        (ort_curve, _), (ov_curve, _) = engine_latency_curves([ort_engine, candidate], largest, cache)
    except (PcedgeError, RuntimeError, OSError) as exc:
        candidate.deactivate()
        log.warning("auto: cannot compare OpenVINO with ONNX Runtime here (%s); ONNX Runtime runs", exc)
        return ort_engine
    ort_ms, ov_ms = ort_curve.ms_per_image(), ov_curve.ms_per_image()
    chosen, other = (candidate, ort_engine) if ov_ms <= (1 - OPENVINO_MARGIN) * ort_ms else (ort_engine, candidate)
    log.info("auto: %s; an image takes %.2f ms on %s and %.2f ms on %s on this machine (batches 1 to %d, measured once, "
             "cached)%s", chosen.describe(), ov_ms, candidate.describe(), ort_ms, ort_engine.describe(), largest,
             "" if chosen is candidate else f"; OpenVINO is taken only when {100 * OPENVINO_MARGIN:.0f}% faster or more")
    other.deactivate()
    return chosen
