// The GEMM entry point of the CPU kernels: OpenBLAS, except for the few-row products of
// batch-1 inference, which go to the small-M kernel (vec_kernels.h, sgemm_small; convs: on
// packed panels, and at every row count on AVX2 / AVX-512, see conv_gemm_path).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "common/blas.h"
#include "vec_kernels.h"

namespace gastrt {
namespace cpu {

// Rows up to which sgemm_small is used. Measured on Zen 5 (AVX-512, one thread, B 0.3-12 MB):
// 3-5x faster than OpenBLAS at M <= 12, 1.3-1.8x at M = 17-64, about even at M ~ 150-250 when
// K >= 256, behind from M ~ 500 (OpenBLAS's packed panels win) and for short K (K = 128:
// the per-tile accumulator setup is not amortised). So: every M <= 40, and M <= 192 when
// K >= 256. GASTRT_SMALL_GEMM_M overrides the row limit for every K (0 disables the small path;
// for A/B timing).
inline int64_t small_gemm_override() {  // -1: no override
  static const int64_t v = [] {
    const char* e = std::getenv("GASTRT_SMALL_GEMM_M");
    return e ? int64_t(std::atoll(e)) : int64_t(-1);
  }();
  return v;
}

// Which kernel computes a product. Chosen ONCE per product from its whole row count (or a row
// count fixed by the op, never by the team size), and then used for every tile of it: the
// two kernels round differently. Within one path, column tiling never changes a result
// (sgemm_small: see its tail handling; OpenBLAS: K blocking depends on K only), but row tiles
// do on the small kernel: their row count picks its K block (small_kc in vec_gemm_small.cpp).
// So tile rows must come from the product's shape only, never from the team (tiling.h
// gemm_grid, GAST chunks, Winograd grids), and results are the same for any thread count. (They
// may differ in the last bits between batch sizes: a window in a batch of 64 sits in other tiles
// than alone.) The bf16 vdpbf16ps kernel, whose elements do not depend on the tile, is the one
// whose rows follow the team (tiling.h: bf16_pairs_grid).
enum class GemmPath { Small, Blas };

inline GemmPath gemm_path(int64_t rows, int64_t K) {
  const int64_t o = small_gemm_override();
  const bool small = o >= 0 ? rows <= o : rows <= 40 || (rows <= 192 && K >= 256);
  return small ? GemmPath::Small : GemmPath::Blas;
}

// A conv's product (its weights packed into the small kernel's panels when it is Small): every
// row count where the ISA level's kernel was measured to beat OpenBLAS at any size
// (VecKernels::small_any_rows: AVX2, AVX-512), else the row rule. Depends on the layer and the whole
// product's rows only, never on the team. GASTRT_SMALL_GEMM_M set: the row rule alone.
inline bool small_gemm_for_all_rows() { return small_gemm_override() < 0 && vec().small_any_rows; }

inline GemmPath conv_gemm_path(int64_t rows, int64_t K) {
  return small_gemm_for_all_rows() ? GemmPath::Small : gemm_path(rows, K);
}

// A tile width (tiling.h) rounded up to whole panels of nb columns (default: the packed small-M
// kernel's), so that a tile reads whole panels (only the product's last one may be partial).
inline int64_t panel_tile_cols(int64_t tile_cols, int64_t nb = vec().small_panel) {
  return (std::max<int64_t>(tile_cols, 1) + nb - 1) / nb * nb;
}

// Row-major C[M, N] = A[M, K] @ B[K, N] + beta * C.
inline void gemm(GemmPath path, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M > 0 && K > 0 && N > 0 && path == GemmPath::Small) {
    vec().sgemm_small(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  blas::sgemm(M, N, K, 1.f, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace cpu
}  // namespace gastrt
