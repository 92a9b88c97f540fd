"""The C++ and CUDA masked-batch writers against the numpy reference, and their input checks."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcedge import _masking_cpu
from pcedge.errors import KernelError
from pcedge.masks import MaskSet
from pcedge.preprocess import PreprocessSpec, masked_batch_reference, preprocess_reference
from pcedge.runtime.kernels import CudaMaskWriter, cuda_writer_available, write_masked, write_masked_frame
from tests.conftest import examples

ROOT = Path(__file__).resolve().parents[2]
MS = MaskSet.square(224, patch_fraction=0.02, masks_per_axis=6)


def poisoned(shape, dtype):
    """An output buffer full of NaN, so any element the writer forgets shows up."""
    return np.full(shape, np.nan, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_one_mask_batch_is_bit_identical(dtype):
    image = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(dtype)
    out = poisoned((36, 3, 224, 224), dtype)
    result = write_masked(image, MS, np.arange(36), out)
    assert result.base is out or result is out or np.shares_memory(result, out)
    assert np.array_equal(result, masked_batch_reference(image, MS.windows, np.arange(36)))


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_two_mask_batch_threads_and_larger_buffer(threads):
    image = np.random.default_rng(1).standard_normal((3, 224, 224)).astype(np.float32)
    pairs = np.array([[i, j] for i in range(36) for j in range(36) if i != j][:70])
    out = poisoned((80, 3, 224, 224), np.float32)
    result = write_masked(image, MS, pairs, out, num_threads=threads)
    assert result.shape[0] == 70
    assert np.array_equal(result, masked_batch_reference(image, MS.windows, pairs))
    assert np.isnan(out[70:]).all(), "images beyond the selection must stay untouched"


@settings(max_examples=examples(150))
@given(
    h=st.integers(1, 24), w=st.integers(1, 24), c=st.integers(1, 4), data=st.data(),
    dtype=st.sampled_from([np.float32, np.float16]), two=st.booleans(), patches=st.sampled_from([1, 2]),
)
def test_random_sets_and_selections_match_reference(h, w, c, data, dtype, two, patches):
    ph = data.draw(st.integers(1, h))
    pw = data.draw(st.integers(1, w))
    k = data.draw(st.integers(1, 4))
    ms = MaskSet.square((h, w), (ph, pw), masks_per_axis=k) if patches == 1 else MaskSet.two_patch((h, w), (ph, pw), masks_per_axis=k)
    n = data.draw(st.integers(0, 12))
    idx = st.integers(0, len(ms) - 1)
    sel = np.array([[data.draw(idx), data.draw(idx)] for _ in range(n)], dtype=np.int64).reshape(n, 2) if two else np.array([data.draw(idx) for _ in range(n)], dtype=np.int64)
    image = np.random.default_rng(n).standard_normal((c, h, w)).astype(dtype)
    out = poisoned((n, c, h, w), dtype)
    assert np.array_equal(write_masked(image, ms, sel, out), masked_batch_reference(image, ms.windows, sel))


# ------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_value_errors_and_write_nothing():
    image = np.zeros((3, 224, 224), np.float32)
    out = poisoned((36, 3, 224, 224), np.float32)
    cases = [
        (image.astype(np.float64), out, np.arange(3), "float32 or float16"),
        (image, out.astype(np.float16), np.arange(3), "float32"),
        (np.zeros((3, 224, 112), np.float32), out, np.arange(3), "mask set was built"),
        (np.asfortranarray(np.zeros((3, 224, 224), np.float32)), out, np.arange(3), "contiguous"),
        (image, out[:, :, :, ::2], np.arange(3), "shape"),
        (image, out[:2], np.arange(3), "holds 2 images"),
        (image, out, np.array([0, 36]), r"\[0, 36\)"),
        (image, out, np.array([-1]), r"\[0, 36\)"),
        (image, out, np.zeros((2, 3), int), r"\(N, 2\)"),
        (image, out, np.array([0.5]), "integer"),
        (image[0], out, np.arange(3), r"\(C, H, W\)"),
    ]
    for img, dst, sel, message in cases:
        with pytest.raises(ValueError, match=message):
            write_masked(img, MS, sel, dst)
    assert np.isnan(out).all()
    assert issubclass(KernelError, ValueError)


def test_read_only_output_is_refused():
    out = np.zeros((1, 3, 224, 224), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        write_masked(np.zeros((3, 224, 224), np.float32), MS, [0], out)


def test_cpp_side_rechecks_indices():
    with pytest.raises(ValueError, match="out of range"):
        _masking_cpu.write_masked(np.zeros((3, 224, 224), np.float32), MS.windows, np.array([99], np.int32), 1,
                                  np.zeros((1, 3, 224, 224), np.float32), 0)


# ------------------------------------------------------------------------------------ float16 bits
def test_half_conversion_matches_numpy_on_hard_values():
    rng = np.random.default_rng(2)
    specials = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, 5.96e-8, 2.98e-8,
                         2.99e-8, 6.1e-5, 6.09e-5, 1.0009765625, 1.00048828125, 1.000732421875], np.float32)
    values = np.concatenate([specials, rng.standard_normal(20000).astype(np.float32) * 10,
                             (rng.random(20000) * 1e-4).astype(np.float32), rng.random(5000).astype(np.float32) * 70000])
    ours = np.array([_masking_cpu.float_to_half_bits(float(v)) for v in values], dtype=np.uint16)
    with np.errstate(over="ignore"):  # values past 65520 must become inf, as they do in numpy
        expected = values.astype(np.float16).view(np.uint16)
    assert np.array_equal(ours, expected)
    assert _masking_cpu.float_to_half_bits(float("nan")) & 0x7C00 == 0x7C00
    assert np.array_equal(_masking_cpu.floats_to_halves(values), expected), "the vector path agrees with numpy too"


def test_vector_half_conversion_is_the_one_the_cpu_has():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expected = {"x86_64": "f16c" if " f16c" in flags else "portable", "aarch64": "neon"}.get(platform.machine(), "portable")
    assert _masking_cpu.half_conversion_path == expected


def test_vector_half_conversion_is_bit_identical_to_the_portable_routine():
    """Every float32 bit pattern (NaNs with payloads, subnormals, both infinities, ties) converts to the same half
    on the F16C / NEON path as with the routine the CUDA kernel uses. PCEDGE_HALF_STEP > 1 samples every
    step-th pattern (the ARM lane under emulation); the default checks all 2^32 of them (about 11 s natively)."""
    step = int(os.environ.get("PCEDGE_HALF_STEP", "1"))
    checked, differing, examples = _masking_cpu.half_conversion_mismatches(0, 2**32, step)
    assert checked == -(-(2**32) // step)
    assert differing == 0, [hex(b) for b in examples]
    nan_payloads = np.array([0x7F800001, 0x7FC00000, 0xFFBFFFFF, 0x7FFFFFFF, 0x7F802000], np.uint32).view(np.float32)
    fast, portable = _masking_cpu.floats_to_halves(nan_payloads), _masking_cpu.floats_to_halves(nan_payloads, True)
    assert np.array_equal(fast, portable) and ((fast & 0x7E00) == 0x7E00).all(), "NaNs stay NaNs, quieted"


# ------------------------------------------------------------------------------------ frame twin
FRAME_TOLERANCE = 1e-4  # normalized units; the CPU twin and the numpy reference both work in float32


@pytest.mark.parametrize("shape", [(480, 640, 3), (720, 1280, 3), (224, 224, 3), (100, 80, 3), (300, 200, 1), (240, 320, 4)])
def test_frame_twin_matches_reference(shape):
    spec = PreprocessSpec()
    frame = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    out = poisoned((36, 3, 224, 224), np.float32)
    got = write_masked_frame(frame, spec, MS, np.arange(36), out)
    ref = masked_batch_reference(preprocess_reference(frame, spec), MS.windows, np.arange(36))
    assert np.abs(got - ref).max() <= FRAME_TOLERANCE


def test_frame_twin_float16_two_mask_bicubic_and_rgb_order():
    spec = PreprocessSpec(interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    frame = np.random.default_rng(4).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    pairs = np.array([[0, 1], [5, 30], [7, 7]])
    out = poisoned((3, 3, 224, 224), np.float16)
    got = write_masked_frame(frame, spec, MS, pairs, out, frame_order="RGB")
    ref = masked_batch_reference(preprocess_reference(frame, spec, frame_order="RGB"), MS.windows, pairs)
    assert np.abs(got.astype(np.float32) - ref).max() <= 2e-3  # one float16 step near |x| = 1


def test_frame_twin_agrees_with_opencv_resize_within_its_fixed_point_rounding():
    import cv2

    spec = PreprocessSpec()
    frame = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    geo = spec.geometry(480, 640)
    resized = cv2.resize(frame, (geo.resized_w, geo.resized_h), interpolation=cv2.INTER_LINEAR)
    crop = resized[geo.top : geo.top + 224, geo.left : geo.left + 224, ::-1].astype(np.float32) / 255.0
    cv_ref = ((crop - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)).transpose(2, 0, 1)
    got = write_masked_frame(frame, spec, MS, [0], np.empty((1, 3, 224, 224), np.float32))[0]
    keep = MS.keep_masks()[0]
    # OpenCV rounds to uint8 after resizing: at most 1/255 per pixel, i.e. 1 / (255 * min(std)). On Arm its resize
    # runs in a custom HAL (KleidiCV / carotene) with coarser fixed-point weights: up to 2 levels (1.3 measured under
    # the ARM lane); the writer itself equals the float reference on every platform (test_frame_twin_matches_reference).
    levels = 2 if cv2.getBuildInformation().count("KleidiCV") or "carotene" in cv2.getBuildInformation() else 1
    assert np.abs(got - cv_ref)[:, keep].max() <= levels / (255 * min(spec.std)) + 1e-5


def test_frame_errors():
    spec = PreprocessSpec()
    out = np.empty((36, 3, 224, 224), np.float32)
    for frame, message in [
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((10, 10, 2), np.uint8), r"\(H, W\)"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            write_masked_frame(frame, spec, MS, np.arange(36), out)
    with pytest.raises(ValueError, match="mask set was built"):
        write_masked_frame(np.zeros((50, 50, 3), np.uint8), PreprocessSpec(input_size=(112, 112)), MS, [0], out)


# ------------------------------------------------------------------------------------ CUDA
NVCC = shutil.which("nvcc")


@pytest.mark.slow
@pytest.mark.skipif(NVCC is None, reason="nvcc not installed: the CUDA kernel cannot be compiled here")
@pytest.mark.skipif(platform.machine() != "x86_64" or os.environ.get("QEMU_CPU") is not None,
                    reason="nvcc found here is an x86 host binary; this Python runs under emulation (the ARM lane)")
def test_cuda_kernel_compiles_for_orin_and_hopper(tmp_path):
    import sysconfig

    import pybind11

    cmd = [NVCC, "-std=c++17", "-c", "-Xcompiler", "-fPIC", "--resource-usage", f"-I{ROOT / 'cpp_ext'}",
           f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}",
           "-gencode=arch=compute_87,code=sm_87", "-gencode=arch=compute_90,code=sm_90",
           str(ROOT / "cpp_ext" / "masking_cuda.cu"), "-o", str(tmp_path / "k.o")]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    report = build.stdout + build.stderr  # ptxas names each kernel and the architecture it was built for
    for arch in ("sm_87", "sm_90"):
        assert "masked_frame_kernel" in report and f"for '{arch}'" in report, report[-2000:]
    assert "spill" not in report or "0 bytes spill stores" in report


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


requires_cuda = pytest.mark.skipif(
    not cuda_writer_available() or _cupy() is None,
    reason="no CUDA GPU with the built _masking_cuda extension and CuPy here: the GPU kernel runs only on a GPU machine",
)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cuda_writer_matches_cpu_twin(dtype):
    cp = _cupy()
    rng = np.random.default_rng(6)
    image = rng.standard_normal((3, 224, 224)).astype(dtype)
    pairs = np.array([[i, (i * 7) % 36] for i in range(36)])
    writer = CudaMaskWriter(MS, max_images=64)
    out = cp.full((64, 3, 224, 224), cp.nan, dtype=dtype)
    writer.write_masked(cp.asarray(image), pairs, out)
    cp.cuda.Stream.null.synchronize()
    assert np.array_equal(cp.asnumpy(out[:36]), write_masked(image, MS, pairs, np.empty((36, 3, 224, 224), dtype)))
    assert bool(cp.isnan(out[36:]).all())


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("shape", [(480, 640, 3), (1080, 1920, 3), (300, 200, 1), (240, 320, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cuda_frame_kernel_matches_cpu_twin(shape, dtype):
    cp = _cupy()
    spec = PreprocessSpec()
    frame = np.random.default_rng(7).integers(0, 256, shape, dtype=np.uint8)
    writer = CudaMaskWriter(MS, max_images=36)
    out = cp.full((36, 3, 224, 224), cp.nan, dtype=dtype)
    writer.write_masked_frame(cp.asarray(frame), spec, np.arange(36), out)
    cp.cuda.Stream.null.synchronize()
    cpu = write_masked_frame(frame, spec, MS, np.arange(36), np.empty((36, 3, 224, 224), dtype))
    diff = np.abs(cp.asnumpy(out).astype(np.float32) - cpu.astype(np.float32)).max()
    assert diff <= (1e-4 if dtype == np.float32 else 2e-3)  # FMA contraction on the GPU; one half step


@pytest.mark.gpu
@requires_cuda
def test_cuda_writer_refuses_bad_buffers():
    cp = _cupy()
    writer = CudaMaskWriter(MS, max_images=4)
    with pytest.raises(ValueError):
        writer.write_masked(np.zeros((3, 224, 224), np.float32), [0], cp.zeros((4, 3, 224, 224), cp.float32))
    with pytest.raises(ValueError, match="holds 2"):
        writer.write_masked(cp.zeros((3, 224, 224), cp.float32), [0, 1, 2], cp.zeros((2, 3, 224, 224), cp.float32))
    with pytest.raises(ValueError, match="exceeds max_images"):
        writer.write_masked(cp.zeros((3, 224, 224), cp.float32), list(range(5)), cp.zeros((8, 3, 224, 224), cp.float32))
