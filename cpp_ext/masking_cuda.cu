// CUDA masked-batch writer: camera frame (uint8 HWC on the device) -> resize -> crop -> RGB -> normalize ->
// N masked copies written straight into an engine's input binding, in one launch.
//
// One thread owns one (channel, y, x) element of the model input: it computes the value once (a bilinear
// sample of the frame, or a read of an already normalized image) and writes it, or 0 where masked, into
// all N outputs, so the frame is read once and every store is coalesced along x. All index math comes
// from masking.h, which the CPU kernel compiles too.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "masking.h"

namespace py = pybind11;

namespace {

constexpr int kThreads = 256;
constexpr int kMaxWindows = 8;  // 2 masks x up to 4 windows each

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

struct DeviceTable {
  const int32_t* windows;
  int windows_per_mask;
  const int32_t* selection;
  int mode;
  int count;  // output images
};

struct NormalizedSource {  // a normalized (C, H, W) image already on the device
  const void* image;
  int half;
  __device__ float load(int64_t index) const {
    return half ? __half2float(static_cast<const __half*>(image)[index]) : static_cast<const float*>(image)[index];
  }
};

template <typename T>
__device__ __forceinline__ void store(T* out, int64_t index, float value);
template <>
__device__ __forceinline__ void store<float>(float* out, int64_t index, float value) {
  out[index] = value;
}
template <>
__device__ __forceinline__ void store<uint16_t>(uint16_t* out, int64_t index, float value) {
  out[index] = pce::float_to_half_bits(value);
}

// Writes value (or 0 where the windows of image n cover the pixel) into every output image.
template <typename T>
__device__ void fan_out(T* out, const DeviceTable& t, int64_t plane_index, int64_t image_elems, int y, int x, T value,
                        T zero) {
  const int32_t* wins[kMaxWindows];
  for (int n = 0; n < t.count; ++n) {
    const int count = pce::gather_windows(t.windows, t.windows_per_mask, t.selection, t.mode, n, wins);
    out[n * image_elems + plane_index] = pce::pixel_masked(wins, count, y, x) ? zero : value;
  }
}

template <typename T>
__global__ void masked_copies_kernel(NormalizedSource src, T* out, DeviceTable t, int channels, int height, int width) {
  const int64_t image_elems = int64_t(channels) * height * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < image_elems; i += int64_t(gridDim.x) * blockDim.x) {
    const int x = static_cast<int>(i % width);
    const int y = static_cast<int>((i / width) % height);
    T value;
    store<T>(&value, 0, src.load(i));
    fan_out<T>(out, t, i, image_elems, y, x, value, T(0));
  }
}

struct FrameParams {
  const uint8_t* frame;
  int frame_h, frame_w, frame_c;
  int top, left;
  float scale_y, scale_x;
  int src_channel[3];
  float scale[3];
  float shift[3];
};

template <typename T>
__global__ void masked_frame_kernel(FrameParams p, T* out, DeviceTable t, int height, int width) {
  const int64_t image_elems = int64_t(3) * height * width;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < image_elems; i += int64_t(gridDim.x) * blockDim.x) {
    const int x = static_cast<int>(i % width);
    const int y = static_cast<int>((i / width) % height);
    const int c = static_cast<int>(i / (int64_t(width) * height));
    const pce::LinearTap ty = pce::linear_tap(y, p.top, p.scale_y, p.frame_h);
    const pce::LinearTap tx = pce::linear_tap(x, p.left, p.scale_x, p.frame_w);
    const float v = pce::sample_bilinear(p.frame, p.frame_w, p.frame_c, p.src_channel[c], ty, tx);
    T value;
    store<T>(&value, 0, pce::normalize(v, p.scale[c], p.shift[c]));
    fan_out<T>(out, t, i, image_elems, y, x, value, T(0));
  }
}

int grid_for(int64_t elems, int device) {
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int64_t blocks = pce::div_up(elems, kThreads);
  const int64_t cap = int64_t(sms) * 8;  // a grid-stride loop beyond a few waves only adds blocks
  return static_cast<int>(blocks < cap ? blocks : cap);
}

// Owns the device copy of a mask set's windows and a staging area for selections.
class CudaMaskWriter {
 public:
  CudaMaskWriter(py::array_t<int32_t, py::array::c_style | py::array::forcecast> windows, int max_images)
      : num_masks_(0), windows_per_mask_(0), max_images_(max_images) {
    require(windows.ndim() == 3 && windows.shape(2) == 4, "windows must have shape (K, R, 4)");
    require(windows.shape(1) >= 1 && windows.shape(1) <= kMaxWindows / 2, "windows per mask must be 1..4");
    require(max_images >= 1, "max_images must be >= 1");
    check(cudaGetDevice(&device_), "cudaGetDevice");
    num_masks_ = static_cast<int>(windows.shape(0));
    windows_per_mask_ = static_cast<int>(windows.shape(1));
    check(cudaMalloc(&windows_, windows.nbytes()), "cudaMalloc(windows)");
    check(cudaMemcpy(windows_, windows.data(), windows.nbytes(), cudaMemcpyHostToDevice), "cudaMemcpy(windows)");
    const size_t sel_bytes = size_t(max_images) * 2 * sizeof(int32_t);
    check(cudaMalloc(&selection_, sel_bytes), "cudaMalloc(selection)");
    check(cudaMallocHost(&staging_, sel_bytes), "cudaMallocHost(staging)");
    check(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming), "cudaEventCreate");
  }
  ~CudaMaskWriter() {
    cudaEventDestroy(staged_);
    cudaFreeHost(staging_);
    cudaFree(selection_);
    cudaFree(windows_);
  }
  CudaMaskWriter(const CudaMaskWriter&) = delete;
  CudaMaskWriter& operator=(const CudaMaskWriter&) = delete;

  int num_masks() const { return num_masks_; }
  int max_images() const { return max_images_; }

  void write_masked(uintptr_t image, int half, int channels, int height, int width,
                    py::array_t<int32_t, py::array::c_style | py::array::forcecast> selection, int mode, uintptr_t out,
                    uintptr_t stream) {
    require(image != 0 && out != 0, "image and out must be device pointers");
    DeviceTable t = stage(selection, mode, stream);
    if (t.count == 0) return;
    const int64_t elems = int64_t(channels) * height * width;
    const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    NormalizedSource src{reinterpret_cast<const void*>(image), half};
    if (half) {
      masked_copies_kernel<uint16_t><<<grid_for(elems, device_), kThreads, 0, s>>>(
          src, reinterpret_cast<uint16_t*>(out), t, channels, height, width);
    } else {
      masked_copies_kernel<float><<<grid_for(elems, device_), kThreads, 0, s>>>(src, reinterpret_cast<float*>(out), t,
                                                                                channels, height, width);
    }
    check(cudaGetLastError(), "masked_copies_kernel launch");
  }

  void write_masked_frame(uintptr_t frame, int frame_h, int frame_w, int frame_c, int resized_h, int resized_w, int top,
                          int left, std::vector<int> src_channel, std::vector<float> scale, std::vector<float> shift,
                          py::array_t<int32_t, py::array::c_style | py::array::forcecast> selection, int mode,
                          uintptr_t out, int half, int height, int width, uintptr_t stream) {
    require(frame != 0 && out != 0, "frame and out must be device pointers");
    require(frame_c == 1 || frame_c == 3 || frame_c == 4, "frame must have 1, 3 or 4 channels");
    require(src_channel.size() == 3 && scale.size() == 3 && shift.size() == 3, "channel maps need 3 entries");
    require(top >= 0 && left >= 0 && top + height <= resized_h && left + width <= resized_w,
            "the crop must lie inside the resized image");
    FrameParams p;
    p.frame = reinterpret_cast<const uint8_t*>(frame);
    p.frame_h = frame_h;
    p.frame_w = frame_w;
    p.frame_c = frame_c;
    p.top = top;
    p.left = left;
    p.scale_y = static_cast<float>(frame_h) / resized_h;
    p.scale_x = static_cast<float>(frame_w) / resized_w;
    for (int c = 0; c < 3; ++c) {
      require(src_channel[c] >= 0 && src_channel[c] < frame_c, "source channel out of range");
      p.src_channel[c] = src_channel[c];
      p.scale[c] = scale[c];
      p.shift[c] = shift[c];
    }
    DeviceTable t = stage(selection, mode, stream);
    if (t.count == 0) return;
    const int64_t elems = int64_t(3) * height * width;
    const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    if (half) {
      masked_frame_kernel<uint16_t><<<grid_for(elems, device_), kThreads, 0, s>>>(p, reinterpret_cast<uint16_t*>(out), t,
                                                                                  height, width);
    } else {
      masked_frame_kernel<float><<<grid_for(elems, device_), kThreads, 0, s>>>(p, reinterpret_cast<float*>(out), t, height,
                                                                               width);
    }
    check(cudaGetLastError(), "masked_frame_kernel launch");
  }

 private:
  // Copies the selection to the device on `stream`; waits only for the previous copy out of the staging area.
  DeviceTable stage(const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& selection, int mode,
                    uintptr_t stream) {
    require(mode == pce::kUnmasked || mode == pce::kOneMask || mode == pce::kTwoMask,
          "mode must be 0 (unmasked), 1 (one-mask) or 2 (two-mask)");
    require(selection.size() % pce::selection_stride(mode) == 0, "two-mask selection must hold pairs");
    const int count = static_cast<int>(selection.size() / pce::selection_stride(mode));
    require(count <= max_images_, "selection of " + std::to_string(count) + " images exceeds max_images " +
                                      std::to_string(max_images_));
    for (py::ssize_t i = 0; i < selection.size(); ++i) {
      const int32_t m = selection.data()[i];
      require(m >= 0 && m < num_masks_, "selection index " + std::to_string(m) + " out of range [0, " +
                                            std::to_string(num_masks_) + ")");
    }
    const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    if (count > 0) {
      check(cudaEventSynchronize(staged_), "cudaEventSynchronize");
      std::copy(selection.data(), selection.data() + selection.size(), staging_);
      check(cudaMemcpyAsync(selection_, staging_, selection.nbytes(), cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
      check(cudaEventRecord(staged_, s), "cudaEventRecord");
    }
    return DeviceTable{windows_, windows_per_mask_, selection_, mode, count};
  }

  int device_ = 0;
  int num_masks_;
  int windows_per_mask_;
  int max_images_;
  int32_t* windows_ = nullptr;
  int32_t* selection_ = nullptr;
  int32_t* staging_ = nullptr;
  cudaEvent_t staged_ = nullptr;
};

}  // namespace

PYBIND11_MODULE(_masking_cuda, m) {
  m.doc() = "CUDA masked-batch writers for PatchCleanser (index math shared with the CPU kernel).";
  m.def("device_count", []() {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;  // no driver or no GPU: 0, not an error
  });
  py::class_<CudaMaskWriter>(m, "CudaMaskWriter")
      .def(py::init<py::array_t<int32_t, py::array::c_style | py::array::forcecast>, int>(), py::arg("windows"),
           py::arg("max_images"))
      .def_property_readonly("num_masks", &CudaMaskWriter::num_masks)
      .def_property_readonly("max_images", &CudaMaskWriter::max_images)
      .def("write_masked", &CudaMaskWriter::write_masked, py::arg("image"), py::arg("half"), py::arg("channels"),
           py::arg("height"), py::arg("width"), py::arg("selection"), py::arg("mode"), py::arg("out"),
           py::arg("stream") = 0)
      .def("write_masked_frame", &CudaMaskWriter::write_masked_frame, py::arg("frame"), py::arg("frame_h"),
           py::arg("frame_w"), py::arg("frame_c"), py::arg("resized_h"), py::arg("resized_w"), py::arg("top"),
           py::arg("left"), py::arg("src_channel"), py::arg("scale"), py::arg("shift"), py::arg("selection"),
           py::arg("mode"), py::arg("out"), py::arg("half"), py::arg("height"), py::arg("width"), py::arg("stream") = 0);
}
