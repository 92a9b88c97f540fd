"""Frame writers bound to one engine: a camera frame in, masked images at any offset of the engine's buffer.

A writer is made once per (engine, preprocessing spec, mask set) by :func:`frame_writer`, which picks
the host writer (the C++ kernel) for engines whose buffer is a numpy array and the CUDA writer for
device buffers, so the driver never asks which device it runs on. ``load`` validates a frame once and
prepares what every later write of it reuses (resize geometry, channel order, normalization; on a GPU
the upload); ``write`` then puts any selection of one- or two-mask images at any offset of the
engine's buffer, which is what lets several frames share one engine call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import KernelError
from ..masks import MaskSet
from ..preprocess import PreprocessSpec
from .kernels import NO_WINDOWS, CudaMaskWriter, PreparedFrame, as_selection, device_array, prepare_frame, write_prepared

if TYPE_CHECKING:
    from .base import Engine


class FrameWriter(ABC):
    """Writes one engine's input images from camera frames (uint8 HxW, HxWx1/3/4; 4-channel frames are BGRA)."""

    def __init__(self, engine: "Engine", spec: PreprocessSpec, mask_set: MaskSet, frame_order: str = "BGR") -> None:
        if tuple(spec.input_size) != mask_set.image_size:
            raise KernelError(f"the mask set was built for {mask_set.image_size} but the model input is {spec.input_size}")
        self.engine, self.spec, self.mask_set, self.frame_order = engine, spec, mask_set, frame_order

    def load(self, frame: np.ndarray, slot: int = 0) -> PreparedFrame:
        """Validate ``frame`` and prepare it for any number of writes. Frames loaded into different ``slot``s
        stay valid together (several frames of one batch); loading into a slot again replaces its frame."""
        prepared = prepare_frame(frame, self.spec, self.frame_order)
        return replace(prepared, pixels=self._place(prepared.pixels, slot))

    def write(self, frame: PreparedFrame, selection: Any, offset: int = 0) -> int:
        """Masked images of ``frame`` at ``offset`` of the engine's buffer; ``selection`` is (N,) mask indices
        (one-mask images) or (N, 2) pairs (two-mask images). Returns N."""
        sel, mode = as_selection(selection, len(self.mask_set))
        count = sel.size // mode
        self._write(frame, sel, mode, count, offset)
        return count

    def write_unmasked(self, frame: PreparedFrame, count: int = 1, offset: int = 0) -> int:
        """``count`` unmasked copies of the preprocessed frame (the undefended model's input)."""
        if count < 0:
            raise KernelError(f"count must be >= 0, got {count}")
        self._write(frame, np.zeros(count, np.int32), 0, count, offset)
        return count

    def _check_room(self, capacity: int, offset: int, count: int) -> None:
        if offset < 0 or offset + count > capacity:
            raise KernelError(f"{count} images at offset {offset} do not fit the engine's buffer of {capacity}")

    @abstractmethod
    def _place(self, frame: np.ndarray, slot: int) -> Any: ...

    @abstractmethod
    def _write(self, frame: PreparedFrame, sel: np.ndarray, mode: int, count: int, offset: int) -> None: ...


class HostFrameWriter(FrameWriter):
    """The C++ kernel writing into a host (numpy) buffer: resize, crop, channel order, normalize, mask; one pass."""

    def _place(self, frame: np.ndarray, slot: int) -> np.ndarray:
        return frame

    def _write(self, frame: PreparedFrame, sel: np.ndarray, mode: int, count: int, offset: int) -> None:
        buffer = self.engine.full_buffer()
        self._check_room(buffer.shape[0], offset, count)
        windows = self.mask_set.windows if mode else NO_WINDOWS
        write_prepared(frame, self.spec, windows, sel, mode, buffer[offset : offset + count])


class CudaFrameWriter(FrameWriter):
    """The CUDA kernel writing into a device buffer on the engine's stream; frames are uploaded once per load.

    The upload runs on the engine's stream too (a CuPy ``ExternalStream`` over it), from a pinned host buffer
    reused per slot, so the copy, the kernel and the engine's call are ordered on one stream without a host
    synchronization. A slot's pinned buffer is rewritten only at its next load, after the engine's call that
    read it has synchronized (every engine call returns labels to the host).
    """

    def __init__(self, engine: "Engine", spec: PreprocessSpec, mask_set: MaskSet, frame_order: str = "BGR") -> None:
        super().__init__(engine, spec, mask_set, frame_order)
        self._kernel = CudaMaskWriter(mask_set, engine.max_batch)
        self._uploads: dict[int, tuple[Any, Any]] = {}  # slot -> (pinned host buffer, device buffer)

    def _place(self, frame: np.ndarray, slot: int) -> Any:
        from ..util.optional import require

        cp = require("cupy", "uploading frames to the CUDA writer")
        staged = self._uploads.get(slot)
        if staged is None or staged[1].shape != frame.shape:
            import cupyx

            staged = self._uploads[slot] = (cupyx.empty_pinned(frame.shape, np.uint8), cp.empty(frame.shape, dtype=cp.uint8))
        pinned, target = staged
        np.copyto(pinned, frame)
        stream = cp.cuda.ExternalStream(self.engine.stream) if self.engine.stream else cp.cuda.Stream.null
        target.set(pinned, stream=stream)
        return target

    def _write(self, frame: PreparedFrame, sel: np.ndarray, mode: int, count: int, offset: int) -> None:
        out = device_array(self.engine.full_buffer(), "out", ndim=4)
        if out.dtype.kind != "f" or tuple(out.shape[1:]) != (3, *self.spec.input_size):
            raise KernelError(f"the engine's buffer is {out.shape} {out.dtype}, not (N, 3, {self.spec.input_size[0]}, "
                              f"{self.spec.input_size[1]}) float32/float16")
        self._check_room(out.shape[0], offset, count)
        if count:
            image_bytes = int(np.prod(out.shape[1:])) * out.dtype.itemsize
            self._kernel.write_prepared(frame, self.spec, sel, mode, out.ptr + offset * image_bytes, out.dtype == np.float16,
                                        self.engine.stream)


def frame_writer(engine: "Engine", spec: PreprocessSpec, mask_set: MaskSet, frame_order: str = "BGR") -> FrameWriter:
    """The writer for this engine's buffer: the CUDA kernel for device buffers, the C++ kernel for host ones."""
    return (CudaFrameWriter if engine.device == "cuda" else HostFrameWriter)(engine, spec, mask_set, frame_order)
