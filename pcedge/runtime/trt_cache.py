"""Serialized TensorRT engines cached on disk, keyed so that a stale engine is never used.

An engine is only valid for the ONNX file, TensorRT version, GPU (name and compute capability),
precision and batch profile it was built for. The key hashes all of them; the file carries a header
with the key and a SHA-256 of the payload, so a truncated, corrupt or foreign file is detected and
rebuilt instead of crashing the runtime. Plain Python: tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError
from ..util.cache import cache_dir
from ..util.files import writing

log = logging.getLogger("pcedge.trt_cache")
MAGIC = b"PCEDGE-TRT-ENGINE/1\n"


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


def profile_shapes(num_masks: int, max_batch: int | None = None) -> tuple[int, int, int]:
    """Optimization profile for the batch axis: min 1, opt K (the one-mask round), max K*(K-1) capped.

    K*(K-1) holds every second-round image of all disagreers at once; ``max_batch`` caps it (memory).
    """
    if num_masks < 1:
        raise ConfigError(f"num_masks must be >= 1, got {num_masks}")
    largest = max(num_masks, num_masks * (num_masks - 1))
    cap = largest if max_batch is None else int(max_batch)
    if cap < num_masks:
        raise ConfigError(f"max_batch {cap} is smaller than the one-mask batch K={num_masks}")
    return 1, num_masks, min(largest, cap)


class EngineCache:
    """A folder of serialized engines. Unwritable folders degrade to building in memory, with a warning."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder else cache_dir("trt")

    def path_for(self, key: EngineKey) -> Path:
        return self.folder / f"engine-{key.digest()}.plan"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for ``key``, or None when absent, stale or corrupt (which is logged)."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read cached engine %s (%s); rebuilding", path, exc)
            return None
        if not data.startswith(MAGIC):
            log.warning("%s is not a pcedge engine file; rebuilding", path)
            return None
        header_end = data.find(b"\n", len(MAGIC))
        try:
            header = json.loads(data[len(MAGIC) : header_end])
        except ValueError:
            log.warning("%s has a corrupt header; rebuilding", path)
            return None
        payload = data[header_end + 1 :]
        if header.get("key") != asdict(key):
            log.warning("%s was built for %s, not this model/GPU/TensorRT; rebuilding", path, header.get("key"))
            return None
        if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            log.warning("%s is truncated or corrupt (checksum mismatch); rebuilding", path)
            return None
        return payload

    def save(self, key: EngineKey, payload: bytes) -> Path | None:
        """Write atomically; returns None (and warns) when the folder is read-only or full."""
        header = json.dumps({"key": asdict(key), "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        path = self.path_for(key)
        try:
            with writing(path) as temporary:
                temporary.write_bytes(MAGIC + header + b"\n" + payload)
        except OSError as exc:
            log.warning("cannot write the engine cache in %s (%s); the engine stays in memory and will be rebuilt next run", self.folder, exc)
            return None
        return path
