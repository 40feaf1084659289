// The small-M GEMM of the CPU kernels (VecKernels::sgemm_small, sgemm_small_packed,
// sgemm_small_packed16, gemm_rows: contracts in vec_kernels.h), compiled once per ISA level like
// vec_kernels.cpp (see vec_simd.h). A register tile of rows x vectors over B's K blocks; the
// packed forms stream weights pre-packed into panels. No -ffast-math.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "vec_simd.h"

namespace gastrt {
namespace cpu {
namespace GASTRT_VK_NS {
namespace {

// ---- small-M GEMM ------------------------------------------------------------------------------

// Element formats of B in the register tile: fp32, or the 16-bit weights of an fp16 / bf16
// engine (bits), widened exactly to fp32 as they are loaded (bf16: the top half of an fp32;
// fp16: vcvtph2ps where the ISA level has F16C).
struct F32B { using T = float; };
struct Bf16B { using T = uint16_t; };
struct F16B { using T = uint16_t; };

// IEEE binary16 bits -> fp32 (exact), for ISA levels without F16C.
inline float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (e == 0) {
    const float f = float(man) * 5.9604644775390625e-8f;  // subnormal: man * 2^-24 (exact)
    return sign ? -f : f;
  } else if (e == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((e + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// One value, the scalar form of load_b below (row tails, ISA levels without the vector form).
inline float widen1(Bf16B, uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float widen1(F16B, uint16_t h) { return fp16_bits_to_float(h); }

inline vf load_b(F32B, const float* p) { return *reinterpret_cast<const vfu*>(p); }

inline vf load_b(Bf16B, const uint16_t* p) {
#if defined(__AVX512F__)
  // (the maskz forms: GCC 12 warns that the plain ones' undefined source may be uninitialized)
  const __m512i w = _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, w, 16));
#elif defined(__AVX2__)
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
#elif defined(__SSE2__)
  // interleaving zeros below each 16-bit value puts it in the top half of its 32-bit lane
  return _mm_castsi128_ps(
      _mm_unpacklo_epi16(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#else
  vf v;
  for (int i = 0; i < VW; ++i) v[i] = widen1(Bf16B{}, p[i]);
  return v;
#endif
}

inline vf load_b(F16B, const uint16_t* p) {
#if defined(__AVX512F__)
  return _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__AVX2__) && defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  vf v;
  for (int i = 0; i < VW; ++i) v[i] = widen1(F16B{}, p[i]);
  return v;
#endif
}

// dst[0:n] = the 16-bit values src[0:n] widened exactly (whole vectors by load_b).
template <class BF>
inline void widen_row(const uint16_t* __restrict src, float* __restrict dst, int64_t n) {
  int64_t j = 0;
  for (; j + VW <= n; j += VW) *reinterpret_cast<vfu*>(dst + j) = load_b(BF{}, src + j);
  for (; j < n; ++j) dst[j] = widen1(BF{}, src[j]);
}

// Rows of the next block each pass of the register tile prefetches (small_rows): pf_rows spread
// over the ceil(M / MR_MAX) passes of M rows.
inline int64_t prefetch_share(int64_t M, int64_t pf_rows) {
  const int64_t passes = (M + MR_MAX - 1) / MR_MAX;
  return passes > 0 ? (pf_rows + passes - 1) / passes : 0;
}

// pf (optional): rows of the next block of B, ldb-strided like B, pf_rows of them, which this
// pass prefetches one row per k (each row's NV * VW elements; small_rows gives each pass its
// share), so that the next block is in cache when its first pass starts; without it that pass waited on DRAM for every row (few-row products:
// VideoPose3D-243's 9- and 27-row layers at batch 1 ran at 60-75% of the register tile's rate).
// spill (optional): also store each widened row of B there ([K, NV * VW] fp32), for the passes
// that follow to read (W16Panels).
template <int MR, int NV, class BF = F32B>
inline void small_tile(int64_t K, const float* __restrict A, int64_t lda,
                       const typename BF::T* __restrict B, int64_t ldb, float beta,
                       float* __restrict C, int64_t ldc, const typename BF::T* pf = nullptr,
                       int64_t pf_rows = 0, float* __restrict spill = nullptr) {
  vf acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = vf{};
  for (int64_t k = 0; k < K; ++k) {
    const typename BF::T* b = B + k * ldb;
    if (pf && k < pf_rows) {
      constexpr int kLine = 64 / sizeof(typename BF::T);
#pragma GCC unroll 8
      for (int v = 0; v < NV * VW; v += kLine) __builtin_prefetch(pf + k * ldb + v, 0, 3);
    }
    vf bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = load_b(BF{}, b + v * VW);
    if (!std::is_same<BF, F32B>::value && spill)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) *reinterpret_cast<vfu*>(spill + (k * NV + v) * VW) = bv[v];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const vf a = splat(A[m * lda + k]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] += a * bv[v];
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      vfu* c = reinterpret_cast<vfu*>(C + m * ldc + v * VW);
      if (beta == 0.f) *c = acc[m][v];
      else *c = acc[m][v] + beta * *c;
    }
}

// pf / pf_rows: the next block of B (see small_tile), its prefetch spread over the passes: pass i
// prefetches rows [i * chunk, (i + 1) * chunk), so the next block streams in while this one
// is computed (all of it in the first pass, a 9-row layer's three passes left DRAM idle for two
// and waited on it in the first: VideoPose3D-243's 9- and 27-row layers at batch 1).
template <int NV, class BF = F32B>
inline void small_rows(int64_t M, int64_t K, const float* A, int64_t lda, const typename BF::T* B,
                       int64_t ldb, float beta, float* C, int64_t ldc,
                       const typename BF::T* pf = nullptr, int64_t pf_rows = 0) {
  const int64_t chunk = prefetch_share(M, pf_rows);
  auto pf_at = [&](int64_t i) -> const typename BF::T* {
    return pf && i * chunk < pf_rows ? pf + i * chunk * ldb : nullptr;
  };
  auto pf_n = [&](int64_t i) { return std::min(chunk, pf_rows - i * chunk); };
  int64_t m = 0, i = 0;
  for (; m + MR_MAX <= M; m += MR_MAX, ++i)
    small_tile<MR_MAX, NV, BF>(K, A + m * lda, lda, B, ldb, beta, C + m * ldc, ldc, pf_at(i), pf_n(i));
  const float* a = A + m * lda;
  float* c = C + m * ldc;
  const typename BF::T* p = pf_at(i);
  const int64_t pn = pf_n(i);
  switch (M - m) {
    case 1: small_tile<1, NV, BF>(K, a, lda, B, ldb, beta, c, ldc, p, pn); break;
    case 2: small_tile<2, NV, BF>(K, a, lda, B, ldb, beta, c, ldc, p, pn); break;
    case 3: small_tile<3, NV, BF>(K, a, lda, B, ldb, beta, c, ldc, p, pn); break;
    case 4: if (MR_MAX > 4) small_tile<(MR_MAX > 4 ? 4 : 1), NV, BF>(K, a, lda, B, ldb, beta, c, ldc, p, pn); break;
    case 5: if (MR_MAX > 5) small_tile<(MR_MAX > 5 ? 5 : 1), NV, BF>(K, a, lda, B, ldb, beta, c, ldc, p, pn); break;
    default: break;
  }
}

// Rows per pass over the weights when a product has many (a multiple of every MR_MAX): the A block
// of a pass (kSmallMC x KC floats, 221 KB with AVX2's KC of 384) stays in L2 while B's K blocks
// stream past it.
constexpr int64_t kSmallMC = 144;

// K is cut into blocks of KC so that a block of B (KC x NV*VW floats) is read from memory once
// and then served from L1/L2 to every pass of MR_MAX rows; C carries the partial sums between K blocks
// (the first block applies the caller's beta, so beta == 0 never reads C). KC depends on the
// rows M of the call (a tile's: fixed by the product's shape, never by the thread count, so
// results stay thread-invariant; packed and unpacked calls of the same M block alike).
// AVX2, measured on Zen 1 (ab_native.py, 2 threads, 3 rounds, against 192 for all): 384 for
// more than 40 rows (a 48 KB block, L2-resident: VideoPose3D-243 b64 1.03-1.05x, sequences
// 1.01-1.02x, RIE-243 1.01x; 512 / 768 no better), 96 for up to 40 (a 12 KB block, L1-resident
// next to the one being prefetched: GAST-27 and VideoPose3D-243 b1 1.05-1.06x; 64 / 128 alike,
// 384 there 2-5% slower). Other ISA levels keep 192 (not measured).
// GASTRT_SMALL_GEMM_KC overrides it for every M (tuning; K blocks change the rounding, within
// fp32's).
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr int64_t kSmallKcFewRows = 96, kSmallKcManyRows = 384;
#else
constexpr int64_t kSmallKcFewRows = 192, kSmallKcManyRows = 192;
#endif
constexpr int64_t kSmallKcFewRowsMax = 40;

int64_t small_kc(int64_t M) {
  static const int64_t kc = [] {
    const char* e = std::getenv("GASTRT_SMALL_GEMM_KC");
    const long long v = e ? std::atoll(e) : 0;
    return v > 0 ? int64_t(v) : int64_t(0);
  }();
  if (kc > 0) return kc;
  return M <= kSmallKcFewRowsMax ? kSmallKcFewRows : kSmallKcManyRows;
}

}  // namespace

void sgemm_small(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int64_t NB = int64_t(NV_MAX) * VW;
  const int64_t KC = small_kc(M);
  int64_t n = 0;
  // With more than one register-tile pass over the rows, the B block (KC x NB) is first copied
  // into a contiguous buffer: read in place, each of its KC rows sits in another page (ldb is a
  // layer's width, 4 KB for 1024 channels), and every pass missed the TLB and the L1 again
  // (VideoPose3D-243 at batch 1 ran its 27-row GEMMs at a third of ONNX Runtime's speed).
  // The copy changes no arithmetic.
  const bool pack = M > MR_MAX;
  thread_local VariantVec<float> bp;
  if (pack) bp.resize(size_t(std::min(KC, K)) * NB);
  if (M > kSmallMC) {  // many rows: K blocks outside, row blocks of A (kept in L2) inside, as
                       // sgemm_small_packed does; the same sums, so the same bits
    const int64_t n_full = N / NB * NB;
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      for (int64_t m0 = 0; m0 < M; m0 += kSmallMC)
        for (int64_t nn = 0; nn < n_full; nn += NB) {
          const float* b = B + k0 * ldb + nn;
          for (int64_t k = 0; k < kc; ++k)
            std::memcpy(&bp[size_t(k) * NB], b + k * ldb, NB * sizeof(float));
          small_rows<NV_MAX>(std::min(kSmallMC, M - m0), kc, A + m0 * lda + k0, lda, bp.data(), NB,
                             k0 ? 1.f : beta, C + m0 * ldc + nn, ldc);
        }
    }
    n = n_full;
  }
  for (; n + NB <= N; n += NB)
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      const float* b = B + k0 * ldb + n;
      int64_t ld = ldb;
      if (pack) {
        for (int64_t k = 0; k < kc; ++k) std::memcpy(&bp[size_t(k) * NB], b + k * ldb, NB * sizeof(float));
        b = bp.data();
        ld = NB;
      }
      small_rows<NV_MAX>(M, kc, A + k0, lda, b, ld, k0 ? 1.f : beta, C + n, ldc);
    }
  for (; n + VW <= N; n += VW)
    for (int64_t k0 = 0; k0 < K; k0 += KC)
      small_rows<1>(M, std::min(KC, K - k0), A + k0, lda, B + k0 * ldb + n, ldb,
                    k0 ? 1.f : beta, C + n, ldc);
  if (n < N) {
    // The last < VW columns go through the same register tile, zero-padded to VW in scratch,
    // so that every column's sum runs in the same order (same K blocks, same FMAs) wherever a
    // caller's column tile boundaries put it (row tiles pick the K block: see small_kc).
    const int64_t nt = N - n;  // < VW
    thread_local VariantVec<float> bt, ct;
    bt.assign(size_t(std::min(KC, K)) * VW, 0.f);
    ct.assign(size_t(M) * VW, 0.f);
    if (beta != 0.f)
      for (int64_t m = 0; m < M; ++m)
        std::memcpy(&ct[size_t(m) * VW], C + m * ldc + n, nt * sizeof(float));
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = std::min(KC, K - k0);
      for (int64_t k = 0; k < kc; ++k)
        std::memcpy(&bt[size_t(k) * VW], B + (k0 + k) * ldb + n, nt * sizeof(float));
      small_rows<1>(M, kc, A + k0, lda, bt.data(), VW, k0 ? 1.f : beta, ct.data(), VW);
    }
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(C + m * ldc + n, &ct[size_t(m) * VW], nt * sizeof(float));
  }
}

namespace {

// The same products on weights pre-packed into panels of NB = NV_MAX * VW columns
// ([ceil(N / NB), k_total, NB], the last panel zero-padded; conv.cpp packs them once per layer):
// each K block of a panel is one contiguous stretch of memory, which the hardware prefetcher
// streams at full bandwidth (read in place, every row of a block sits in another page). Every
// element's sum is the one sgemm_small computes (same K blocks, same register-tile FMAs), so
// packed and unpacked results are bit-identical. Columns [n0, n0 + ncols) of the panels'
// matrix, rows [k_off, k_off + K) of it (a tap of a dilated conv); C points at column n0.
//
// Src runs the register tile over M rows and one K block [kc, NB] of a panel (rows k0.. of the
// product), prefetching the next block (panel np, rows nk.., nrows rows; np < 0: none), and
// gives the fp32 K blocks of n consecutive panels from p0 (k_block: the first, and the stride
// between them): F32Panels on fp32 panels, W16Panels on 16-bit ones (sgemm_small_packed16).
template <class Src>
void packed_impl(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A, int64_t lda,
                 const Src& src, float beta, float* C, int64_t ldc) {
  constexpr int64_t NB = int64_t(NV_MAX) * VW;
  const int64_t KC = small_kc(M);
  // Many rows: passes of kSmallMC rows over the panels' K blocks (A block in L2). Few rows run
  // panel by panel instead, each panel's K blocks in order: one contiguous stream
  // per panel for the hardware prefetcher. Every element's sum is the same either way (its K
  // blocks in order, each through the same register tile), so the two orders give the same bits.
  constexpr int64_t MC = kSmallMC;
  struct Strip {  // the columns [j0, j1) of panel p; C at column pc0 + j0
    int64_t p, j0, j1;
  };
  thread_local VariantVec<Strip> strips;
  strips.clear();
  for (int64_t n = n0; n < n0 + ncols;) {
    const int64_t p = n / NB, pc0 = p * NB;
    const int64_t j1 = std::min(NB, n0 + ncols - pc0);
    strips.push_back({p, n - pc0, j1});
    n = pc0 + j1;
  }
  // A partial panel (the first or last strip) runs on all NB columns into scratch, whose
  // columns [j0, j1) go back to C at the end.
  thread_local VariantVec<float> ct[2];
  auto target = [&](size_t si, int64_t m0, int64_t& ld) -> float* {
    const Strip& st = strips[si];
    if (st.j0 == 0 && st.j1 == NB) {
      ld = ldc;
      return C + m0 * ldc + (st.p * NB - n0);
    }
    ld = NB;
    return ct[si == 0 ? 0 : 1].data() + m0 * NB;
  };
  for (size_t si = 0; si < strips.size(); ++si) {
    const Strip& st = strips[si];
    if (st.j0 == 0 && st.j1 == NB) continue;
    VariantVec<float>& sc = ct[si == 0 ? 0 : 1];
    sc.assign(size_t(M) * NB, 0.f);
    if (beta != 0.f)
      for (int64_t m = 0; m < M; ++m)
        std::memcpy(&sc[size_t(m) * NB + st.j0], C + m * ldc + (st.p * NB + st.j0 - n0),
                    (st.j1 - st.j0) * sizeof(float));
  }
  if (M <= MC) {
    for (size_t si = 0; si < strips.size(); ++si) {
      int64_t ld;
      float* c = target(si, 0, ld);
      // the next block: this panel's next K block, or the next panel's first one
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const bool last = k0 + KC >= K, more = si + 1 < strips.size();
        const int64_t np = !last ? strips[si].p : more ? strips[si + 1].p : -1;
        const int64_t nk = !last ? k0 + KC : 0;
        const int64_t nrows = !last ? std::min(KC, K - k0 - KC) : std::min(KC, K);
        src.rows(M, std::min(KC, K - k0), A + k0, lda, strips[si].p, k0, k0 ? 1.f : beta, c, ld,
                 np, nk, nrows);
      }
    }
  } else {
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      // Every row block reads this K block of every strip (strips are consecutive panels): fp32
      // panels in place, 16-bit ones widened once here, not once per row block.
      const int64_t kc = std::min(KC, K - k0);
      int64_t sstride;
      const float* base = src.k_block(strips.front().p, int64_t(strips.size()), k0, kc, sstride);
      for (int64_t m0 = 0; m0 < M; m0 += MC)
        for (size_t si = 0; si < strips.size(); ++si) {
          int64_t ld;
          float* c = target(si, m0, ld);
          const float* b = base + int64_t(si) * sstride;
          small_rows<NV_MAX>(std::min(MC, M - m0), kc, A + m0 * lda + k0, lda, b, NB,
                             k0 ? 1.f : beta, c, ld,
                             si + 1 < strips.size() ? b + sstride : nullptr, kc);
        }
    }
  }
  for (size_t si = 0; si < strips.size(); ++si) {
    const Strip& st = strips[si];
    if (st.j0 == 0 && st.j1 == NB) continue;
    const VariantVec<float>& sc = ct[si == 0 ? 0 : 1];
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(C + m * ldc + (st.p * NB + st.j0 - n0), &sc[size_t(m) * NB + st.j0],
                  (st.j1 - st.j0) * sizeof(float));
  }
}


// fp32 panels P [ceil(N / NB), k_total, NB], read in place; the next block is prefetched over
// the register tile's passes (small_rows).
struct F32Panels {
  const float* P;
  int64_t k_total, k_off;
  void rows(int64_t M, int64_t kc, const float* A, int64_t lda, int64_t p, int64_t k0, float beta,
            float* C, int64_t ldc, int64_t np, int64_t nk, int64_t nrows) const {
    small_rows<NV_MAX>(M, kc, A, lda, at(p, k0), int64_t(NV_MAX) * VW, beta, C, ldc,
                       np < 0 ? nullptr : at(np, nk), nrows);
  }
  const float* k_block(int64_t p0, int64_t, int64_t k0, int64_t, int64_t& stride) const {
    stride = k_total * (int64_t(NV_MAX) * VW);
    return at(p0, k0);
  }
  const float* at(int64_t p, int64_t k0) const {
    return P + (p * k_total + k_off + k0) * (int64_t(NV_MAX) * VW);
  }
};

// 16-bit panels (bf16 or IEEE fp16 bits, same layout): half the bytes of fp32 panels, which is
// what batch-1 layers, streaming their weights from DRAM, are bound by. P [ceil(N / NB), k_total,
// NB] 16-bit. The first pass of the register tile widens B as it loads it (and prefetches its
// share of the next block); with more rows it also
// stores the widened block into a per-thread buffer (kc x NB floats, L1/L2-resident) that the
// other passes read as fp32 (measured on Zen 1: widening again in every pass, or widening the
// block in a loop of its own before the passes, cost 5-35% of a many-row layer). Many row
// blocks: k_block widens each K block once for all of them. The widening is
// exact, so results are the fp32 kernel's on the widened weights, bit for bit.
template <class BF>
struct W16Panels {
  const uint16_t* P;
  int64_t k_total, k_off;
  float* buf;  // [kc, NB] fp32, the widened block (sized by the caller for small_kc(M))
  void rows(int64_t M, int64_t kc, const float* A, int64_t lda, int64_t p, int64_t k0, float beta,
            float* C, int64_t ldc, int64_t np, int64_t nk, int64_t nrows) const {
    constexpr int64_t NB = int64_t(NV_MAX) * VW;
    const uint16_t* next = np < 0 ? nullptr : at(np, nk);
    if (M <= MR_MAX) {
      small_rows<NV_MAX, BF>(M, kc, A, lda, at(p, k0), NB, beta, C, ldc, next, nrows);
      return;
    }
    // the next block's prefetch spread over the passes as in small_rows: the first pass takes its
    // share of the 16-bit rows, the buffer's passes the rest (a 16-bit row is half an fp32 row
    // of the buffer, so its rows as fp32 are half as many)
    const int64_t first = next ? std::min(nrows, prefetch_share(M, nrows)) : 0;
    small_tile<MR_MAX, NV_MAX, BF>(kc, A, lda, at(p, k0), NB, beta, C, ldc, next, first, buf);
    small_rows<NV_MAX>(M - MR_MAX, kc, A + MR_MAX * lda, lda, buf, NB, beta, C + MR_MAX * ldc, ldc,
                       next ? reinterpret_cast<const float*>(next + first * NB) : nullptr,
                       (nrows - first) / 2);
  }
  // Many rows (several row blocks per K block): the n panels' K blocks widened into a
  // per-thread buffer [n, kc, NB] (n * KC * NB floats: 1.5 MB for a 1024-column tile on AVX2).
  const float* k_block(int64_t p0, int64_t n, int64_t k0, int64_t kc, int64_t& stride) const {
    constexpr int64_t NB = int64_t(NV_MAX) * VW;
    thread_local VariantVec<float> wide;
    wide.resize(size_t(n * kc * NB));
    for (int64_t i = 0; i < n; ++i) widen_row<BF>(at(p0 + i, k0), wide.data() + i * kc * NB, kc * NB);
    stride = kc * NB;
    return wide.data();
  }
  const uint16_t* at(int64_t p, int64_t k0) const {
    return P + (p * k_total + k_off + k0) * (int64_t(NV_MAX) * VW);
  }
};

}  // namespace

void sgemm_small_packed(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                        int64_t lda, const float* P, int64_t k_total, int64_t k_off, float beta,
                        float* C, int64_t ldc) {
  F32Panels src{P, k_total, k_off};
  packed_impl(M, n0, ncols, K, A, lda, src, beta, C, ldc);
}

void sgemm_small_packed16(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                          int64_t lda, const uint16_t* P, bool bf16, int64_t k_total,
                          int64_t k_off, float beta, float* C, int64_t ldc) {
  thread_local VariantVec<float> buf;
  buf.resize(size_t(std::min(small_kc(M), std::max<int64_t>(K, 1))) * NV_MAX * VW);
  if (bf16) {
    W16Panels<Bf16B> src{P, k_total, k_off, buf.data()};
    packed_impl(M, n0, ncols, K, A, lda, src, beta, C, ldc);
  } else {
    W16Panels<F16B> src{P, k_total, k_off, buf.data()};
    packed_impl(M, n0, ncols, K, A, lda, src, beta, C, ldc);
  }
}

// C[M, N] = A[M, K] @ B[K, N] for the few rows of a streaming column; B fp32 (wfmt 0), fp16 (1)
// or bf16 bits (2), fp32 products and sums in k order. B is read once, whole rows at a time
// (sequential: what DRAM streams best), a 16-bit row converted to fp32 in L1, and applied to
// every row of A, 4 rows of B per pass over the accumulators (<= 32 KiB, in L1). Rows wider than
// 1024 go in blocks.
void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B,
               int64_t ldb, int wfmt, float* C, int64_t ldc) {
  constexpr int64_t NB_MAX = 1024, ACC = 8192, KU = 4;  // KU rows of B per pass over acc
  alignas(64) float brow[KU * NB_MAX];
  alignas(64) float acc[ACC];
  const int64_t nbw = std::min(N, NB_MAX);
  const int64_t MB = std::max<int64_t>(1, ACC / nbw);
  auto row = [&](int64_t k, int64_t n0, int64_t nb, int64_t slot) -> const float* {
    if (wfmt == 0) return static_cast<const float*>(B) + k * ldb + n0;
    const uint16_t* src = static_cast<const uint16_t*>(B) + k * ldb + n0;
    if (wfmt == 2) widen_row<Bf16B>(src, brow + slot * NB_MAX, nb);
    else widen_row<F16B>(src, brow + slot * NB_MAX, nb);
    return brow + slot * NB_MAX;
  };
  for (int64_t n0 = 0; n0 < N; n0 += NB_MAX) {
    const int64_t nb = std::min(NB_MAX, N - n0);
    for (int64_t m0 = 0; m0 < M; m0 += MB) {
      const int64_t mb = std::min(MB, M - m0);
      for (int64_t i = 0; i < mb * nb; ++i) acc[i] = 0.f;
      int64_t k = 0;
      for (; k + KU <= K; k += KU) {
        const float* __restrict b0 = row(k, n0, nb, 0);
        const float* __restrict b1 = row(k + 1, n0, nb, 1);
        const float* __restrict b2 = row(k + 2, n0, nb, 2);
        const float* __restrict b3 = row(k + 3, n0, nb, 3);
        for (int64_t m = 0; m < mb; ++m) {
          const float* a = A + (m0 + m) * lda + k;
          const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
          float* __restrict c = acc + m * nb;
          for (int64_t j = 0; j < nb; ++j) {  // the k order of the sums is kept
            float v = c[j];
            v += a0 * b0[j];
            v += a1 * b1[j];
            v += a2 * b2[j];
            v += a3 * b3[j];
            c[j] = v;
          }
        }
      }
      for (; k < K; ++k) {
        const float* __restrict b0 = row(k, n0, nb, 0);
        for (int64_t m = 0; m < mb; ++m) {
          const float av = A[(m0 + m) * lda + k];
          float* __restrict c = acc + m * nb;
          for (int64_t j = 0; j < nb; ++j) c[j] += av * b0[j];
        }
      }
      for (int64_t m = 0; m < mb; ++m)
        std::memcpy(C + (m0 + m) * ldc + n0, acc + m * nb, sizeof(float) * size_t(nb));
    }
  }
}

}  // namespace GASTRT_VK_NS
}  // namespace cpu
}  // namespace gastrt
