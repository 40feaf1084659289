// The bf16 dot-product GEMM's variants (gemm_bf16_dot.cpp, compiled once per variant) and the
// facts its packing and its kernels share. Callers use cpu::gemm_bf16_dot (gastrt/cpu_ops.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gastrt/params.h"

namespace gastrt {
namespace cpu {

// Columns per panel of the packed weights (pack_bf16_pairs): four 16-lane vectors.
constexpr int kBf16DotPanel = 64;
// Pair rows of a panel: taps * ceil(ci / 2), rounded up to whole AMX tiles (16 pair rows; the
// rows past the weights are zero) so that every tile load stays inside the panel.
static inline int64_t bf16_pairs_per_tap(int32_t ci) { return (int64_t(ci) + 1) / 2; }
static inline int64_t bf16_pair_rows(int32_t taps, int32_t ci) {
  return (int64_t(taps) * bf16_pairs_per_tap(ci) + 15) / 16 * 16;
}

// The helpers below are static: included by files compiled with AVX-512 / AMX flags too, they
// must not become weak symbols shared with baseline code.

// fp32 -> bf16 bits as vcvtne2ps2bf16 rounds: RNE, zero and denormal inputs to a signed zero,
// NaN quieted (its top half kept), infinity kept. The weights' packing and the activations' go
// through this (or that instruction), so the emulated and the AVX512-BF16 kernel read the
// same bits.
static inline uint16_t bf16_round(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  if ((b & 0x7f800000u) == 0) return uint16_t((b >> 16) & 0x8000u);
  if ((b & 0x7fffffffu) > 0x7f800000u) return uint16_t((b >> 16) | 0x40u);
  return uint16_t((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// One pair of the kernels' operands: bf16_round(lo) in the low half, bf16_round(hi) in the high.
static inline uint32_t bf16_pair(float lo, float hi) {
  return uint32_t(bf16_round(lo)) | uint32_t(bf16_round(hi)) << 16;
}

// What the emulations read, as vdpbf16ps and tdpbf16ps do: denormals as zero (also how both
// flush a denormal sum), bf16 bits widened.
static inline float bf16_daz(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  if ((b & 0x7f800000u) == 0) b &= 0x80000000u;
  std::memcpy(&x, &b, sizeof b);
  return x;
}
static inline float bf16_value_daz(uint32_t h16) {
  const uint32_t b = h16 << 16;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return bf16_daz(f);
}

// A per-thread buffer of at least n pairs, grown and never shrunk (gemm_bf16_dot_select.cpp).
// The kernels' files use it instead of std::vector: compiled with AVX-512 / AMX flags, they must
// instantiate no library templates, whose weak copies the linker might keep for every caller.
uint32_t* bf16_pairs_scratch(size_t n);

// Each variant: gemm, and pack_a_pairs (A's m rows as bf16 pairs, row stride ld >= taps *
// ceil(ci / 2): tap t's pair j at t * ceil(ci / 2) + j, the high half zero past an odd ci; the
// AMX kernels use it too).
namespace bf16dot_emu {
void gemm(const GemmBf16DotParams& p);
void pack_a_pairs(const GemmBf16DotParams& p, int64_t ld, uint32_t* ap);
}  // namespace bf16dot_emu
namespace bf16dot_avx512 {  // x86 builds only
void gemm(const GemmBf16DotParams& p);
void pack_a_pairs(const GemmBf16DotParams& p, int64_t ld, uint32_t* ap);
}  // namespace bf16dot_avx512

// The AMX kernels (gemm_bf16_amx.cpp): tiles of 32 rows, so gemm_bf16_dot gives them products of
// at least kBf16AmxMinRows rows (fewer would leave most of each tile padding; the vdpbf16ps
// kernel takes those). Not measured on AMX hardware yet.
constexpr int64_t kBf16AmxMinRows = 32;
namespace bf16amx_emu { void gemm(const GemmBf16DotParams& p); }
namespace bf16amx_hw { void gemm(const GemmBf16DotParams& p); }  // x86 builds only

}  // namespace cpu
}  // namespace gastrt
