"""Real export round trips: both exporters, dynamic batch, metadata read back, parity, bad input."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pcedge.errors import EngineError, ExportError, UnsafeFileError
from pcedge.export import export_onnx, load_model
from pcedge.runtime.modelfile import read_onnx_metadata, read_spec
from tests.models import FixedBatchNet, NotAClassifier, build

EXPORTERS = ["torchscript"] + (["dynamo"] if importlib.util.find_spec("onnxscript") else [])
LABELS = [f"class-{i}" for i in range(10)]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("arch", ["cnn", "resnet", "vit"])
def test_round_trip(tmp_path, arch, exporter):
    model = build(arch)
    path = tmp_path / f"{arch}.onnx"
    report = export_onnx(model, path, image_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_pct=1.0,
                         labels=LABELS, exporter=exporter, source_name=arch)
    assert report.exporter == exporter and report.num_classes == 10
    assert [row["batch"] for row in report.parity] == [1, 36, 7]
    assert all(row["label_agreement"] == 1.0 for row in report.parity)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.data")), "one self-contained file"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert isinstance(session.get_inputs()[0].shape[0], str), "batch axis must be symbolic"
    for batch in (1, 3, 36, 50):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        logits, labels = session.run(["logits", "labels"], {"images": x})
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert logits.shape == (batch, 10) and labels.shape == (batch,)
        assert np.abs(logits - expected).max() < 1e-3
        assert np.array_equal(labels, expected.argmax(1))
    spec = read_spec(path)
    assert spec.input_size == (32, 32) and spec.mean == (0.5, 0.4, 0.3) and spec.crop_pct == 1.0
    assert list(spec.class_names) == LABELS
    meta = read_onnx_metadata(path)
    assert meta["pcedge.source_model"] == arch and exporter in meta["pcedge.exporter"]
    assert len(meta["pcedge.content_sha256"]) == 64


def test_no_argmax_gives_logits_only(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(build("cnn"), path, image_size=32, argmax=False, exporter="torchscript")
    assert [o.name for o in ort.InferenceSession(str(path)).get_outputs()] == ["logits"]


def test_fixed_batch_model_is_refused_and_leaves_no_file(tmp_path):
    path = tmp_path / "fixed.onnx"
    with pytest.raises(ExportError):
        export_onnx(FixedBatchNet().eval(), path, image_size=32, exporter="torchscript")
    assert not path.exists() and not list(tmp_path.iterdir())


def test_non_classifier_and_wrong_size_are_refused(tmp_path):
    with pytest.raises(ExportError, match=r"\[batch, classes\]"):
        export_onnx(NotAClassifier(), tmp_path / "x.onnx", image_size=32)
    with pytest.raises(ExportError, match="cannot run"):
        export_onnx(FixedBatchNet().eval(), tmp_path / "y.onnx", image_size=64)
    with pytest.raises(ExportError, match="labels"):
        export_onnx(build("cnn"), tmp_path / "z.onnx", image_size=32, labels=["a", "b"])
    with pytest.raises(ExportError, match="nn.Module"):
        export_onnx(lambda x: x, tmp_path / "w.onnx", image_size=32)


def test_model_sources_and_checkpoints(tmp_path):
    module = load_model("tests.models:SmallCNN")
    assert isinstance(module.module, torch.nn.Module)
    state = tmp_path / "state.pt"
    torch.save(build("cnn").state_dict(), state)
    loaded = load_model("tests.models:SmallCNN", state)
    torch.testing.assert_close(loaded.module.head.weight, build("cnn").head.weight)
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(build("resnet")).save(str(scripted))
    assert load_model(None, scripted).module(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ExportError, match="state_dict"):
        load_model(None, state)
    with pytest.raises(ExportError, match="does not exist"):
        load_model("tests.models:SmallCNN", tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot read"):
        load_model(None, garbage)
    with pytest.raises(ExportError, match="does not fit"):
        load_model("tests.models:TinyResNet", state)
    with pytest.raises(ExportError, match="not understood"):
        load_model("resnet-unknown")
    with pytest.raises(ExportError, match="cannot import"):
        load_model("no_such_module:build")


def test_a_pickled_module_runs_code_so_it_loads_only_when_trusted(tmp_path, capsys):
    """A state_dict and TorchScript load as data; a pickled nn.Module is refused unless --trust-checkpoint says so."""
    from pcedge.cli import main

    pickled = tmp_path / "module.pt"
    torch.save(build("cnn"), pickled)
    with pytest.raises(UnsafeFileError, match=r"needs arbitrary pickle to load \(it names tests.models.SmallCNN\).*--trust-checkpoint"):
        load_model(None, pickled)
    torch.testing.assert_close(load_model(None, pickled, trust=True).module.head.weight, build("cnn").head.weight)
    command = ["export", "--checkpoint", str(pickled), "--image-size", "32", "--exporter", "torchscript", "--out", str(tmp_path / "m.onnx")]
    assert main(command) == 2 and "--trust-checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    assert main([*command, "--trust-checkpoint"]) == 0 and (tmp_path / "m.onnx").is_file()


def test_model_without_metadata_needs_explicit_spec(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(build("cnn"), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["images"],
                      dynamic_axes={"images": {0: "n"}}, dynamo=False)
    with pytest.raises(EngineError, match="--image-size"):
        read_spec(path)


@pytest.mark.slow
def test_efficientnet_lite0_demo_model_exports_with_imagenet_labels(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo model's package is not installed")
    loaded = load_model("efficientnet-lite0")
    defaults = dict(loaded.defaults)
    labels = defaults.pop("labels")
    assert len(labels) == 1000 and labels[1] == "goldfish"
    report = export_onnx(loaded.module, tmp_path / "lite0.onnx", labels=labels, source_name=loaded.name,
                         exporter="torchscript", **defaults)
    assert report.num_classes == 1000 and all(r["label_agreement"] == 1.0 for r in report.parity)
