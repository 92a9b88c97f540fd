"""Labelled image sets for certification and fine-tuning: image folders, MNIST-style IDX files, .npz.

Every loader yields ``(image, label, name)`` with the image as the driver takes frames (uint8, gray or
BGR). Files that cannot be decoded are counted and reported (``Dataset.unreadable``), never silently
dropped; a dataset whose labels do not line up with its images is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import DatasetError
from ..video.uri import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

SUPPORTED = ("an image folder with one subfolder per class (root/<class>/<image>)",
             "MNIST / Fashion-MNIST IDX files (a folder with *-images-idx3-ubyte[.gz] and *-labels-idx1-ubyte[.gz], "
             "or the images file itself)",
             "an .npz file with 'images' (N,H,W[,C] uint8) and 'labels' (N,)")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_SPLITS = {"test": ("t10k-images", "t10k-labels"), "train": ("train-images", "train-labels")}



def selection_sha256(positions: np.ndarray) -> str:
    """A hash of selected dataset positions (which images, in which order): what certification slices and training runs
    record of their selection, and compare on --resume and merge."""
    return hashlib.sha256(np.asarray(positions, np.int64).tobytes()).hexdigest()[:16]


@dataclass
class Dataset:
    """A labelled set. Items are read lazily for image folders, held in memory for IDX and npz."""

    name: str
    identity: str  # a short hash of what was listed/read, recorded in reports and checked by --resume
    class_names: tuple[str, ...]
    _items: Sequence  # (path or array index, label, name)
    _arrays: np.ndarray | None = None
    unreadable: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def in_memory(self) -> bool:
        """True for IDX and .npz sets (decoded once when opened); image folders decode per item."""
        return self._arrays is not None

    @property
    def labels(self) -> np.ndarray:
        return np.array([label for _, label, _ in self._items], dtype=np.int64)

    def load(self, position: int) -> np.ndarray | None:
        """The image at ``position`` (None, and recorded in ``unreadable``, when it cannot be decoded)."""
        ref, _, name = self._items[position]
        if self._arrays is not None:
            return self._arrays[ref]
        image = cv2.imread(str(ref), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            if name not in self.unreadable:
                self.unreadable.append(name)
                log.warning("cannot decode %s: counted as unreadable", ref)
            return None
        return image

    def item(self, position: int) -> tuple[int, str]:
        _, label, name = self._items[position]
        return int(label), name

    def subset(self, limit: int | None, seed: int | None) -> np.ndarray:
        """Positions to evaluate: all, the first ``limit``, or ``limit`` drawn with ``seed`` (sorted)."""
        n = len(self)
        if not limit or limit >= n:
            return np.arange(n)
        if seed is None:
            return np.arange(limit)
        return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, int, str]]:
        for i in range(len(self)):
            yield self.load(i), *self.item(i)


def load_dataset(path: str | Path, *, class_names: Sequence[str] = (), split: str = "test") -> Dataset:
    """Open ``path`` as whichever supported layout it is (see ``SUPPORTED``)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if p.is_file() and p.suffix == ".npz":
        return _load_npz(p)
    if p.is_file() and "idx3" in p.name:
        return _load_idx(p, _labels_file_for(p))
    if p.is_dir():
        idx = _find_idx_pair(p, split)
        if idx is not None:
            return _load_idx(*idx)
        return _load_folder(p, class_names)
    raise DatasetError(f"{p}: not a dataset this tool reads. Supported: " + "; ".join(SUPPORTED))


# ------------------------------------------------------------------------------------------ image folders
def _load_folder(root: Path, model_classes: Sequence[str]) -> Dataset:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class subfolders. Supported: " + "; ".join(SUPPORTED))
    index = _class_indices(classes, model_classes, root)
    items, digest = [], hashlib.sha256()
    for cls in classes:
        for f in sorted((root / cls).iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                name = f"{cls}/{f.name}"
                items.append((f, index[cls], name))
                digest.update(f"{name}:{f.stat().st_size}\n".encode())
    if not items:
        raise DatasetError(f"{root}: the class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    uses_model_names = model_classes and (set(classes) <= set(model_classes) or all(c.isdigit() for c in classes))
    names = tuple(model_classes) if uses_model_names else tuple(classes)
    return Dataset(f"image folder {root}", digest.hexdigest()[:16], names, items)


def _class_indices(classes: list[str], model_classes: Sequence[str], root: Path) -> dict[str, int]:
    """Folder names matched to the model's class names when it has them, else sorted-order indices."""
    if model_classes:
        lookup = {name: i for i, name in enumerate(model_classes)}
        matched = {c: lookup[c] for c in classes if c in lookup}
        if len(matched) == len(classes):
            return matched
        if matched:
            missing = sorted(set(classes) - set(matched))[:5]
            raise DatasetError(f"{root}: {len(matched)} class folders match the model's class names but "
                               f"{len(classes) - len(matched)} do not (e.g. {missing}); rename them or use index-named folders")
        if len(classes) > len(model_classes):
            raise DatasetError(f"{root}: {len(classes)} class folders but the model has {len(model_classes)} classes")
    if all(c.isdigit() for c in classes):
        return {c: int(c) for c in classes}
    return {c: i for i, c in enumerate(classes)}


# ------------------------------------------------------------------------------------------ IDX (MNIST)
def _find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    if split not in IDX_SPLITS:
        raise DatasetError(f"split must be one of {sorted(IDX_SPLITS)}, got {split!r}")
    images_prefix, labels_prefix = IDX_SPLITS[split]
    images = sorted(folder.glob(f"{images_prefix}*idx3-ubyte*"))
    labels = sorted(folder.glob(f"{labels_prefix}*idx1-ubyte*"))
    if images and labels:
        return images[0], labels[0]
    if any(folder.glob("*idx3-ubyte*")):
        raise DatasetError(f"{folder}: IDX files found but no {split} pair ({images_prefix}-idx3-ubyte + {labels_prefix}-idx1-ubyte)")
    return None


def _labels_file_for(images: Path) -> Path:
    candidate = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
    if not candidate.exists():
        raise DatasetError(f"{images}: expected its labels beside it as {candidate.name}")
    return candidate


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape} ({int(np.prod(shape))} bytes) but {body.size} bytes follow (truncated?)")
    return body.reshape(shape)


def _load_idx(images_path: Path, labels_path: Path) -> Dataset:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(f"{images_path}: expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    return _from_arrays(f"IDX {images_path.name}", images, labels, _fashion_names(images_path))


def _fashion_names(path: Path) -> tuple[str, ...]:
    if "fashion" in str(path).lower():
        return FASHION_MNIST_CLASSES
    return tuple(str(i) for i in range(10))


# ------------------------------------------------------------------------------------------ npz
def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data or "labels" not in data:
                raise DatasetError(f"{path}: an .npz dataset needs arrays 'images' and 'labels', found {sorted(data.files)}")
            images, labels = data["images"], data["labels"]
            names = tuple(str(n) for n in data["class_names"]) if "class_names" in data else ()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz ({exc})") from None
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DatasetError(f"{path}: 'images' must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}")
    return _from_arrays(f"npz {path.name}", images, labels, names)


def _from_arrays(name: str, images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> Dataset:
    if len(images) != len(labels):
        raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{name}: holds no images")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DatasetError(f"{name}: labels must be non-negative integers (N,), got {labels.dtype} {labels.shape}")
    digest = hashlib.sha256(images.tobytes()[: 1 << 24] + labels.astype(np.int64).tobytes()).hexdigest()[:16]
    names = class_names or tuple(str(i) for i in range(int(labels.max()) + 1))
    items = [(i, int(label), f"#{i}") for i, label in enumerate(labels.tolist())]
    return Dataset(name, digest, names, items, _arrays=images)
