"""The defense served from a real Triton server: decisions equal the local driver's, batching across cameras,
restarts, malformed requests, and the generated configs against Triton's schema."""

from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

from pcedge.errors import ConfigError, EngineError
from pcedge.masks import MaskSpec
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.modelfile import read_onnx_metadata
from pcedge.runtime.ort import OrtEngine
from pcedge.serve.client import ClientOptions, ServedDefense, ServerUnavailableError
from pcedge.serve.protocol import client_frame, server_spec

from .conftest import SERVER_PYTHON, require_server, tiny_bicubic_model

FIELDS = ("label", "case", "disagreers", "one_mask_labels", "passing_mask", "level")  # the decision (passes depend on the schedule)


def photos(count: int) -> list[np.ndarray]:
    """Real photos (scikit-image's), BGR as OpenCV gives them, in several sizes and aspect ratios."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed (its photos are the test frames; make test installs it)")
    images = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket(), skdata.immunohistochemistry(),
              np.stack([skdata.camera()] * 3, axis=2), skdata.hubble_deep_field(), skdata.retina()]
    return [np.ascontiguousarray(image[:, :, ::-1]) for image in images[:count]]


def local_model(path, spec: PreprocessSpec, masks: MaskSpec = MaskSpec()) -> PatchCleanser:
    engine = OrtEngine(path, backend="ort", max_batch=36)
    return PatchCleanser(engine, masks.build(spec.input_size), spec, second_round="per-disagreer")


def same(served, local) -> dict:
    return {f: (getattr(served, f), getattr(local, f)) for f in FIELDS if getattr(served, f) != getattr(local, f)}


def lite0_spec(repository) -> PreprocessSpec:
    return PreprocessSpec.from_metadata(read_onnx_metadata(repository / "lite0_classifier" / "1" / "model.onnx"))


# ------------------------------------------------------------------------------------------ decisions
def test_served_decisions_equal_the_local_driver_on_the_same_pipeline(server, repository):
    """Lite0 (bilinear): served == local driver on the client-resized frame, the pipeline the config records."""
    spec = lite0_spec(repository)
    with ServedDefense(server.model_uri("lite0")) as served, local_model(repository / "lite0_classifier/1/model.onnx",
                                                                          server_spec(spec)) as local:
        assert served.spec == spec and len(served.mask_set) == 36
        frames = photos(6)
        results = served.predict_batch(frames)
        for frame, result in zip(frames, results):
            expected = local.predict(client_frame(frame, spec)[:, :, ::-1].copy())  # the local driver takes BGR
            assert same(result, expected) == {}
        assert {r.case for r in results} - {"agreed"}, "real photos should exercise second rounds"


def test_served_bicubic_model_equals_the_local_driver_on_the_raw_frame(server, repository):
    """With bicubic resizing the client's resize is the local driver's own: served == local on the camera frame."""
    path = repository / "tiny_classifier" / "1" / "model.onnx"
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(path))
    with ServedDefense(server.model_uri("tiny")) as served, local_model(path, spec) as local:
        for frame in photos(8):
            assert same(served.predict(frame), local.predict(frame)) == {}


def test_a_secure_threat_model_request_is_served_and_an_insecure_one_refused(server, repository):
    spec = lite0_spec(repository)
    other = MaskSpec("3%", 5)
    frame = photos(1)[0]
    with ServedDefense(server.model_uri("lite0"), masks=other) as served, \
            local_model(repository / "lite0_classifier/1/model.onnx", server_spec(spec), other) as local:
        assert len(served.mask_set) == 25
        assert same(served.predict(frame), local.predict(client_frame(frame, spec)[:, :, ::-1].copy())) == {}
    with pytest.raises(ConfigError, match="smaller than the patch"):  # refused before a frame is sent (and by the server:
        ServedDefense(server.model_uri("lite0"), masks=MaskSpec("2%", 6, mask_size=8))  # test_malformed_requests...)


# ------------------------------------------------------------------------------------------ batching across cameras
def test_four_concurrent_clients_share_classifier_batches_larger_than_k(server, repository):
    path = repository / "tiny_classifier" / "1" / "model.onnx"
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(path))
    frames = photos(8)
    before = classifier_batches(server, "tiny_classifier")
    results: dict[int, list] = {}

    def camera(index: int) -> None:
        with ServedDefense(server.model_uri("tiny"), options=ClientOptions(max_in_flight=1)) as client:
            results[index] = [client.predict(frame) for frame in frames]

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = classifier_batches(server, "tiny_classifier")
    grown = {size: n - before.get(size, 0) for size, n in after.items() if n > before.get(size, 0)}
    assert max(grown) > 36, f"no classifier execution merged several cameras' frames: {grown}"
    with local_model(path, spec) as local:
        expected = [local.predict(frame) for frame in frames]
    for index in range(4):
        assert [same(r, e) for r, e in zip(results[index], expected)] == [{}] * len(frames)


def classifier_batches(server, model: str) -> dict[int, int]:
    """Executions per batch size, from Triton's statistics API."""
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{model}/stats") as reply:
        stats = json.load(reply)["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


# ------------------------------------------------------------------------------------------ bad input
def test_malformed_requests_get_an_error_and_the_server_stays_healthy(server):
    grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (make test installs it; pip install 'tritonclient[grpc]')")
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(server.grpc_url)

    def send(array: np.ndarray, dtype: str, threat: str | None = None) -> None:
        inputs = [grpc.InferInput("FRAME", list(array.shape), dtype)]
        inputs[0].set_data_from_numpy(array)
        if threat is not None:
            inputs.append(grpc.InferInput("THREAT_MODEL", [1, 1], "BYTES"))
            inputs[1].set_data_from_numpy(np.array([[threat.encode()]], dtype=np.object_))
        client.infer("tiny", inputs, client_timeout=60)

    cases = {
        "wrong dtype": (np.zeros((1, 32, 32, 3), np.float32), "FP32", None),
        "wrong shape": (np.zeros((1, 32, 32, 1), np.uint8), "UINT8", None),
        "larger than the input": (np.zeros((1, 64, 64, 3), np.uint8), "UINT8", None),
        "insecure masks": (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", json.dumps({"patch": "10%", "masks_per_axis": 6, "mask_size": 3})),
        "unknown threat field": (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", json.dumps({"patches": 2})),
        "threat not JSON": (np.zeros((1, 32, 32, 3), np.uint8), "UINT8", "2%"),
    }
    for name, (array, dtype, threat) in cases.items():
        with pytest.raises(InferenceServerException) as refused:
            send(array, dtype, threat)
        assert refused.value.message(), name
    assert server.is_ready()
    send(np.zeros((1, 32, 32, 3), np.uint8), "UINT8")  # still answers


def test_a_model_that_is_not_a_pcedge_defense_is_refused_with_the_reason(server):
    with pytest.raises(EngineError, match="not a pcedge defense"):
        ServedDefense(server.model_uri("tiny_classifier"))
    with pytest.raises(EngineError, match="refused"):
        ServedDefense(server.model_uri("no_such_model"))


# ------------------------------------------------------------------------------------------ faults
def test_a_server_restart_mid_stream_loses_no_frame(tmp_path, caplog):
    """Kill -> restart on the same ports while a client streams: every frame gets its result, the client said so."""
    require_server()
    from pcedge.serve.repository import RepositoryOptions, write_repository
    from pcedge.serve.server import TritonServer

    write_repository(tiny_bicubic_model(tmp_path), tmp_path / "repo", RepositoryOptions(name="tiny", classifier="python"))
    frames = photos(8) * 3
    with TritonServer(tmp_path / "repo", python=SERVER_PYTHON) as server:
        spec = None
        with ServedDefense(server.model_uri("tiny"), options=ClientOptions(reconnect_s=90, timeout_s=60)) as client:
            spec = client.spec
            results = [client.predict(frame) for frame in frames[:8]]
            server.kill()
            restarter = threading.Thread(target=server.start)
            restarter.start()
            results += [client.predict(frame) for frame in frames[8:]]
            restarter.join()
            assert client.lost == 0
        with local_model(tmp_path / "repo" / "tiny_classifier" / "1" / "model.onnx", spec) as local:
            assert [same(r, local.predict(f)) for r, f in zip(results, frames)] == [{}] * len(frames)
        assert "server unreachable" in caplog.text and "reachable again" in caplog.text
        with ServedDefense(server.model_uri("tiny"), options=ClientOptions(reconnect_s=2)) as short:
            server.kill()
            with pytest.raises(ServerUnavailableError, match=r"unreachable for 2 s: giving up; 1 frame\(s\) lost"):
                short.predict(frames[0])


def test_the_defense_reports_its_own_counters_on_tritons_metrics_port(server):
    """The Python backend's custom metrics, beside Triton's own nv_inference_* on the metrics port."""
    with ServedDefense(server.model_uri("tiny")) as served:
        results = served.predict_batch(photos(4))
    with urllib.request.urlopen(server.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    frames = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
              for line in text.splitlines() if line.startswith("pcedge_served_frames_total{") and 'model="tiny"' in line}
    assert frames and sum(frames.values()) >= len(results), text[:2000]
    assert any(f'level="{r.level}"' in labels for r in results for labels in frames)
    assert "pcedge_served_request_errors_total" in text and "nv_inference_count" in text
