"""pcedge triton repo / serve and triton:// models in pcedge predict and pcedge run, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import pytest

from pcedge.cli import main
from pcedge.serve.repository import parse_config
from tests.video.clips import write_numbered_clip

from .conftest import ROOT, SERVER_PYTHON, require_server, tiny_bicubic_model
from .test_triton import photos


@pytest.mark.parametrize("kind, extra", [("python", []), ("onnx", ["--device", "gpu", "--trt-accelerate"]),
                                         ("tensorrt", ["--device", "gpu"]), ("onnx", [])])
def test_repo_writes_configs_that_parse_against_tritons_schema(tmp_path, kind, extra, capsys):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (make test installs it; pip install 'tritonclient[grpc]')")
    model = tiny_bicubic_model(tmp_path)
    out = tmp_path / "repo"
    assert main(["triton", "repo", "--model", str(model), "--out", str(out), "--classifier", kind, *extra]) == 0
    assert "checked against Triton's schema" in capsys.readouterr().out
    defense = parse_config((out / "tiny" / "config.pbtxt").read_text())
    classifier = parse_config((out / "tiny_classifier" / "config.pbtxt").read_text())
    k = int(defense.parameters["num_masks"].string_value)
    assert defense.backend == "python" and k == 36 and (out / "tiny" / "1" / "model.py").is_file()
    assert classifier.max_batch_size == (4 * k if "gpu" in extra else k) and all(s % k == 0 for s in classifier.dynamic_batching.preferred_batch_size)
    assert {"platform": classifier.platform, "backend": classifier.backend}[
        "backend" if kind == "python" else "platform"] == {"python": "python", "onnx": "onnxruntime_onnx",
                                                            "tensorrt": "tensorrt_plan"}[kind]
    assert [tuple(i.dims) for i in classifier.input] == [(3, 32, 32)] and [tuple(i.dims) for i in defense.input][0] == (32, 32, 3)
    if kind == "tensorrt":
        assert "trtexec --onnx=model.onnx --saveEngine=1/model.plan" in (out / "tiny_classifier" / "build_plan.sh").read_text()
    if "--trt-accelerate" in extra:
        assert classifier.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"


@pytest.mark.parametrize("args, message", [
    (["--classifier", "tensorrt"], "runs on a GPU"),
    (["--classifier-batch", "50"], "not a multiple of K=36"),
    (["--mask-size", "4"], "smaller than the patch"),
    (["--trt-accelerate"], "for the onnx classifier on a GPU"),
])
def test_repo_refuses_what_cannot_serve_securely_or_at_all(tmp_path, args, message, capsys):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (make test installs it; pip install 'tritonclient[grpc]')")
    model = tiny_bicubic_model(tmp_path)
    assert main(["triton", "repo", "--model", str(model), "--out", str(tmp_path / "repo"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "repo" / "tiny" / "config.pbtxt").exists()


def test_predict_and_run_take_a_triton_model(server, tmp_path, capsys):
    images = []
    for i, frame in enumerate(photos(3)):
        images.append(str(tmp_path / f"p{i}.png"))
        cv2.imwrite(images[-1], frame)
    assert main(["predict", "--model", server.model_uri("lite0"), *images, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all(line["backend"].startswith("triton ") for line in lines)
    clips = [write_numbered_clip(tmp_path / f"c{i}.avi", 6, fourcc="MJPG") for i in range(2)]
    log = tmp_path / "frames.jsonl"
    code = main(["run", "--model", server.model_uri("tiny"), "--source", f"a={clips[0]}", "--source", f"b={clips[1]}",
                 "--headless", "--log", str(log), "-q"])
    assert code == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    frames = [r for r in records if "label" in r]
    assert sorted({r["stream_name"] for r in frames}) == ["a", "b"] and len(frames) == 12


def test_run_against_a_server_that_is_not_there_says_so(tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (make test installs it; pip install 'tritonclient[grpc]')")
    clip = write_numbered_clip(tmp_path / "c.avi", 3, fourcc="MJPG")
    code = main(["run", "--model", "triton://127.0.0.1:9/none", "--source", str(clip), "--headless", "--reconnect", "1"])
    assert code == 1
    assert "unreachable" in capsys.readouterr().err.lower()


def test_triton_serve_starts_a_server_and_stops_on_ctrl_c(repository):
    require_server()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "pcedge", "triton", "serve", "--repo", str(repository), "--grpc-port", "0",
                                "--http-port", "0", "--metrics-port", "0", "--python", str(SERVER_PYTHON)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline, seen = time.monotonic() + 180, ""
        while "tritonserver ready" not in seen and time.monotonic() < deadline and process.poll() is None:
            seen += process.stdout.readline()
        assert "tritonserver ready: gRPC 127.0.0.1:" in seen, seen
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()


def test_tls_and_a_restricted_endpoint_with_its_header(tmp_path, repository, capsys):
    """Triton's gRPC TLS and a restricted inference protocol: the client needs the CA and the header, and says why not."""
    require_server()
    import shutil
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (it makes the test's self-signed certificate)")
    from pcedge.serve.server import TritonServer

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    image = tmp_path / "p.png"
    cv2.imwrite(str(image), photos(1)[0])
    extra = ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}",
             "--grpc-restricted-protocol=inference,model-config:x-camera-token=secret"]
    with TritonServer(repository, python=SERVER_PYTHON, extra_args=extra) as server:
        uri = f"triton://localhost:{server.grpc_port}/tiny"
        base = ["predict", "--model", uri, str(image), "--json", "--triton-ca", str(cert), "--reconnect", "2"]
        # Triton names a restricted protocol's gRPC header triton-grpc-protocol-<key>
        assert main([*base, "--triton-header", "triton-grpc-protocol-x-camera-token=secret"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[0])["backend"].startswith("triton ")
        assert main([*base, "--triton-header", "triton-grpc-protocol-x-camera-token=wrong"]) == 1
        assert "This protocol is restricted" in capsys.readouterr().err  # the server's words
        assert main([*base[:-4], "--reconnect", "2"]) == 1  # no CA: the server's certificate is not trusted
        assert "unreachable" in capsys.readouterr().err
