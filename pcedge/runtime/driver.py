"""The low-latency double-masking driver: camera frame in, defended label out.

Per frame: the writer turns the frame into K one-mask images directly in the engine's input buffer
(one pass, no intermediate tensors), one engine call classifies them, and ``pcedge.defense`` decides.
Only when masks disagree does a second round run over the two-mask images of each disagreeing mask
(K-1 of them, minus labels already known since z_ij = z_ji); a disagreer is rejected by its first
contradicting label and the first one that survives ends the round. How many of those images go into
one engine call is the schedule:

- ``"auto"`` (default): chunk sizes chosen from this engine's own latency-versus-batch curve (measured
  once, cached; :mod:`pcedge.runtime.latency`) to minimise the expected time: small chunks where an
  image costs the same at any batch (CPUs), one large call where a call's fixed cost dominates (GPUs).
- ``"per-disagreer"``: all of a disagreer's images in one call.
- ``"all"``: every disagreer's images in as few calls as the engine holds.

Every schedule returns exactly the label of DESIGN.md's steps 1-4; only the work differs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..alarm import AlarmState, frame_level
from ..defense import Decision, contradiction_first_order, double_masking, index_order
from ..errors import ConfigError, EngineError, PcedgeError
from ..masks import MaskSet, create_mask_set
from ..preprocess import PreprocessSpec, as_hwc_uint8, read_onnx_metadata, resolve_spec
from .base import Engine
from .latency import (
    LatencyCurve,
    LatencyCurveCache,
    chunk_sequence,
    engine_latency_curve,
    plan_first_chunks,
)
from .masking import CudaMaskWriter, write_frame, write_masked_frame

log = logging.getLogger("pcedge.driver")

SECOND_ROUND_MODES = ("auto", "per-disagreer", "all")
REJECT_PROBABILITY = 0.4
"""Chance that one two-mask label contradicts the disagreer it checks, for the schedule's expected cost.

Measured: 0.43 over every (disagreer, j) pair of EfficientNet-Lite0's full label tables on 70 camera-like
frames (benchmarks/RESULTS.md, "Second round"), higher for the first labels of the contradiction-first
order. The plan is insensitive to it where it matters: with a per-image cost s and a per-call cost a,
one image per call wins whenever p > a / (s + a) (0.16 for Lite0 on ONNX Runtime CPU), and one call
for everything wins whenever the call's fixed cost dominates (GPUs)."""


@dataclass
class Result:
    """One defended prediction. ``case`` is agreed, disagreer, majority or budget (second round cut short);
    ``level`` is the alarm level: clear, uncertain or patch (see :mod:`pcedge.alarm`)."""

    label: int
    class_name: str
    case: str
    disagreers: list[int]
    two_mask_passes: int
    timings_ms: dict[str, float]
    backend: str
    one_mask_labels: list[int] = field(default_factory=list)
    passing_mask: int | None = None  # the disagreer that survived the second round (case "disagreer"): where the patch was
    level: str = "clear"
    stream_alarm: AlarmState | None = None  # set by pcedge.video.stream: the stream's k-of-n alarm after this frame

    @property
    def alert(self) -> bool:
        """This frame is at the ``patch`` level: one mask explains a local disagreement (see :mod:`pcedge.alarm`)."""
        return self.level == "patch"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PatchCleanser:
    """Double masking over any :class:`Engine`, for numpy BGR frames (as OpenCV delivers them)."""

    def __init__(self, engine: Engine, mask_set: MaskSet, spec: PreprocessSpec, *, second_round: str = "auto",
                 budget: int | None = None, frame_order: str = "BGR", latency_cache: LatencyCurveCache | None = None) -> None:
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
        self.latency_curve: LatencyCurve | None = None
        self._first_chunks: tuple[int, ...] | None = None
        self._ask_order = index_order
        if second_round == "auto" and len(mask_set) > 1:
            self._plan_second_round(latency_cache)

    def _plan_second_round(self, cache: LatencyCurveCache | None) -> None:
        """Chunk sizes from the engine's latency curve; without a curve, one call per disagreer (said once)."""
        largest = min(self.engine.max_batch, len(self.mask_set) - 1)
        try:
            self.latency_curve, origin = engine_latency_curve(self.engine, largest, cache)
        except (PcedgeError, RuntimeError, OSError) as exc:
            log.warning("%s: cannot measure its latency per batch size (%s); the second round makes one call per "
                        "disagreer instead", self.engine.name, exc)
            self.second_round = "per-disagreer"
            return
        self._first_chunks = plan_first_chunks(self.latency_curve, largest, REJECT_PROBABILITY)
        self._ask_order = contradiction_first_order(self.mask_set.centre_distances())
        log.debug("%s latency curve (%s): %s", self.engine.name, origin, self.latency_curve.describe())

    @property
    def schedule(self) -> str:
        """The second round's schedule in words, e.g. ``auto: 1,1,1,... images per call`` (for logs and reports)."""
        if self._first_chunks is None:
            return self.second_round
        chunks = chunk_sequence(self._first_chunks, len(self._first_chunks) - 1)
        shown = ",".join(str(c) for c in chunks[:4]) + (",..." if len(chunks) > 4 else "")
        return f"auto: {shown} images per call, likeliest contradictions first"

    # ------------------------------------------------------------------------------- construction
    @classmethod
    def from_onnx(cls, path: str | Path, *, backend: str = "auto", patch: str = "2%", masks_per_axis: int | None = 6,
                  stride: int | None = None, two_patches: bool = False, mask_size: int | None = None, max_batch: int | None = None,
                  spec_overrides: dict | None = None, **kwargs: Any) -> "PatchCleanser":
        """Engine, spec (from the model's metadata) and mask set in one call."""
        from ..quantize import saturation_risk
        from .backends import create_engine

        metadata = read_onnx_metadata(path)
        risk = saturation_risk(metadata)
        if risk:
            log.warning("%s: %s", Path(path).name, risk)
        spec = resolve_spec(spec_overrides or {}, metadata)
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
                      decision.two_mask_passes + second["prefetched"], timings, self.engine.describe(), [int(v) for v in one_mask],
                      decision.passing_mask, frame_level(decision.case, decision.disagreers, self.mask_set))

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
                                                 frame_order=self.frame_order, stream=self.engine.stream)

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
        plan = self._first_chunks
        chunk_size = None if plan is None else (lambda remaining: plan[min(remaining, len(plan) - 1)])
        return double_masking(one_mask, two_mask_labels, chunk_size=chunk_size, budget=budget, known=known,
                              order=self._ask_order)

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
