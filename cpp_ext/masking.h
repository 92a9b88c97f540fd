// Index math shared by the CPU kernel (masking_cpu.cpp) and the CUDA kernel (masking_cuda.cu).
//
// One source of truth: every formula that decides which pixel is masked, where a resized pixel samples
// the camera frame, and how a float becomes a half lives here once, compiled for the host and the device.
// The CPU tests therefore cover the math the GPU runs.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define PCE_HD __host__ __device__ __forceinline__
#else
#define PCE_HD inline
#endif

namespace pce {

// A window is int32 [y0, x0, y1, x1], half-open. The mask table is (K, R, 4): R windows per mask.
constexpr int kWindowInts = 4;

// Selection modes: one-mask images list one mask index each, two-mask images a pair (i, j);
// unmasked images (the undefended model's input) list one ignored entry each.
enum SelectionMode : int { kUnmasked = 0, kOneMask = 1, kTwoMask = 2 };

// Entries per output image in a selection of the given mode.
PCE_HD int selection_stride(int mode) { return mode > 0 ? mode : 1; }

// The windows removed from output image n: R windows of mask sel[n] (one-mask), or of masks
// sel[2n] and sel[2n+1] (two-mask). Fills `out` (room for 2R windows) and returns how many.
PCE_HD int gather_windows(const int32_t* table, int windows_per_mask, const int32_t* selection, int mode, int n,
                          const int32_t** out) {
  int count = 0;
  for (int m = 0; m < mode; ++m) {
    const int32_t mask = selection[n * mode + m];
    for (int r = 0; r < windows_per_mask; ++r) {
      out[count++] = table + (static_cast<int64_t>(mask) * windows_per_mask + r) * kWindowInts;
    }
  }
  return count;
}

// True when pixel (y, x) lies inside any of the windows: such a pixel becomes 0 after normalization.
PCE_HD bool pixel_masked(const int32_t* const* windows, int count, int y, int x) {
  for (int w = 0; w < count; ++w) {
    const int32_t* win = windows[w];
    if (y >= win[0] && y < win[2] && x >= win[1] && x < win[3]) return true;
  }
  return false;
}

// Column span [x0, x1) that window `win` removes from row y; false when the row misses the window.
PCE_HD bool row_span(const int32_t* win, int y, int* x0, int* x1) {
  if (y < win[0] || y >= win[2]) return false;
  *x0 = win[1];
  *x1 = win[3];
  return true;
}

// Bilinear tap along one axis, OpenCV INTER_LINEAR convention (half-pixel centres, border clamp):
// output coordinate `dst` of the resized image (after adding the crop offset) samples
// (1 - w1) * src[i0] + w1 * src[i1].
struct LinearTap {
  int i0;
  int i1;
  float w1;
};

PCE_HD LinearTap linear_tap(int dst, int crop_offset, float scale, int src_len) {
  const float f = (static_cast<float>(dst + crop_offset) + 0.5f) * scale - 0.5f;
  int i0 = static_cast<int>(f);  // truncation, then floor for negative f
  if (static_cast<float>(i0) > f) i0 -= 1;
  float w1 = f - static_cast<float>(i0);
  if (i0 < 0) {
    i0 = 0;
    w1 = 0.0f;
  }
  if (i0 >= src_len - 1) {
    i0 = src_len - 1;
    w1 = 0.0f;
  }
  LinearTap tap;
  tap.i0 = i0;
  tap.i1 = i0 + 1 < src_len ? i0 + 1 : src_len - 1;
  tap.w1 = w1;
  return tap;
}

// One channel of a uint8 HWC frame sampled bilinearly, in 0..255.
PCE_HD float sample_bilinear(const uint8_t* frame, int frame_w, int channels, int channel, LinearTap ty, LinearTap tx) {
  const int64_t row0 = static_cast<int64_t>(ty.i0) * frame_w;
  const int64_t row1 = static_cast<int64_t>(ty.i1) * frame_w;
  const float a = frame[(row0 + tx.i0) * channels + channel];
  const float b = frame[(row0 + tx.i1) * channels + channel];
  const float c = frame[(row1 + tx.i0) * channels + channel];
  const float d = frame[(row1 + tx.i1) * channels + channel];
  const float top = a + (b - a) * tx.w1;
  const float bottom = c + (d - c) * tx.w1;
  return top + (bottom - top) * ty.w1;
}

// (v / 255 - mean) / std, written as v * scale + shift with scale = 1 / (255 std), shift = -mean / std.
PCE_HD float normalize(float v255, float scale, float shift) { return v255 * scale + shift; }

// IEEE binary16 bits of a float, round to nearest even (the same result as numpy's astype(float16) for every
// non-NaN value). A NaN stays a NaN, quieted, with the top bits of its payload: what the F16C and NEON
// conversion instructions produce, so the host's vector paths (half_convert.h) give identical bits.
PCE_HD uint16_t float_to_half_bits(float value) {
  union {
    float f;
    uint32_t u;
  } bits;
  bits.f = value;
  const uint32_t x = bits.u;
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf, or nan (quieted, payload truncated)
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {                                                // subnormal half or zero
    if (abs < 0x33000000u) return sign;                                   // below half the smallest subnormal
    const uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);  // value / 2^-24 = mant * 2^(exp - 126)
    const uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t mid = 1u << (shift - 1);
    const uint32_t rounded = half + ((rem > mid || (rem == mid && (half & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | rounded);
  }
  const uint32_t rebased = abs - 0x38000000u;  // exponent bias 127 -> 15
  const uint32_t half = rebased >> 13;
  const uint32_t rem = rebased & 0x1fffu;
  const uint32_t rounded = half + ((rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ? 1u : 0u);
  return static_cast<uint16_t>(sign | rounded);
}

// Grid sizing shared by the launchers: ceil(n / block).
PCE_HD int64_t div_up(int64_t n, int64_t block) { return (n + block - 1) / block; }

}  // namespace pce
