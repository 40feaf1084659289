// Dilated width-3 temporal conv (sequence mode) by Winograd F(4,3) on the CPU.
//
// Why: a full-sequence forward of VideoPose3D-243 is ~75% width-3 convs, and the direct form is
// already GEMM-bound (k shifted GEMMs at ~88% of OpenBLAS's sgemm peak). F(4,3) computes four
// outputs of a width-3 correlation from six products instead of twelve, so the multiply work of
// those layers halves; the transforms are O(channels) per tile, not O(channels^2).
//
// The dilated conv y[t] = W0 x[t] + W1 x[t + d] + W2 x[t + 2d] is, for each phase t mod d, an
// ordinary width-3 correlation over the frames t, t + d, t + 2d, ... A tile is the 4 outputs
// t0 + i*d (i = 0..3), reading the 6 inputs t0 + j*d (j = 0..5). With the standard Toom-Cook
// points (0, 1, -1, 2, -2, inf) [Lavin & Gray 2016]:
//   V_p = sum_j BT[p][j] x[t0 + j*d]           (6 rows of ci, per tile)
//   U_p = sum_k G[p][k] W_k                     (6 matrices [ci, co], once per engine, in double)
//   M_p = V_p @ U_p                             (6 GEMMs, rows = tiles, K = ci)
//   y[t0 + i*d] = sum_p AT[i][p] M_p            (+ bias, activation, residual)
// The outputs are grouped in blocks of 4*d frames per sequence, d tiles per block (one per phase);
// the frames of a sequence past its last whole block (fewer than 4*d) go to the direct kernel.
//
// Accuracy (fp32): the transforms add rounding of a few ulps times the transform coefficients
// (up to 8); measured end to end on VideoPose3D-243 with random weights and BN statistics, the
// error vs the fp64-accumulated eager model stays ~1e-6 relative (direct: ~7e-7), well inside
// the 1e-5 fp32 tolerance. GASTRT_CONV_WINOGRAD=0 turns the path off.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "common/check.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"
#include "gemm.h"
#include "tiling.h"
#include "vec_kernels.h"

namespace gastrt {
namespace cpu {
namespace {

constexpr int kTaps = 6;  // F(4,3): m + r - 1 = 4 + 3 - 1
constexpr int kOut = 4;

// G of F(4,3) (points 0, 1, -1, 2, -2, inf): U_p = sum_k G[p][k] W_k.
constexpr double kG[kTaps][3] = {{1.0 / 4, 0, 0},
                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                 {0, 0, 1}};

bool env_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("GASTRT_CONV_WINOGRAD");
    return !(e && e[0] == '0');
  }();
  return on;
}

struct WinoGeometry {
  int64_t blocks;   // whole blocks of 4*d outputs per sequence
  int64_t tiles;    // n_seq * blocks * d
  int64_t t_main;   // outputs per sequence covered by the tiles (blocks * 4 * d)
  GemmGrid grid;    // over [tiles, co]
};

WinoGeometry geometry(const ConvParams& p) {
  WinoGeometry g{};
  const int64_t span = int64_t(kOut) * p.dilation;
  g.blocks = p.t_out / span;
  g.tiles = p.n_seq * g.blocks * p.dilation;
  g.t_main = g.blocks * span;
  g.grid = gemm_grid(g.tiles, p.co, int64_t(kTaps) * p.ci);
  g.grid.tile_rows = std::max<int64_t>(g.grid.tile_rows, 1);
  g.grid.tile_cols = std::max<int64_t>(g.grid.tile_cols, 1);
  if (small_gemm_for_all_rows()) g.grid.tile_cols = panel_tile_cols(g.grid.tile_cols);  // packed U
  return g;
}

// Floats of one U_p as conv_winograd_weights stores it: [ci, co], or its panels when the six
// products run on the packed small-M kernel (every row count on that CPU: gemm.h).
int64_t u_plane(int64_t ci, int64_t co) {
  if (!small_gemm_for_all_rows()) return ci * co;
  const int64_t nb = vec().small_panel;
  return ceil_div(co, nb) * ci * nb;
}

}  // namespace

bool conv_winograd_shape_ok(const ConvParams& p) {
  return p.dtype == DType::F32 && p.k == 3 && p.stride == 1 && p.dilation >= 1 &&
         p.t_out >= kOut * p.dilation;
}

bool conv_winograd_pays(int32_t ci, int32_t co) {
  // Below ~128 channels the six K = ci GEMMs run far from peak (short K, packing not amortised)
  // and the transforms' memory traffic is no longer small next to them: the direct form wins.
  return env_enabled() && ci >= 128 && co >= 128;
}

BigVector<float> conv_winograd_weights(const float* w, int32_t ci, int32_t co) {
  // w [3*ci, co] -> U [6, ci, co]
  const size_t plane = size_t(ci) * size_t(co);
  BigVector<float> u(kTaps * plane);
  for (size_t e = 0; e < plane; ++e) {
    const double w0 = w[e], w1 = w[plane + e], w2 = w[2 * plane + e];
    for (int q = 0; q < kTaps; ++q)
      u[q * plane + e] = float(kG[q][0] * w0 + kG[q][1] * w1 + kG[q][2] * w2);
  }
  if (!small_gemm_for_all_rows()) return u;
  const int64_t packed = u_plane(ci, co);
  BigVector<float> up(size_t(kTaps * packed));
  for (int q = 0; q < kTaps; ++q) {
    const BigVector<float> pq = pack_small_panels(u.data() + q * plane, ci, co);
    std::copy(pq.begin(), pq.end(), up.begin() + q * packed);
  }
  return up;
}

size_t conv_winograd_scratch_floats(const ConvParams& p, int team_size) {
  if (!conv_winograd_shape_ok(p)) return 0;
  const WinoGeometry g = geometry(p);
  if (g.tiles == 0) return 0;
  const size_t v = size_t(kTaps) * size_t(g.tiles) * size_t(p.ci);
  const size_t m = size_t(kTaps) * size_t(g.grid.tile_rows) * size_t(g.grid.tile_cols);
  return v + size_t(std::max(team_size, 1)) * m;
}

void conv_winograd_f32(const ConvParams& p, const float* u, float* scratch, Team& team) {
  GASTRT_CHECK(conv_winograd_shape_ok(p),
               "Winograd F(4,3) conv needs fp32, k=3, stride 1 and at least 4*dilation output "
               "frames (k=" << p.k << " stride=" << p.stride << " dilation=" << p.dilation
                            << " t_out=" << p.t_out << ")");
  conv_check_geometry(p);
  if (p.n_seq == 0) return;

  const float* x = static_cast<const float*>(p.x);      // [n_seq, t_in, ci]
  const float* b = static_cast<const float*>(p.b);      // [co]
  const float* res = static_cast<const float*>(p.res);  // [n_seq, t_res, co] or null
  float* y = static_cast<float*>(p.y);                  // [n_seq, t_out, co]
  const int64_t ci = p.ci, co = p.co, d = p.dilation;
  const WinoGeometry g = geometry(p);

  // Frames past the last whole block: the direct kernel, one sequence at a time (their output
  // rows are not one uniform stride across sequences).
  if (g.t_main < p.t_out) {
    for (int64_t s = 0; s < p.n_seq; ++s) {
      ConvParams q = p;
      q.n_seq = 1;
      q.x = x + (s * p.t_in + g.t_main) * ci;
      q.t_in = int32_t(p.t_in - g.t_main);
      q.t_out = int32_t(p.t_out - g.t_main);
      q.y = y + (s * p.t_out + g.t_main) * co;
      if (res) {
        q.res = res + s * int64_t(p.t_res) * co;
        q.res_offset = int32_t(p.res_offset + g.t_main * p.res_stride);
      }
      conv_f32(q, team);
    }
  }
  if (g.tiles == 0) return;

  // Tile q = (s * blocks + blk) * d + phase: first output frame t0 = blk*4d + phase of sequence s.
  // Consecutive tiles of a block read consecutive frames, so the input transform streams.
  float* v = scratch;  // [6, tiles, ci]
  float* mbuf = scratch + size_t(kTaps) * size_t(g.tiles) * size_t(ci);
  const int64_t m_slot = int64_t(kTaps) * g.grid.tile_rows * g.grid.tile_cols;
  const VecKernels& vk = vec();
  const int64_t ld_v = g.tiles * ci;
  auto tile_origin = [&](int64_t q, int64_t* s, int64_t* t0) {
    const int64_t sb = q / d, phase = q % d;
    *s = sb / g.blocks;
    *t0 = (sb % g.blocks) * kOut * d + phase;
  };

  // 1. input transform (memory-bound), ~16K channels of tiles per task: enough tasks to balance
  const int64_t in_per_task = std::max<int64_t>(1, 16384 / ci);
  team.parallel_for(ceil_div(g.tiles, in_per_task), [&](int64_t task, int) {
    const int64_t q1 = std::min(g.tiles, (task + 1) * in_per_task);
    for (int64_t q = task * in_per_task; q < q1; ++q) {
      int64_t s, t0;
      tile_origin(q, &s, &t0);
      vk.wino_f43_input(x + (s * p.t_in + t0) * ci, d * ci, ci, v + q * ci, ld_v);
    }
  });

  // 2. per (tile rows, output columns) task: the 6 GEMMs into the task's scratch, then the
  // output transform and the epilogue straight into y while the products are in cache.
  const int64_t tr = g.grid.tile_rows, tc = g.grid.tile_cols;
  const int64_t nrow = ceil_div(g.tiles, tr), ncol = ceil_div(co, tc);
  const int act = int(p.act);
  const bool packed = small_gemm_for_all_rows();  // u holds each U_p's panels (u_plane)
  const GemmPath path = gemm_path(g.tiles, ci);
  const int64_t plane = u_plane(ci, co);
  team.parallel_for(nrow * ncol, [&](int64_t task, int tid) {
    const int64_t r0 = (task / ncol) * tr, c0 = (task % ncol) * tc;
    const int64_t rows = std::min(tr, g.tiles - r0), cols = std::min(tc, co - c0);
    float* m = mbuf + tid * m_slot;  // [6, rows, cols]
    const int64_t ld_m = rows * cols;
    for (int q = 0; q < kTaps; ++q) {
      const float* a = v + q * ld_v + r0 * ci;  // [rows, ci]
      if (packed)
        vk.sgemm_small_packed(rows, c0, cols, ci, a, ci, u + q * plane, ci, 0, 0.f, m + q * ld_m,
                              cols);
      else
        gemm(path, rows, cols, ci, a, ci, u + q * plane + c0, co, 0.f, m + q * ld_m, cols);
    }
    for (int64_t r = 0; r < rows; ++r) {
      int64_t s, t0;
      tile_origin(r0 + r, &s, &t0);
      float* yt = y + (s * p.t_out + t0) * co + c0;
      vk.wino_f43_output(m + r * cols, ld_m, cols, yt, d * co);
      for (int i = 0; i < kOut; ++i) {
        const float* rr = res ? conv_residual_row(p, s, t0 + i * d) + c0 : nullptr;
        vk.bias_act(yt + i * d * co, b + c0, cols, act, rr);
      }
    }
  });
}

}  // namespace cpu
}  // namespace gastrt
