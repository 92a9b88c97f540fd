"""Engine-bound writers: a frame prepared once writes any selection at any offset, exactly as the kernel call would."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge.errors import KernelError
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec
from pcedge.runtime.base import Engine, InputMetadata
from pcedge.runtime.kernels import write_frame, write_masked_frame
from pcedge.runtime.writers import HostFrameWriter, frame_writer
from tests.conftest import examples

MS = MaskSet.square(64, 7, masks_per_axis=3)


class BufferOnly(Engine):
    """A real host buffer behind the engine protocol, for writing only (infer is never called here)."""

    backend = "buffer"

    def __init__(self, capacity: int, size: int = 64) -> None:
        super().__init__()
        self._meta = InputMetadata("images", (3, size, size), np.dtype(np.float32), capacity)

    @property
    def input_metadata(self) -> InputMetadata:
        return self._meta

    def _activate(self) -> None:
        self._host = np.full((self._meta.max_batch, *self._meta.shape), np.nan, np.float32)

    def _buffer(self) -> np.ndarray:
        return self._host

    def _infer(self, n: int) -> np.ndarray:
        raise AssertionError("writers never run the engine")


def camera_frame(seed: int, h: int = 90, w: int = 120, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


@settings(max_examples=examples(150), deadline=None)
@given(st.integers(0, 2**16), st.sampled_from(["bilinear", "bicubic"]), st.sampled_from([1, 3, 4]),
       st.lists(st.integers(0, len(MS) - 1), min_size=1, max_size=9), st.integers(0, 20), st.booleans())
def test_any_selection_at_any_offset_equals_the_kernel_call(seed, interpolation, channels, picks, offset, pairs):
    spec = PreprocessSpec(input_size=(64, 64), interpolation=interpolation, crop_pct=0.9)
    frame = camera_frame(seed, c=channels)[..., 0] if channels == 1 else camera_frame(seed, c=channels)
    selection = np.stack([picks, picks[::-1]], axis=1) if pairs else np.array(picks)
    with BufferOnly(capacity=32) as engine:
        writer = frame_writer(engine, spec, MS)
        count = writer.write(writer.load(frame), selection, offset=offset)
        buffer = engine.full_buffer()
        expected = write_masked_frame(frame, spec, MS, selection, np.empty((len(picks), 3, 64, 64), np.float32))
        assert count == len(picks)
        np.testing.assert_array_equal(buffer[offset : offset + count], expected)
        assert np.isnan(buffer[:offset]).all() and np.isnan(buffer[offset + count :]).all(), "nothing outside the slot is touched"


def test_frames_in_different_slots_share_one_buffer():
    spec = PreprocessSpec(input_size=(64, 64))
    frames = [camera_frame(1), camera_frame(2, 48, 64), camera_frame(3, 200, 100)]
    with BufferOnly(capacity=3 * len(MS)) as engine:
        writer = frame_writer(engine, spec, MS)
        loaded = [writer.load(frame, slot) for slot, frame in enumerate(frames)]
        for n, prepared in enumerate(loaded):
            writer.write(prepared, np.arange(len(MS)), offset=n * len(MS))
        for n, frame in enumerate(frames):
            expected = write_masked_frame(frame, spec, MS, np.arange(len(MS)), np.empty((len(MS), 3, 64, 64), np.float32))
            np.testing.assert_array_equal(engine.full_buffer()[n * len(MS) : (n + 1) * len(MS)], expected)


def test_unmasked_copies_equal_the_plain_input():
    spec = PreprocessSpec(input_size=(64, 64))
    frame = camera_frame(7)
    with BufferOnly(capacity=8) as engine:
        writer = frame_writer(engine, spec, MS)
        writer.write_unmasked(writer.load(frame), count=3, offset=2)
        expected = write_frame(frame, spec, np.empty((3, 3, 64, 64), np.float32), count=3)
        np.testing.assert_array_equal(engine.full_buffer()[2:5], expected)


def test_writes_that_do_not_fit_and_bad_frames_are_refused():
    spec = PreprocessSpec(input_size=(64, 64))
    with BufferOnly(capacity=4) as engine:
        writer = frame_writer(engine, spec, MS)
        assert isinstance(writer, HostFrameWriter)
        prepared = writer.load(camera_frame(0))
        with pytest.raises(KernelError, match="3 images at offset 2 do not fit the engine's buffer of 4"):
            writer.write(prepared, [0, 1, 2], offset=2)
        with pytest.raises(KernelError, match="offset -1"):
            writer.write(prepared, [0], offset=-1)
        with pytest.raises(KernelError, match=r"selection indices must lie in \[0, 9\)"):
            writer.write(prepared, [9])
        with pytest.raises(ValueError):
            writer.load(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(KernelError, match="mask set was built for"):
        frame_writer(BufferOnly(capacity=4, size=32), PreprocessSpec(input_size=(32, 32)), MS)
