"""The driver on real exported models and ONNX Runtime equals double masking on the engine's full table."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pcedge.defense import double_masking_table
from pcedge.errors import ConfigError, EngineError
from pcedge.export import export_onnx
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec, masked_batch_reference, preprocess_reference
from pcedge.runtime.backends import create_engine, resolve_backends
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.latency import LatencyCurveCache
from pcedge.runtime.ort import OrtEngine
from pcedge.runtime.torch_eager import TorchEngine, original_double_masking
from tests.models import build
from tests.runtime.test_latency import FailsAboveTwo

SPEC = PreprocessSpec(input_size=(32, 32), crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for arch in ("cnn", "region"):
        paths[arch] = folder / f"{arch}.onnx"
        classes = build(arch)(torch.zeros(1, 3, 32, 32)).shape[1]
        export_onnx(build(arch), paths[arch], image_size=32, mean=SPEC.mean, std=SPEC.std, crop_pct=1.0,
                    labels=[f"c{i}" for i in range(classes)], exporter="torchscript", source_name=arch)
    return paths


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """Real-looking test frames: smooth random images at several sizes, some with a pasted square."""
    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        h, w = rng.integers(24, 90, 2)
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        frame = np.ascontiguousarray(np.kron(small, np.ones((h // 4 + 1, w // 4 + 1, 1), np.uint8))[:h, :w])
        if n % 3 == 1:  # a patch-like square of noise
            y, x = rng.integers(0, h - 6), rng.integers(0, w - 6)
            frame[y : y + 5, x : x + 5] = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
        if n % 3 == 2:  # a big blanked region (randomly masked-out image)
            frame[: h // 2] = 0
        out.append(frame)
    return out


@pytest.mark.parametrize("arch", ["cnn", "region"])
@pytest.mark.parametrize("second_round", ["auto", "per-disagreer", "all"])
def test_driver_equals_table_decision(onnx_models, arch, second_round):
    ms = MaskSet.square(32, 5, masks_per_axis=3)
    with PatchCleanser.from_onnx(onnx_models[arch], backend="ort", patch="5", masks_per_axis=3,
                                 second_round=second_round, max_batch=len(ms) * (len(ms) - 1)) as pc:
        assert pc.spec.input_size == (32, 32) and len(pc.mask_set) == len(ms)
        cases = set()
        for frame in frames(24):
            result = pc.predict(frame)
            table = pc.label_table(frame)
            expected = double_masking_table(table)
            assert (result.label, result.case, result.disagreers) == (expected.label, expected.case, list(expected.disagreers))
            assert result.one_mask_labels == np.diagonal(table).tolist()
            assert result.class_name == f"c{result.label}"
            k = len(pc.mask_set)
            assert result.two_mask_passes <= len(result.disagreers) * (k - 1)
            assert set(result.timings_ms) == {"masking", "first_round", "decision", "second_round", "total"}
            cases.add(result.case)
        if arch == "region":
            assert {"disagreer", "majority"} <= cases, f"the second round must be exercised, saw {cases}"


class CountingEngine(OrtEngine):
    """A real ONNX Runtime engine that records the batch size of every call."""

    calls: list[int]

    def _infer(self, n):
        self.calls.append(n)
        return super()._infer(n)


@pytest.mark.parametrize("second_round", ["auto", "per-disagreer", "all"])
def test_two_mask_passes_count_the_images_actually_classified(onnx_models, tmp_path, second_round):
    ms = MaskSet.square(32, 5, masks_per_axis=3)
    engine = CountingEngine(onnx_models["region"], max_batch=len(ms) * (len(ms) - 1))
    engine.calls = []
    with PatchCleanser(engine, ms, SPEC, second_round=second_round, latency_cache=LatencyCurveCache(tmp_path)) as pc:
        for frame in frames(24):
            engine.calls = []
            result = pc.predict(frame)
            assert engine.calls[0] == len(ms)  # the one-mask round
            assert result.two_mask_passes == sum(engine.calls[1:])


def test_auto_schedule_uses_small_chunks_on_a_cpu(onnx_models, tmp_path):
    """On ONNX Runtime CPU an image costs about the same at any batch, so the schedule asks for few at a time."""
    ms = MaskSet.square(32, 5, masks_per_axis=3)
    engine = CountingEngine(onnx_models["region"], max_batch=len(ms) * (len(ms) - 1))
    engine.calls = []
    with PatchCleanser(engine, ms, SPEC, latency_cache=LatencyCurveCache(tmp_path)) as pc:
        assert pc.latency_curve is not None and pc.schedule.startswith("auto: ")
        auto_passes = sum(pc.predict(f).two_mask_passes for f in frames(24))
    with PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3,
                                 second_round="per-disagreer") as pc:
        assert pc.schedule == "per-disagreer"
        per_disagreer_passes = sum(pc.predict(f).two_mask_passes for f in frames(24))
    assert 0 < auto_passes <= per_disagreer_passes


def test_unmeasurable_curve_falls_back_to_one_call_per_disagreer_and_says_so_once(onnx_models, tmp_path, caplog):
    ms = MaskSet.square(32, 5, masks_per_axis=3)
    engine = FailsAboveTwo(onnx_models["region"], max_batch=len(ms))
    with caplog.at_level(logging.WARNING, logger="pcedge.driver"):
        with PatchCleanser(engine, ms, SPEC, latency_cache=LatencyCurveCache(tmp_path)) as pc:
            engine.healthy = True
            results = [pc.predict(f) for f in frames(6)]
    warnings = [r for r in caplog.records if "cannot measure its latency" in r.getMessage()]
    assert len(warnings) == 1 and "one call per disagreer" in warnings[0].getMessage()
    assert pc.second_round == "per-disagreer" and pc.latency_curve is None
    assert all(r.case in ("agreed", "disagreer", "majority") for r in results)


def test_label_table_matches_independent_onnxruntime_computation(onnx_models):
    import onnxruntime as ort

    with PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3) as pc:
        frame = frames(2, seed=5)[1]
        table = pc.label_table(frame)
        session = ort.InferenceSession(str(onnx_models["region"]), providers=["CPUExecutionProvider"])
        image = preprocess_reference(frame, pc.spec)
        k = len(pc.mask_set)
        pairs = np.array([[i, j] for i in range(k) for j in range(k)])
        batch = masked_batch_reference(image, pc.mask_set.windows, pairs)
        labels = session.run(["labels"], {"images": batch})[0].reshape(k, k)
        assert np.array_equal(table, labels)


def test_budget_case_is_reported(onnx_models):
    with PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3, budget=0) as pc:
        results = [pc.predict(f) for f in frames(24)]
    assert {r.case for r in results} <= {"agreed", "budget"}
    assert any(r.case == "budget" for r in results)
    assert all(r.two_mask_passes == 0 for r in results)


def test_torch_engine_and_original_way_agree_with_ort(onnx_models):
    model = build("region")
    ms = MaskSet.square(32, 5, masks_per_axis=3)
    with PatchCleanser(TorchEngine(model, (32, 32), max_batch=len(ms)), ms, SPEC) as torch_pc, \
            PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3) as ort_pc:
        for frame in frames(9, seed=3):
            a, b = torch_pc.predict(frame), ort_pc.predict(frame)
            assert a.label == b.label and a.case == b.case
            reference, passes = original_double_masking(model, torch.from_numpy(preprocess_reference(frame, SPEC)), ms)
            assert reference == a.label and passes >= len(ms)


def test_grayscale_and_rgba_frames_are_converted(onnx_models):
    with PatchCleanser.from_onnx(onnx_models["cnn"], backend="ort", patch="5", masks_per_axis=3) as pc:
        gray = frames(1)[0][:, :, 0]
        assert pc.predict(gray).label == pc.predict(np.repeat(gray[:, :, None], 3, axis=2)).label
        bgr = frames(1)[0]
        bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        assert pc.predict(bgra).label == pc.predict(bgr).label


def test_bad_frames_are_refused(onnx_models):
    with PatchCleanser.from_onnx(onnx_models["cnn"], backend="ort", patch="5", masks_per_axis=3) as pc:
        for bad in (np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8), np.zeros((5, 5, 2), np.uint8), "frame"):
            with pytest.raises(ConfigError):
                pc.predict(bad)


def test_mask_set_for_another_size_is_refused(onnx_models):
    engine = OrtEngine(onnx_models["cnn"], max_batch=9)
    with pytest.raises(ConfigError, match="mask set was built"):
        PatchCleanser(engine, MaskSet.square(64, 5, masks_per_axis=3), SPEC)


def test_engine_errors(tmp_path, onnx_models):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x01garbage")
    with pytest.raises(EngineError, match="cannot load"):
        OrtEngine(corrupt).activate()
    with pytest.raises(EngineError, match="does not exist"):
        OrtEngine(tmp_path / "missing.onnx").activate()
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(build("cnn"), (torch.zeros(4, 3, 32, 32),), str(fixed), input_names=["images"], dynamo=False)
    with pytest.raises(EngineError, match="batch axis is fixed"):
        OrtEngine(fixed).activate()
    engine = OrtEngine(onnx_models["cnn"], max_batch=4)
    with pytest.raises(EngineError, match="activate"):
        engine.infer(1)
    with engine:
        with pytest.raises(EngineError, match="outside 1..4"):
            engine.infer(5)
        assert engine.input_buffer(3).shape == (3, 3, 32, 32)
    with pytest.raises(EngineError, match="not available"):
        OrtEngine(onnx_models["cnn"], backend="ort-cuda").activate()


def test_backend_choice():
    assert resolve_backends("auto") == ("tensorrt", "ort-cuda", "ort")
    assert resolve_backends("ort") == ("ort",)
    with pytest.raises(EngineError, match="unknown backend"):
        resolve_backends("tpu")


def test_auto_falls_back_to_ort_cpu_and_says_so(onnx_models, caplog):
    engine = create_engine(onnx_models["cnn"], "auto", num_masks=9)
    try:
        if engine.backend == "ort":
            assert "CPUExecutionProvider" in engine.describe()
    finally:
        engine.deactivate()


@pytest.mark.parametrize("second_round", ["auto", "per-disagreer", "all"])
def test_a_batched_step_gives_every_frame_exactly_its_own_result(onnx_models, second_round):
    """Several frames in one step (one-mask images sharing calls, second rounds merged) = each frame alone."""
    k = 9
    with PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3, second_round=second_round,
                                 max_batch=4 * k + 5) as pc:
        assert pc.frames_per_call == 4
        shots = frames(24, seed=3)
        alone = [pc.predict(frame) for frame in shots]
        batched = [r for start in range(0, len(shots), 4) for r in pc.predict_batch(shots[start : start + 4])]
        for a, b in zip(alone, batched):
            assert (b.label, b.case, b.disagreers, b.level, b.passing_mask, b.one_mask_labels, b.two_mask_passes) == (
                a.label, a.case, a.disagreers, a.level, a.passing_mask, a.one_mask_labels, a.two_mask_passes)
        assert {r.case for r in batched} >= {"majority", "disagreer"}, "the steps must exercise both second-round outcomes"
        step = pc.predict_batch(shots[:4])
        assert step[0].batch_sizes[0] == 4 * k and all(s <= 4 * k + 5 for r in step for s in r.batch_sizes), \
            "the first round packs the frames' one-mask images into full calls"
        more = pc.predict_batch(shots[:7])  # more frames than one call holds: more calls, the same results
        assert [(r.label, r.case, r.two_mask_passes) for r in more] == [(a.label, a.case, a.two_mask_passes) for a in alone[:7]]
        assert more[0].batch_sizes[:2] == [4 * k + 5, 3 * k - 5]
        with pytest.raises(ConfigError, match="at least one frame"):
            pc.predict_batch([])


def test_label_tables_of_several_images_equal_one_at_a_time(onnx_models):
    with PatchCleanser.from_onnx(onnx_models["region"], backend="ort", patch="5", masks_per_axis=3, max_batch=64) as pc:
        shots = frames(5, seed=4)
        for table, frame in zip(pc.label_tables(shots), shots):
            np.testing.assert_array_equal(table, pc.label_table(frame))


def test_undefended_labels_are_the_plain_models(onnx_models):
    with PatchCleanser.from_onnx(onnx_models["cnn"], backend="ort", patch="5", masks_per_axis=3) as pc:
        for frame in frames(6, seed=5):
            plain = pc.undefended_labels(frame, 9)
            expected = OrtEngine(onnx_models["cnn"], backend="ort", max_batch=1).activate()
            expected.input_buffer(1)[:] = preprocess_reference(frame, pc.spec)[None]
            assert (plain == expected.infer(1)[0]).all() and pc.predict_undefended(frame) == plain[0]
