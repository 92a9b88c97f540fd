"""An engine whose "inference" is a BLS call to the classifier model on the same Triton server.

Inside Triton's Python backend the defense runs the ordinary driver (:class:`pcedge.runtime.driver.PatchCleanser`):
the writer fills this engine's host buffer with masked images exactly as it fills ONNX Runtime's, and
``_infer(n)`` forwards the first n images to the classifier with ``pb_utils.InferenceRequest(...).exec()``.
The buffer holds the classifier's ``max_batch_size`` images, so the driver packs every frame's images into
as few BLS calls as the classifier allows, and the classifier's own dynamic batcher may merge the calls of
several defense instances further.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EngineError
from ..runtime.base import Engine, InputMetadata

LABELS_OUTPUT = "labels"


class TritonBlsEngine(Engine):
    """The classifier ``model_name`` (input ``input_name``, (3, H, W) float32; output ``labels``) through BLS."""

    backend = "triton-bls"

    def __init__(self, model_name: str, input_name: str, image_size: tuple[int, int], max_batch: int, pb_utils: Any) -> None:
        super().__init__(f"bls-{model_name}")
        self.model_name, self.input_name = model_name, input_name
        self._meta = InputMetadata(input_name, (3, int(image_size[0]), int(image_size[1])), np.dtype(np.float32), int(max_batch))
        self._pb = pb_utils
        self._host: np.ndarray | None = None

    @property
    def input_metadata(self) -> InputMetadata:
        return self._meta

    def describe(self) -> str:
        return f"triton BLS -> {self.model_name}"

    def _activate(self) -> None:
        self._host = np.zeros((self._meta.max_batch, *self._meta.shape), np.float32)

    def _deactivate(self) -> None:
        self._host = None

    def _buffer(self) -> np.ndarray:
        return self._host

    def _infer(self, n: int) -> np.ndarray:
        pb = self._pb
        request = pb.InferenceRequest(model_name=self.model_name, requested_output_names=[LABELS_OUTPUT],
                                      inputs=[pb.Tensor(self.input_name, self._host[:n])])
        response = request.exec()
        if response.has_error():
            raise EngineError(f"the classifier {self.model_name} failed: {response.error().message()}")
        return pb.get_output_tensor_by_name(response, LABELS_OUTPUT).as_numpy()
