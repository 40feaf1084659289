// How a GEMM C[M, N] = A[M, K] @ B[K, N] is cut into tiles for the thread team. Each tile is one
// single-threaded sgemm call, so each tile packs its own panels of A (K x rows) and B (K x cols):
// total packing traffic = pr * K*N + pc * M*K for a pr x pc grid, which the grid minimises.
//
// The grid depends on (M, N, K) only, never on the team size (bf16_pairs_grid, below, is the one
// exception, and says why it may be): OpenBLAS rounds an element differently depending on the shape
// of the call that computed it (edge micro-kernels), so a thread-dependent grid made results depend
// on the thread count (threads 1 vs 2 differed by up to 2e-6 relative). With a fixed grid every
// element is computed by the same call whatever the team, and a team of any size takes the tiles
// dynamically. The tile count is a power of two that grows with the work (>= ~4 MFLOP per tile,
// tens of microseconds) up to max_gemm_tiles(); few-row products (batch-1 weight streaming) are cut
// into >= 256-column strips, which costs no packing there. More tiles than threads is not free: in
// a forward the weight panels come cold from DRAM, so re-packing them costs. Measured on 2 cores
// (Zen 1, benchmarks/RESULTS.md): up to 8 tiles kept batch-1 at parity with the thread-dependent
// grid and cost ~4% on VideoPose3D-243 at batch 64; up to 16 tiles cost 6-9%.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace gastrt {
namespace cpu {

// Tile rows must depend on the product's shape only, never on the team size: the small-M
// kernel's K blocking depends on a tile's rows (gemm.h), so team-sized tiles would make results
// depend on the thread count. (The one exception, bf16_pairs_grid below, says why it may.)
struct GemmGrid {
  int64_t tile_rows, tile_cols;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t pow2_floor(int64_t v) {
  int64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// Most tiles per GEMM (a power of two, 2..64): GASTRT_GEMM_TILES, default 8. It bounds how many
// threads one GEMM keeps busy; changing it changes the rounding of results (by ~1e-6), so it is
// a deployment-wide setting, not a per-call one.
inline int64_t max_gemm_tiles() {
  static const int64_t v = [] {
    const char* e = std::getenv("GASTRT_GEMM_TILES");
    const long long t = e ? std::atoll(e) : 0;
    return t >= 2 ? std::min<int64_t>(64, pow2_floor(int64_t(t))) : int64_t(8);
  }();
  return v;
}

inline GemmGrid gemm_grid(int64_t M, int64_t N, int64_t K) {
  auto rup = [](int64_t a, int64_t m) { return ceil_div(a, m) * m; };
  if (M <= 0 || N <= 0) return {std::max<int64_t>(M, 1), std::max<int64_t>(N, 1)};
  const double flops = 2.0 * double(M) * double(N) * double(std::max<int64_t>(K, 1));
  // Below ~1 MFLOP, waking workers costs more than it saves: one tile (run inline).
  if (flops < 1e6) return {M, N};
  const int64_t tmax = max_gemm_tiles();
  int64_t T = std::clamp<int64_t>(pow2_floor(int64_t(flops / 8e6)), 2, tmax);
  if (M <= 64) T = std::max(T, std::min<int64_t>(tmax, pow2_floor(N / 256)));
  int64_t best_pr = 1;
  double best_cost = -1;
  for (int64_t pr = 1; pr <= T; pr *= 2) {
    const int64_t pc = T / pr;
    if (pr > 1 && ceil_div(M, pr) < 16) continue;
    if (pc > 1 && ceil_div(N, pc) < 64) continue;
    const double cost = double(pr) * double(N) + double(pc) * double(M);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_pr = pr;
    }
  }
  if (best_cost < 0) {  // too small to split both ways: split the longer side as allowed
    if (M >= 16 * 2 && M >= N / 4) return {rup(ceil_div(M, std::min<int64_t>(T, M / 16)), 16), N};
    if (N >= 64 * 2) return {M, rup(ceil_div(N, std::min<int64_t>(T, N / 64)), 16)};
    return {M, N};
  }
  const int64_t pc = T / best_pr;
  const int64_t tr = best_pr > 1 ? rup(ceil_div(M, best_pr), 16) : M;
  const int64_t tc = pc > 1 ? rup(ceil_div(N, pc), 16) : N;
  return {tr, tc};
}

// The grid of a conv on the vdpbf16ps kernel (gemm_bf16_dot: AVX512-BF16, or its emulation):
// its weights come pre-packed, so a tile re-reads but never re-packs them, while every tile
// converts its own rows of A to bf16 pairs (each column tile of a row range converts the same
// rows again). Products with rows to spare (bf16_row_tiled) are therefore cut into row tiles
// only, one per thread, each over all columns: A is converted once. A team with more threads
// than such row tiles also cuts the columns (>= 256 per tile) to keep its threads busy. The
// kernel computes each element as one fp32 chain over K in order, whatever the tile, so here,
// unlike gemm_grid, the team size may shape the grid without changing a bit. conv_f32 splits
// each segment's rows evenly over ceil(rows / tile_rows) tiles. Measured on 2 cores (Zen 4,
// AVX512-BF16; benchmarks/RESULTS.md, #17 eleventh session), same-run A/B against gemm_grid:
// batch 64 1.03-1.05x (VideoPose3D-243) and 1.03-1.07x (RIE-243), VideoPose3D's 1000-frame
// sequence 1.02-1.03x; GAST-Net and batch 1 unchanged (their products stay on gemm_grid or are
// not bf16 dot-product convs). The AMX kernel keeps gemm_grid: its rows run on the tiles or, in
// products under 32 rows, on vdpbf16ps, which round differently, and it converts a tile's A
// whole, so team-sized tiles would be untested there both for bits and for speed.
constexpr int64_t kBf16RowTileMin = 64;

inline bool bf16_row_tiled(int64_t M) { return M >= 2 * kBf16RowTileMin; }

// M must be bf16_row_tiled.
inline GemmGrid bf16_pairs_grid(int64_t M, int64_t N, int threads) {
  const int64_t pr = std::clamp<int64_t>(threads, 1, M / kBf16RowTileMin);
  const int64_t pc = std::clamp<int64_t>(threads / pr, 1, std::max<int64_t>(N / 256, 1));
  return {ceil_div(M, pr), ceil_div(std::max<int64_t>(N, 1), pc)};
}

}  // namespace cpu
}  // namespace gastrt
