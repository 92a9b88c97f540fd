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

Several frames can be defended in one step (:meth:`PatchCleanser.predict_batch`): their one-mask
images share engine calls, their decisions (:class:`pcedge.defense.DoubleMasking`) advance in
lockstep and each round's two-mask requests of all frames are merged into as few calls as the
engine's batch holds. Each frame's result is exactly what :meth:`PatchCleanser.predict` alone returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..alarm import frame_level
from ..defense import Decision, DoubleMasking, FullTable, LabelRequests, contradiction_first_order, index_order
from ..errors import ConfigError, EngineError, KernelError, PcedgeError
from ..masks import MaskSet, MaskSpec
from ..preprocess import PreprocessSpec, resolve_spec
from ..result import FrameFailure, Result
from .base import Engine
from .kernels import PreparedFrame
from .latency import LatencyCurve, LatencyCurveCache, chunk_sequence, engine_latency_curve, plan_first_chunks, second_round_largest
from .modelfile import read_onnx_metadata, saturation_risk
from .writers import frame_writer

log = logging.getLogger("pcedge.driver")

SECOND_ROUND_MODES = ("auto", "per-disagreer", "all")
REJECT_PROBABILITY = 0.4
"""Chance that one two-mask label contradicts the disagreer it checks, for the schedule's expected cost.

Measured: 0.43 over every (disagreer, j) pair of EfficientNet-Lite0's full label tables on 70 camera-like
frames (benchmarks/RESULTS.md, "Second round"), higher for the first labels of the contradiction-first
order. The plan is insensitive to it where it matters: with a per-image cost s and a per-call cost a,
one image per call wins whenever p > a / (s + a) (0.16 for Lite0 on ONNX Runtime CPU), and one call
for everything wins whenever the call's fixed cost dominates (GPUs)."""


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
        self._writer = frame_writer(engine, spec, mask_set, frame_order)
        self.latency_curve: LatencyCurve | None = None
        self._first_chunks: tuple[int, ...] | None = None
        self._ask_order = index_order
        if second_round == "auto" and len(mask_set) > 1:
            self._plan_second_round(latency_cache)

    def _plan_second_round(self, cache: LatencyCurveCache | None) -> None:
        """Chunk sizes from the engine's latency curve; without a curve, one call per disagreer (said once)."""
        largest = second_round_largest(self.engine.max_batch, len(self.mask_set))
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
                  stride: int | None = None, two_patches: bool = False, mask_size: int | None = None, masks: MaskSpec | None = None,
                  max_batch: int | Callable[[int], int] | None = None, spec_overrides: dict | None = None, device: str = "CPU",
                  **kwargs: Any) -> "PatchCleanser":
        """Engine, spec (from the model's metadata) and mask set in one call.

        The threat model is given by ``patch``, ``masks_per_axis``, ``stride``, ``two_patches`` and ``mask_size``,
        or as one :class:`pcedge.masks.MaskSpec` (``masks``). ``max_batch`` is the engine's batch capacity, or a
        function of K that returns it (default: K, or K(K-1) for the "all" schedule). ``device``: OpenVINO's
        (CPU, GPU, NPU, AUTO) for the openvino backend and for ``auto``'s comparison with it.
        """
        from .backends import create_engine

        metadata = read_onnx_metadata(path)
        risk = saturation_risk(metadata)
        if risk:
            log.warning("%s: %s", Path(path).name, risk)
        spec = resolve_spec(spec_overrides or {}, metadata)
        masks = masks or MaskSpec(patch, masks_per_axis, stride, two_patches, mask_size)
        mask_set = masks.build(spec.input_size)
        k = len(mask_set)
        batch = max_batch(k) if callable(max_batch) else max_batch
        batch = batch or (k * (k - 1) if kwargs.get("second_round") == "all" else k)
        engine = create_engine(path, backend, num_masks=k, max_batch=max(batch, k), device=device,
                               latency_cache=kwargs.get("latency_cache"))
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
        return self.predict_batch([frame])[0]

    @property
    def frames_per_call(self) -> int:
        """How many frames' one-mask rounds fit one engine call (a step of more frames makes more calls)."""
        return max(1, self.engine.max_batch // len(self.mask_set))

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[Result]:
        """Defended labels of several frames in one step, each exactly what :meth:`predict` alone returns.

        The one-mask images of all frames share engine calls (up to ``max_batch`` images each), and the
        second rounds advance together, each round's two-mask requests of every frame merged into as few
        calls as the engine holds. Any number of frames is taken; ``max_batch`` only bounds each call (on
        a CPU, calls larger than K were measured no faster and cost memory; on a GPU, larger calls
        amortize the call's fixed cost). Timings are per frame: ``masking`` and
        ``first_round`` are the shared first calls, ``second_round`` the calls that carried this frame's
        two-mask images.
        """
        if not frames:
            raise ConfigError("predict_batch needs at least one frame")
        t0 = time.perf_counter()
        return self._defend([self._writer.load(frame, slot) for slot, frame in enumerate(frames)], t0)

    def predict_each(self, frames: Sequence[np.ndarray]) -> list[Result | FrameFailure]:
        """:meth:`predict_batch` where each frame stands alone: a frame the writer refuses (a shape or type a
        misbehaving camera sent) gets a :class:`FrameFailure` and the others their results; an engine failure
        (the model or the device) still raises. What the stream loop calls."""
        t0 = time.perf_counter()
        loaded: list[PreparedFrame] = []
        refused: dict[int, FrameFailure] = {}
        for n, frame in enumerate(frames):
            try:
                loaded.append(self._writer.load(frame, len(loaded)))
            except (ConfigError, KernelError) as exc:
                refused[n] = FrameFailure("refused", str(exc))
        results = iter(self._defend(loaded, t0) if loaded else [])
        return [refused[n] if n in refused else next(results) for n in range(len(frames))]

    def _defend(self, loaded: Sequence[PreparedFrame], t0: float) -> list[Result]:
        """Double masking of loaded frames in one step (``t0``: when the step began, for the total time)."""
        first = _Calls()
        one_mask = self._classify(first, [(frame, self._one_mask) for frame in loaded])
        t1 = time.perf_counter()
        plan = self._first_chunks
        chunk_size = None if plan is None else (lambda remaining: plan[min(remaining, len(plan) - 1)])
        decisions = [DoubleMasking(labels, chunk_size=chunk_size, budget=self.budget, order=self._ask_order,
                                   prefetch_all=self.second_round == "all") for labels in one_mask]
        second = [_Calls() for _ in loaded]
        engine_s = self._advance(decisions, loaded, second)
        t2 = time.perf_counter()
        decision_ms = max(0.0, (t2 - t1 - engine_s) * 1e3)  # the decisions' own time, outside the engine calls
        return [self._result(d.decision, labels, first, calls, decision_ms, (t2 - t0) * 1e3)
                for d, labels, calls in zip(decisions, one_mask, second)]

    def predict_undefended(self, frame: np.ndarray) -> int:
        """The plain model's label for the unmasked frame (what an unprotected camera reports)."""
        return int(self.undefended_labels(frame, 1)[0])

    def undefended_labels(self, frame: np.ndarray, count: int = 1) -> np.ndarray:
        """The plain model on ``count`` unmasked copies of the frame in one call (count = K: the undefended
        batch-K baseline the benchmarks compare with)."""
        self._writer.write_unmasked(self._writer.load(frame), count)
        return self.engine.infer(count)

    def label_table(self, frame: np.ndarray) -> np.ndarray:
        """The full symmetric K x K two-mask label table (diagonal = one-mask labels), for certification."""
        return self.label_tables([frame])[0]

    def label_tables(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label tables of several images, their K(K+1)/2 masked images packed into full engine calls."""
        loaded = [self._writer.load(frame, slot) for slot, frame in enumerate(frames)]
        tables = [FullTable(len(self.mask_set)) for _ in frames]
        self._advance(tables, loaded, [_Calls() for _ in frames])
        return [t.table for t in tables]

    # ------------------------------------------------------------------------------- internals
    def _result(self, decision: Decision, one_mask: np.ndarray, first: "_Calls", second: "_Calls", decision_ms: float,
                total_ms: float) -> Result:
        timings = {"masking": first.write_s * 1e3, "first_round": first.infer_s * 1e3, "decision": decision_ms,
                   "second_round": second.seconds * 1e3, "total": total_ms}
        return Result(decision.label, self.class_name(decision.label), decision.case, list(decision.disagreers),
                      decision.two_mask_passes, timings, self.engine.describe(), [int(v) for v in one_mask],
                      decision.passing_mask, frame_level(decision.case, decision.disagreers, self.mask_set),
                      batch_sizes=first.sizes + second.sizes)

    def _advance(self, computations: Sequence[LabelRequests], loaded: Sequence[PreparedFrame], calls: Sequence["_Calls"]) -> float:
        """Run label computations to the end, each round's requests of all of them merged into shared calls;
        returns the seconds spent writing and in the engine."""
        spent = 0.0
        while True:
            active = [n for n, c in enumerate(computations) if not c.done]
            if not active:
                return spent
            shared = _Calls()
            labels = self._classify(shared, [(loaded[n], computations[n].pending) for n in active])
            spent += shared.seconds
            for n, z in zip(active, labels):
                calls[n].add(shared)
                computations[n].supply(z)

    def _classify(self, calls: "_Calls", requests: Sequence[tuple[PreparedFrame, np.ndarray]]) -> list[np.ndarray]:
        """Labels for each (frame, selection) request, written back to back into calls of up to ``max_batch`` images."""
        out = [np.empty(len(sel), np.int64) for _, sel in requests]
        capacity = self.engine.max_batch
        placed: list[tuple[int, int, int, int]] = []  # (request, start within it, count, offset in the batch)
        fill = 0
        for r, (frame, sel) in enumerate(requests):
            start = 0
            while start < len(sel):
                take = min(capacity - fill, len(sel) - start)
                begin = time.perf_counter()
                self._writer.write(frame, sel[start : start + take], offset=fill)
                calls.write_s += time.perf_counter() - begin
                placed.append((r, start, take, fill))
                fill += take
                start += take
                if fill == capacity:
                    self._infer(calls, fill, placed, out)
                    placed, fill = [], 0
        if fill:
            self._infer(calls, fill, placed, out)
        return out

    def _infer(self, calls: "_Calls", n: int, placed: list[tuple[int, int, int, int]], out: list[np.ndarray]) -> None:
        begin = time.perf_counter()
        labels = self.engine.infer(n)
        calls.infer_s += time.perf_counter() - begin
        calls.sizes.append(n)
        for r, start, count, offset in placed:
            out[r][start : start + count] = labels[offset : offset + count]


@dataclass
class _Calls:
    """Time and batch sizes of the engine calls that served a frame (or one round shared by several frames)."""

    write_s: float = 0.0
    infer_s: float = 0.0
    sizes: list[int] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.write_s + self.infer_s

    def add(self, other: "_Calls") -> None:
        self.write_s += other.write_s
        self.infer_s += other.infer_s
        self.sizes.extend(other.sizes)
