"""The served defense: a Triton Python-backend model that runs the batched double-masking driver.

Triton's dynamic batcher hands ``execute`` the requests of several cameras at once; their frames go through one
:meth:`PatchCleanser.predict_batch` step, so the one-mask images of all of them share classifier calls and
their second rounds advance in lockstep (each frame's result is exactly what it would get alone). The engine is
:class:`TritonBlsEngine`: masked images reach the classifier model by BLS. A request that asks for another
threat model (``THREAT_MODEL``) gets a driver for that mask set (built and proved here, insecure sets refused;
at most ``MAX_THREAT_MODELS`` kept). Every failure becomes that request's error response; the model stays up.

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
        pb = self.pb
        responses: list[Any] = [None] * len(requests)
        groups: dict[MaskSpec, list[tuple[int, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            try:
                frames = pb.get_input_tensor_by_name(request, FRAME).as_numpy()
                threat_tensor = pb.get_input_tensor_by_name(request, THREAT_MODEL)
                threat = self.default_threat
                if threat_tensor is not None:
                    texts = {_text(v) for v in threat_tensor.as_numpy().reshape(-1)}
                    if len(texts) != 1:
                        raise PcedgeError("THREAT_MODEL must be the same for every frame of a request")
                    threat = threat_from_json(texts.pop())
                self.driver(threat)  # build (and prove) it now, so an insecure request fails alone
                groups.setdefault(threat, []).append((i, frames))
            except PcedgeError as exc:
                responses[i] = pb.InferenceResponse(error=pb.TritonError(str(exc)))
        for threat, items in groups.items():
            frames = [frame for _, batch in items for frame in batch]
            try:
                results = self.driver(threat).predict_batch(frames)
            except PcedgeError as exc:
                for i, _ in items:
                    responses[i] = pb.InferenceResponse(error=pb.TritonError(str(exc)))
                continue
            start = 0
            for i, batch in items:
                mine = results[start : start + len(batch)]
                start += len(batch)
                responses[i] = pb.InferenceResponse(output_tensors=[pb.Tensor(name, value)
                                                                    for name, value in result_outputs(mine).items()])
        return responses

    def finalize(self) -> None:
        self.engine.deactivate()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
