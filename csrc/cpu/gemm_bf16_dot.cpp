// The bf16 dot-product GEMM (GemmBf16DotParams, params.h; entry: cpu::gemm_bf16_dot,
// gemm_bf16_dot.h), compiled twice from this one source (CMakeLists.txt):
//  - bf16dot_avx512: vdpbf16ps (AVX512-BF16), fp32 sums of bf16 pairs, 32 MACs per instruction;
//  - bf16dot_emu: the same kernel, loop for loop, with each instruction emulated lane by lane in
//    portable C++ (the instruction's pseudo-code in the Intel SDM: per lane, two fp32 FMAs,
//    odd element first, denormal inputs read as zero and denormal results flushed, RNE). It runs
//    anywhere, so the kernel's blocking, packing and edges are tested on every CPU, and the
//    bf16 engines' accuracy on this path is checked in CI whatever the machine has.
// Both share every index computation below; only the Ops struct differs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(GASTRT_BF16_NATIVE)
#include <immintrin.h>
#endif

#include "gemm_bf16_dot.h"

#ifndef GASTRT_BF16_NS
#define GASTRT_BF16_NS bf16dot_emu
#endif

namespace gastrt {
namespace cpu {
namespace GASTRT_BF16_NS {
namespace {

constexpr int kLanes = 16;               // fp32 lanes of one vector (one zmm)
constexpr int kNv = kBf16DotPanel / kLanes;  // vectors per panel row (4)
constexpr int kMr = 6;                   // rows of the register tile (24 accumulators of 32 zmm)

#if defined(GASTRT_BF16_NATIVE)  // set by CMake for the native variant only (never by -march)

struct Ops {
  using V = __m512;   // 16 fp32 sums
  using W = __m512i;  // 16 bf16 pairs of the weights
  using A = __m512i;  // one bf16 pair of A, broadcast
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p, uint16_t mask) { return _mm512_maskz_loadu_ps(mask, p); }
  static void store(float* p, V v, uint16_t mask) { _mm512_mask_storeu_ps(p, mask, v); }
  static W load_w(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static A splat_a(const uint32_t* p) { return _mm512_set1_epi32(int(*p)); }
  static void prefetch_l2(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }
  // prefetchw (-mprfchw: every CPU with AVX512-BF16 has it): the line in L1, owned for writing
  static void prefetch_for_write(const void* p) { __builtin_prefetch(p, 1, 3); }
  static V dot(V acc, A a, W w) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)w); }
  // src[0:32] fp32 -> 16 pairs (vcvtne2ps2bf16: RNE, denormals to zero, NaN quieted)
  static void pairs32(const float* src, uint32_t* dst) {
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
    _mm512_storeu_si512(dst, (__m512i)h);
  }
  // src[0:n] fp32, n < 32 -> ceil(n / 2) pairs, the high half of the last zero for an odd n
  // (masked-off lanes load as +0, which vcvtne2ps2bf16 keeps +0)
  static void pairs_tail(const float* src, int n, uint32_t* dst) {
    const __mmask16 lo = _cvtu32_mask16(n >= 16 ? 0xffffu : (1u << n) - 1u);
    const __mmask16 hi = _cvtu32_mask16(n <= 16 ? 0u : (1u << (n - 16)) - 1u);
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + (n > 16 ? 16 : 0)),
                                           _mm512_maskz_loadu_ps(lo, src));
    _mm512_mask_storeu_epi32(dst, _cvtu32_mask16((1u << ((n + 1) / 2)) - 1u), (__m512i)h);
  }
};

#else

// vdpbf16ps per lane: two FMAs, the odd element of the pair first; denormal inputs read as zero,
// denormal results flushed.
struct Ops {
  struct V {
    float f[kLanes];
  };
  using W = const uint32_t*;
  using A = uint32_t;
  static V zero() { return V{}; }
  static V load(const float* p, uint16_t mask) {
    V v{};
    for (int i = 0; i < kLanes; ++i)
      if (mask >> i & 1) v.f[i] = p[i];
    return v;
  }
  static void store(float* p, const V& v, uint16_t mask) {
    for (int i = 0; i < kLanes; ++i)
      if (mask >> i & 1) p[i] = v.f[i];
  }
  static W load_w(const uint32_t* p) { return p; }
  static A splat_a(const uint32_t* p) { return *p; }
  static void prefetch_l2(const void*) {}
  static void prefetch_for_write(const void*) {}
  static V dot(V acc, A a, W w) {
    for (int i = 0; i < kLanes; ++i) {
      float s = acc.f[i];
      s = bf16_daz(std::fma(bf16_value_daz(a >> 16), bf16_value_daz(w[i] >> 16), bf16_daz(s)));
      s = bf16_daz(std::fma(bf16_value_daz(a & 0xffffu), bf16_value_daz(w[i] & 0xffffu), s));
      acc.f[i] = s;
    }
    return acc;
  }
  static void pairs32(const float* src, uint32_t* dst) {
    for (int i = 0; i < kLanes; ++i) dst[i] = bf16_pair(src[2 * i], src[2 * i + 1]);
  }
  static void pairs_tail(const float* src, int n, uint32_t* dst) {
    for (int c = 0; c < n; c += 2) dst[c / 2] = bf16_pair(src[c], c + 1 < n ? src[c + 1] : 0.f);
  }
};

#endif

}  // namespace

// A's rows as bf16 pairs: ap[r * ld + t * cp + j] = (A[r, t, 2j], A[r, t, 2j + 1]), the high
// half zero past an odd ci. 32 channels at a time by pairs32, the rest by pairs_tail (the same
// rounding; vectorised too, as few-channel convs such as RIE's expand layers are all tail).
void pack_a_pairs(const GemmBf16DotParams& p, int64_t ld, uint32_t* ap) {
  const int64_t cp = bf16_pairs_per_tap(p.ci);
  for (int64_t r = 0; r < p.m; ++r)
    for (int32_t t = 0; t < p.taps; ++t) {
      const float* src = p.a + r * p.lda + t * p.tap_stride;
      uint32_t* dst = ap + r * ld + t * cp;
      int64_t c = 0;
      for (; c + 2 * kLanes <= p.ci; c += 2 * kLanes) Ops::pairs32(src + c, dst + c / 2);
      if (c < p.ci) Ops::pairs_tail(src + c, int(p.ci - c), dst + c / 2);
    }
}

namespace {

// Prefetches (into L2) the 64-byte lines of A's rows [r, r_end), every tap's ci floats, a few
// lines per call: the next chunk's rows, spread over the current chunk's row passes, so that a
// product whose A comes from DRAM (large batches: tens of MB of activations) packs it from L2.
struct APrefetch {
  const GemmBf16DotParams* p = nullptr;
  int64_t r = 0, r_end = 0;
  int32_t t = 0;
  int64_t off = 0;  // bytes past the start of tap t's segment of row r
  void issue(int64_t lines) {
    const int64_t bytes = int64_t(p->ci) * int64_t(sizeof(float));  // of one tap's segment
    for (; lines > 0 && r < r_end; --lines) {
      const char* seg = reinterpret_cast<const char*>(p->a + r * p->lda + t * p->tap_stride);
      Ops::prefetch_l2(seg + std::min(off, bytes - 1));  // an address inside the segment
      off += 64;
      // lines seg + 0, + 64, ... up to the one holding the segment's last byte
      if (off >= bytes + int64_t(reinterpret_cast<uintptr_t>(seg) & 63)) {
        off = 0;
        if (++t == p->taps) {
          t = 0;
          ++r;
        }
      }
    }
  }
};

// MR rows x one 64-column panel over pairs [0, kb) of a K block: acc starts from C (load) or
// zero, so every element's sum is one chain over all pairs in order, however K is blocked.
template <int MR>
void tile(int64_t kb, const uint32_t* __restrict ap, int64_t kp, const uint32_t* __restrict w,
          float* c, int64_t ldc, const uint16_t* mask, bool load) {
  typename Ops::V acc[MR][kNv];
  // C's lines asked for now, owned by the time the pass stores them: without it each pass ended
  // in a burst of write misses that stalled the store queue (one thread on Zen 4, C from DRAM:
  // 27000x256x256 164 -> 185 GFLOP/s; 1232x1024x512 +4%)
  // (only the lanes this call writes: a masked-off vector may lie outside C or in a line another
  // thread's tile owns)
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < kNv; ++v)
      if (mask[v]) Ops::prefetch_for_write(c + m * ldc + v * kLanes);
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < kNv; ++v)
      acc[m][v] = load ? Ops::load(c + m * ldc + v * kLanes, mask[v]) : Ops::zero();
  for (int64_t k = 0; k < kb; ++k) {
    typename Ops::W wv[kNv];
    for (int v = 0; v < kNv; ++v) wv[v] = Ops::load_w(w + k * kBf16DotPanel + v * kLanes);
    for (int m = 0; m < MR; ++m) {
      const typename Ops::A a = Ops::splat_a(ap + m * kp + k);
      for (int v = 0; v < kNv; ++v) acc[m][v] = Ops::dot(acc[m][v], a, wv[v]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < kNv; ++v) Ops::store(c + m * ldc + v * kLanes, acc[m][v], mask[v]);
}

void rows(int64_t m, int64_t kb, const uint32_t* ap, int64_t kp, const uint32_t* w, float* c,
          int64_t ldc, const uint16_t* mask, bool load, APrefetch& next_a, int64_t lines_per_pass) {
  int64_t r = 0;
  for (; r + kMr <= m; r += kMr) {
    tile<kMr>(kb, ap + r * kp, kp, w, c + r * ldc, ldc, mask, load);
    next_a.issue(lines_per_pass);
  }
  const uint32_t* a = ap + r * kp;
  float* cc = c + r * ldc;
  switch (m - r) {
    case 1: tile<1>(kb, a, kp, w, cc, ldc, mask, load); break;
    case 2: tile<2>(kb, a, kp, w, cc, ldc, mask, load); break;
    case 3: tile<3>(kb, a, kp, w, cc, ldc, mask, load); break;
    case 4: tile<4>(kb, a, kp, w, cc, ldc, mask, load); break;
    case 5: tile<5>(kb, a, kp, w, cc, ldc, mask, load); break;
    default: break;
  }
}

// Pairs per K block when a panel has several row passes, and rows per chunk of A. A chunk's
// pairs are packed just before its panels run (kMc x kp x 4 bytes, L2-resident across them); a
// panel's K block (kc x 64 columns x 4 bytes) stays L2-resident across the chunk's row passes:
// 1536 pairs (384 KB) + 64 rows x 1536 pairs (384 KB) fit a 1 MB L2. (The next chunk's fp32 A,
// prefetched meanwhile, is twice its pairs and does not fit beside them at 1536 pairs; measured
// anyway, VideoPose3D-243, whose width-3 convs have 1536, ran 1-1.5% faster with it.) Each row
// pass over a K block pays a fixed cost (C loaded and stored, the A rows' first lines missed), so
// the fewer K blocks the better, as long as both stay in L2. Measured on Zen 4 (AVX512-BF16, 1 MB L2; one thread,
// benchmarks/RESULTS.md, #17 ninth session): 1728 x 3072 x 1024 went from 205 GFLOP/s (256
// pairs, 96 rows, A packed whole up front) to 215-216 (93% of the 232 GFLOP/s vdpbf16ps peak),
// 3-4% on every engine tile shape measured; 64 pairs (the block in L1) ran at 169. 64 rows per
// chunk rather than 48: batch-64 products (RIE's fusion layers: 64 x 1024 x 128 tiles) are one
// chunk, 2-3% faster; other shapes unchanged.
constexpr int64_t kKcPairs = 1536, kMc = 64;

}  // namespace

void gemm(const GemmBf16DotParams& p) {
  if (p.m <= 0 || p.ncols <= 0) return;
  const int64_t kp = int64_t(p.taps) * bf16_pairs_per_tap(p.ci), kp_rows = bf16_pair_rows(p.taps, p.ci);
  uint32_t* ap = bf16_pairs_scratch(size_t(std::min(p.m, kMc) * kp));  // one chunk's rows
  const int64_t p_first = p.n0 / kBf16DotPanel, p_last = (p.n0 + p.ncols - 1) / kBf16DotPanel;
  const int64_t kc = p.m <= kMr ? kp : kKcPairs;
  for (int64_t m0 = 0; m0 < p.m; m0 += kMc) {
    const int64_t mc = std::min(kMc, p.m - m0);
    GemmBf16DotParams chunk = p;
    chunk.a = p.a + m0 * p.lda;
    chunk.m = mc;
    pack_a_pairs(chunk, kp, ap);
    // the next chunk's rows of A, spread over this chunk's full row passes (measured on Zen 4,
    // one thread, A cold from DRAM: 27000x256x256 165 -> 173-175 GFLOP/s; A in cache: unchanged
    // within noise)
    APrefetch next_a;
    next_a.p = &p;
    next_a.r = m0 + mc;
    next_a.r_end = std::min(p.m, m0 + mc + kMc);
    const int64_t lines = (next_a.r_end - next_a.r) * p.taps * ((int64_t(p.ci) * 4 + 63) / 64 + 1);
    const int64_t passes = (p_last - p_first + 1) * ((kp + kc - 1) / kc) * std::max<int64_t>(mc / kMr, 1);
    const int64_t lines_per_pass = (lines + passes - 1) / passes;
    for (int64_t pn = p_first; pn <= p_last; ++pn) {
      // this panel's columns inside [n0, n0 + ncols), as a lane mask per vector; C's column
      // pc0 is at c + (pc0 - n0) (masked-off lanes are never touched)
      const int64_t pc0 = pn * kBf16DotPanel;
      uint16_t mask[kNv];
      for (int v = 0; v < kNv; ++v) {
        mask[v] = 0;
        for (int i = 0; i < kLanes; ++i) {
          const int64_t col = pc0 + v * kLanes + i;
          if (col >= p.n0 && col < p.n0 + p.ncols) mask[v] = uint16_t(mask[v] | 1u << i);
        }
      }
      float* c = p.c + m0 * p.ldc + (pc0 - p.n0);
      const uint32_t* w = p.w_pairs + pn * kp_rows * kBf16DotPanel;
      for (int64_t k0 = 0; k0 < kp; k0 += kc)
        rows(mc, std::min(kc, kp - k0), ap + k0, kp, w + k0 * kBf16DotPanel, c, p.ldc, mask,
             k0 > 0, next_a, lines_per_pass);
    }
    if (p.rows_done) p.rows_done(p.rows_done_ctx, m0, mc);
  }
}

}  // namespace GASTRT_BF16_NS
}  // namespace cpu
}  // namespace gastrt
