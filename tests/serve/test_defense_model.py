"""The served defense model's ``execute`` answers every request of a Triton batch, whatever fails inside one of them.

``execute`` is called here in-process, with its real driver (ONNX Runtime, real photos) but without tritonserver:
Triton's ``triton_python_backend_utils`` exists only inside the server's stub process, so a minimal stand-in
with the four calls ``execute`` makes (tensor lookup, tensors, responses, errors) plays its part. The real
server runs the same method in tests/serve/test_triton.py. A failure is injected into one request of a batch:
an exception the driver raises whenever that request's frame is in the step.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pcedge.masks import MaskSpec
from pcedge.preprocess import resolve_spec
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.modelfile import read_onnx_metadata
from pcedge.runtime.ort import OrtEngine
from pcedge.serve.defense_model import ServedMetrics, TritonPythonModel
from pcedge.serve.protocol import FRAME, FRAME_ORDER, results_from_outputs, server_spec
from tests.models import export_test_model


@dataclass
class _Tensor:
    name: str
    value: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.value


@dataclass
class _Response:
    output_tensors: list[_Tensor] | None = None
    error: Any = None


class _PbUtils:
    """The part of Triton's pb_utils that execute() uses."""

    Tensor = _Tensor
    InferenceResponse = _Response
    TritonError = str

    @staticmethod
    def get_input_tensor_by_name(request: dict[str, np.ndarray], name: str) -> _Tensor | None:
        return _Tensor(name, request[name]) if name in request else None


POISON = 7  # a frame filled with this value makes the (patched) driver raise


@pytest.fixture
def served(tmp_path, monkeypatch):
    path = export_test_model("region", tmp_path / "region.onnx")
    spec = server_spec(resolve_spec({}, read_onnx_metadata(path)))
    model = TritonPythonModel()
    model.pb, model.spec, model.default_threat, model.second_round = _PbUtils, spec, MaskSpec("5", 3), "auto"
    model.engine = OrtEngine(path, backend="ort", max_batch=4 * 9).activate()
    model.drivers = OrderedDict()
    model.metrics = ServedMetrics(_PbUtils, "region")  # the stand-in has no custom metrics: counting is off
    real = PatchCleanser.predict_batch
    steps: list[int] = []

    def failing_on_poison(self, frames):
        steps.append(len(frames))
        if any((frame == POISON).all() for frame in frames):
            raise RuntimeError("injected failure")
        return real(self, frames)

    monkeypatch.setattr(PatchCleanser, "predict_batch", failing_on_poison)
    yield model, spec, steps
    model.engine.deactivate()


def _frames(spec, seed: int, count: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *spec.input_size, 3), dtype=np.uint8)


def test_one_failing_request_does_not_fail_the_others_of_its_batch(served):
    model, spec, steps = served
    poison = np.full((1, *spec.input_size, 3), POISON, np.uint8)
    requests = [{FRAME: _frames(spec, 0, 2)}, {FRAME: poison}, {FRAME: _frames(spec, 1)}]
    responses = model.execute(requests)
    assert "injected failure" in responses[1].error and responses[1].output_tensors is None
    driver = model.driver(model.default_threat)
    for request, response in zip((requests[0], requests[2]), (responses[0], responses[2])):
        assert response.error is None
        got = results_from_outputs({t.name: t.value for t in response.output_tensors}, str, "served")
        alone = real_results(driver, request[FRAME])
        assert [(r.label, r.case, r.disagreers, r.level) for r in got] == [(r.label, r.case, r.disagreers, r.level) for r in alone]
    assert steps[0] == 4, "the batch's frames first go through one step together"


def real_results(driver: PatchCleanser, frames: np.ndarray):
    """The driver's own results for these frames, outside the patched step (frame order as the server takes it)."""
    assert driver.frame_order == FRAME_ORDER
    return [PatchCleanser.predict_each(driver, [frame])[0] for frame in frames]


def test_a_request_that_breaks_parsing_is_its_own_error(served):
    model, spec, _ = served
    responses = model.execute([{"NOT_A_FRAME": _frames(spec, 0)}, {FRAME: _frames(spec, 2)}])
    assert responses[0].error and "internal error" in responses[0].error
    assert responses[1].error is None and responses[1].output_tensors
