// Dilated width-3 temporal conv (sequence mode) of a bf16 engine by Winograd F(2,3), its four
// products on the bf16 dot-product GEMM (gemm_bf16_dot).
//
// Why: a bf16 engine's full-sequence forward of VideoPose3D-243 is ~75% width-3 convs, and its
// direct form already runs them near the vdpbf16ps peak. F(2,3) computes two outputs of a width-3
// correlation from four products instead of six: a third less multiply work for those layers.
// Why not F(4,3), as fp32 engines use (conv_winograd.cpp): its transforms scale by up to 8 and
// 1/24, and with both operands rounded to bf16 the error of one 1024-channel layer was 5.4x the
// direct form's (NumPy, random weights and activations); F(2,3)'s coefficients are 0, +-1 and
// 1/2, and its error was 1.5x (benchmarks/RESULTS.md, #17 tenth session, has these and the
// end-to-end numbers).
//
// The dilated conv y[t] = W0 x[t] + W1 x[t + d] + W2 x[t + 2d] is, for each phase t mod d, an
// ordinary width-3 correlation over the frames t, t + d, t + 2d, ... A tile is the 2 outputs t0
// and t0 + d, reading the 4 inputs t0 + j*d (j = 0..3). With the points (0, 1, -1, inf)
// [Lavin & Gray 2016]:
//   V = (x0 - x2, x1 + x2, x2 - x1, x1 - x3)               (4 rows of ci per tile, fp32)
//   U = (W0, (W0 + W1 + W2) / 2, (W0 - W1 + W2) / 2, W2)   (in double, once per engine, then bf16)
//   M_p = V_p @ U_p                                        (4 GEMMs: rows = tiles, K = ci; V_p
//                                                           rounded to bf16 as the GEMM packs it)
//   y[t0] = M0 + M1 + M2,  y[t0 + d] = M1 - M2 - M3        (+ bias, activation, residual)
// Tiles of a sequence: t0 = (q / d) * 2d + q % d for q = 0, 1, ...: blocks of 2d outputs, d tiles
// (one per phase) each. The last block may be partial: its tiles whose t0 + d lies past the end
// compute only y[t0] (x3 read as zero), so every output frame is a tile's and no frame falls back
// to the direct kernel.
#include <algorithm>
#include <cstdint>

#include "common/check.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"
#include "gemm_bf16_dot.h"
#include "tiling.h"
#include "vec_kernels.h"

namespace gastrt {
namespace cpu {
namespace {

constexpr int kPoints = 4;  // F(2,3): m + r - 1 = 2 + 3 - 1 products per tile
// G of F(2,3): U_p = sum_k G[p][k] W_k.
constexpr double kG[kPoints][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

// One task's product: 64 tiles (one row chunk of the GEMM) x 256 columns (4 panels). Its four
// M_p (4 x 64 x 256 fp32, 256 KB) stay in L2 until the output transform reads them. The grid
// is fixed by the shape, never by the team, so results do not depend on the thread count.
constexpr int64_t kTaskTiles = 64, kTaskCols = 4 * kBf16DotPanel;

// Tiles per sequence: ceil(t_out / 2d) blocks, the last with min(d, its outputs) tiles.
int64_t tiles_per_seq(const ConvParams& p) {
  const int64_t d = p.dilation, span = 2 * d;
  const int64_t full = p.t_out / span, rem = p.t_out % span;
  return full * d + std::min(d, rem);
}

// Pairs (uint32) of one packed U_p: pack_bf16_pairs(U_p, 1, ci, co).
int64_t u_pairs_plane(int32_t ci, int32_t co) {
  return ceil_div(co, kBf16DotPanel) * bf16_pair_rows(1, ci) * kBf16DotPanel;
}

}  // namespace

bool conv_winograd_bf16_shape_ok(const ConvParams& p) {
  return p.dtype == DType::F32 && p.k == 3 && p.stride == 1 && p.dilation >= 1 && p.t_out >= 1 &&
         p.t_in >= p.t_out + 2 * p.dilation;
}

BigVector<uint32_t> conv_winograd_bf16_weights(const float* w, int32_t ci, int32_t co) {
  // w [3*ci, co] (bf16 values) -> the four U_p, each rounded to bf16 and packed as a 1-tap [ci, co]
  const size_t plane = size_t(ci) * size_t(co);
  const size_t packed = size_t(u_pairs_plane(ci, co));
  BigVector<uint32_t> out(kPoints * packed);
  BigVector<float> u(plane);
  for (int pt = 0; pt < kPoints; ++pt) {
    for (size_t e = 0; e < plane; ++e) {
      const double v = kG[pt][0] * w[e] + kG[pt][1] * w[plane + e] + kG[pt][2] * w[2 * plane + e];
      // to bf16 through float: rounded twice, which can differ from one rounding of v only at a
      // near-tie (by one bf16 ulp), the same way on every machine
      u[e] = bf16_value_daz(bf16_round(float(v)));
    }
    const BigVector<uint32_t> pq = pack_bf16_pairs(u.data(), 1, ci, co);
    std::copy(pq.begin(), pq.end(), out.begin() + pt * packed);
  }
  return out;
}

size_t conv_winograd_bf16_scratch_floats(const ConvParams& p, int team_size) {
  if (!conv_winograd_bf16_shape_ok(p) || p.n_seq == 0) return 0;
  const size_t v = size_t(kPoints) * size_t(p.n_seq * tiles_per_seq(p)) * size_t(p.ci);
  const size_t m = size_t(kPoints) * size_t(kTaskTiles) * size_t(kTaskCols);
  return v + size_t(std::max(team_size, 1)) * m;
}

void conv_winograd_bf16(const ConvParams& p, const uint32_t* u_pairs, float* scratch, Team& team) {
  GASTRT_CHECK(conv_winograd_bf16_shape_ok(p),
               "Winograd F(2,3) conv needs k=3, stride 1 and t_in >= t_out + 2*dilation (k="
                   << p.k << " stride=" << p.stride << " dilation=" << p.dilation
                   << " t_in=" << p.t_in << " t_out=" << p.t_out << ")");
  GASTRT_CHECK(p.bf16_dot != Bf16DotKernel::None, "Winograd F(2,3) conv: bf16_dot must name a kernel");
  conv_check_geometry(p);
  if (p.n_seq == 0) return;

  const float* x = static_cast<const float*>(p.x);      // [n_seq, t_in, ci]
  const float* b = static_cast<const float*>(p.b);      // [co]
  const float* res = static_cast<const float*>(p.res);  // [n_seq, t_res, co] or null
  float* y = static_cast<float*>(p.y);                  // [n_seq, t_out, co]
  const int64_t ci = p.ci, co = p.co, d = p.dilation;
  const int64_t tps = tiles_per_seq(p), tiles = p.n_seq * tps;
  // tiles are numbered sequence by sequence, so that consecutive tiles read consecutive frames
  auto tile_origin = [&](int64_t tile, int64_t* s, int64_t* t0) {
    *s = tile / tps;
    const int64_t q = tile % tps;
    *t0 = (q / d) * 2 * d + q % d;
  };

  float* v = scratch;  // [4, tiles, ci]
  float* mbuf = scratch + size_t(kPoints) * size_t(tiles) * size_t(ci);
  const int64_t m_slot = int64_t(kPoints) * kTaskTiles * kTaskCols;
  const int64_t ld_v = tiles * ci;
  const VecKernels& vk = vec();

  // 1. input transform (memory-bound), ~16K channels of tiles per task as in conv_winograd.cpp
  // (not tuned here: the transform is ~2% of the conv). A tile without a second output has no x3
  // (it may lie past the input): its V3 is x1, which feeds only the second output, not written.
  const int64_t in_per_task = std::max<int64_t>(1, 16384 / ci);
  team.parallel_for(ceil_div(tiles, in_per_task), [&](int64_t task, int) {
    const int64_t end = std::min(tiles, (task + 1) * in_per_task);
    for (int64_t tile = task * in_per_task; tile < end; ++tile) {
      int64_t s, t0;
      tile_origin(tile, &s, &t0);
      vk.wino_f23_input(x + (s * p.t_in + t0) * ci, d * ci, ci, t0 + d < p.t_out, v + tile * ci, ld_v);
    }
  });

  // 2. per (64 tiles, 256 columns) task: the 4 GEMMs into the thread's slot, then the output
  // transform and the epilogue straight into y while the products are in L2.
  const int64_t plane = u_pairs_plane(p.ci, p.co);
  const int64_t nrow = ceil_div(tiles, kTaskTiles), ncol = ceil_div(co, kTaskCols);
  const int act = int(p.act);
  team.parallel_for(nrow * ncol, [&](int64_t task, int tid) {
    const int64_t r0 = (task / ncol) * kTaskTiles, c0 = (task % ncol) * kTaskCols;
    const int64_t rows = std::min(kTaskTiles, tiles - r0), cols = std::min(kTaskCols, co - c0);
    float* m = mbuf + tid * m_slot;  // [4, rows, cols]
    const int64_t ld_m = rows * cols;
    for (int pt = 0; pt < kPoints; ++pt) {  // M_pt = V_pt @ U_pt: a 1-tap product, K = ci
      GemmBf16DotParams gp{};
      gp.a = v + pt * ld_v + r0 * ci;  // [rows, ci]
      gp.m = rows;
      gp.lda = ci;
      gp.taps = 1;
      gp.ci = p.ci;
      gp.w_pairs = u_pairs + pt * plane;
      gp.n_total = co;
      gp.n0 = c0;
      gp.ncols = cols;
      gp.c = m + pt * ld_m;
      gp.ldc = cols;
      gemm_bf16_dot(p.bf16_dot, gp);
    }
    for (int64_t r = 0; r < rows; ++r) {
      int64_t s, t0;
      tile_origin(r0 + r, &s, &t0);
      const bool second = t0 + d < p.t_out;
      float* y0 = y + (s * p.t_out + t0) * co + c0;
      float* y1 = second ? y0 + d * co : nullptr;
      vk.wino_f23_output(m + r * cols, ld_m, cols, y0, y1);
      vk.bias_act(y0, b + c0, cols, act, res ? conv_residual_row(p, s, t0) + c0 : nullptr);
      if (y1)
        vk.bias_act(y1, b + c0, cols, act, res ? conv_residual_row(p, s, t0 + d) + c0 : nullptr);
    }
  });
}

}  // namespace cpu
}  // namespace gastrt
