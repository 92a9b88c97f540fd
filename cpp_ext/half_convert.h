// float32 -> IEEE binary16 for whole rows on the host, with the CPU's conversion instruction where it has one.
//
// x86-64: F16C (vcvtps2ph, 8 lanes), chosen at run time so one build runs on every x86 CPU; aarch64: NEON
// (fcvtn, 4 lanes, part of ARMv8). Both round to nearest even and quiet NaNs keeping the payload's top bits,
// exactly as pce::float_to_half_bits does, so every path gives the same bits (tested exhaustively against it).
// Host-only: the CUDA kernel converts with pce::float_to_half_bits directly.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "masking.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define PCE_HALF_X86 1
#elif defined(__aarch64__)
#include <arm_neon.h>
#define PCE_HALF_NEON 1
#endif

namespace pce {

inline void floats_to_halves_portable(const float* src, uint16_t* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = float_to_half_bits(src[i]);
}

#if defined(PCE_HALF_X86)
__attribute__((target("avx,f16c"))) inline void floats_to_halves_f16c(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  floats_to_halves_portable(src + i, dst + i, n - i);
}

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

#if defined(PCE_HALF_NEON)
inline void floats_to_halves_neon(const float* src, uint16_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  floats_to_halves_portable(src + i, dst + i, n - i);
}
#endif

// Which conversion floats_to_halves uses on this CPU: "f16c", "neon" or "portable".
inline const char* half_conversion_path() {
#if defined(PCE_HALF_X86)
  return cpu_has_f16c() ? "f16c" : "portable";
#elif defined(PCE_HALF_NEON)
  return "neon";
#else
  return "portable";
#endif
}

inline void floats_to_halves(const float* src, uint16_t* dst, size_t n, bool portable_only = false) {
#if defined(PCE_HALF_X86)
  if (!portable_only && cpu_has_f16c()) return floats_to_halves_f16c(src, dst, n);
#elif defined(PCE_HALF_NEON)
  if (!portable_only) return floats_to_halves_neon(src, dst, n);
#endif
  floats_to_halves_portable(src, dst, n);
}

}  // namespace pce
