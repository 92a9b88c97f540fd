"""One door to a defended model: a model file opens the local driver, ``triton://HOST:PORT/NAME`` the served defense.

Both answer the same calls (``predict``, ``predict_batch``, ``predict_each``, ``spec``, ``mask_set``,
``class_name``, ``engine.describe()``, ``schedule``), so every command and the stream loop take either.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..masks import MaskSpec
from ..runtime.driver import PatchCleanser
from .client import ClientOptions, ServedDefense, is_triton_uri


def open_defended_model(model: str | Path, *, masks: MaskSpec | None = None, backend: str = "auto", device: str = "CPU",
                        second_round: str = "auto",
                        budget: int | None = None, spec_overrides: dict[str, Any] | None = None,
                        max_batch: int | Callable[[int], int] | None = None,
                        client: ClientOptions | None = None, stop: threading.Event | None = None) -> PatchCleanser | ServedDefense:
    """The local driver over ``model`` (an ONNX file), or the client of a served defense (``stop``: the run's stop
    event, which cuts its retries short). A served defense's engine, schedule and preprocessing are the server's
    (``pcedge triton repo``): asking for others here is refused."""
    masks = masks or MaskSpec()
    if not is_triton_uri(model):
        return PatchCleanser.from_onnx(model, backend=backend, device=device, masks=masks, second_round=second_round, budget=budget,
                                       spec_overrides=spec_overrides, max_batch=max_batch)
    if any(v is not None for v in (spec_overrides or {}).values()):
        raise ConfigError("a served model's preprocessing is the server's (published in its config): drop the preprocessing flags")
    if backend != "auto" or device != "CPU" or second_round != "auto" or budget is not None:
        raise ConfigError("--backend, --device, --second-round and --budget are the server's choice (pcedge triton repo) with "
                          "triton:// models")
    return ServedDefense(str(model), masks=None if masks == MaskSpec() else masks, options=client, stop=stop)
