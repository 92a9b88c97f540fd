"""The classifier as a Python-backend model running ONNX Runtime, for servers that have only the Python backend
(the pip-installable server, CPU-only hosts). NVIDIA's container runs the same ONNX file natively instead
(``platform: "onnxruntime_onnx"``); both answer the same ``labels`` and ``logits`` outputs.

It runs the exported file with :class:`pcedge.runtime.ort.OrtEngine`'s session settings, so a label served from
here is the label the local ONNX Runtime engine computes for the same images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from ..runtime.ort import OrtEngine

OUTPUTS = ("labels", "logits")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads = int(params.get("intra_op_threads", "0")) or None
        # no spinning: between calls the cores go to the defense's masking and Triton's own threads, not to idle ORT workers
        self.engine = OrtEngine(path, backend="ort", max_batch=int(config["max_batch_size"]), threads=threads,
                                spinning=params.get("ort_allow_spinning", "0") == "1").activate()
        self.input_name = self.engine.input_metadata.name

    def execute(self, requests: list[Any]) -> list[Any]:
        """All requests of an execution in one ONNX Runtime call (what the dynamic batcher merged), split back."""
        pb = self.pb
        try:
            batches = [np.asarray(pb.get_input_tensor_by_name(r, self.input_name).as_numpy(), np.float32) for r in requests]
            wanted = sorted({name for r in requests for name in (r.requested_output_names() or OUTPUTS)})
            images = batches[0] if len(batches) == 1 else np.concatenate(batches)
            outputs = self.engine.run_outputs(np.ascontiguousarray(images), wanted)
        except EngineError as exc:
            return [pb.InferenceResponse(error=pb.TritonError(str(exc))) for _ in requests]
        responses, start = [], 0
        for request, batch in zip(requests, batches):
            names = request.requested_output_names() or OUTPUTS
            end = start + len(batch)
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(n, outputs[n][start:end]) for n in names]))
            start = end
        return responses

    def finalize(self) -> None:
        self.engine.deactivate()
