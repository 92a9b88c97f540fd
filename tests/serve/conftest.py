"""A real tritonserver (the nvidia-pytriton wheel's) for the serving tests, started once per module.

The defense runs inside the server's Python backend, in a Python with numpy<2 (Triton 2.51's backend cannot pass
numpy 2 arrays): ``make test`` makes ``.venv-triton`` for it; PCEDGE_TRITON_PYTHON names another.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_PYTHON = Path(os.environ.get("PCEDGE_TRITON_PYTHON", ROOT / ".venv-triton" / "bin" / "python"))


def require_server() -> None:
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("no tritonserver: the nvidia-pytriton wheel is not installed (make test installs it)")
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed (make test installs it)")
    if not SERVER_PYTHON.is_file():
        pytest.skip(f"no server Python with numpy<2 at {SERVER_PYTHON} (make test makes .venv-triton)")


def tiny_bicubic_model(folder: Path) -> Path:
    """A small real CNN (fixed seed) exported with bicubic resizing: the served pipeline equals the local one exactly."""
    pytest.importorskip("torch", reason="torch is not installed (the [export] extra; make test installs the CPU wheel)")
    import torch

    from pcedge.export import export_onnx
    from tests.models import SmallCNN

    torch.manual_seed(0)
    path = folder / "tiny.onnx"
    export_onnx(SmallCNN(), path, image_size=32, crop_pct=0.875, interpolation="bicubic", exporter="torchscript",
                labels=[f"class{i}" for i in range(10)])
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory, lite0_onnx) -> Path:
    """lite0 (the demo model) and tiny (bicubic) defenses, with Python-backend classifiers, in one repository."""
    require_server()
    from pcedge.serve.repository import RepositoryOptions, write_repository

    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(lite0_onnx, out, RepositoryOptions(name="lite0", classifier="python"))
    write_repository(tiny_bicubic_model(out.parent), out, RepositoryOptions(name="tiny", classifier="python", frames_batch=8,
                                                                          queue_delay_us=20000, classifier_batch=4 * 36))
    return out


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    from pcedge.serve.client import warm_up
    from pcedge.serve.server import TritonServer

    log = tmp_path_factory.mktemp("triton-log") / "server.log"
    with TritonServer(repository, python=SERVER_PYTHON, log_file=log) as srv:
        for model in ("lite0", "tiny"):
            warm_up(srv.grpc_url, model)
        yield srv
