"""Certification reports on real images equal an independent computation; resume; every dataset format.

The independent computation uses none of the runtime: numpy preprocessing and masking
(``preprocess_reference``, ``masked_batch_reference``), a plain ONNX Runtime session, and the paper's
rules written out again (``reference_double_masking``, certified = every two-mask label is right).
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from pcedge.errors import ConfigError, DatasetError
from pcedge.evaluation.certification import build_report, certify, report_markdown
from pcedge.evaluation.tables import Tables
from pcedge.evaluation.datasets import load_dataset, read_idx
from pcedge.preprocess import masked_batch_reference, preprocess_reference
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.modelfile import read_spec
from pcedge.util.machine import cpu_features
from tests.test_defense import reference_double_masking

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.fixture(scope="module")
def fashion_slice(tmp_path_factory) -> Path:
    """The first 48 real Fashion-MNIST test images as an .npz."""
    if not (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:48]
    labels = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:48]
    path = tmp_path_factory.mktemp("data") / "fashion48.npz"
    np.savez(path, images=images, labels=labels.astype(np.int64))
    return path


@pytest.fixture(scope="module")
def fashion_model(fashion_trained) -> Path:
    return fashion_trained.onnx_path


def defended(model: Path) -> PatchCleanser:
    return PatchCleanser.from_onnx(model, backend="ort", patch="4", masks_per_axis=4, max_batch=55)


def independent_tables(model: Path, images: np.ndarray, pc: PatchCleanser) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    k = len(pc.mask_set)
    i, j = np.triu_indices(k)
    selection = np.stack([i, j], axis=1)
    tables, plain = [], []
    for image in images:
        x = preprocess_reference(image, pc.spec)
        plain.append(int(session.run(["labels"], {"images": x[None]})[0][0]))
        labels = session.run(["labels"], {"images": masked_batch_reference(x, pc.mask_set.windows, selection)})[0]
        table = np.empty((k, k), np.int64)
        table[i, j] = labels
        table[j, i] = labels
        tables.append(table)
    return np.array(tables), np.array(plain)


def test_report_equals_independent_computation(fashion_slice, fashion_model):
    dataset = load_dataset(fashion_slice)
    with defended(fashion_model) as pc:
        tables = certify(pc, dataset, progress=False)
        expected_tables, expected_plain = independent_tables(fashion_model, [dataset.load(i) for i in range(len(dataset))], pc)
    assert np.array_equal(tables.tables, expected_tables)
    assert np.array_equal(tables.undefended, expected_plain)
    labels = dataset.labels
    defended_ok = np.array([reference_double_masking(t) == y for t, y in zip(expected_tables, labels)])
    certified = np.array([(t == y).all() for t, y in zip(expected_tables, labels)])
    report = build_report(tables, dataset)
    assert report["num_images"] == 48
    assert report["clean_accuracy"] == round(float((expected_plain == labels).mean()), 4)
    assert report["defended_accuracy"] == round(float(defended_ok.mean()), 4)
    assert report["certified_accuracy"] == round(float(certified.mean()), 4)
    assert 0 < certified.sum() < 48, "the slice must exercise both certified and uncertified images"
    assert sum(report["cases"].values()) == 48
    assert sum(row["images"] for row in report["per_class"]) == 48
    assert certified.sum() <= defended_ok.sum(), "certified implies defended-correct on the clean image"
    low, high = report["certified_accuracy_ci95"]
    assert low <= report["certified_accuracy"] <= high and high - low > 0.1, "48 images cannot pin certified accuracy down"
    assert "| this run |" in report_markdown(report) and "Only 48 images" in report_markdown(report)
    pipeline = report["pipeline"]
    assert pipeline["engine"].startswith("ort") and pipeline["precision"] == "fp32" and pipeline["int8_arithmetic"]
    assert pipeline["cpu_features"] == cpu_features() and "CPU family that runs it" in report_markdown(report)


def test_wilson_interval():
    from pcedge.evaluation.certification import wilson_interval

    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(5956, 10000)
    assert 0.585 < low < 0.5956 < high < 0.606


class InterruptAt:
    """Wraps a real dataset and raises KeyboardInterrupt (as Ctrl-C would) when a given image is loaded."""

    def __init__(self, dataset, position: int) -> None:
        self._dataset, self._position = dataset, position

    def load(self, position: int):
        if position == self._position:
            raise KeyboardInterrupt
        return self._dataset.load(position)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getattr__(self, name):
        return getattr(self._dataset, name)


def test_resume_after_interruption_gives_the_same_report(fashion_slice, fashion_model, tmp_path):
    dataset = load_dataset(fashion_slice)
    with defended(fashion_model) as pc:
        full = certify(pc, dataset, progress=False)
        path = tmp_path / "tables.npz"
        with pytest.raises(KeyboardInterrupt):
            certify(pc, InterruptAt(dataset, 30), tables_path=path, progress=False)
        saved = Tables.load(path)
        assert len(saved.positions) == 30, "everything before the interruption is kept"
        with pytest.raises(ConfigError, match="--resume"):
            certify(pc, dataset, tables_path=path, progress=False)
        resumed = certify(pc, dataset, tables_path=path, resume=True, progress=False)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "machine")}  # noqa: E731
    assert strip(build_report(resumed, dataset)) == strip(build_report(full, dataset))
    with PatchCleanser.from_onnx(fashion_model, backend="ort", patch="4", masks_per_axis=3) as other:
        with pytest.raises(ConfigError, match="different mask_set"):
            certify(other, dataset, tables_path=path, resume=True, progress=False)


def test_image_folder_with_unreadable_files(tmp_path, fashion_model):
    rng = np.random.default_rng(0)
    for cls in ("c0", "c4"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for n in range(3):
            cv2.imwrite(str(tmp_path / "data" / cls / f"{n}.png"), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (tmp_path / "data" / "c4" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = load_dataset(tmp_path / "data", class_names=[f"c{i}" for i in range(10)])
    assert set(dataset.labels.tolist()) == {0, 4}, "folder names are matched to the model's class names"
    with defended(fashion_model) as pc:
        report = build_report(certify(pc, dataset, progress=False), dataset, requested=len(dataset))
    assert report["num_images"] == 6 and report["requested_images"] == 7
    assert report["unreadable"] == ["c4/broken.jpg"]


def test_dataset_formats_agree(tmp_path, fashion_slice):
    with np.load(fashion_slice) as data:
        images, labels = data["images"], data["labels"]
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    raw = tmp_path / "raw"
    raw.mkdir()
    write_idx(raw / "t10k-images-idx3-ubyte", images)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels)
    folder = tmp_path / "folder"
    for n, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / str(label) / f"{n:03d}.png"), image)
    sets = [load_dataset(fashion_slice), load_dataset(tmp_path), load_dataset(raw / "t10k-images-idx3-ubyte"), load_dataset(folder)]
    for ds in sets:
        assert len(ds) == 48 and sorted(ds.labels.tolist()) == sorted(labels.tolist())
        assert all(ds.load(i) is not None for i in range(len(ds)))
    by_name = {name: i for i, name in enumerate(sorted(f"{l}/{n:03d}.png" for n, l in enumerate(labels)))}
    folder_set = sets[3]
    for n in range(48):
        position = by_name[f"{labels[n]}/{n:03d}.png"]
        assert np.array_equal(folder_set.load(position)[:, :, 0], images[n]), "PNG round trip is lossless"


@pytest.mark.parametrize("make, words", [
    (lambda d: d, "no class subfolders"),
    (lambda d: (d / "a").mkdir() or d, "hold no images"),
    (lambda d: np.savez(d / "x.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.zeros(2, np.int64)) or d / "x.npz", "3 images but 2 labels"),
    (lambda d: np.savez(d / "x.npz", pictures=np.zeros((3, 8, 8), np.uint8)) or d / "x.npz", "needs arrays 'images' and 'labels'"),
    (lambda d: np.savez(d / "x.npz", images=np.zeros((3, 8, 8), np.float32), labels=np.zeros(3, np.int64)) or d / "x.npz", "must be uint8"),
    (lambda d: write_idx(d / "t10k-images-idx3-ubyte", np.zeros((4, 5, 5))).write_bytes(
        (d / "t10k-images-idx3-ubyte").read_bytes()[:-7]) and d, "truncated"),
    (lambda d: (d / "notes.csv").write_text("a,b") and d / "notes.csv", "not a dataset this tool reads"),
])
def test_bad_datasets_are_refused(tmp_path, make, words):
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"")  # only the truncated-IDX case looks at it
    target = make(tmp_path)
    with pytest.raises(DatasetError, match=words):
        load_dataset(target)


def test_folder_classes_that_do_not_match_the_model(tmp_path):
    for cls in ("cat", "c1"):
        (tmp_path / cls).mkdir()
        cv2.imwrite(str(tmp_path / cls / "x.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="1 class folders match"):
        load_dataset(tmp_path, class_names=["c0", "c1"])


def test_cli_certify_writes_reports(fashion_slice, fashion_model, tmp_path):
    out = {k: tmp_path / f"report.{k}" for k in ("json", "md", "png")}
    proc = subprocess.run([sys.executable, "-m", "pcedge.cli", "certify", "--model", str(fashion_model), "--data", str(fashion_slice),
                           "--patch", "4", "--masks-per-axis", "4", "--limit", "20", "--seed", "3", "--tables", str(tmp_path / "t.npz"),
                           "--json", str(out["json"]), "--markdown", str(out["md"]), "--plot", str(out["png"]), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out["json"].read_text())
    assert report["num_images"] == 20 and report["mask_set"]["num_masks"] == 16
    assert report["data"]["size"] == 48 and report["model"]["sha256"]
    assert {"clean_accuracy", "defended_accuracy", "certified_accuracy", "cases", "per_class", "machine", "paper_reference"} <= set(report)
    assert out["md"].read_text().startswith("# Certification report") and out["png"].stat().st_size > 1000


def test_cli_finetune_trains_with_masks_and_exports(tmp_path):
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")
    out = tmp_path / "ft.onnx"
    proc = subprocess.run([sys.executable, "-m", "pcedge.cli", "finetune", "--model", "fashion-cnn", "--data", str(FASHION),
                           "--limit", "600", "--epochs", "1", "--patch", "4", "--masks-per-axis", "4", "--out", str(out),
                           "--save-checkpoint", str(tmp_path / "ft.pt"), "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "2 random 10x10 masks per image" in proc.stderr and '"history"' in proc.stdout

    spec = read_spec(out)
    assert spec.input_size == (28, 28) and spec.class_names[9] == "Ankle boot" and spec.crop_pct == 1.0
    assert (tmp_path / "ft.pt").stat().st_size > 10_000
