"""The pcedge command end to end, in subprocesses like a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest


def pcedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pcedge.cli", *args], capture_output=True, text=True, timeout=300)


def test_help_for_every_command_has_an_example():
    for command in ("masks", "export", "inspect", "predict", "doctor"):
        out = pcedge(command, "--help")
        assert out.returncode == 0 and "example" in out.stdout, command


def test_masks_prints_the_proof_and_draws(tmp_path):
    picture = tmp_path / "photo.png"
    cv2.imwrite(str(picture), np.full((100, 120, 3), 90, np.uint8))
    out = pcedge("masks", "--image-size", "224", "--patch", "2%", "--masks-per-axis", "6", "--image", str(picture),
                 "--save", str(tmp_path / "masks.png"))
    assert out.returncode == 0, out.stderr
    assert "36 masks" in out.stdout and "PROVEN" in out.stdout and "[0, 33, 66, 99, 132, 160]" in out.stdout
    assert cv2.imread(str(tmp_path / "masks.png")) is not None
    info = json.loads(pcedge("masks", "--patch", "32", "--stride", "33", "--json").stdout)
    assert info["num_masks"] == 36 and info["coverage"]["placements_checked"] == 193 * 193


@pytest.mark.parametrize("args,message", [
    (["masks", "--patch", "300"], "does not fit"),
    (["masks", "--masks-per-axis", "0"], "masks_per_axis must be positive"),
    (["masks", "--masks-per-axis", "-3"], "masks_per_axis must be positive"),
    (["masks", "--patch", "banana"], "not understood"),
    (["predict", "--model", "missing.onnx", "x.jpg"], "does not exist"),
    (["inspect", "missing.onnx"], "does not exist"),
])
def test_user_errors_are_one_line_with_exit_code_2(args, message):
    out = pcedge(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_export_inspect_predict_round_trip(tmp_path):
    model = tmp_path / "m.onnx"
    out = pcedge("export", "--model", "tests.models:SmallCNN", "--image-size", "32", "--crop-pct", "1", "--out", str(model),
                 "--exporter", "torchscript")
    assert out.returncode == 0, out.stderr
    assert "parity batch  36" in out.stdout
    info = json.loads(pcedge("inspect", str(model), "--json").stdout)
    assert info["inputs"][0]["name"] == "images" and info["metadata"]["pcedge.preprocess"]["input_size"] == [32, 32]
    images = []
    for n in range(3):
        path = tmp_path / f"img{n}.png"
        cv2.imwrite(str(path), np.random.default_rng(n).integers(0, 256, (40, 50, 3), dtype=np.uint8))
        images.append(str(path))
    out = pcedge("predict", "--model", str(model), *images, "--patch", "5", "--masks-per-axis", "3", "--backend", "ort", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in rows] == images
    for r in rows:
        assert {"image", "label", "class_name", "case", "disagreers", "timings_ms"} <= set(r)
        assert r["case"] in ("agreed", "disagreer", "majority")
    bad = pcedge("predict", "--model", str(model), str(tmp_path / "nope.png"), "--backend", "ort")
    assert bad.returncode == 2 and "cannot read image" in bad.stderr


def test_model_without_metadata_runs_with_spec_on_the_command_line(tmp_path):
    import torch

    from tests.models import build

    plain = tmp_path / "plain.onnx"
    torch.onnx.export(build("cnn"), (torch.zeros(1, 3, 32, 32),), str(plain), input_names=["images"],
                      dynamic_axes={"images": {0: "n"}}, dynamo=False)
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    missing = pcedge("predict", "--model", str(plain), str(image), "--backend", "ort", "--patch", "5")
    assert missing.returncode == 2 and "--image-size" in missing.stderr
    ok = pcedge("predict", "--model", str(plain), str(image), "--backend", "ort", "--patch", "5", "--masks-per-axis", "3",
                "--image-size", "32", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["case"] in ("agreed", "disagreer", "majority")
