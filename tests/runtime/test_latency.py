"""The latency curve is measured on the real engine, cached, and turned into the cheapest exact schedule."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcedge.errors import ConfigError, EngineError
from pcedge.runtime.latency import (
    LatencyCurve,
    LatencyCurveCache,
    chunk_sequence,
    curve_batches,
    engine_latency_curve,
    engine_latency_curves,
    measure_latency_curve,
    plan_first_chunks,
)
from pcedge.runtime.ort import OrtEngine
from tests.models import export_test_model


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory):
    return export_test_model("cnn", tmp_path_factory.mktemp("latency") / "cnn.onnx")


def expected_cost(curve: LatencyCurve, plan, n: int, p: float) -> float:
    """E[time] of following ``plan`` for n labels when each label rejects independently with probability p."""
    if n == 0:
        return 0.0
    c = plan[n]
    return curve.cost_ms(c) + (1 - p) ** c * expected_cost(curve, plan, n - c, p)


def test_curve_interpolates_and_extrapolates():
    curve = LatencyCurve((1, 4, 8), (2.0, 5.0, 9.0))
    assert curve.cost_ms(1) == 2.0 and curve.cost_ms(4) == 5.0
    assert curve.cost_ms(6) == pytest.approx(7.0)
    assert curve.cost_ms(16) == pytest.approx(17.0)  # the last slope, 1 ms per image
    assert LatencyCurve.from_dict(curve.as_dict()) == curve
    for bad in [((), ()), ((2, 1), (1.0, 2.0)), ((1, 2), (1.0,)), ((0, 2), (1.0, 2.0)), ((1,), (float("nan"),))]:
        with pytest.raises(ConfigError):
            LatencyCurve(*bad)


def test_batches_to_time():
    assert curve_batches(35) == (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 35)
    assert curve_batches(1) == (1,)
    with pytest.raises(ConfigError):
        curve_batches(0)


def test_cpu_curve_gives_small_chunks_and_gpu_curve_one_call():
    cpu = LatencyCurve((1, 2, 4, 8, 16, 35), tuple(0.4 + 5.3 * b for b in (1, 2, 4, 8, 16, 35)))
    flat = LatencyCurve((1, 35), (2.0, 2.0))  # a call costs the same at any batch
    h100 = LatencyCurve((1, 36), (2.34, 2.53))  # ResNet-18 on the H100 (benchmarks/RESULTS.md)
    assert set(plan_first_chunks(cpu, 35, 0.25)[1:]) == {1}
    assert chunk_sequence(plan_first_chunks(cpu, 35, 0.25), 5) == [1, 1, 1, 1, 1]
    assert plan_first_chunks(flat, 35, 0.25)[1:] == tuple(range(1, 36))
    gpu_chunks = chunk_sequence(plan_first_chunks(h100, 35, 0.4), 35)
    assert gpu_chunks[0] >= 8 and len(gpu_chunks) <= 4  # a few large calls where a call's fixed cost dominates


@given(st.lists(st.floats(0.0, 50.0), min_size=2, max_size=6), st.floats(0.0, 1.0), st.integers(1, 24))
def test_plan_is_never_worse_than_any_constant_chunk(increments, p, n):
    """The dynamic programme minimises expected time: no constant chunk size beats it under its own model."""
    batches = tuple(range(1, len(increments) + 1))
    curve = LatencyCurve(batches, tuple(np.cumsum(increments) + 0.1))
    plan = plan_first_chunks(curve, n, p)
    assert all(1 <= plan[m] <= m for m in range(1, n + 1))
    best = expected_cost(curve, plan, n, p)
    for c in range(1, n + 1):
        constant = [0] + [min(c, m) for m in range(1, n + 1)]
        assert best <= expected_cost(curve, constant, n, p) + 1e-6 * max(1.0, best)


def test_measured_on_a_real_engine_and_cached(cnn_onnx, tmp_path):
    cache = LatencyCurveCache(tmp_path / "latency")
    with OrtEngine(cnn_onnx, max_batch=8) as engine:
        curve = measure_latency_curve(engine, 8, repeats=2)
        assert curve.batches == (1, 2, 3, 4, 6, 8) and all(t > 0 for t in curve.ms)
        first, origin = engine_latency_curve(engine, 8, cache)
        assert origin == "measured"
        again, origin = engine_latency_curve(engine, 8, cache)
        assert again == first and origin.startswith("cached ")
    files = list((tmp_path / "latency").glob("curve-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["identity"]["model_sha256"]


def test_a_corrupt_cached_curve_is_measured_again(cnn_onnx, tmp_path, caplog):
    cache = LatencyCurveCache(tmp_path)
    with OrtEngine(cnn_onnx, max_batch=4) as engine:
        engine_latency_curve(engine, 4, cache)
        next(tmp_path.glob("curve-*.json")).write_text("{not json")
        with caplog.at_level(logging.WARNING, logger="pcedge.latency"):
            curve, origin = engine_latency_curve(engine, 4, cache)
    assert origin == "measured" and curve.batches == (1, 2, 3, 4)
    assert "unreadable latency curve" in caplog.text


class FailsAboveTwo(OrtEngine):
    """A real ONNX Runtime engine whose calls fail above batch 2 (a device out of memory) until ``healthy``."""

    healthy = False

    def _infer(self, n):
        if n > 2 and not self.healthy:
            raise EngineError(f"{self.name}: out of memory at batch {n}")
        return super()._infer(n)


def test_a_curve_that_cannot_be_measured_raises(cnn_onnx):
    with FailsAboveTwo(cnn_onnx, max_batch=8) as engine:
        with pytest.raises(EngineError, match="out of memory at batch 3"):
            measure_latency_curve(engine, 8)


def test_engines_compared_are_measured_together_and_cached_each_under_its_own_key(cnn_onnx, tmp_path):
    cache = LatencyCurveCache(tmp_path)
    with OrtEngine(cnn_onnx, max_batch=4) as small, OrtEngine(cnn_onnx, max_batch=6) as large:
        first = engine_latency_curves([small, large], 4, cache)
        assert [origin for _, origin in first] == ["measured", "measured"]
        assert all(curve.batches == (1, 2, 3, 4) for curve, _ in first)
        again = engine_latency_curves([small, large], 4, cache)
        assert [curve for curve, _ in again] == [curve for curve, _ in first] and all(o.startswith("cached ") for _, o in again)
        assert engine_latency_curve(large, 4, cache) == again[1], "one engine alone finds the curve the comparison measured"
    assert len(list(tmp_path.glob("curve-*.json"))) == 2


def test_time_per_image_pools_the_whole_curve():
    curve = LatencyCurve((1, 2, 4), (2.0, 3.0, 7.0))
    assert curve.ms_per_image() == pytest.approx(12.0 / 7)
