// CPU masked-batch writer: N masked copies of one image, written in place into a caller's buffer.
//
// Rows are copied with memcpy and the masked spans cleared with memset (0.0 is all-zero bits in float32
// and float16), so the writer runs at memory speed. All index math comes from masking.h, shared with
// the CUDA kernel. The GIL is released and large batches are split over threads by output image.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "half_convert.h"
#include "masking.h"

namespace py = pybind11;

namespace {

struct MaskTable {
  const int32_t* windows;  // (K, R, 4)
  int num_masks;
  int windows_per_mask;
  const int32_t* selection;  // (N) or (N, 2)
  int mode;
};

// Batches smaller than this are written on the calling thread: starting threads would cost more.
constexpr int64_t kParallelBytes = int64_t(1) << 21;

// Clear the spans that the windows of output n remove from a C x H x W image at `dst`.
void clear_windows(char* dst, const MaskTable& t, int n, int channels, int height, int width, size_t elem) {
  const int32_t* wins[8];
  const int count = pce::gather_windows(t.windows, t.windows_per_mask, t.selection, t.mode, n, wins);
  const size_t plane = size_t(height) * width * elem;
  for (int c = 0; c < channels; ++c) {
    char* base = dst + c * plane;
    for (int w = 0; w < count; ++w) {
      for (int y = wins[w][0]; y < wins[w][2]; ++y) {
        int x0, x1;
        if (pce::row_span(wins[w], y, &x0, &x1)) {
          std::memset(base + (size_t(y) * width + x0) * elem, 0, size_t(x1 - x0) * elem);
        }
      }
    }
  }
}

// out[n] = src with the windows of n cleared, for n in [begin, end). `src` may not alias these outputs.
void copy_masked_range(const char* src, char* out, const MaskTable& t, int begin, int end, int channels, int height,
                       int width, size_t elem) {
  const size_t image_bytes = size_t(channels) * height * width * elem;
  for (int n = begin; n < end; ++n) {
    char* dst = out + n * image_bytes;
    std::memcpy(dst, src, image_bytes);
    clear_windows(dst, t, n, channels, height, width, elem);
  }
}

int resolve_threads(int requested, int64_t bytes, int n) {
  if (bytes < kParallelBytes || n < 2) return 1;
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  int threads = requested > 0 ? requested : std::max(hw, 1);
  return std::max(1, std::min(threads, n));
}

// Run copy_masked_range over [first, n) split across threads.
void copy_masked_parallel(const char* src, char* out, const MaskTable& t, int first, int n, int channels, int height,
                          int width, size_t elem, int threads) {
  if (threads <= 1) {
    copy_masked_range(src, out, t, first, n, channels, height, width, elem);
    return;
  }
  std::vector<std::thread> pool;
  const int total = n - first;
  for (int k = 0; k < threads; ++k) {
    const int b = first + total * k / threads;
    const int e = first + total * (k + 1) / threads;
    if (b < e) pool.emplace_back(copy_masked_range, src, out, std::cref(t), b, e, channels, height, width, elem);
  }
  for (auto& th : pool) th.join();
}

// ------------------------------------------------------------------------------------- validation
void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

size_t element_size(const py::array& a, const char* name) {
  if (py::isinstance<py::array_t<float>>(a)) return 4;
  if (a.dtype().kind() == 'f' && a.itemsize() == 2) return 2;
  throw std::invalid_argument(std::string(name) + " must be float32 or float16");
}

void require_contiguous(const py::array& a, const char* name) {
  require((a.flags() & py::array::c_style) != 0, std::string(name) + " must be C-contiguous");
}

MaskTable make_table(const py::array_t<int32_t, 0>& windows, const py::array_t<int32_t, 0>& selection, int mode,
                     int64_t* count) {
  require(windows.ndim() == 3 && windows.shape(2) == 4, "windows must have shape (K, R, 4)");
  require_contiguous(windows, "windows");
  require_contiguous(selection, "selection");
  require(windows.shape(1) >= 1 && windows.shape(1) <= 4, "windows per mask must be 1..4");
  require(mode == pce::kUnmasked || mode == pce::kOneMask || mode == pce::kTwoMask,
          "mode must be 0 (unmasked), 1 (one-mask) or 2 (two-mask)");
  require(selection.size() % pce::selection_stride(mode) == 0, "two-mask selection must hold pairs");
  MaskTable t{windows.data(), static_cast<int>(windows.shape(0)), static_cast<int>(windows.shape(1)),
              selection.data(), mode};
  for (py::ssize_t i = 0; i < selection.size(); ++i) {
    const int32_t m = t.selection[i];
    require(m >= 0 && m < t.num_masks, "selection index " + std::to_string(m) + " out of range [0, " +
                                           std::to_string(t.num_masks) + ")");
  }
  *count = selection.size() / pce::selection_stride(mode);
  return t;
}

// ------------------------------------------------------------------------------------- bindings
py::array write_masked(py::array image, py::array_t<int32_t, 0> windows, py::array_t<int32_t, 0> selection, int mode,
                       py::array out, int num_threads) {
  require(image.ndim() == 3, "image must be (C, H, W)");
  require(out.ndim() == 4, "out must be (N, C, H, W)");
  require_contiguous(image, "image");
  require_contiguous(out, "out");
  require(out.writeable(), "out must be writeable");
  const size_t elem = element_size(image, "image");
  require(element_size(out, "out") == elem && image.dtype().is(out.dtype()), "out must have the image's dtype");
  const int c = static_cast<int>(image.shape(0)), h = static_cast<int>(image.shape(1)), w = static_cast<int>(image.shape(2));
  require(out.shape(1) == c && out.shape(2) == h && out.shape(3) == w, "out images must have the image's shape");
  int64_t n = 0;
  MaskTable t = make_table(windows, selection, mode, &n);
  require(out.shape(0) >= n, "out holds " + std::to_string(out.shape(0)) + " images, selection needs " + std::to_string(n));
  for (py::ssize_t i = 0; i < windows.size(); i += 4) {
    const int32_t* win = windows.data() + i;
    require(win[0] >= 0 && win[1] >= 0 && win[2] <= h && win[3] <= w && win[0] < win[2] && win[1] < win[3],
            "a window lies outside the image");
  }
  const char* src = static_cast<const char*>(image.data());
  char* dst = static_cast<char*>(out.mutable_data());
  const int64_t bytes = n * int64_t(c) * h * w * elem;
  {
    py::gil_scoped_release release;
    copy_masked_parallel(src, dst, t, 0, static_cast<int>(n), c, h, w, elem, resolve_threads(num_threads, bytes, n));
  }
  return out;
}

// Resize, crop, reorder and normalize one frame into image 0 of `dst` (float32 or float16), a row at a time:
// each row is computed in float32, then stored as is or converted with the CPU's half instruction.
void write_normalized_frame(const uint8_t* frame, int fh, int fw, int fc, int resized_h, int resized_w, int top,
                            int left, const int* src_channel, const float* scale, const float* shift, int h, int w,
                            char* dst, size_t elem) {
  const float sy = static_cast<float>(fh) / resized_h, sx = static_cast<float>(fw) / resized_w;
  std::vector<pce::LinearTap> xtaps(w);
  for (int x = 0; x < w; ++x) xtaps[x] = pce::linear_tap(x, left, sx, fw);
  std::vector<float> row(w);
  for (int y = 0; y < h; ++y) {
    const pce::LinearTap ty = pce::linear_tap(y, top, sy, fh);
    for (int c = 0; c < 3; ++c) {
      for (int x = 0; x < w; ++x) {
        row[x] = pce::normalize(pce::sample_bilinear(frame, fw, fc, src_channel[c], ty, xtaps[x]), scale[c], shift[c]);
      }
      const size_t offset = (size_t(c) * h + y) * w;
      if (elem == 4) {
        std::memcpy(reinterpret_cast<float*>(dst) + offset, row.data(), size_t(w) * sizeof(float));
      } else {
        pce::floats_to_halves(row.data(), reinterpret_cast<uint16_t*>(dst) + offset, size_t(w));
      }
    }
  }
}

py::array write_masked_frame(py::array_t<uint8_t, 0> frame, int resized_h, int resized_w, int top, int left,
                             std::vector<int> src_channel, std::vector<float> scale, std::vector<float> shift,
                             py::array_t<int32_t, 0> windows, py::array_t<int32_t, 0> selection, int mode, py::array out,
                             int num_threads) {
  require(frame.ndim() == 3 && (frame.shape(2) == 1 || frame.shape(2) == 3 || frame.shape(2) == 4),
          "frame must be (H, W, 1|3|4) uint8");
  require_contiguous(frame, "frame");
  require(out.ndim() == 4 && out.shape(1) == 3, "out must be (N, 3, H, W)");
  require_contiguous(out, "out");
  require(out.writeable(), "out must be writeable");
  require(src_channel.size() == 3 && scale.size() == 3 && shift.size() == 3, "channel maps need 3 entries");
  for (int ch : src_channel) require(ch >= 0 && ch < frame.shape(2), "source channel out of range");
  const size_t elem = element_size(out, "out");
  const int fh = static_cast<int>(frame.shape(0)), fw = static_cast<int>(frame.shape(1)), fc = static_cast<int>(frame.shape(2));
  const int h = static_cast<int>(out.shape(2)), w = static_cast<int>(out.shape(3));
  require(resized_h >= 1 && resized_w >= 1 && top >= 0 && left >= 0 && top + h <= resized_h && left + w <= resized_w,
          "the crop must lie inside the resized image");
  int64_t n = 0;
  MaskTable t = make_table(windows, selection, mode, &n);
  require(out.shape(0) >= n, "out holds " + std::to_string(out.shape(0)) + " images, selection needs " + std::to_string(n));
  if (n == 0) return out;
  for (py::ssize_t i = 0; i < windows.size(); i += 4) {
    const int32_t* win = windows.data() + i;
    require(win[0] >= 0 && win[1] >= 0 && win[2] <= h && win[3] <= w && win[0] < win[2] && win[1] < win[3],
            "a window lies outside the output image");
  }
  char* dst = static_cast<char*>(out.mutable_data());
  const uint8_t* src = frame.data();
  const int64_t bytes = n * int64_t(3) * h * w * elem;
  {
    py::gil_scoped_release release;
    // The normalized image is built once in out[0], copied masked into out[1..n), then out[0] is masked
    // last: no intermediate buffer, one pass over the frame.
    write_normalized_frame(src, fh, fw, fc, resized_h, resized_w, top, left, src_channel.data(), scale.data(), shift.data(),
                           h, w, dst, elem);
    copy_masked_parallel(dst, dst, t, 1, static_cast<int>(n), 3, h, w, elem, resolve_threads(num_threads, bytes, n));
    clear_windows(dst, t, 0, 3, h, w, elem);
  }
  return out;
}

uint16_t float_to_half_bits(float v) { return pce::float_to_half_bits(v); }

// Bit patterns in [first, last) (stepping by `step`) whose conversion by this CPU's vector path differs from the
// portable routine; the first few are returned. Exhaustive over all 2^32 floats in seconds natively.
py::tuple half_conversion_mismatches(uint64_t first, uint64_t last, uint64_t step) {
  require(step >= 1 && first <= last && last <= (uint64_t(1) << 32), "need 1 <= step and first <= last <= 2^32");
  constexpr size_t kChunk = 4096;
  std::vector<float> src(kChunk);
  std::vector<uint16_t> fast(kChunk), portable(kChunk);
  uint64_t checked = 0, differing = 0;
  std::vector<uint32_t> examples;
  {
    py::gil_scoped_release release;
    for (uint64_t base = first; base < last;) {
      size_t n = 0;
      for (; n < kChunk && base < last; ++n, base += step) {
        const uint32_t bits = static_cast<uint32_t>(base);
        std::memcpy(&src[n], &bits, sizeof(bits));
      }
      pce::floats_to_halves(src.data(), fast.data(), n);
      pce::floats_to_halves(src.data(), portable.data(), n, /*portable_only=*/true);
      for (size_t i = 0; i < n; ++i) {
        if (fast[i] != portable[i]) {
          ++differing;
          if (examples.size() < 8) {
            uint32_t bits;
            std::memcpy(&bits, &src[i], sizeof(bits));
            examples.push_back(bits);
          }
        }
      }
      checked += n;
    }
  }
  return py::make_tuple(checked, differing, examples);
}

py::array_t<uint16_t> floats_to_halves(py::array_t<float, py::array::c_style | py::array::forcecast> values, bool portable_only) {
  py::array_t<uint16_t> out(values.size());
  pce::floats_to_halves(values.data(), out.mutable_data(), static_cast<size_t>(values.size()), portable_only);
  return out;
}

}  // namespace

PYBIND11_MODULE(_masking_cpu, m) {
  m.doc() = "CPU masked-batch writers for PatchCleanser (index math shared with the CUDA kernel).";
  m.def("write_masked", &write_masked, py::arg("image"), py::arg("windows"), py::arg("selection"), py::arg("mode"),
        py::arg("out"), py::arg("num_threads") = 0,
        "Write N masked copies of a normalized (C, H, W) image into out[:N]; returns out.");
  m.def("write_masked_frame", &write_masked_frame, py::arg("frame"), py::arg("resized_h"), py::arg("resized_w"),
        py::arg("top"), py::arg("left"), py::arg("src_channel"), py::arg("scale"), py::arg("shift"), py::arg("windows"),
        py::arg("selection"), py::arg("mode"), py::arg("out"), py::arg("num_threads") = 0,
        "Resize (bilinear), crop, reorder channels, normalize and write N masked copies of a uint8 frame.");
  m.def("float_to_half_bits", &float_to_half_bits, "IEEE half bits of a float (round to nearest even); for tests.");
  m.def("floats_to_halves", &floats_to_halves, py::arg("values"), py::arg("portable_only") = false,
        "IEEE half bits of a float32 array, through this CPU's vector conversion unless portable_only; for tests.");
  m.def("half_conversion_mismatches", &half_conversion_mismatches, py::arg("first"), py::arg("last"), py::arg("step") = 1,
        "(checked, differing, examples): float bit patterns whose vector and portable half conversions differ.");
  m.attr("half_conversion_path") = pce::half_conversion_path();
}
