"""An engine's latency-versus-batch curve, measured once per engine, model and machine, cached on disk.

The second round's best unit of work follows this curve (DESIGN.md section 4): on a CPU an image costs
about the same at batch 1 and batch K, so small chunks with early exit win; on a GPU a call's fixed
cost dominates and large chunks win. The curve is measured on the engine itself (its own buffer, its
own call path), a few repeats per batch after a warm-up call, and stored as JSON keyed by everything
that changes it: the model file's hash, the backend and provider, the batch limit, the machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, PcedgeError
from ..util.cache import cache_dir
from ..util.files import write_json
from .base import Engine

log = logging.getLogger("pcedge.latency")

CURVE_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)


@dataclass(frozen=True)
class LatencyCurve:
    """Median milliseconds of one engine call at each measured batch size (ascending)."""

    batches: tuple[int, ...]
    ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.batches or len(self.batches) != len(self.ms) or list(self.batches) != sorted(set(self.batches)):
            raise ConfigError(f"a latency curve needs ascending, distinct batch sizes with one time each, got {self.batches}")
        if self.batches[0] < 1 or any(not np.isfinite(t) or t < 0 for t in self.ms):
            raise ConfigError(f"a latency curve needs batches >= 1 and finite times, got {self.batches}, {self.ms}")

    def cost_ms(self, batch: int) -> float:
        """Estimated time of one call at ``batch``: linear between measured points, beyond them by the end slopes."""
        b = np.asarray(self.batches, dtype=np.float64)
        t = np.asarray(self.ms, dtype=np.float64)
        if len(b) == 1:
            return float(t[0] * batch / b[0])
        if batch <= b[0]:
            slope = (t[1] - t[0]) / (b[1] - b[0])
            return float(max(t[0] + slope * (batch - b[0]), 0.0))
        if batch >= b[-1]:
            slope = (t[-1] - t[-2]) / (b[-1] - b[-2])
            return float(t[-1] + max(slope, 0.0) * (batch - b[-1]))
        return float(np.interp(batch, b, t))

    def ms_per_image(self) -> float:
        """Milliseconds per image over every measured call together (one number from all of the curve's medians: what
        comparing two engines rests on, rather than one batch size's)."""
        return float(sum(self.ms) / sum(self.batches))

    def describe(self) -> str:
        return ", ".join(f"b{b} {t:.1f} ms ({t / b:.2f}/img)" for b, t in zip(self.batches, self.ms))

    def as_dict(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "ms": list(self.ms)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyCurve":
        return cls(tuple(int(b) for b in data["batches"]), tuple(float(t) for t in data["ms"]))


def curve_batches(largest: int) -> tuple[int, ...]:
    """The batch sizes to time up to ``largest`` (always included)."""
    if largest < 1:
        raise ConfigError(f"the largest batch must be >= 1, got {largest}")
    return tuple(sorted({b for b in CURVE_BATCHES if b < largest} | {largest}))


def second_round_largest(max_batch: int, num_masks: int) -> int:
    """The largest second-round call the driver plans for (a disagreer needs at most K-1 two-mask labels): the curve
    it measures goes up to here, and so does every other use of the same cached curve (``auto``'s engine choice)."""
    return max(1, min(max_batch, num_masks - 1))


def measure_latency_curve(engine: Engine, largest: int, *, repeats: int = 3) -> LatencyCurve:
    """Time ``engine.infer(b)`` for each batch in :func:`curve_batches` (one warm-up call, then the median of ``repeats``).

    The buffer's content does not matter to a classifier's speed; whatever the writer left there is used.
    Raises :class:`EngineError` (or whatever the engine raises) when a call fails.
    """
    return measure_latency_curves([engine], largest, repeats=repeats)[0]


def measure_latency_curves(engines: Sequence[Engine], largest: int, *, repeats: int = 3) -> list[LatencyCurve]:
    """:func:`measure_latency_curve` for several engines, interleaved batch size by batch size (each engine's warm-up call
    and repeats at one size, then the next engine's), so that a machine whose speed drifts (other work on shared cores)
    biases none of them against another, and one engine's threads, still spinning after its last call, never slow the
    other's timed calls (the warm-up call absorbs them)."""
    batches = curve_batches(min([largest] + [engine.max_batch for engine in engines]))
    times: list[list[float]] = [[] for _ in engines]
    for b in batches:
        for engine, curve in zip(engines, times):
            engine.infer(b)  # warm-up: first calls at a new shape allocate
            samples = []
            for _ in range(max(1, repeats)):
                start = time.perf_counter()
                engine.infer(b)
                samples.append((time.perf_counter() - start) * 1e3)
            curve.append(float(np.median(samples)))
    return [LatencyCurve(batches, tuple(curve)) for curve in times]


class LatencyCurveCache:
    """JSON curves under ``$PCEDGE_CACHE/latency`` (default ``~/.cache/pcedge/latency``), beside the engine cache."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else cache_dir("latency")

    @staticmethod
    def key(identity: dict[str, Any], largest: int) -> str:
        from ..util.machine import cpu_model, gpu_info

        full = {**identity, "largest": largest, "cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_info()}
        return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:24]

    def path_for(self, key: str) -> Path:
        return self.folder / f"curve-{key}.json"

    def curves_for_model(self, model_sha256: str) -> list[tuple[dict[str, Any], LatencyCurve]]:
        """Every cached curve measured for a model file (any engine, batch limit or machine), for ``pcedge inspect``."""
        found = []
        for path in sorted(self.folder.glob("curve-*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("identity", {}).get("model_sha256") == model_sha256:
                    found.append((data["identity"], LatencyCurve.from_dict(data)))
            except (OSError, ValueError, KeyError, TypeError, PcedgeError):
                continue
        return found

    def load(self, key: str) -> LatencyCurve | None:
        path = self.path_for(key)
        try:
            return LatencyCurve.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, PcedgeError) as exc:
            log.warning("ignoring unreadable latency curve %s (%s); measuring again", path, exc)
            return None

    def save(self, key: str, curve: LatencyCurve, identity: dict[str, Any]) -> None:
        """Write atomically; an unwritable cache only costs a re-measurement next time."""
        try:
            write_json(self.path_for(key), {**curve.as_dict(), "identity": identity,
                                            "measured": time.strftime("%Y-%m-%d %H:%M:%S")})
        except OSError as exc:
            log.warning("cannot cache the latency curve in %s (%s)", self.folder, exc)


def engine_latency_curve(engine: Engine, largest: int, cache: LatencyCurveCache | None = None) -> tuple[LatencyCurve, str]:
    """The engine's curve up to ``largest`` and where it came from ("cached <path>" or "measured").

    Engines without a stable identity (an in-memory torch module) are measured every time.
    """
    return engine_latency_curves([engine], largest, cache)[0]


def engine_latency_curves(engines: Sequence[Engine], largest: int,
                          cache: LatencyCurveCache | None = None) -> list[tuple[LatencyCurve, str]]:
    """:func:`engine_latency_curve` for engines to be compared: those not cached are measured together, interleaved
    (:func:`measure_latency_curves`), and each is cached under its own key, exactly as it alone would be."""
    cache = cache or LatencyCurveCache()
    identities = [engine.identity() for engine in engines]
    keys = [None if identity is None else LatencyCurveCache.key(identity, largest) for identity in identities]
    found: dict[int, tuple[LatencyCurve, str]] = {}
    for n, key in enumerate(keys):
        cached = cache.load(key) if key is not None else None
        if cached is not None:
            found[n] = (cached, f"cached {cache.path_for(key)}")
    todo = [n for n in range(len(engines)) if n not in found]
    if todo:
        log.info("measuring %s's time per batch size for the second round's schedule (once per model and machine; cached)",
                 " and ".join(engines[n].describe() for n in todo))
        for n, curve in zip(todo, measure_latency_curves([engines[n] for n in todo], largest)):
            if keys[n] is not None:
                cache.save(keys[n], curve, identities[n])
            found[n] = (curve, "measured")
    return [found[n] for n in range(len(engines))]


def plan_first_chunks(curve: LatencyCurve, largest: int, reject_probability: float) -> tuple[int, ...]:
    """``plan[n]``: the first chunk size that minimises the expected time to settle n two-mask labels.

    Model: each label contradicts the disagreer (ending its checks) with probability p, independently,
    so a chunk of c labels is followed by more work only with probability (1-p)^c. Dynamic programming:
    V(0) = 0, V(n) = min over c of cost(c) + (1-p)^c V(n-c). Small chunks win when cost is per image
    (CPUs), one big chunk wins when a call's fixed cost dominates (GPUs). ``plan[0]`` is unused (0).
    """
    if not 0.0 <= reject_probability <= 1.0:
        raise ConfigError(f"reject_probability must be in [0, 1], got {reject_probability}")
    keep = 1.0 - reject_probability
    cost = [0.0] + [curve.cost_ms(c) for c in range(1, largest + 1)]
    value = [0.0] * (largest + 1)
    plan = [0] * (largest + 1)
    for n in range(1, largest + 1):
        best, best_c = float("inf"), n
        for c in range(1, n + 1):
            v = cost[c] + keep**c * value[n - c]
            if v < best - 1e-12:
                best, best_c = v, c
        value[n], plan[n] = best, best_c
    return tuple(plan)


def chunk_sequence(plan: Sequence[int], n: int) -> list[int]:
    """The chunks a disagreer needing ``n`` labels would use if none contradicted it (for display)."""
    out = []
    while n > 0:
        c = plan[min(n, len(plan) - 1)]
        out.append(c)
        n -= c
    return out
