"""``--model triton://HOST:PORT/NAME``: the defense served by Triton, behind the same interface as the local driver.

:class:`ServedDefense` has what the commands and stream loops use of :class:`pcedge.runtime.driver.PatchCleanser`
(``predict``, ``predict_batch``, ``spec``, ``mask_set``, ``class_name``, ``engine.describe()``, ``schedule``), so
``pcedge predict`` and ``pcedge run`` (one or many sources: overlay, log, per-stream alarm, summary) work unchanged.
The client resizes each frame as the server's config publishes (never a guess: a model without it is not a
pcedge defense and is refused), sends it over gRPC with at most ``max_in_flight`` requests at once (the frames
of a multi-stream step go together, and Triton's batcher merges them with other clients' frames), and retries a
request whose server is unreachable with backoff for ``reconnect_s`` seconds: after a server restart the
stream carries on. :meth:`ServedDefense.predict_each` (what the stream loop calls) gives every frame its result
or a :class:`pcedge.result.FrameFailure`: ``refused`` (the server refused that request, in its own words),
``lost`` (sent, never answered) or ``unsent``; an answered frame is never discarded because another failed.
Past the reconnect window the server counts as failed: :class:`ServerUnavailableError` carries every frame's
outcome of that step. A frame's ``timings_ms["total"]`` is the client's end-to-end time (resize, queueing,
retries, network, server); the server's own stage times are beside it, its total as ``timings_ms["server"]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from ..errors import ConfigError, EngineError
from ..masks import MaskSpec
from ..result import FrameFailure, Result
from ..util.optional import require
from .protocol import FRAME, OUTPUTS, THREAT_MODEL, client_frame, results_from_outputs, spec_from_json, threat_from_json, threat_to_json

log = logging.getLogger("pcedge.serve")

SCHEME = "triton://"
RETRYABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


class ServerUnavailableError(EngineError):
    """The server stayed unreachable for the whole reconnect window; ``outcomes``: what each frame of the step got."""

    def __init__(self, message: str, outcomes: list[Result | FrameFailure] | None = None) -> None:
        super().__init__(message)
        self.outcomes = outcomes


def is_triton_uri(text: object) -> bool:
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_triton_uri(uri: str) -> tuple[str, str]:
    """``triton://host:port/name`` -> ("host:port", "name"); the port defaults to Triton's gRPC port, 8001."""
    parts = urlsplit(uri)
    name = parts.path.strip("/")
    if parts.scheme != "triton" or not parts.hostname or not name or "/" in name:
        raise ConfigError(f"{uri!r} is not a Triton model URI: use triton://HOST:PORT/MODEL (gRPC port, e.g. 8001)")
    return f"{parts.hostname}:{parts.port or 8001}", name


@dataclass
class ClientOptions:
    """How to reach the server: timeouts, the reconnect window, in-flight bound, TLS and headers (auth tokens)."""

    timeout_s: float = 30.0  # one request, end to end
    reconnect_s: float = 30.0  # how long an unreachable server is retried before frames count as lost
    max_in_flight: int = 8
    ssl: bool = False
    root_certificates: str | None = None  # PEM file paths, as tritonclient takes them
    private_key: str | None = None
    certificate_chain: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may carry an auth token


class _ServedEngine:
    """What ``model.engine`` answers for a served defense (logs and results name where it runs)."""

    def __init__(self, text: str) -> None:
        self._text = text

    def describe(self) -> str:
        return self._text


class ServedDefense:
    """A pcedge defense on a Triton server (see the module docstring)."""

    def __init__(self, uri: str, *, masks: MaskSpec | None = None, options: ClientOptions | None = None,
                 stop: threading.Event | None = None) -> None:
        """``stop`` (the run's stop event) cuts a retry short: the frames waiting on it count as lost or unsent."""
        grpc = require("tritonclient.grpc", "triton:// models (pip install 'tritonclient[grpc]')")
        self.uri, (self.url, self.model_name) = uri, parse_triton_uri(uri)
        self.options = options or ClientOptions()
        if self.options.max_in_flight < 1:
            raise ConfigError("max_in_flight must be >= 1")
        self._grpc = grpc
        self._client = grpc.InferenceServerClient(self.url, ssl=self.options.ssl, root_certificates=self.options.root_certificates,
                                                  private_key=self.options.private_key,
                                                  certificate_chain=self.options.certificate_chain)
        self.stop = stop or threading.Event()
        params, self.frames_per_call = self._published_config()
        self.spec = spec_from_json(params["preprocessing"])
        self.class_names = self.spec.class_names
        served = threat_from_json(params["threat_model"])
        self.threat = masks if masks is not None and masks != served else None  # None: the server's own
        self.mask_set = (self.threat or served).build(self.spec.input_size)  # for overlays; the server proves its own
        self.engine = _ServedEngine(f"triton {self.uri} ({params.get('classifier', '?')})")
        self.schedule = f"served ({params.get('second_round', 'auto')})"
        self.counts: Counter[str] = Counter()  # frames answered, and without a result by kind, over this client's life
        self._count_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.options.max_in_flight, thread_name_prefix="pcedge-triton")

    # ------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "ServedDefense":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    # ------------------------------------------------------------------------------- inference
    def class_name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def predict(self, frame: np.ndarray) -> Result:
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[Result]:
        """One request per frame, up to ``max_in_flight`` at once; results in the frames' order. A frame without a
        result raises (the server's refusal, or the server lost)."""
        outcomes = self.predict_each(frames)
        for outcome in outcomes:
            if isinstance(outcome, FrameFailure):
                raise (ServerUnavailableError if outcome.kind != "refused" else EngineError)(outcome.reason)
        return outcomes  # type: ignore[return-value]

    def predict_each(self, frames: Sequence[np.ndarray]) -> list[Result | FrameFailure]:
        """Every frame's result or :class:`FrameFailure`, in the frames' order (see the module docstring)."""
        if not frames:
            raise ConfigError("predict_each needs at least one frame")
        start = time.perf_counter()
        give_up = threading.Event()
        pending: list[Future | FrameFailure] = []
        for frame in frames:
            try:
                image = client_frame(frame, self.spec)
            except ConfigError as exc:
                pending.append(FrameFailure("refused", str(exc)))
                continue
            pending.append(self._pool.submit(self._infer_one, image, start, give_up))
        outcomes = [item if isinstance(item, FrameFailure) else item.result() for item in pending]
        step = Counter("answered" if isinstance(o, Result) else o.kind for o in outcomes)
        with self._count_lock:
            self.counts.update(step)
        if give_up.is_set() and not self.stop.is_set():  # a stopped run's cut-short frames are counted, not an error
            raise ServerUnavailableError(f"{self.uri} unreachable for {self.options.reconnect_s:.0f} s: giving up; {step['lost']} "
                                         f"frame(s) lost (sent, never answered), {step['unsent']} never sent", outcomes=outcomes)
        return outcomes

    @property
    def lost(self) -> int:
        """Frames sent and never answered, over this client's life."""
        with self._count_lock:
            return self.counts["lost"]

    def predict_undefended(self, frame: np.ndarray) -> int:
        raise ConfigError("the undefended label needs a local engine: --show-undefended is not available with triton:// models")

    def sent_bytes(self, frame: np.ndarray) -> int:
        """Bytes of tensor data one request carries for this frame (the resized frame, plus a threat model if asked)."""
        extra = len(threat_to_json(self.threat)) if self.threat else 0
        return client_frame(frame, self.spec).nbytes + extra

    # ------------------------------------------------------------------------------- internals
    def _published_config(self) -> tuple[dict[str, str], int]:
        try:
            config = self._with_retry(lambda: self._client.get_model_config(self.model_name, as_json=True, headers=self.options.headers,
                                                                             client_timeout=self.options.timeout_s))
        except EngineError as exc:
            raise EngineError(f"{self.uri}: {exc}") from None
        config = config.get("config", config)
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "preprocessing" not in params or "threat_model" not in params:
            raise EngineError(f"{self.uri} is not a pcedge defense (its config publishes no preprocessing and threat model): "
                              "serve a repository made by pcedge triton repo, and name its defense model, not the classifier")
        return params, int(config.get("max_batch_size", 1)) or 1

    def _infer_one(self, image: np.ndarray, start: float, give_up: threading.Event) -> Result | FrameFailure:
        if give_up.is_set() or self.stop.is_set():
            return FrameFailure("unsent", "not sent: the server was given up, or the run stopped, before its turn")
        grpc = self._grpc
        batch = image[None]
        tensors = [grpc.InferInput(FRAME, list(batch.shape), "UINT8")]
        tensors[0].set_data_from_numpy(batch)
        if self.threat is not None:
            threat = np.array([[threat_to_json(self.threat).encode()]], dtype=np.object_)
            tensors.append(grpc.InferInput(THREAT_MODEL, [1, 1], "BYTES"))
            tensors[1].set_data_from_numpy(threat)
        outputs = [grpc.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            reply = self._with_retry(lambda: self._client.infer(self.model_name, tensors, outputs=outputs, headers=self.options.headers,
                                                                client_timeout=self.options.timeout_s), give_up)
        except ServerUnavailableError as exc:
            give_up.set()
            return FrameFailure("lost", f"sent, never answered: {exc}")
        except EngineError as exc:
            return FrameFailure("refused", str(exc))
        result = results_from_outputs({name: reply.as_numpy(name) for name in OUTPUTS}, self.class_name, self.engine.describe())[0]
        result.timings_ms["server"] = result.timings_ms["total"]
        result.timings_ms["total"] = (time.perf_counter() - start) * 1e3
        return result

    def _with_retry(self, call, give_up: threading.Event | None = None):
        """``call()``, retried with backoff while the server is unreachable, up to ``reconnect_s`` (cut short when the
        step gives up or the run stops); the server's refusals are raised at once with its own message."""
        utils = require("tritonclient.utils")
        deadline = time.monotonic() + self.options.reconnect_s
        delay, warned, start = 0.25, False, time.monotonic()
        while True:
            try:
                result = call()
            except utils.InferenceServerException as exc:
                if exc.status() not in RETRYABLE:
                    raise EngineError(f"the server refused the request: {exc.message()}") from None
                if time.monotonic() + delay > deadline or (give_up is not None and give_up.is_set()):
                    raise ServerUnavailableError(exc.message() or str(exc)) from None
                if not warned:
                    log.warning("%s: server unreachable (%s); retrying for up to %.0f s", self.uri, exc.status(), self.options.reconnect_s)
                    warned = True
                if self.stop.wait(delay):
                    raise ServerUnavailableError("the run stopped while the server was unreachable") from None
                delay = min(delay * 2, 2.0)
                continue
            if warned:
                log.warning("%s: server reachable again after %.1f s", self.uri, time.monotonic() - start)
            return result


def warm_up(url: str, model: str, timeout_s: float = 300.0) -> float:
    """One black frame through ``model`` (its drivers measure the classifier's latency curve on first use), so the
    first camera does not wait for it; returns the seconds it took."""
    start = time.monotonic()
    with ServedDefense(f"{SCHEME}{url}/{model}", options=ClientOptions(timeout_s=timeout_s, max_in_flight=1)) as served:
        served.predict(np.zeros((*served.spec.input_size, 3), np.uint8))
    return time.monotonic() - start
