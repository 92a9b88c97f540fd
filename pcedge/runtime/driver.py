"""The low-latency double-masking driver: camera frame in, defended label out.

Per frame: the writer turns the frame into K one-mask images directly in the engine's input buffer
(one pass, no intermediate tensors), one engine call classifies them, and ``pcedge.defense`` decides.
Only when masks disagree does a second round run: the two-mask images of a disagreeing mask (K-1 of
them, minus labels already known since z_ij = z_ji) go into one engine call, and the first disagreer
that survives ends the round. ``second_round="all"`` instead classifies every disagreer's images in one
call (fewer calls, more images); the default is whichever benchmarks/RESULTS.md measured faster.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..defense import Decision, double_masking
from ..errors import ConfigError, EngineError
from ..masks import MaskSet, create_mask_set
from ..preprocess import PreprocessSpec, as_hwc_uint8, read_onnx_metadata, resolve_spec
from .base import Engine
from .masking import CudaMaskWriter, write_frame, write_masked_frame

SECOND_ROUND_MODES = ("per-disagreer", "all")


@dataclass
class Result:
    """One defended prediction. ``case`` is agreed, disagreer, majority or budget (second round cut short)."""

    label: int
    class_name: str
    case: str
    disagreers: list[int]
    two_mask_passes: int
    timings_ms: dict[str, float]
    backend: str
    one_mask_labels: list[int] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        """Masks disagreed: the frame may carry a patch (or is simply hard)."""
        return self.case != "agreed"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PatchCleanser:
    """Double masking over any :class:`Engine`, for numpy BGR frames (as OpenCV delivers them)."""

    def __init__(self, engine: Engine, mask_set: MaskSet, spec: PreprocessSpec, *, second_round: str = "per-disagreer",
                 budget: int | None = None, frame_order: str = "BGR") -> None:
        if second_round not in SECOND_ROUND_MODES:
            raise ConfigError(f"second_round must be one of {SECOND_ROUND_MODES}, got {second_round!r}")
        if tuple(spec.input_size) != mask_set.image_size:
            raise ConfigError(f"the mask set was built for {mask_set.image_size} but the model takes {spec.input_size}")
        engine.activate()
        meta = engine.input_metadata
        if tuple(meta.shape[1:]) != tuple(spec.input_size):
            raise EngineError(f"{engine.name} takes {meta.shape[1]}x{meta.shape[2]} images but the spec says {spec.input_size}")
        if engine.max_batch < len(mask_set):
            raise EngineError(f"{engine.name} holds {engine.max_batch} images per call; the one-mask round needs K={len(mask_set)}")
        self.engine, self.mask_set, self.spec = engine, mask_set, spec
        self.second_round, self.budget, self.frame_order = second_round, budget, frame_order
        self.class_names = spec.class_names
        self._one_mask = np.arange(len(mask_set), dtype=np.int32)
        self._cuda_writer = CudaMaskWriter(mask_set, engine.max_batch) if engine.device == "cuda" else None
        self._frame_on_device = None

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def from_onnx(cls, path: str | Path, *, backend: str = "auto", patch: str = "2%", masks_per_axis: int | None = 6,
                  stride: int | None = None, two_patches: bool = False, mask_size: int | None = None, max_batch: int | None = None,
                  spec_overrides: dict | None = None, **kwargs: Any) -> "PatchCleanser":
        """Engine, spec (from the model's metadata) and mask set in one call."""
        from .backends import create_engine

        spec = resolve_spec(spec_overrides or {}, read_onnx_metadata(path))
        mask_set = create_mask_set(spec.input_size, patch, masks_per_axis=masks_per_axis, stride=stride, two_patches=two_patches,
                                   mask_size=mask_size)
        k = len(mask_set)
        batch = max_batch or (k * (k - 1) if kwargs.get("second_round") == "all" else k)
        engine = create_engine(path, backend, num_masks=k, max_batch=max(batch, k))
        return cls(engine, mask_set, spec, **kwargs)

    def close(self) -> None:
        self.engine.deactivate()

    def __enter__(self) -> "PatchCleanser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------------- inference
    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def predict(self, frame: np.ndarray) -> Result:
        """Defended label of one frame (uint8 HxW, HxWx1/3/4; 4-channel frames are BGRA)."""
        t0 = time.perf_counter()
        frame = self._source(frame)
        self._write(frame, self._one_mask)
        t1 = time.perf_counter()
        one_mask = self.engine.infer(len(self.mask_set))
        t2 = time.perf_counter()
        second = {"ms": 0.0, "prefetched": 0}
        decision = self._decide(frame, one_mask, second)
        t3 = time.perf_counter()
        timings = {
            "masking": (t1 - t0) * 1e3,
            "first_round": (t2 - t1) * 1e3,
            "decision": (t3 - t2) * 1e3 - second["ms"],
            "second_round": second["ms"],
            "total": (t3 - t0) * 1e3,
        }
        return Result(decision.label, self.class_name(decision.label), decision.case, list(decision.disagreers),
                      decision.two_mask_passes + second["prefetched"], timings, self.engine.describe(), [int(v) for v in one_mask])

    def predict_undefended(self, frame: np.ndarray) -> int:
        """The plain model's label for the unmasked frame (what an unprotected camera reports)."""
        frame = as_hwc_uint8(frame)
        if self._cuda_writer is not None:
            raise EngineError("predict_undefended runs on CPU engines; GPU engines are benchmarked through pcedge bench")
        write_frame(frame, self.spec, self.engine.full_buffer(), count=1, frame_order=self.frame_order)
        return int(self.engine.infer(1)[0])

    def label_table(self, frame: np.ndarray) -> np.ndarray:
        """The full symmetric K x K two-mask label table (diagonal = one-mask labels), for certification."""
        from ..defense import certification_pairs, table_from_pairs

        frame = self._source(frame)
        pairs = certification_pairs(len(self.mask_set))
        return table_from_pairs(len(self.mask_set), self._classify_pairs(frame, pairs))

    # ------------------------------------------------------------------------------- internals
    def _source(self, frame: np.ndarray) -> Any:
        """The validated frame where the writer reads it: on the host, or uploaded to the GPU once per frame.

        Every later write of this frame (first round, each second-round chunk) reuses it.
        """
        frame = as_hwc_uint8(frame)
        return frame if self._cuda_writer is None else self._upload(frame)

    def _write(self, source: Any, selection: np.ndarray) -> None:
        if self._cuda_writer is None:
            write_masked_frame(source, self.spec, self.mask_set, selection, self.engine.full_buffer(), frame_order=self.frame_order)
        else:
            self._cuda_writer.write_masked_frame(source, self.spec, selection, self.engine.full_buffer(),
                                                 frame_order=self.frame_order, stream=getattr(self.engine, "stream", 0))

    def _upload(self, frame: np.ndarray) -> Any:
        """Copy the camera frame to the GPU (CuPy), reusing the device buffer."""
        from .._optional import require

        cp = require("cupy", "uploading frames to the CUDA writer")
        if self._frame_on_device is None or self._frame_on_device.shape != frame.shape:
            self._frame_on_device = cp.empty(frame.shape, dtype=cp.uint8)
        self._frame_on_device.set(frame)
        return self._frame_on_device

    def _classify_pairs(self, source: Any, pairs: np.ndarray) -> np.ndarray:
        labels = np.empty(len(pairs), np.int64)
        step = self.engine.max_batch
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            self._write(source, chunk)
            labels[start : start + len(chunk)] = self.engine.infer(len(chunk))
        return labels

    def _decide(self, frame: Any, one_mask: np.ndarray, second: dict) -> Decision:
        known: dict[tuple[int, int], int] = {}

        def two_mask_labels(i: int, js: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            pairs = np.stack([np.full(len(js), i), js], axis=1).astype(np.int32)
            labels = self._classify_pairs(frame, pairs)
            second["ms"] += (time.perf_counter() - start) * 1e3
            return labels

        if self.second_round == "all" and not (one_mask == one_mask[0]).all():
            self._prefetch_all_disagreers(frame, one_mask, known, second)
        budget = None if self.budget is None else self.budget - second["prefetched"]
        return double_masking(one_mask, two_mask_labels, budget=budget, known=known)

    def _prefetch_all_disagreers(self, frame: Any, one_mask: np.ndarray, known: dict, second: dict) -> None:
        """Classify every disagreer's two-mask images in as few calls as the engine allows."""
        from ..defense import majority_label

        start = time.perf_counter()
        k = len(one_mask)
        disagreers = np.flatnonzero(one_mask != majority_label(one_mask))
        pairs = sorted({(min(i, j), max(i, j)) for i in disagreers.tolist() for j in range(k) if j != i})
        if self.budget is not None and len(pairs) > self.budget:
            pairs = pairs[: self.budget]
        arr = np.array(pairs, dtype=np.int32).reshape(-1, 2)
        for (i, j), label in zip(pairs, self._classify_pairs(frame, arr).tolist()):
            known[(i, j)] = int(label)
        second["prefetched"] = len(pairs)
        second["ms"] += (time.perf_counter() - start) * 1e3
