// Element-wise loops, written for the auto-vectoriser (unit-stride inner loops over channels,
// __restrict, no calls inside). This file is compiled once per ISA level with
// -DGASTRT_VK_NS=<namespace> and the matching -m flags (see CMakeLists.txt); vec_dispatch.cpp
// picks one at run time. No -ffast-math: NaN / inf propagate exactly like NumPy's float ops
// (relu(NaN) = NaN, as np.maximum).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "gastrt/params.h"
#include "vec_kernels.h"

#ifndef GASTRT_VK_NS
#define GASTRT_VK_NS vk_base
#endif
#define GASTRT_STR2(x) #x
#define GASTRT_STR(x) GASTRT_STR2(x)

namespace gastrt {
namespace cpu {
namespace GASTRT_VK_NS {
namespace {

// NaN-propagating activations (NumPy: np.maximum(y, 0), np.where(y >= 0, y, 0.2 * y)).
template <int ACT>
inline float act(float v) {
  if (ACT == 1) return v < 0.f ? 0.f : v;
  if (ACT == 2) return v >= 0.f ? v : v * kLReluSlope;
  return v;
}

// Whether convs of any row count run on the packed small-M kernel (VecKernels::small_any_rows).
// Measured on AVX2 (Zen 1, one thread, GFLOP/s, packed panels vs OpenBLAS 0.3.34 on a warmed
// thread): 1728 x 768 x 256 44 vs 43, 5184 x 90 x 256 43 vs 41, 1728 x 3072 x 1024 43 vs 44
// (sgemm 2048^3), 64 x 1024 x 1024 41 vs 33, 27 x 3072 x 1024 38 vs 29. And OpenBLAS's narrow
// products fall to 14-30 once its per-thread state goes bad (after OpenVINO ran in the same
// process, RIE-243 at batch 64 lost 20%), which the packed kernel does not have. AVX-512 keeps
// the row rule: not measured there.
#if defined(__AVX2__) && !defined(__AVX512F__)
constexpr bool kSmallAnyRows = true;
#else
constexpr bool kSmallAnyRows = false;
#endif

// GCC/Clang vector extensions: one source, lowered to zmm / ymm / xmm by each variant's flags.
// Register tile MR rows x NV vectors: AVX-512 6 x 4 (24 of 32 zmm), AVX2 3 x 4 (12 of 16 ymm; 32-column panels,
// so 256- and 1024-channel layers split into whole panels),
// SSE 4 x 2.
#if defined(__AVX512F__)
constexpr int VW = 16, MR_MAX = 6, NV_MAX = 4;
#elif defined(__AVX2__)
constexpr int VW = 8, MR_MAX = 3, NV_MAX = 4;
#else
constexpr int VW = 4, MR_MAX = 4, NV_MAX = 2;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef float vfu __attribute__((vector_size(VW * sizeof(float)), aligned(4)));  // unaligned access

// One float in every lane: one vbroadcastss from memory. (`vf{} + x` must keep -0 + 0 = +0, so
// GCC emitted an add and a register broadcast per row and k, which held a register that the
// 4 x 3 AVX2 tile needed and cost 10-20% of the small-M kernel; an element-wise splat loop
// compiles to masked inserts.)
inline vf splat(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#elif defined(__AVX__)
  return _mm256_set1_ps(x);
#elif defined(__SSE__)
  return _mm_set1_ps(x);
#else
  vf v;
  for (int i = 0; i < VW; ++i) v[i] = x;
  return v;
#endif
}

// The same activations on whole vectors (a vector select, NaN-propagating like act<>): the
// scalar form's branch kept GCC from vectorising the epilogue, which then took 12% of an
// RIE-243 batch-64 forward.
template <int ACT>
inline vf act_v(vf v) {
  if (ACT == 1) return v < 0.f ? vf{} : v;
  if (ACT == 2) return v >= 0.f ? v : v * kLReluSlope;
  return v;
}

template <int ACT, bool RES>
void bias_act_t(float* __restrict y, const float* __restrict b, int64_t n,
                const float* __restrict res) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) {
    vf v = act_v<ACT>(*reinterpret_cast<const vfu*>(y + i) + *reinterpret_cast<const vfu*>(b + i));
    if (RES) v += *reinterpret_cast<const vfu*>(res + i);
    *reinterpret_cast<vfu*>(y + i) = v;
  }
  for (; i < n; ++i) {
    float v = act<ACT>(y[i] + b[i]);
    if (RES) v += res[i];
    y[i] = v;
  }
}

void bias_act(float* y, const float* b, int64_t n, int a, const float* res) {
  if (res) {
    if (a == 1) bias_act_t<1, true>(y, b, n, res);
    else if (a == 2) bias_act_t<2, true>(y, b, n, res);
    else bias_act_t<0, true>(y, b, n, res);
  } else {
    if (a == 1) bias_act_t<1, false>(y, b, n, nullptr);
    else if (a == 2) bias_act_t<2, false>(y, b, n, nullptr);
    else bias_act_t<0, false>(y, b, n, nullptr);
  }
}

template <int ACT>
void bias_act_to_t(float* __restrict dst, const float* __restrict src, const float* __restrict b,
                   int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW)
    *reinterpret_cast<vfu*>(dst + i) =
        act_v<ACT>(*reinterpret_cast<const vfu*>(src + i) + *reinterpret_cast<const vfu*>(b + i));
  for (; i < n; ++i) dst[i] = act<ACT>(src[i] + b[i]);
}

void bias_act_to(float* dst, const float* src, const float* b, int64_t n, int a) {
  if (a == 1) bias_act_to_t<1>(dst, src, b, n);
  else if (a == 2) bias_act_to_t<2>(dst, src, b, n);
  else bias_act_to_t<0>(dst, src, b, n);
}

void gast_local_frame(const GastFrameTables& t, const float* P, int64_t ldp, float* S,
                      int64_t lds) {
  const int J = t.j, C = t.c;
  for (int s = 0; s < 2; ++s) {
    const float* __restrict lb = t.loc_b + s * C;
    for (int i = 0; i < J; ++i) {
      float* __restrict out = S + i * lds + s * C;
      const float* __restrict h0 = P + i * ldp + (2 * s) * C;
      const float* __restrict d = t.loc_diag + (int64_t(s) * J + i) * C;
      for (int c = 0; c < C; ++c) out[c] = d[c] * h0[c];
      for (int k = t.nbr_start[s * J + i]; k < t.nbr_start[s * J + i + 1]; ++k) {
        const int jj = t.nbr[k];
        const float* __restrict h1 = P + jj * ldp + (2 * s + 1) * C;
        const float* __restrict o = t.loc_off + ((int64_t(s) * J + i) * J + jj) * C;
        for (int c = 0; c < C; ++c) out[c] += o[c] * h1[c];
      }
      for (int c = 0; c < C; ++c) out[c] = act<1>(out[c] + lb[c]);
    }
  }
}

// out[0:n] = sum_j w[j] * g[j*ldg + 0:n], four rows of g at a time (fewer passes over out).
inline void weighted_rows(float* __restrict out, const float* __restrict w, int nj,
                          const float* __restrict g, int64_t ldg, int n) {
  for (int c = 0; c < n; ++c) out[c] = 0.f;
  int j = 0;
  for (; j + 4 <= nj; j += 4) {
    const float w0 = w[j], w1 = w[j + 1], w2 = w[j + 2], w3 = w[j + 3];
    const float* __restrict g0 = g + j * ldg;
    const float* __restrict g1 = g0 + ldg;
    const float* __restrict g2 = g1 + ldg;
    const float* __restrict g3 = g2 + ldg;
    for (int c = 0; c < n; ++c) out[c] += w0 * g0[c] + w1 * g1[c] + w2 * g2[c] + w3 * g3[c];
  }
  for (; j < nj; ++j) {
    const float wj = w[j];
    const float* __restrict gj = g + j * ldg;
    for (int c = 0; c < n; ++c) out[c] += wj * gj[c];
  }
}

void gast_attention_frame(const GastFrameTables& t, const float* ab, const float* G,
                          int64_t ldp, float* Y, int64_t ldy, float* scratch) {
  const int J = t.j, H = t.heads, gc = t.gc;
  for (int h = 0; h < H; ++h) {
    const float* ck = t.glb_ck + int64_t(h) * J * J;
    for (int i = 0; i < J; ++i) {
      float* row = scratch + i * J;
      const float a = ab[i * ldp + h];
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < J; ++j) {
        const float z = act<2>(a + ab[j * ldp + H + h]);
        row[j] = z;
        mx = z > mx ? z : mx;
      }
      float sum = 0.f;
      for (int j = 0; j < J; ++j) {
        const float e = std::exp(row[j] - mx);
        row[j] = e;
        sum += e;
      }
      for (int j = 0; j < J; ++j) row[j] = row[j] / sum + ck[i * J + j];
    }
    for (int i = 0; i < J; ++i)
      weighted_rows(Y + i * ldy + h * gc, scratch + i * J, J, G + h * gc, ldp, gc);
  }
}

// ---- small-M GEMM ------------------------------------------------------------------------------

// pf (optional): the next block of B, ldb-strided like B, pf_rows rows, which this pass
// prefetches one row per k (each row's NV * VW floats), so that the next block is in cache when
// its first pass starts; without it that pass waited on DRAM for every row (few-row products:
// VideoPose3D-243's 9- and 27-row layers at batch 1 ran at 60-75% of the register tile's rate).
template <int MR, int NV>
inline void small_tile(int64_t K, const float* __restrict A, int64_t lda, const float* __restrict B,
                       int64_t ldb, float beta, float* __restrict C, int64_t ldc,
                       const float* pf = nullptr, int64_t pf_rows = 0) {
  vf acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = vf{};
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    if (pf && k < pf_rows) {
      constexpr int kLine = 64 / sizeof(float);
#pragma GCC unroll 8
      for (int v = 0; v < NV * VW; v += kLine) __builtin_prefetch(pf + k * ldb + v, 0, 3);
    }
    vf bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const vfu*>(b + v * VW);
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

// pf / pf_rows: the next block of B (see small_tile), prefetched by the first pass over the rows.
template <int NV>
inline void small_rows(int64_t M, int64_t K, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc, const float* pf = nullptr,
                       int64_t pf_rows = 0) {
  int64_t m = 0;
  for (; m + MR_MAX <= M; m += MR_MAX, pf = nullptr)
    small_tile<MR_MAX, NV>(K, A + m * lda, lda, B, ldb, beta, C + m * ldc, ldc, pf, pf_rows);
  const float* a = A + m * lda;
  float* c = C + m * ldc;
  switch (M - m) {
    case 1: small_tile<1, NV>(K, a, lda, B, ldb, beta, c, ldc, pf, pf_rows); break;
    case 2: small_tile<2, NV>(K, a, lda, B, ldb, beta, c, ldc, pf, pf_rows); break;
    case 3: small_tile<3, NV>(K, a, lda, B, ldb, beta, c, ldc, pf, pf_rows); break;
    case 4: if (MR_MAX > 4) small_tile<(MR_MAX > 4 ? 4 : 1), NV>(K, a, lda, B, ldb, beta, c, ldc, pf, pf_rows); break;
    case 5: if (MR_MAX > 5) small_tile<(MR_MAX > 5 ? 5 : 1), NV>(K, a, lda, B, ldb, beta, c, ldc, pf, pf_rows); break;
    default: break;
  }
}

// Rows per pass over the weights when a product has many (a multiple of every MR_MAX): the A block
// of a pass (kSmallMC x KC floats, 110 KB) stays in L2 while B's K blocks stream past it.
constexpr int64_t kSmallMC = 144;

// K is cut into blocks of KC so that a block of B (KC x NV*VW floats) is read from memory once
// and then served from L1/L2 to every pass of MR_MAX rows; C carries the partial sums between K blocks
// (the first block applies the caller's beta, so beta == 0 never reads C).
int64_t small_kc() {
  static const int64_t kc = [] {
    const char* e = std::getenv("GASTRT_SMALL_GEMM_KC");
    const long long v = e ? std::atoll(e) : 0;
    return v > 0 ? int64_t(v) : int64_t(192);
  }();
  return kc;
}

void sgemm_small(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int64_t NB = int64_t(NV_MAX) * VW;
  const int64_t KC = small_kc();
  int64_t n = 0;
  // With more than one register-tile pass over the rows, the B block (KC x NB) is first copied
  // into a contiguous buffer: read in place, each of its KC rows sits in another page (ldb is a
  // layer's width, 4 KB for 1024 channels), and every pass missed the TLB and the L1 again
  // (VideoPose3D-243 at batch 1 ran its 27-row GEMMs at a third of ONNX Runtime's speed).
  // The copy changes no arithmetic.
  const bool pack = M > MR_MAX;
  thread_local std::vector<float> bp;
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
    // caller's tile boundaries put it: results do not depend on how a product was tiled.
    const int64_t nt = N - n;  // < VW
    thread_local std::vector<float> bt, ct;
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

// The same products on weights pre-packed into panels of NB = NV_MAX * VW columns
// ([ceil(N / NB), k_total, NB], the last panel zero-padded; conv.cpp packs them once per layer):
// each K block of a panel is one contiguous stretch of memory, which the hardware prefetcher
// streams at full bandwidth (read in place, every row of a block sits in another page). Every
// element's sum is the one sgemm_small computes (same K blocks, same register-tile FMAs), so
// packed and unpacked results are bit-identical. Columns [n0, n0 + ncols) of the panels'
// matrix, rows [k_off, k_off + K) of it (a tap of a dilated conv); C points at column n0.
void sgemm_small_packed(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                        int64_t lda, const float* P, int64_t k_total, int64_t k_off, float beta,
                        float* C, int64_t ldc) {
  constexpr int64_t NB = int64_t(NV_MAX) * VW;
  const int64_t KC = small_kc();
  // Many rows: passes of kSmallMC rows over the panels' K blocks (A block in L2). Few rows run
  // panel by panel instead, each panel's K blocks in order: one contiguous stream
  // per panel for the hardware prefetcher. Every element's sum is the same either way (its K
  // blocks in order, each through the same register tile), so the two orders give the same bits.
  constexpr int64_t MC = kSmallMC;
  struct Strip {  // the columns [j0, j1) of panel p; C at column pc0 + j0
    int64_t p, j0, j1;
  };
  thread_local std::vector<Strip> strips;
  strips.clear();
  for (int64_t n = n0; n < n0 + ncols;) {
    const int64_t p = n / NB, pc0 = p * NB;
    const int64_t j1 = std::min(NB, n0 + ncols - pc0);
    strips.push_back({p, n - pc0, j1});
    n = pc0 + j1;
  }
  // A partial panel (the first or last strip) runs on all NB columns into scratch, whose
  // columns [j0, j1) go back to C at the end.
  thread_local std::vector<float> ct[2];
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
    std::vector<float>& sc = ct[si == 0 ? 0 : 1];
    sc.assign(size_t(M) * NB, 0.f);
    if (beta != 0.f)
      for (int64_t m = 0; m < M; ++m)
        std::memcpy(&sc[size_t(m) * NB + st.j0], C + m * ldc + (st.p * NB + st.j0 - n0),
                    (st.j1 - st.j0) * sizeof(float));
  }
  auto block = [&](size_t si, int64_t k0) {
    return P + (strips[si].p * k_total + k_off + k0) * NB;
  };
  if (M <= MC) {
    for (size_t si = 0; si < strips.size(); ++si) {
      int64_t ld;
      float* c = target(si, 0, ld);
      // the next block: this panel's next K block, or the next panel's first one
      for (int64_t k0 = 0; k0 < K; k0 += KC) {
        const bool last = k0 + KC >= K, more = si + 1 < strips.size();
        small_rows<NV_MAX>(M, std::min(KC, K - k0), A + k0, lda, block(si, k0), NB,
                           k0 ? 1.f : beta, c, ld,
                           !last ? block(si, k0 + KC) : more ? block(si + 1, 0) : nullptr,
                           !last ? std::min(KC, K - k0 - KC) : std::min(KC, K));
      }
    }
  } else {
    for (int64_t k0 = 0; k0 < K; k0 += KC)
      for (int64_t m0 = 0; m0 < M; m0 += MC)
        for (size_t si = 0; si < strips.size(); ++si) {
          int64_t ld;
          float* c = target(si, m0, ld);
          const int64_t kc = std::min(KC, K - k0);
          small_rows<NV_MAX>(std::min(MC, M - m0), kc, A + m0 * lda + k0, lda, block(si, k0), NB,
                             k0 ? 1.f : beta, c, ld,
                             si + 1 < strips.size() ? block(si + 1, k0) : nullptr, kc);
        }
  }
  for (size_t si = 0; si < strips.size(); ++si) {
    const Strip& st = strips[si];
    if (st.j0 == 0 && st.j1 == NB) continue;
    const std::vector<float>& sc = ct[si == 0 ? 0 : 1];
    for (int64_t m = 0; m < M; ++m)
      std::memcpy(C + m * ldc + (st.p * NB + st.j0 - n0), &sc[size_t(m) * NB + st.j0],
                  (st.j1 - st.j0) * sizeof(float));
  }
}

// 16-bit weights -> fp32, exactly. bf16 is the top half of an fp32; fp16 is IEEE binary16
// (F16C's vcvtph2ps where the ISA level has it, else the bit-level conversion).
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

void w16_row_to_f32(const uint16_t* __restrict src, float* __restrict dst, int64_t n, bool bf16) {
  if (bf16) {
    for (int64_t j = 0; j < n; ++j) {
      const uint32_t bits = uint32_t(src[j]) << 16;
      std::memcpy(dst + j, &bits, sizeof(float));
    }
    return;
  }
  int64_t j = 0;
#if defined(__F16C__)
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
#endif
  for (; j < n; ++j) dst[j] = fp16_bits_to_float(src[j]);
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
    w16_row_to_f32(static_cast<const uint16_t*>(B) + k * ldb + n0, brow + slot * NB_MAX, nb,
                   wfmt == 2);
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

// Winograd F(4,3) transforms (points 0, +-1, +-2, inf; conv_winograd.cpp has the derivation).
// Input: the 6 taps d_j = x + j*ld_tap (n floats each) -> V_p = x_out + p*ld_v, p = 0..5.
void wino_f43_input(const float* __restrict x, int64_t ld_tap, int64_t n, float* __restrict v,
                    int64_t ld_v) {
  const float* __restrict d0 = x;
  const float* __restrict d1 = x + ld_tap;
  const float* __restrict d2 = x + 2 * ld_tap;
  const float* __restrict d3 = x + 3 * ld_tap;
  const float* __restrict d4 = x + 4 * ld_tap;
  const float* __restrict d5 = x + 5 * ld_tap;
  float* __restrict v0 = v;
  float* __restrict v1 = v + ld_v;
  float* __restrict v2 = v + 2 * ld_v;
  float* __restrict v3 = v + 3 * ld_v;
  float* __restrict v4 = v + 4 * ld_v;
  float* __restrict v5 = v + 5 * ld_v;
  for (int64_t i = 0; i < n; ++i) {
    const float a1 = d1[i], a2 = d2[i], a3 = d3[i], a4 = d4[i];
    const float s = a4 - 4.f * a2, t = a3 - 4.f * a1;   // rows 1, 2: s +- t
    const float u = a4 - a2, w = 2.f * (a3 - a1);       // rows 3, 4: u +- w
    v0[i] = 4.f * d0[i] - 5.f * a2 + a4;
    v1[i] = s + t;
    v2[i] = s - t;
    v3[i] = u + w;
    v4[i] = u - w;
    v5[i] = 4.f * a1 - 5.f * a3 + d5[i];
  }
}

// Output: the 6 products M_p = m + p*ld_m (n floats each) -> rows y + i*ld_y, i = 0..3:
//   y0 = M0 + M1 + M2 + M3 + M4,  y1 = (M1 - M2) + 2 (M3 - M4),
//   y2 = (M1 + M2) + 4 (M3 + M4), y3 = (M1 - M2) + 8 (M3 - M4) + M5
void wino_f43_output(const float* __restrict m, int64_t ld_m, int64_t n, float* __restrict y,
                     int64_t ld_y) {
  const float* __restrict m0 = m;
  const float* __restrict m1 = m + ld_m;
  const float* __restrict m2 = m + 2 * ld_m;
  const float* __restrict m3 = m + 3 * ld_m;
  const float* __restrict m4 = m + 4 * ld_m;
  const float* __restrict m5 = m + 5 * ld_m;
  float* __restrict y0 = y;
  float* __restrict y1 = y + ld_y;
  float* __restrict y2 = y + 2 * ld_y;
  float* __restrict y3 = y + 3 * ld_y;
  for (int64_t i = 0; i < n; ++i) {
    const float p12 = m1[i] + m2[i], q12 = m1[i] - m2[i];
    const float p34 = m3[i] + m4[i], q34 = m3[i] - m4[i];
    y0[i] = m0[i] + p12 + p34;
    y1[i] = q12 + 2.f * q34;
    y2[i] = p12 + 4.f * p34;
    y3[i] = q12 + 8.f * q34 + m5[i];
  }
}

}  // namespace

extern const VecKernels kernels;
const VecKernels kernels = {GASTRT_STR(GASTRT_VK_NS), bias_act, bias_act_to, gast_local_frame,
                            gast_attention_frame, sgemm_small, NV_MAX * VW, kSmallAnyRows,
                            sgemm_small_packed, wino_f43_input, wino_f43_output, gemm_rows};

}  // namespace GASTRT_VK_NS
}  // namespace cpu
}  // namespace gastrt
