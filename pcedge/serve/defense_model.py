"""The served defense: a Triton Python-backend model that runs the batched double-masking driver.

Triton's dynamic batcher hands ``execute`` the requests of several cameras at once; their frames go through one
:meth:`PatchCleanser.predict_batch` step, so the one-mask images of all of them share classifier calls and
their second rounds advance in lockstep (each frame's result is exactly what it would get alone). The engine is
:class:`TritonBlsEngine`: masked images reach the classifier model by BLS. A request that asks for another
threat model (``THREAT_MODEL``) gets a driver for that mask set (built and proved here, insecure sets refused;
at most ``MAX_THREAT_MODELS`` kept). Every failure, of any kind, becomes that request's error response and the
batch's other requests are answered; the model stays up.

The repository's ``model.py`` is a two-line shim importing :class:`TritonPythonModel` from here, so the server's
Python must have pcedge installed (``pcedge triton serve`` starts the server with this interpreter).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import PcedgeError
from ..masks import MaskSpec
from ..runtime.driver import PatchCleanser
from .bls_engine import TritonBlsEngine
from .protocol import FRAME, FRAME_ORDER, THREAT_MODEL, result_outputs, spec_from_json, threat_from_json

log = logging.getLogger("pcedge.serve")
MAX_THREAT_MODELS = 4


class TritonPythonModel:
    """Triton's Python-backend interface: ``initialize``, ``execute``, ``finalize``."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.spec = spec_from_json(params["server_preprocessing"])
        self.default_threat = threat_from_json(params["threat_model"])
        self.second_round = params.get("second_round", "auto")
        self.engine = TritonBlsEngine(params["classifier"], params["classifier_input"], self.spec.input_size,
                                      int(params["classifier_max_batch"]), pb_utils)
        self.engine.activate()
        self.drivers: OrderedDict[MaskSpec, PatchCleanser] = OrderedDict()
        self.metrics = ServedMetrics(pb_utils, args.get("model_name", "defense"))

    def driver(self, threat: MaskSpec) -> PatchCleanser:
        """The driver for a threat model, built on first use (the latency curve is measured then, through BLS)."""
        if threat in self.drivers:
            self.drivers.move_to_end(threat)
            return self.drivers[threat]
        mask_set = threat.build(self.spec.input_size)  # refuses a mask set that does not cover its patch
        driver = PatchCleanser(self.engine, mask_set, self.spec, second_round=self.second_round, frame_order=FRAME_ORDER)
        self.drivers[threat] = driver
        while len(self.drivers) > MAX_THREAT_MODELS:
            self.drivers.popitem(last=False)
        return driver

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answer every request of Triton's batch: the frames of all requests with the same threat model in one
        driver step; any exception inside one request becomes that request's error, and the others are answered."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[MaskSpec, list[tuple[int, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            try:
                frames = self.pb.get_input_tensor_by_name(request, FRAME).as_numpy()
                threat_tensor = self.pb.get_input_tensor_by_name(request, THREAT_MODEL)
                threat = self.default_threat
                if threat_tensor is not None:
                    texts = {_text(v) for v in threat_tensor.as_numpy().reshape(-1)}
                    if len(texts) != 1:
                        raise PcedgeError("THREAT_MODEL must be the same for every frame of a request")
                    threat = threat_from_json(texts.pop())
                self.driver(threat)  # build (and prove) it now, so an insecure request fails alone
                groups.setdefault(threat, []).append((i, frames))
            except Exception as exc:  # noqa: BLE001 - a request's failure is its own response, never the batch's
                responses[i] = self._error(exc)
        for threat, items in groups.items():
            self._answer(self.driver(threat), items, responses)
        return responses

    def _answer(self, driver: PatchCleanser, items: list[tuple[int, np.ndarray]], responses: list[Any]) -> None:
        """One step for the frames of ``items``' requests; if it fails, each request again alone, so the failure
        reaches only the request that caused it (a rare path: the step that failed is simply repeated smaller)."""
        try:
            results = driver.predict_batch([frame for _, batch in items for frame in batch])
        except Exception as exc:  # noqa: BLE001
            if len(items) > 1:
                for item in items:
                    self._answer(driver, [item], responses)
            else:
                responses[items[0][0]] = self._error(exc)
            return
        self.metrics.count(results)
        start = 0
        for i, batch in items:
            mine = results[start : start + len(batch)]
            start += len(batch)
            responses[i] = self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(name, value)
                                                                     for name, value in result_outputs(mine).items()])

    def _error(self, exc: Exception) -> Any:
        """A request's error response: pcedge's own errors in their words, anything else named and logged."""
        self.metrics.failed()
        if not isinstance(exc, PcedgeError):
            log.error("a request failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        text = str(exc) if isinstance(exc, PcedgeError) else f"internal error in the defense model: {type(exc).__name__}: {exc}"
        return self.pb.InferenceResponse(error=self.pb.TritonError(text))

    def finalize(self) -> None:
        self.metrics.close()
        self.engine.deactivate()


class ServedMetrics:
    """The defense's own counters on Triton's metrics port (the Python backend's custom metrics), beside Triton's
    ``nv_inference_*``: ``pcedge_served_frames_total{model,level}``, ``pcedge_served_second_round_images_total{model}``,
    ``pcedge_served_request_errors_total{model}``. A server without custom metrics (before Triton 23.05) has none."""

    def __init__(self, pb_utils: Any, model: str) -> None:
        family = getattr(pb_utils, "MetricFamily", None)
        self._levels: dict[str, Any] = {}
        self._enabled = family is not None
        if not self._enabled:
            return
        self._model = model
        # the families must outlive their metrics (Triton refuses to count on a metric whose family is gone)
        self._frames = family(name="pcedge_served_frames_total", description="Frames defended, by alarm level",
                              kind=family.COUNTER)
        self._second_family = family(name="pcedge_served_second_round_images_total", description="Two-mask images classified",
                                     kind=family.COUNTER)
        self._errors_family = family(name="pcedge_served_request_errors_total", description="Requests answered with an error",
                                     kind=family.COUNTER)
        self._second = self._second_family.Metric(labels={"model": model})
        self._errors = self._errors_family.Metric(labels={"model": model})

    def count(self, results: list[Any]) -> None:
        if not self._enabled:
            return
        for result in results:
            metric = self._levels.get(result.level)
            if metric is None:
                metric = self._levels[result.level] = self._frames.Metric(labels={"model": self._model, "level": result.level})
            metric.increment(1)
            if result.two_mask_passes:
                self._second.increment(result.two_mask_passes)

    def failed(self) -> None:
        if self._enabled:
            self._errors.increment(1)

    def close(self) -> None:
        """Metrics before their families, as Triton requires."""
        if self._enabled:
            self._enabled = False
            self._levels.clear()
            del self._second, self._errors


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
