"""The edge runtime must not need torch, onnx, TensorRT or OpenVINO: importing and running ORT pulls none of them."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

import pcedge

CODE = """
import sys, numpy as np
import pytest

import pcedge
from pcedge.runtime.driver import PatchCleanser
from pcedge.runtime.ort import OrtEngine
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.openvino import OpenVinoEngine
from pcedge.runtime.backends import create_engine
heavy = [m for m in ("torch", "tensorrt", "onnx", "openvino") if m in sys.modules]
print(",".join(heavy))
"""


def test_runtime_imports_stay_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported by the runtime: {out.stdout}"


# --------------------------------------------------------------------------------------------- layering
LAYERS = {  # a module may import from its own layer and the layers below it, never above
    "core": 0, "util": 0, "runtime": 1, "video": 2, "export": 3, "training": 3, "evaluation": 3, "serve": 3, "site": 3, "config": 3,
    "service": 4, "cli": 5,
}
CORE = {"errors", "masks", "coverage", "defense", "alarm", "preprocess", "result"}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in CORE or parts[1].startswith("_masking"):
        return "core"
    return parts[1]


def _imports(path: Path, module: str) -> set[str]:
    """Every pcedge module that ``path`` imports (top-level and inside functions), resolved to absolute names
    (``from .pkg import mod`` names ``pkg.mod`` when that is a module)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    root = Path(pcedge.__file__).parent.parent
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("pcedge"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names
                             if (root / Path(*f"{target}.{a.name}".split("."))).with_suffix(".py").is_file())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("pcedge"))
    return found


def test_no_module_imports_up_the_layers():
    """Core and util import nothing above them; the runtime nothing from video, tools or commands; and so on up."""
    root = Path(pcedge.__file__).parent
    violations = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if module == "pcedge" or module == "pcedge.__main__":
            continue
        mine = LAYERS[_layer(module)]
        for target in _imports(path, module):
            if target != "pcedge" and LAYERS[_layer(target)] > mine:
                violations.append(f"{module} imports {target}")
    assert not violations, "imports up the layers:\n" + "\n".join(violations)


def _modules() -> dict[str, Path]:
    root = Path(pcedge.__file__).parent
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


def test_no_import_cycles_between_modules():
    """No module imports one that imports it back, directly or around a loop (inside functions too): a cycle means two
    modules that are one job, or a piece that belongs lower down. Packages' ``__init__`` re-exports are left out."""
    modules = _modules()
    graph = {name: {t for t in _imports(path, name) if t in modules and t != name and modules[t].name != "__init__.py"}
             for name, path in modules.items() if path.name != "__init__.py"}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_no_module_is_too_long_to_read():
    root = Path(pcedge.__file__).parent
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, f"modules over ~400 lines: {long}"


def test_building_the_command_line_imports_no_heavy_library():
    """`pcedge doctor` must explain a broken OpenCV or ONNX Runtime, so parsing the command line imports neither."""
    code = ("import sys\nfrom pcedge.cli import build_parser\nbuild_parser()\n"
            "print(','.join(m for m in ('cv2', 'onnxruntime', 'torch', 'onnx', 'tensorrt', 'openvino') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"building the parser imported: {out.stdout}"
