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


COMMANDS = ("masks", "export", "inspect", "predict", "run", "config", "certify", "finetune", "bench", "quantize", "triton", "doctor")


def test_help_for_every_command_has_an_example_and_every_option_says_what_it_does():
    import argparse

    from pcedge.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(subcommands) == set(COMMANDS)
    for command in COMMANDS:
        out = pcedge(command, "--help")
        assert out.returncode == 0 and "example" in out.stdout, command
        assert "(default: None)" not in out.stdout, command
        nested = [a for a in subcommands[command]._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = [(command, subcommands[command])] + [(f"{command} {n}", p) for a in nested for n, p in a.choices.items()]
        for name, sub in parsers:  # a command's own subcommands (pcedge triton repo|serve) are held to the same rules
            formatter = sub._get_formatter()
            for action in sub._actions:
                assert action.help, f"pcedge {name} {action.option_strings or action.dest} has no help text"
                shown = formatter._expand_help(action) if action.help is not argparse.SUPPRESS else ""
                assert shown.count("default") <= 1, f"pcedge {name} {action.option_strings}: {shown!r} says its default twice"


def test_version_and_python_dash_m():
    from pcedge import __version__

    out = subprocess.run([sys.executable, "-m", "pcedge", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"pcedge {__version__}"


def test_verbosity_options_work_before_and_after_the_command():
    for args in (["-q", "masks"], ["masks", "-q"], ["-v", "masks"], ["masks", "--debug"], ["masks", "-vv"]):
        out = pcedge(*args, "--patch", "32", "--masks-per-axis", "6")
        assert out.returncode == 0 and "36 masks" in out.stdout, (args, out.stderr)


def test_json_to_a_closed_pipe_ends_quietly(tmp_path):
    """pcedge inspect --json | head: the reader goes away; no BrokenPipeError traceback, exit 141 like cat's."""
    model = tmp_path / "m.onnx"
    assert pcedge("export", "--model", "tests.models:SmallCNN", "--image-size", "32", "--crop-pct", "1", "--out", str(model),
                  "--exporter", "torchscript", "-q").returncode == 0
    reader_gone = subprocess.Popen([sys.executable, "-m", "pcedge.cli", "inspect", str(model), "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader_gone.stdout.close()  # nobody reads: every write fails with EPIPE
    _, stderr = reader_gone.communicate(timeout=120)
    assert reader_gone.returncode == 141 and b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr
    info = json.loads(pcedge("inspect", str(model), "--json").stdout)
    assert isinstance(info["metadata"]["pcedge.outputs"], list) and info["metadata"]["pcedge.num_classes"] == 10
    assert model.stat().st_mode & 0o777 == 0o644, "an exported model is readable by other users (umask 022)"


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
    (["masks", "--masks-per-axis", "0"], "argument --masks-per-axis: 0 is not allowed: give 1 or more"),
    (["masks", "--masks-per-axis", "-3"], "argument --masks-per-axis: -3 is not allowed"),
    (["masks", "--patch", "banana"], "argument --patch: 'banana' is not a patch size: give a percentage of the image ('2%')"),
    (["masks", "--patch", "200%"], "argument --patch: 200% is not a share of the image: give a percentage above 0 and at most 100"),
    (["predict", "--model", "missing.onnx", "x.jpg"], "argument --model: missing.onnx does not exist (export a model with"),
    (["predict", "--model", "tests", "x.jpg"], "argument --model: tests is a folder: pass the .onnx file inside it"),
    (["inspect", "missing.onnx"], "argument model: missing.onnx does not exist"),
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
    assert bad.returncode == 1 and "nope.png: no such file or folder" in bad.stderr
    (tmp_path / "broken.png").write_bytes(b"not a png")
    broken = pcedge("predict", "--model", str(model), str(tmp_path / "broken.png"), "--backend", "ort", "-q")
    assert broken.returncode == 1 and broken.stderr.strip() == f"pcedge predict: error: cannot read image {tmp_path / 'broken.png'} " \
        "(not a format OpenCV decodes, or a damaged file)", "one line: no OpenCV warning before it"
    folder = pcedge("predict", "--model", str(model), str(tmp_path), "--patch", "5", "--masks-per-axis", "3", "--backend", "ort",
                    "--json", "-q")
    assert folder.returncode == 1, "an unreadable image in a folder is skipped, counted, and makes the exit code 1"
    assert sorted(json.loads(line)["image"] for line in folder.stdout.splitlines()) == sorted(images)
    assert "skipping" in folder.stderr and "broken.png" in folder.stderr


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


def test_a_shared_flag_is_validated_the_same_way_by_every_command_that_takes_it():
    """The option groups (mask set, preprocessing, engine) are one code path: a bad value is refused with
    exit 2 and the same message wherever the flag appears (parsed in-process: argparse exits before any work)."""
    import argparse

    from pcedge.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    bad = {"--patch": "200%", "--masks-per-axis": "0", "--crop-pct": "2", "--mean": "1,2", "--budget": "-1",
           "--interpolation": "nearest", "--stride": "x"}
    checked = 0
    for flag, value in bad.items():
        messages = set()
        for name, sub in subcommands.items():
            if flag not in sub._option_string_actions:
                continue
            action = sub._option_string_actions[flag]
            try:
                action.type(value) if action.type else None
                if action.choices is not None and value not in action.choices:
                    raise argparse.ArgumentTypeError(f"invalid choice {value!r}")
            except (argparse.ArgumentTypeError, ValueError) as exc:
                messages.add(str(exc))
            else:
                pytest.fail(f"pcedge {name} {flag} {value} was accepted")
            checked += 1
        assert len(messages) <= 1, f"{flag} is refused differently by different commands: {messages}"
    assert checked >= 20
    existing = __file__  # any existing file passes the --model check, so the flag under test is what is refused
    for args in (["bench", "--model", existing, "--patch", "200%"], ["quantize", "--model", existing, "--out", "y", "--patch", "200%"],
                 ["export", "--model", "fashion-cnn", "--out", "y.onnx", "--crop-pct", "2"]):
        out = pcedge(*args)
        assert out.returncode == 2 and ("200%" in out.stderr or "(0, 1]" in out.stderr), (args, out.stderr)
