// How a GEMM C[M, N] = A[M, K] @ B[K, N] is cut into tiles for the thread team. Each tile is one
// single-threaded sgemm call, so each tile packs its own panels of A (K x rows) and B (K x cols):
// total packing traffic = pr * K*N + pc * M*K for a pr x pc grid. The grid minimises that for a
// tile count of 1-2 per thread (more tiles: dynamic scheduling evens out threads that a busy
// machine slows down; fewer: less packing, and in a forward the weight panels B come cold from
// DRAM, so re-packing them costs more. Measured on 2 cores: 4 tiles per thread made the
// VideoPose3D-243 forwards 2-4% slower than 2), keeping tiles >= 16 rows / >= 64 columns.
#pragma once
#include <algorithm>
#include <cstdint>

namespace gastrt {
namespace cpu {

struct GemmGrid {
  int64_t tile_rows, tile_cols;
};

inline GemmGrid gemm_grid(int64_t M, int64_t N, int64_t K, int P) {
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  auto rup = [&](int64_t a, int64_t m) { return cdiv(a, m) * m; };
  if (P <= 1 || M <= 0 || N <= 0) return {std::max<int64_t>(M, 1), std::max<int64_t>(N, 1)};
  const double flops = 2.0 * double(M) * double(N) * double(std::max<int64_t>(K, 1));
  // Below ~0.5 MFLOP per thread, waking the workers costs more than it saves: one tile (run
  // inline by the caller).
  if (flops < 5e5 * P) return {M, N};
  // ~4 MFLOP per tile at least (tens of microseconds), up to 2 tiles per thread.
  const int64_t per_thread = std::clamp<int64_t>(int64_t(flops / (double(P) * 4e6)), 1, 2);
  const int64_t T = P * per_thread;
  int64_t best_pr = 1;
  double best_cost = -1;
  for (int64_t pr = 1; pr <= T; ++pr) {
    if (T % pr) continue;
    const int64_t pc = T / pr;
    if (pr > 1 && cdiv(M, pr) < 16) continue;
    if (pc > 1 && cdiv(N, pc) < 64) continue;
    const double cost = double(pr) * double(N) + double(pc) * double(M);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_pr = pr;
    }
  }
  if (best_cost < 0) {  // too small to split both ways: split the longer side as allowed
    if (M >= 16 * 2 && M >= N / 4) return {rup(cdiv(M, std::min<int64_t>(T, M / 16)), 16) , N};
    if (N >= 64 * 2) return {M, rup(cdiv(N, std::min<int64_t>(T, N / 64)), 16)};
    return {M, N};
  }
  const int64_t pc = T / best_pr;
  const int64_t tr = best_pr > 1 ? rup(cdiv(M, best_pr), 16) : M;
  const int64_t tc = pc > 1 ? rup(cdiv(N, pc), 16) : N;
  return {tr, tc};
}

}  // namespace cpu
}  // namespace gastrt
