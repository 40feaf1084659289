// Temporal conv / 1x1 conv / Linear kernels (plan.py `conv`), as GEMMs on channels-last data.
//
// Why one kernel family covers strided, dilated and 1x1 convs: row r = (s, t) of the GEMM reads
// x at element (s*t_in + t*stride)*ci + tau*dilation*ci + c for K index kk = tau*ci + c. With
// dilation == 1 that is rowbase + kk (the k-frame window is contiguous: a GEMM with lda = k*ci,
// whatever the stride); with dilation > 1 it is rowbase + kk + tau*(dilation-1)*ci, i.e. k
// shifted GEMMs accumulated in one K loop. No im2col, no extra pass.
//
// Two paths:
//  * fp16 / bf16: tensor cores through WMMA (m16n16k16, fp32 accumulate), cp.async double
//    buffering, tiles 128x128x32 (8 warps, 64x32 per warp) or 64x64x32 (4 warps) for small
//    problems. WMMA rather than inline mma.sync: the fragment layouts are the compiler's, which
//    matters for code that was written without a GPU to test on.
//  * fp32: SIMT FFMA (no TF32), 64x64x16 tiles, 4x4 per thread: the "exact" path that matches
//    the CPU runtime to ~1e-6 relative.
// The epilogue is fused: + bias (fp32), activation, + residual (cropped / strided rows of
// another activation), conversion to the engine dtype, optional output row pitch.
//
// Grouped launch: blockIdx.y selects one of up to kMaxGemmGroup problems (RIE's five branch
// layers + the global path run as one launch); blockIdx.x is the tile, n fastest so blocks that
// run together share their A rows in L2.
//
// Instantiations (2-core CI): 2 tile configs x {half, bf16} + 1 fp32 = 5 kernels.
#include <mma.h>

#include <algorithm>
#include <climits>

#include "common/check.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernels.h"

namespace gastrt {
namespace cuda {
namespace {

struct GemmBatch {
  GemmDesc d[kMaxGemmGroup];
  int32_t count;
};

// Row offsets (in elements) of GEMM row gr: x row base, y row, residual row. ra < 0: padding row.
__device__ __forceinline__ void row_offsets(const GemmDesc& d, int64_t gr, int64_t M, int64_t& ra,
                                            int64_t& ry, int64_t& rr) {
  if (gr >= M) {
    ra = -1;
    ry = 0;
    rr = 0;
    return;
  }
  const int64_t s = gr / d.t_out;
  const int64_t t = gr - s * d.t_out;
  ra = (s * d.t_in + t * d.stride) * static_cast<int64_t>(d.ci);
  ry = (s * d.t_ypitch + t) * static_cast<int64_t>(d.ldy);
  rr = d.res != nullptr ? (s * d.t_res + d.res_offset + t * d.res_stride) * static_cast<int64_t>(d.co) : 0;
}

template <typename T>
__device__ __forceinline__ T zero_val() {
  return Cvt<T>::from_f(0.f);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core kernel (fp16 / bf16 operands, fp32 accumulation)
// ---------------------------------------------------------------------------------------------
template <typename T, int BM, int BN, int WM, int WN>
// Min blocks per SM: on sm_80 ptxas gives the 256-thread bf16 tile 160 registers (one block per
// SM) unless capped; elsewhere it settles at <= 128 by itself and a cap only adds spills.
// (Measured with nvcc 13.0: an explicit min-blocks of 1 also yields 160 registers, so the other
// archs get the plain form.)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 800
#define GASTRT_TC_BOUNDS(nt) __launch_bounds__(nt, (nt) >= 256 ? 2 : 4)
#else
#define GASTRT_TC_BOUNDS(nt) __launch_bounds__(nt)
#endif
__global__ void GASTRT_TC_BOUNDS(WM* WN * 32) gemm_tc_kernel(const GemmBatch batch) {
  using namespace nvcuda;
  constexpr int BK = 32;
  constexpr int LDA = BK + 8;  // +16 B per row: breaks ldmatrix bank conflicts, keeps 32 B alignment of 16-row blocks
  constexpr int LDB = BN + 8;
  constexpr int NT = WM * WN * 32;
  constexpr int WTM = BM / WM, WTN = BN / WN;
  constexpr int FM = WTM / 16, FN = WTN / 16;
  static_assert(FM >= 1 && FN >= 1, "warp tile");
  static_assert((BM * (BK / 8)) % NT == 0 && (BK * (BN / 8)) % NT == 0, "vector loads per thread");

  // sA doubles as the per-warp epilogue scratch (NWARPS x 16x16 fp32) after the main loop.
  __shared__ __align__(128) T sA[2][BM][LDA];
  __shared__ __align__(128) T sB[2][BK][LDB];
  __shared__ int64_t sRowA[BM], sRowY[BM], sRowR[BM];
  static_assert(sizeof(sA) >= WM * WN * 256 * sizeof(float), "epilogue scratch");

  const GemmDesc d = batch.d[blockIdx.y];
  const int64_t M = d.n_seq * static_cast<int64_t>(d.t_out);
  const int K = d.k * d.ci;
  const int ntn = (d.co + BN - 1) / BN;
  const int64_t ntm = (M + BM - 1) / BM;
  const int64_t tile = blockIdx.x;
  if (tile >= ntm * ntn) return;  // this problem of the group has fewer tiles (block-uniform)
  const int64_t m0 = (tile / ntn) * BM;
  const int n0 = static_cast<int>(tile % ntn) * BN;

  const int tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int wm = warp / WN, wn = warp % WN;

  for (int r = tid; r < BM; r += NT) {
    int64_t ra, ry, rr;
    row_offsets(d, m0 + r, M, ra, ry, rr);
    sRowA[r] = ra;
    sRowY[r] = ry;
    sRowR[r] = rr;
  }
  __syncthreads();

  const T* __restrict__ X = static_cast<const T*>(d.x);
  const T* __restrict__ W = static_cast<const T*>(d.w);
  const int ci = d.ci, co = d.co;
  const int64_t dil_extra = static_cast<int64_t>(d.dilation - 1) * ci;
  // 16 B vectors never straddle a tau boundary when ci % 8 == 0 (boundaries are multiples of ci).
  const bool vecA = (ci % 8 == 0) && aligned16(X);
  const bool vecB = (co % 8 == 0) && aligned16(W);

  auto load_tile = [&](int kt, int st) {
    const int k0 = kt * BK;
    if (vecA) {
#pragma unroll
      for (int i = 0; i < (BM * (BK / 8)) / NT; ++i) {
        const int v = tid + i * NT;
        const int r = v / (BK / 8), kc = (v % (BK / 8)) * 8;
        const int kk = k0 + kc;
        const int64_t ra = sRowA[r];
        const bool ok = ra >= 0 && kk < K;
        const T* src = X;
        if (ok) src = X + ra + kk + static_cast<int64_t>(kk / ci) * dil_extra;
        cp_async16(&sA[st][r][kc], src, ok);
      }
    } else {
      for (int e = tid; e < BM * BK; e += NT) {
        const int r = e / BK, kc = e % BK;
        const int kk = k0 + kc;
        const int64_t ra = sRowA[r];
        T v = zero_val<T>();
        if (ra >= 0 && kk < K) v = X[ra + kk + static_cast<int64_t>(kk / ci) * dil_extra];
        sA[st][r][kc] = v;
      }
    }
    if (vecB) {
#pragma unroll
      for (int i = 0; i < (BK * (BN / 8)) / NT; ++i) {
        const int v = tid + i * NT;
        const int kr = v / (BN / 8), nc = (v % (BN / 8)) * 8;
        const int kk = k0 + kr, n = n0 + nc;
        const bool ok = kk < K && n < co;  // co % 8 == 0: the vector is entirely in or out
        const T* src = ok ? W + static_cast<int64_t>(kk) * co + n : W;
        cp_async16(&sB[st][kr][nc], src, ok);
      }
    } else {
      for (int e = tid; e < BK * BN; e += NT) {
        const int kr = e / BN, nc = e % BN;
        const int kk = k0 + kr, n = n0 + nc;
        sB[st][kr][nc] = (kk < K && n < co) ? W[static_cast<int64_t>(kk) * co + n] : zero_val<T>();
      }
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  const int KT = (K + BK - 1) / BK;
  load_tile(0, 0);
  cp_async_commit();
  for (int kt = 0; kt < KT; ++kt) {
    const int st = kt & 1;
    // Stage st^1 was last read in iteration kt-1, which ended with __syncthreads().
    if (kt + 1 < KT) load_tile(kt + 1, st ^ 1);
    cp_async_commit();
    cp_async_wait<1>();  // tile kt has landed (only tile kt+1 may still be in flight)
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> af[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bf[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) wmma::load_matrix_sync(af[i], &sA[st][wm * WTM + i * 16][ks], LDA);
#pragma unroll
      for (int j = 0; j < FN; ++j) wmma::load_matrix_sync(bf[j], &sB[st][ks][wn * WTN + j * 16], LDB);
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
    }
    __syncthreads();
  }
  cp_async_wait<0>();
  __syncthreads();

  // Epilogue: one 16x16 fragment at a time through a per-warp fp32 scratch; lane handles one
  // row and 8 consecutive columns (a 16 B store when the layout allows).
  float* scr = reinterpret_cast<float*>(&sA[0][0][0]) + warp * 256;
  const float* __restrict__ bias = d.b;
  const T* __restrict__ R = static_cast<const T*>(d.res);
  T* __restrict__ Y = static_cast<T*>(d.y);
  const int act = d.act;
  const bool vecY = (co % 8 == 0) && (d.ldy % 8 == 0) && aligned16(Y) && (R == nullptr || aligned16(R));
  const int er = lane >> 1, ec = (lane & 1) * 8;
#pragma unroll
  for (int i = 0; i < FM; ++i) {
#pragma unroll
    for (int j = 0; j < FN; ++j) {
      wmma::store_matrix_sync(scr, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int lr = wm * WTM + i * 16 + er;
      const int n = n0 + wn * WTN + j * 16 + ec;
      const int64_t ra = sRowA[lr];
      if (ra >= 0 && n < co) {
        const int64_t ry = sRowY[lr], rr = sRowR[lr];
        float v[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) v[e] = scr[er * 16 + ec + e];
        if (vecY && n + 8 <= co) {
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = apply_act(v[e] + bias[n + e], act);
          if (R != nullptr) {
            alignas(16) T rv[8];
            *reinterpret_cast<uint4*>(rv) = *reinterpret_cast<const uint4*>(R + rr + n);
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] += Cvt<T>::to_f(rv[e]);
          }
          alignas(16) T ov[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) ov[e] = Cvt<T>::from_f(v[e]);
          *reinterpret_cast<uint4*>(Y + ry + n) = *reinterpret_cast<const uint4*>(ov);
        } else {
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            if (n + e < co) {
              float o = apply_act(v[e] + bias[n + e], act);
              if (R != nullptr) o += Cvt<T>::to_f(R[rr + n + e]);
              Y[ry + n + e] = Cvt<T>::from_f(o);
            }
          }
        }
      }
      __syncwarp();  // scratch is rewritten by the next fragment
    }
  }
}

// ---------------------------------------------------------------------------------------------
// fp32 SIMT kernel (exact path: FFMA, no TF32)
// ---------------------------------------------------------------------------------------------
constexpr int F32_BM = 64, F32_BN = 64, F32_BK = 16, F32_NT = 256;

__global__ void __launch_bounds__(F32_NT, 2) gemm_f32_kernel(const GemmBatch batch) {
  constexpr int BM = F32_BM, BN = F32_BN, BK = F32_BK, NT = F32_NT;
  constexpr int LA = (BM * BK) / NT, LB = (BK * BN) / NT;  // 4 + 4 elements per thread per tile
  // A stored k-major ([k][m]) so the 4 rows of a thread are one float4; +4 keeps float4
  // alignment and spreads the transposed stores over banks.
  __shared__ __align__(16) float sA[2][BK][BM + 4];
  __shared__ __align__(16) float sB[2][BK][BN + 4];
  __shared__ int64_t sRowA[BM], sRowY[BM], sRowR[BM];

  const GemmDesc d = batch.d[blockIdx.y];
  const int64_t M = d.n_seq * static_cast<int64_t>(d.t_out);
  const int K = d.k * d.ci;
  const int ntn = (d.co + BN - 1) / BN;
  const int64_t ntm = (M + BM - 1) / BM;
  const int64_t tile = blockIdx.x;
  if (tile >= ntm * ntn) return;
  const int64_t m0 = (tile / ntn) * BM;
  const int n0 = static_cast<int>(tile % ntn) * BN;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;

  for (int r = tid; r < BM; r += NT) {
    int64_t ra, ry, rr;
    row_offsets(d, m0 + r, M, ra, ry, rr);
    sRowA[r] = ra;
    sRowY[r] = ry;
    sRowR[r] = rr;
  }
  __syncthreads();

  const float* __restrict__ X = static_cast<const float*>(d.x);
  const float* __restrict__ W = static_cast<const float*>(d.w);
  const int ci = d.ci, co = d.co;
  const int64_t dil_extra = static_cast<int64_t>(d.dilation - 1) * ci;

  float ra_reg[LA], rb_reg[LB];
  auto gload = [&](int kt) {
    const int k0 = kt * BK;
#pragma unroll
    for (int i = 0; i < LA; ++i) {
      const int e = tid + i * NT;
      const int r = e / BK, kk = k0 + e % BK;  // consecutive threads: consecutive kk (coalesced)
      const int64_t ra = sRowA[r];
      ra_reg[i] = (ra >= 0 && kk < K) ? X[ra + kk + static_cast<int64_t>(kk / ci) * dil_extra] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < LB; ++i) {
      const int e = tid + i * NT;
      const int kk = k0 + e / BN, n = n0 + e % BN;
      rb_reg[i] = (kk < K && n < co) ? W[static_cast<int64_t>(kk) * co + n] : 0.f;
    }
  };
  auto sstore = [&](int st) {
#pragma unroll
    for (int i = 0; i < LA; ++i) {
      const int e = tid + i * NT;
      sA[st][e % BK][e / BK] = ra_reg[i];
    }
#pragma unroll
    for (int i = 0; i < LB; ++i) {
      const int e = tid + i * NT;
      sB[st][e / BN][e % BN] = rb_reg[i];
    }
  };

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

  const int KT = (K + BK - 1) / BK;
  gload(0);
  sstore(0);
  __syncthreads();
  for (int kt = 0; kt < KT; ++kt) {
    const int st = kt & 1;
    if (kt + 1 < KT) gload(kt + 1);  // global loads in flight while computing
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&sA[st][k][ty * 4]);
      const float4 b = *reinterpret_cast<const float4*>(&sB[st][k][tx * 4]);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    // Stage st^1 was last read in iteration kt-1 (ended by the barrier below).
    if (kt + 1 < KT) sstore(st ^ 1);
    __syncthreads();
  }

  const float* __restrict__ bias = d.b;
  const float* __restrict__ R = static_cast<const float*>(d.res);
  float* __restrict__ Y = static_cast<float*>(d.y);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int lr = ty * 4 + i;
    const int64_t ra = sRowA[lr];
    if (ra < 0) continue;
    const int64_t ry = sRowY[lr], rr = sRowR[lr];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < co) {
        float o = apply_act(acc[i][j] + bias[n], d.act);
        if (R != nullptr) o += R[rr + n];
        Y[ry + n] = o;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------
void validate(const GemmDesc& d, DType dt) {
  GASTRT_CHECK(d.x != nullptr && d.w != nullptr && d.b != nullptr && d.y != nullptr,
               "gemm: null operand");
  GASTRT_CHECK(d.n_seq >= 1 && d.t_out >= 1 && d.ci >= 1 && d.co >= 1 && d.k >= 1 && d.stride >= 1 &&
                   d.dilation >= 1,
               "gemm: bad geometry n_seq=" << d.n_seq << " t_out=" << d.t_out << " ci=" << d.ci << " co=" << d.co
                                           << " k=" << d.k << " stride=" << d.stride << " dilation=" << d.dilation);
  const int64_t span = static_cast<int64_t>(d.t_out - 1) * d.stride + static_cast<int64_t>(d.k - 1) * d.dilation + 1;
  GASTRT_CHECK(d.t_in >= span, "gemm: t_in=" << d.t_in << " < window span " << span);
  GASTRT_CHECK(d.t_ypitch >= d.t_out && d.ldy >= d.co, "gemm: output pitch too small");
  if (d.res != nullptr) {
    GASTRT_CHECK(d.res_offset >= 0 && d.res_stride >= 1 &&
                     d.res_offset + static_cast<int64_t>(d.t_out - 1) * d.res_stride < d.t_res,
                 "gemm: residual rows out of range (t_res=" << d.t_res << " offset=" << d.res_offset
                                                            << " stride=" << d.res_stride << ")");
  }
  GASTRT_CHECK(d.act >= 0 && d.act <= 2, "gemm: bad activation " << d.act);
  GASTRT_CHECK(static_cast<int64_t>(d.k) * d.ci < INT_MAX, "gemm: K too large");
  (void)dt;
}

template <typename Kern>
void launch_grouped(Kern kernel, int bm, int bn, int threads, const GemmDesc* descs, int count,
                    cudaStream_t stream) {
  GemmBatch b{};
  int64_t max_tiles = 0;
  for (int i = 0; i < count; ++i) {
    b.d[i] = descs[i];
    const int64_t m = descs[i].n_seq * static_cast<int64_t>(descs[i].t_out);
    const int64_t tiles = ((m + bm - 1) / bm) * ((descs[i].co + bn - 1) / bn);
    max_tiles = std::max(max_tiles, tiles);
  }
  b.count = count;
  GASTRT_CHECK(max_tiles <= INT_MAX, "gemm: problem too large (" << max_tiles << " tiles)");
  dim3 grid(static_cast<unsigned>(max_tiles), static_cast<unsigned>(count));
  kernel<<<grid, threads, 0, stream>>>(b);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

}  // namespace

DeviceCaps query_caps(int device) {
  DeviceCaps c;
  GASTRT_CHECK_CUDA(cudaDeviceGetAttribute(&c.num_sms, cudaDevAttrMultiProcessorCount, device));
  GASTRT_CHECK_CUDA(cudaDeviceGetAttribute(&c.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  GASTRT_CHECK_CUDA(cudaDeviceGetAttribute(&c.cc_major, cudaDevAttrComputeCapabilityMajor, device));
  GASTRT_CHECK_CUDA(cudaDeviceGetAttribute(&c.cc_minor, cudaDevAttrComputeCapabilityMinor, device));
  return c;
}

void init_gemm_kernels() {
  // All GEMM kernels use < 48 KB of static shared memory; prefer shared over L1 so two
  // 128x128 blocks fit per SM.
  GASTRT_CHECK_CUDA(cudaFuncSetAttribute(gemm_tc_kernel<__half, 128, 128, 2, 4>,
                                         cudaFuncAttributePreferredSharedMemoryCarveout, 100));
  GASTRT_CHECK_CUDA(cudaFuncSetAttribute(gemm_tc_kernel<__nv_bfloat16, 128, 128, 2, 4>,
                                         cudaFuncAttributePreferredSharedMemoryCarveout, 100));
}

void launch_gemm(const GemmDesc* descs, int count, DType dtype, const DeviceCaps& caps, cudaStream_t stream) {
  for (int i = 0; i < count; ++i) validate(descs[i], dtype);
  for (int base = 0; base < count; base += kMaxGemmGroup) {
    const int cnt = std::min(kMaxGemmGroup, count - base);
    const GemmDesc* g = descs + base;
    if (dtype == DType::F32) {
      launch_grouped(gemm_f32_kernel, F32_BM, F32_BN, F32_NT, g, cnt, stream);
      continue;
    }
    // Big tiles unless they leave the GPU half idle or waste most of the N tile.
    int64_t big_tiles = 0;
    int max_co = 0;
    for (int i = 0; i < cnt; ++i) {
      const int64_t m = g[i].n_seq * static_cast<int64_t>(g[i].t_out);
      big_tiles += ((m + 127) / 128) * ((g[i].co + 127) / 128);
      max_co = std::max(max_co, g[i].co);
    }
    const bool small = max_co <= 64 || big_tiles < 2 * static_cast<int64_t>(caps.num_sms);
    if (dtype == DType::F16) {
      if (small)
        launch_grouped(gemm_tc_kernel<__half, 64, 64, 2, 2>, 64, 64, 128, g, cnt, stream);
      else
        launch_grouped(gemm_tc_kernel<__half, 128, 128, 2, 4>, 128, 128, 256, g, cnt, stream);
    } else {
      if (small)
        launch_grouped(gemm_tc_kernel<__nv_bfloat16, 64, 64, 2, 2>, 64, 64, 128, g, cnt, stream);
      else
        launch_grouped(gemm_tc_kernel<__nv_bfloat16, 128, 128, 2, 4>, 128, 128, 256, g, cnt, stream);
    }
  }
}

}  // namespace cuda
}  // namespace gastrt
