"""pcedge bench on a real exported model: every configuration measured, ratios from the same run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pcedge.errors import ConfigError
from pcedge.evaluation.bench import BenchOptions, camera_frames, format_table, plot_latencies, ratios, run_bench
from pcedge.masks import MaskSpec
from tests.models import export_test_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_test_model("region", tmp_path_factory.mktemp("bench") / "region.onnx")


def test_bench_measures_every_configuration(model, tmp_path):
    report = run_bench(model, BenchOptions(frames=4, warmup=1, masks=MaskSpec("5", 3), backends=("ort",),
                                           torch_model="tests.models:RegionClassifier", attack_rate=0.5), report_line=lambda _: None)
    names = [r["name"] for r in report["results"]]
    assert names[:2] == ["undefended batch 1", "undefended batch 9"]
    assert {"defended, clean", "defended, pasted patch", "defended, optimized patch", "defended, stream 50% attacked",
            "original (PyTorch eager, per-mask batch 1)"} <= set(names)
    for row in report["results"]:
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["fps"] > 0 and len(row["samples_ms"]) == row["frames"]
    clean = next(r for r in report["results"] if r["name"] == "defended, clean")
    assert set(clean["stage_p50_ms"]) == {"masking", "first_round", "decision", "second_round"}
    under = next(r for r in report["results"] if r["name"] == "undefended batch 9")
    assert 20 < under["peak_rss_mb"] < 8000 and 20 < clean["peak_rss_mb"] < 8000
    entry = report["ratios"]["ort (CPUExecutionProvider)"]
    assert entry["defended_vs_undefended_batch"] == round(clean["p50_ms"] / under["p50_ms"], 3)
    assert {"defended_vs_original", "attacked_vs_clean_p99_pasted", "peak_rss_defended_vs_undefended_batch"} <= set(entry)
    json.dumps(report)
    curve = report["latency_curves"]["ort (CPUExecutionProvider)"]
    assert curve["batches"][0] == 1 and curve["schedule"].startswith("auto: ")
    assert "undefended batch 1" in format_table(report) and "latency per batch [ort" in format_table(report)
    plot_latencies(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_ratios_need_rows_of_the_same_backend():
    rows = [{"backend": "a", "name": "defended, clean", "p50_ms": 10.0, "p99_ms": 20.0},
            {"backend": "b", "name": "undefended batch 36", "p50_ms": 5.0, "p99_ms": 6.0}]
    assert ratios(rows) == {"a": {}}


def test_bench_refuses_bad_options(model):
    with pytest.raises(ConfigError):
        run_bench(model, BenchOptions(frames=0))
    with pytest.raises(ConfigError):
        run_bench(model, BenchOptions(attack_rate=1.5))


def test_camera_frames_are_720p_bgr():
    frames = camera_frames(5)
    assert len(frames) == 5 and all(f.shape == (720, 1280, 3) for f in frames)


def test_cli_bench(model, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pcedge.cli", "bench", "--model", str(model), "--frames", "3", "--warmup", "1",
                           "--patch", "5", "--masks-per-axis", "3", "--no-rss", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "original PyTorch baseline" in proc.stdout and "defended, clean" in proc.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["results"]
