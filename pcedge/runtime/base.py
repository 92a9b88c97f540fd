"""The engine protocol every backend implements (after Polygraphy's BaseRunner).

An engine owns one input buffer sized for ``max_batch`` images; the masked-batch writer fills the first
n images of it in place (``input_buffer(n)``), then ``infer(n)`` returns n integer labels. Public methods
check state and sizes once; backends implement only ``_activate``, ``_infer`` and ``_deactivate``.
"""

from __future__ import annotations

import itertools
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import EngineError


_COUNTER = itertools.count()


@dataclass(frozen=True)
class InputMetadata:
    name: str
    shape: tuple[int, int, int]  # (C, H, W); the batch axis is dynamic up to max_batch
    dtype: np.dtype
    max_batch: int


def classifier_input(engine: str, name: str, dims: Sequence[int | None], is_float32: bool, type_text: str,
                     max_batch: int) -> InputMetadata:
    """The one input every backend takes, checked the same way for each: [N, 3, H, W] float32 with a dynamic batch
    axis (``dims``: the input's dimensions, None where dynamic; ``type_text``: its type as the backend names it)."""
    if len(dims) != 4:
        raise EngineError(f"{engine}: the model input {name} has rank {len(dims)} ({list(dims)}); expected [N, 3, H, W]")
    if dims[0] is not None:
        raise EngineError(
            f"{engine}: the model's batch axis is fixed to {dims[0]}; PatchCleanser needs a dynamic batch. "
            "Re-export with pcedge export (it marks the batch axis dynamic)"
        )
    if any(d is None for d in dims[1:]) or dims[1] != 3:
        raise EngineError(f"{engine}: the model input must be [N, 3, H, W] with fixed H and W, got {list(dims)}")
    if not is_float32:
        raise EngineError(f"{engine}: the model input must be float32, got {type_text}")
    return InputMetadata(name, (3, int(dims[2]), int(dims[3])), np.dtype(np.float32), max_batch)


def require_finite_scores(engine: str, model: str, shape: tuple[int, int, int], scores: Callable[[np.ndarray], np.ndarray]) -> None:
    """Refuse a model whose scores are NaN/Inf on ordinary input (broken weights or export).

    Its ArgMax would still return a label, silently. Checked once, on a zero image (the fully masked one) and a
    random one, at batch 2; ``scores(batch)`` runs the model's score output.
    """
    probe = np.stack([np.zeros(shape, np.float32), np.random.default_rng(0).standard_normal(shape).astype(np.float32)])
    if not np.isfinite(scores(probe)).all():
        raise EngineError(f"{engine}: {model} outputs NaN or Inf scores on ordinary input (broken weights or export); "
                          "its labels would be meaningless")


class Engine(ABC):
    """A classifier that maps a batch in its own input buffer to integer labels.

    ``device`` is "cpu" (the buffer is a host numpy array) or "cuda" (a device array exposing
    ``__cuda_array_interface__``). Use as a context manager, which frees the buffers on exit.
    """

    backend = "base"
    device = "cpu"
    precision = "fp32"  # what the engine computes in, for certificates (an INT8 model file says so in its metadata)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"{self.backend}-{next(_COUNTER)}"
        self.log = logging.getLogger(f"pcedge.engine.{self.name}")
        self.last_inference_time = 0.0
        self.is_active = False

    # ------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Engine":
        self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    def activate(self) -> "Engine":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    # ------------------------------------------------------------------------------- inference
    @property
    @abstractmethod
    def input_metadata(self) -> InputMetadata: ...

    @property
    def max_batch(self) -> int:
        return self.input_metadata.max_batch

    def input_buffer(self, n: int) -> Any:
        """Where the writer puts n images: the first n of the engine's own buffer, no copy."""
        self._require_active("input_buffer")
        self._check_batch(n)
        return self._buffer()[:n]

    def full_buffer(self) -> Any:
        """The whole (max_batch, C, H, W) input buffer (writers check its capacity themselves)."""
        self._require_active("full_buffer")
        return self._buffer()

    def infer(self, n: int) -> np.ndarray:
        """Classify the first n images of the input buffer; returns int64 labels of shape (n,)."""
        self._require_active("infer")
        self._check_batch(n)
        start = time.perf_counter()
        labels = np.asarray(self._infer(n)).astype(np.int64, copy=False).reshape(-1)
        self.last_inference_time = time.perf_counter() - start
        if labels.shape[0] != n:
            raise EngineError(f"{self.name}: the model returned {labels.shape[0]} labels for a batch of {n}")
        return labels

    def describe(self) -> str:
        """Which backend and provider actually runs, for logs and results."""
        return self.backend

    @property
    def stream(self) -> int:
        """The CUDA stream this engine computes on, where the CUDA writer must upload and launch (0: none / the CPU).
        Writers for an engine come from :func:`pcedge.runtime.writers.frame_writer` (host or CUDA by ``device``)."""
        return 0

    def identity(self) -> dict[str, Any] | None:
        """What determines this engine's speed (model file hash, backend, precision, library version), for caches
        of measurements such as the latency curve; None when there is no stable identity (an in-memory model)."""
        return None

    # ------------------------------------------------------------------------------- hooks
    @abstractmethod
    def _activate(self) -> None: ...

    @abstractmethod
    def _buffer(self) -> Any: ...

    @abstractmethod
    def _infer(self, n: int) -> np.ndarray: ...

    def _deactivate(self) -> None:
        pass

    # ------------------------------------------------------------------------------- checks
    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise EngineError(f"{self.name}: activate the engine (use it in a 'with' block) before {what}()")

    def _check_batch(self, n: int) -> None:
        if not 0 < n <= self.max_batch:
            raise EngineError(f"{self.name}: batch {n} outside 1..{self.max_batch} (the engine's max_batch)")
