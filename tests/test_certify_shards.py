"""Certification in shards (pcedge certify --shard I/N, pcedge certify merge): the merged tables and report are one run's.

Real Fashion-MNIST images, the trained test model, ONNX Runtime; every refusal of a wrong set of slices is checked
with the message that says what to do.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcedge.errors import ConfigError
from pcedge.evaluation.certification import build_report, certify
from pcedge.evaluation.tables import Tables
from pcedge.evaluation.datasets import load_dataset, read_idx
from pcedge.evaluation.shards import merge_tables, parse_shard, shard_positions
from pcedge.runtime.driver import PatchCleanser
from tests.conftest import FASHION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fashion_slice(tmp_path_factory) -> Path:
    if not (FASHION / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (Debian package dataset-fashion-mnist; make system-deps)")
    path = tmp_path_factory.mktemp("data") / "fashion40.npz"
    np.savez(path, images=read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:40],
             labels=read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:40].astype(np.int64))
    return path


@given(size=st.integers(0, 200), count=st.integers(1, 9))
def test_slices_partition_any_selection(size, count):
    positions = np.random.default_rng(size).permutation(1000)[:size]
    slices = [shard_positions(positions, i, count) for i in range(count)]
    assert sorted(np.concatenate(slices).tolist()) == sorted(positions.tolist())
    assert max(map(len, slices)) - min(map(len, slices)) <= 1


def test_shard_text_is_checked():
    assert parse_shard("3/4") == (3, 4)
    for bad, words in (("4/4", "I must be 0 to 3"), ("1", "give I/N"), ("a/b", "give I/N"), ("0/0", "N must be at least 1")):
        with pytest.raises(ConfigError, match=words):
            parse_shard(bad)


def test_two_slices_merge_into_one_runs_tables_and_report(fashion_trained, fashion_slice, tmp_path):
    dataset = load_dataset(fashion_slice)
    positions = dataset.subset(30, 7)
    with PatchCleanser.from_onnx(fashion_trained.onnx_path, backend="ort", patch="4", masks_per_axis=4, max_batch=136) as pc:
        one = certify(pc, dataset, positions=positions, progress=False, model_path=fashion_trained.onnx_path)
        for i in range(3):
            certify(pc, dataset, positions=positions, tables_path=tmp_path / f"s{i}.npz", shard=(i, 3), progress=False,
                    model_path=fashion_trained.onnx_path)
    slices = [(f"s{i}.npz", Tables.load(tmp_path / f"s{i}.npz")) for i in (2, 0, 1)]  # any order
    merged = merge_tables(slices, selection=positions)
    for field in ("positions", "labels", "undefended", "tables"):
        assert np.array_equal(getattr(merged, field), getattr(one, field)), field
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "machine")}  # noqa: E731
    assert strip(build_report(merged, dataset)) == strip(build_report(one, dataset))
    assert 0 < build_report(merged, dataset)["certified_accuracy"] < 1  # real outcomes

    refusals = [(slices[:2], "slice(s) 1/3 missing"), ([slices[0], slices[0], slices[1]], "both slice 2/3"),
                ([("one.npz", one)], "not a slice")]
    for given_slices, words in refusals:
        with pytest.raises(ConfigError, match=re.escape(words)):
            merge_tables(given_slices)
    with pytest.raises(ConfigError, match="another selection"):
        merge_tables(slices, selection=dataset.subset(30, 8))
    cut = slices[1][1]
    short = Tables(cut.positions[:-1], cut.labels[:-1], cut.undefended[:-1], cut.tables[:-1], cut.meta)
    with pytest.raises(ConfigError, match=r"s0.npz: slice 0/3 holds 9 of its 10 images \(interrupted\?\)"):
        merge_tables([slices[0], ("s0.npz", short), slices[2]])
    other = dict(slices[0][1].meta, mask_set={"other": True})
    with pytest.raises(ConfigError, match="differ in mask_set"):
        merge_tables([slices[0], slices[1], ("x.npz", Tables(cut.positions, cut.labels, cut.undefended, cut.tables, other))])

    def with_pipeline(named: tuple[str, Tables], **changes) -> tuple[str, Tables]:
        name, t = named
        return name, Tables(t.positions, t.labels, t.undefended, t.tables, dict(t.meta, pipeline={**t.meta["pipeline"], **changes}))

    bf16 = [with_pipeline(named, precision="bf16") for named in slices]  # OpenVINO's BF16: the CPU's rounding
    assert len(merge_tables(bf16).positions) == 30
    bf16[1] = with_pipeline(bf16[1], cpu_features=[*bf16[1][1].meta["pipeline"]["cpu_features"], "amx_bf16"])
    with pytest.raises(ConfigError, match=r"CPU instruction set \(bf16 rounds differently on another"):
        merge_tables(bf16)


def test_cli_slices_and_merge(fashion_trained, fashion_slice, tmp_path):
    def pcedge(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pcedge", *args], capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})

    common = ["--data", str(fashion_slice), "--limit", "12", "--seed", "1", "--no-progress"]
    engine = ["--model", str(fashion_trained.onnx_path), "--patch", "4", "--masks-per-axis", "4"]
    whole = pcedge("certify", *engine, *common, "--json", str(tmp_path / "one.json"))
    assert whole.returncode == 0, whole.stderr
    for i in range(2):
        part = pcedge("certify", *engine, *common, "--shard", f"{i}/2", "--tables", str(tmp_path / f"t{i}.npz"))
        assert part.returncode == 0, part.stderr
    merged = pcedge("certify", "merge", str(tmp_path / "t0.npz"), str(tmp_path / "t1.npz"), *common, "--json", str(tmp_path / "m.json"))
    assert merged.returncode == 0, merged.stderr
    one, joined = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "m"))
    assert {k for k in one if one[k] != joined[k]} <= {"seconds", "machine"}
    assert pcedge("certify", *engine, *common, "--shard", "2/2", "--tables", str(tmp_path / "x.npz")).returncode == 2
    missing = pcedge("certify", "merge", str(tmp_path / "t0.npz"), *common)
    assert missing.returncode == 2 and "slice(s) 1/2 missing" in missing.stderr
    assert pcedge("certify", *engine, *common, "--shard", "0/2").returncode == 2  # a slice needs --tables
    assert not (tmp_path / "x.npz").exists()


def test_slices_of_two_different_unstamped_models_are_refused(fashion_trained, fashion_slice, tmp_path):
    """Without pcedge's content stamp (a model exported by another tool) a slice records the file's own sha256, so slices
    of two different such models do not merge, and slices of one do."""
    onnx = pytest.importorskip("onnx", reason="editing a model needs the onnx package (the [export] extra)")
    from onnx import numpy_helper

    from pcedge.runtime.modelfile import CONTENT_HASH_KEY, file_sha256

    model = onnx.load(str(fashion_trained.onnx_path))
    kept = [entry for entry in model.metadata_props if entry.key != CONTENT_HASH_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "a.onnx"))
    weights = next(init for init in model.graph.initializer if numpy_helper.to_array(init).dtype == np.float32)
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 1.01, weights.name))
    onnx.save(model, str(tmp_path / "b.onnx"))
    dataset = load_dataset(fashion_slice)
    positions = dataset.subset(8, 0)
    tables = {}
    for name, shard in (("a", 0), ("a", 1), ("b", 1)):
        path = tmp_path / f"{name}.onnx"
        with PatchCleanser.from_onnx(path, backend="ort", patch="4", masks_per_axis=4, max_batch=136) as pc:
            tables[name, shard] = certify(pc, dataset, positions=positions, shard=(shard, 2), progress=False, model_path=path)
    assert tables["a", 0].meta["model_sha256"] == file_sha256(tmp_path / "a.onnx")
    merge_tables([("a0", tables["a", 0]), ("a1", tables["a", 1])])  # one model's slices: accepted
    with pytest.raises(ConfigError, match="b1 and a0 differ in model_sha256"):
        merge_tables([("a0", tables["a", 0]), ("b1", tables["b", 1])])
