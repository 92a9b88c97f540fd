"""The masking kernels' Python wrappers: N masked images straight into a buffer (C++ on the host, CUDA on a GPU).

These are the kernel-level calls (a frame and a buffer per call); the driver uses the engine-bound
writers of :mod:`pcedge.runtime.writers`, which prepare a frame once and write at any offset. The
wrappers validate dtype, shape, contiguity and indices once and raise a clear error (a ValueError)
before the C++/CUDA code runs, so a bad call can never crash or write half a batch. The C++ side
checks again and names the argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import KernelError
from ..masks import MaskSet
from ..preprocess import Geometry, PreprocessSpec, as_hwc_uint8

FLOAT_TYPES = (np.dtype(np.float32), np.dtype(np.float16))


def cpu_module():
    try:
        from .. import _masking_cpu
    except ImportError as exc:  # pragma: no cover - only when the package was not built
        raise KernelError(
            f"the C++ masking kernel is not built ({exc}); rebuild with: pip install -e . --no-build-isolation"
        ) from exc
    return _masking_cpu


def as_selection(selection: Any, num_masks: int) -> tuple[np.ndarray, int]:
    """Validate a selection: (N,) mask indices -> mode 1, (N, 2) index pairs -> mode 2."""
    sel = np.asarray(selection)
    if sel.dtype.kind not in "iu" and sel.size:
        raise KernelError(f"selection must hold integer mask indices, got dtype {sel.dtype}")
    if sel.ndim == 1:
        mode = 1
    elif sel.ndim == 2 and sel.shape[1] == 2:
        mode = 2
    else:
        raise KernelError(f"selection must be (N,) mask indices or (N, 2) index pairs, got shape {sel.shape}")
    if sel.size and (sel.min() < 0 or sel.max() >= num_masks):
        raise KernelError(f"selection indices must lie in [0, {num_masks}), got [{sel.min()}, {sel.max()}]")
    return np.ascontiguousarray(sel, dtype=np.int32).ravel(), mode


def _check_out(out: Any, count: int, shape: tuple[int, ...], dtype: np.dtype | None) -> None:
    if not isinstance(out, np.ndarray):
        raise KernelError(f"out must be a numpy array, got {type(out).__name__}")
    if out.ndim != 4 or tuple(out.shape[1:]) != shape:
        raise KernelError(f"out must have shape (N, {', '.join(map(str, shape))}), got {out.shape}")
    if out.dtype not in FLOAT_TYPES or (dtype is not None and out.dtype != dtype):
        want = dtype if dtype is not None else "float32 or float16"
        raise KernelError(f"out must be {want}, got {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError("out must be a C-contiguous, writeable array (the engine's input buffer)")
    if out.shape[0] < count:
        raise KernelError(f"out holds {out.shape[0]} images but the selection needs {count}")


def write_masked(image: np.ndarray, mask_set: MaskSet, selection: Any, out: np.ndarray, *, num_threads: int = 0) -> np.ndarray:
    """Write masked copies of a normalized (C, H, W) image into ``out[:N]`` and return that view.

    ``selection`` is (N,) mask indices (one-mask images) or (N, 2) pairs (two-mask images). Masked
    pixels become 0.0, the normalized mean colour. Nothing is allocated per call.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise KernelError(f"image must be a (C, H, W) numpy array, got {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype not in FLOAT_TYPES:
        raise KernelError(f"image must be float32 or float16, got {image.dtype}")
    if not image.flags.c_contiguous:
        raise KernelError("image must be C-contiguous (use np.ascontiguousarray)")
    if tuple(image.shape[1:]) != mask_set.image_size:
        raise KernelError(f"image is {image.shape[1]}x{image.shape[2]} but the mask set was built for {mask_set.image_size}")
    sel, mode = as_selection(selection, len(mask_set))
    count = sel.size // mode
    _check_out(out, count, tuple(image.shape), image.dtype)
    cpu_module().write_masked(image, mask_set.windows, sel, mode, out, num_threads)
    return out[:count]


@dataclass(frozen=True)
class PreparedFrame:
    """A validated frame with its geometry worked out once: what every write of it reuses."""

    pixels: Any  # (H, W, C) uint8: a numpy array, or a device array once uploaded
    resized_h: int
    resized_w: int
    top: int
    left: int
    channels: tuple[int, ...]


def prepare_frame(frame: np.ndarray, spec: PreprocessSpec, frame_order: str = "BGR") -> PreparedFrame:
    """Validate a camera frame and work out its resize/crop and channel order (bicubic specs are resized here:
    the kernels sample bilinearly, and on an already resized image that sampling is exact)."""
    frame = as_hwc_uint8(frame)
    geo = spec.geometry(frame.shape[0], frame.shape[1])
    if spec.interpolation == "bicubic":
        frame = resize_bicubic(frame, geo)
    channels = tuple(spec.source_channels(frame.shape[2], frame_order))
    return PreparedFrame(frame, geo.resized_h, geo.resized_w, geo.top, geo.left, channels)


def write_prepared(frame: PreparedFrame, spec: PreprocessSpec, windows: np.ndarray, sel: np.ndarray, mode: int, out: np.ndarray,
                   num_threads: int = 0) -> None:
    """The C++ frame kernel on a prepared frame: ``out`` must hold exactly the selection's images."""
    scale, shift = spec.normalization()
    cpu_module().write_masked_frame(frame.pixels, frame.resized_h, frame.resized_w, frame.top, frame.left, list(frame.channels),
                                    scale, shift, windows, sel, mode, out, num_threads)


def write_masked_frame(
    frame: np.ndarray,
    spec: PreprocessSpec,
    mask_set: MaskSet,
    selection: Any,
    out: np.ndarray,
    *,
    frame_order: str = "BGR",
    num_threads: int = 0,
) -> np.ndarray:
    """Camera frame (uint8 HWC) -> resize, crop, RGB, normalize, N masked copies in ``out[:N]``, one pass.

    The CPU twin of the CUDA frame kernel.
    """
    if tuple(spec.input_size) != mask_set.image_size:
        raise KernelError(f"the mask set was built for {mask_set.image_size} but the model input is {spec.input_size}")
    sel, mode = as_selection(selection, len(mask_set))
    return _write_frame(frame, spec, mask_set.windows, sel, mode, out, frame_order, num_threads)


def write_frame(frame: np.ndarray, spec: PreprocessSpec, out: np.ndarray, *, count: int = 1, frame_order: str = "BGR") -> np.ndarray:
    """The undefended model's input: ``count`` unmasked copies of the preprocessed frame in ``out[:count]``."""
    if count < 0:
        raise KernelError(f"count must be >= 0, got {count}")
    return _write_frame(frame, spec, NO_WINDOWS, np.zeros(count, np.int32), 0, out, frame_order, 0)


NO_WINDOWS = np.array([[[0, 0, 1, 1]]], dtype=np.int32)  # never read: unmasked mode gathers no windows


def _write_frame(frame, spec: PreprocessSpec, windows: np.ndarray, sel: np.ndarray, mode: int, out, frame_order: str, num_threads: int) -> np.ndarray:
    count = sel.size // max(mode, 1)
    _check_out(out, count, (3, *spec.input_size), None)
    write_prepared(prepare_frame(frame, spec, frame_order), spec, windows, sel, mode, out[:count], num_threads)
    return out[:count]


def resize_bicubic(frame: np.ndarray, geo: Geometry) -> np.ndarray:
    """Bicubic resize on the host; the kernel then only crops (scale 1 samples pixels exactly)."""
    import cv2

    resized = cv2.resize(frame, (geo.resized_w, geo.resized_h), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(resized.reshape(geo.resized_h, geo.resized_w, frame.shape[2]))


def cuda_writer_available() -> bool:
    """True when the CUDA kernel is built and a CUDA device is usable."""
    try:
        from .. import _masking_cuda
    except ImportError:
        return False
    return _masking_cuda.device_count() > 0


class CudaMaskWriter:
    """The CUDA frame-to-batch kernel bound to one mask set: windows live on the device once.

    Buffers are device pointers (ints) or objects with ``__cuda_array_interface__`` (CuPy, PyTorch,
    an engine's binding); the caller's stream is used, nothing is synchronized.
    """

    def __init__(self, mask_set: MaskSet, max_images: int) -> None:
        try:
            from .. import _masking_cuda
        except ImportError as exc:
            raise KernelError(
                "pcedge was built without CUDA (the _masking_cuda extension is missing); install nvcc and "
                "rebuild: PCEDGE_BUILD_CUDA=1 pip install -e . --no-build-isolation"
            ) from exc
        self.mask_set = mask_set
        self._impl = _masking_cuda.CudaMaskWriter(mask_set.windows, int(max_images))

    @property
    def max_images(self) -> int:
        return int(self._impl.max_images)

    def write_masked(self, image: Any, selection: Any, out: Any, *, stream: int = 0) -> None:
        """Device twin of :func:`write_masked`: ``image`` (C, H, W) and ``out`` (>= N, C, H, W) on the GPU."""
        img = device_array(image, "image", ndim=3)
        dst = device_array(out, "out", ndim=4)
        if img.dtype != dst.dtype or img.dtype not in FLOAT_TYPES:
            raise KernelError(f"image and out must share a float32/float16 dtype, got {img.dtype} and {dst.dtype}")
        if tuple(img.shape[1:]) != self.mask_set.image_size or tuple(dst.shape[1:]) != tuple(img.shape):
            raise KernelError(f"shapes do not match the mask set {self.mask_set.image_size}: image {img.shape}, out {dst.shape}")
        sel, mode = as_selection(selection, len(self.mask_set))
        if dst.shape[0] < sel.size // mode:
            raise KernelError(f"out holds {dst.shape[0]} images but the selection needs {sel.size // mode}")
        c, h, w = img.shape
        self._impl.write_masked(img.ptr, int(img.dtype == np.float16), c, h, w, sel, mode, dst.ptr, stream)

    def write_masked_frame(self, frame: Any, spec: PreprocessSpec, selection: Any, out: Any, *, frame_order: str = "BGR", stream: int = 0) -> None:
        """Device twin of :func:`write_masked_frame`: ``frame`` uint8 (H, W, C) on the GPU (bilinear specs)."""
        src = device_array(frame, "frame", ndim=3)
        dst = device_array(out, "out", ndim=4)
        if src.dtype != np.uint8:
            raise KernelError(f"frame must be uint8, got {src.dtype}")
        if spec.interpolation != "bilinear":
            raise KernelError("the CUDA frame kernel resamples bilinearly; resize bicubic specs before upload")
        if dst.dtype not in FLOAT_TYPES or tuple(dst.shape[1:]) != (3, *spec.input_size):
            raise KernelError(f"out must be (N, 3, {spec.input_size[0]}, {spec.input_size[1]}) float32/float16, got {dst.shape} {dst.dtype}")
        if tuple(spec.input_size) != self.mask_set.image_size:
            raise KernelError(f"the mask set was built for {self.mask_set.image_size} but the model input is {spec.input_size}")
        sel, mode = as_selection(selection, len(self.mask_set))
        if dst.shape[0] < sel.size // mode:
            raise KernelError(f"out holds {dst.shape[0]} images but the selection needs {sel.size // mode}")
        fh, fw, fc = src.shape
        geo = spec.geometry(fh, fw)
        prepared = PreparedFrame(frame, geo.resized_h, geo.resized_w, geo.top, geo.left, tuple(spec.source_channels(fc, frame_order)))
        self.write_prepared(prepared, spec, sel, mode, dst.ptr, dst.dtype == np.float16, stream)

    def write_prepared(self, frame: PreparedFrame, spec: PreprocessSpec, sel: np.ndarray, mode: int, out_ptr: int, half: bool,
                       stream: int = 0) -> None:
        """The frame kernel on a prepared frame already on the GPU, writing the selection's images at ``out_ptr``."""
        src = device_array(frame.pixels, "frame", ndim=3)
        fh, fw, fc = src.shape
        scale, shift = spec.normalization()
        self._impl.write_masked_frame(
            src.ptr, fh, fw, fc, frame.resized_h, frame.resized_w, frame.top, frame.left, list(frame.channels), scale, shift,
            sel, mode, out_ptr, int(half), spec.input_size[0], spec.input_size[1], stream,
        )


class _DeviceView:
    """Pointer, shape and dtype of a contiguous device array, from ``__cuda_array_interface__``."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.ptr, self.shape, self.dtype = ptr, shape, dtype


def device_array(obj: Any, name: str, ndim: int) -> _DeviceView:
    iface = getattr(obj, "__cuda_array_interface__", None)
    if iface is None:
        raise KernelError(f"{name} must be a device array (CuPy, PyTorch CUDA tensor or engine binding)")
    shape = tuple(int(s) for s in iface["shape"])
    dtype = np.dtype(iface["typestr"])
    if len(shape) != ndim:
        raise KernelError(f"{name} must have {ndim} dimensions, got shape {shape}")
    strides = iface.get("strides")
    if strides is not None:
        expected, step = [], dtype.itemsize
        for s in reversed(shape):
            expected.insert(0, step)
            step *= s
        if tuple(strides) != tuple(expected):
            raise KernelError(f"{name} must be C-contiguous")
    return _DeviceView(int(iface["data"][0]), shape, dtype)
