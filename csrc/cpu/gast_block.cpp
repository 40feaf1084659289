// GAST-Net GraphAttentionBlock on the CPU, fused per chunk of frames (see cpu_ops.h).
//
// Chunk workspace (rows R = frames * J, frame-major: row f*J + i is joint i of frame f):
//   Z [R, 3c]   the block's [x | loc | glb] row block: x is gathered into columns [0, c), the
//               local and global concat projections write their outputs into [c, 2c) and
//               [2c, 3c) directly (ldc = 3c), so "concat" costs nothing and the block
//               projection is ONE GEMM with K = 3c.
//   P [R, pw]   x @ [loc_w | glb_u | glb_g_w] (+ b1): h0/h1 (sym, con) [0, 4c), the attention
//               logit vectors a / b [4c, 4c+2h), g [4c+2h, pw). The column order is
//               plan.GAST_PROJECTION, the one packing every backend shares.
//   S [R, 2c]   [relu(sym) | relu(con)]; reused for the block output O [R, 2c]
//   Y [R, h*gc] the attention aggregation
// plus j*j floats of softmax scratch per thread.
//
// A bf16 engine on a bf16 dot-product kernel (GastBf16Pairs) runs the four GEMMs on it (on
// vdpbf16ps its sums do not depend on a tile's rows, so chunking changes no bit; on AMX products
// of >= 32 rows sum each pair in the other order); everything else stays fp32.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/check.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"
#include "gemm.h"
#include "gemm_bf16_dot.h"
#include "tiling.h"
#include "vec_kernels.h"

namespace gastrt {
namespace cpu {
namespace {

inline size_t pad16(size_t n) { return (n + 15) & ~size_t(15); }  // 64-byte aligned slices

// Target GEMM rows per chunk: enough to amortise the weights' trip through the cache (and, on
// OpenBLAS, its packing), few enough for the chunk to stay in L2/L3.
// GASTRT_GAST_CHUNK_ROWS overrides it (tuning).
int64_t chunk_rows() {
  static const int64_t v = [] {
    const char* e = std::getenv("GASTRT_GAST_CHUNK_ROWS");
    const long long r = e ? std::atoll(e) : 0;
    return r > 0 ? int64_t(r) : int64_t(256);
  }();
  return v;
}

std::vector<float> copy_f32(const void* p, size_t n, const char* what) {
  GASTRT_CHECK(p != nullptr, "gast_block weight " << what << " is missing");
  const float* f = static_cast<const float*>(p);
  return std::vector<float>(f, f + n);
}

// How a block runs for `frames` frames. The chunks depend on the frame count only, never on
// the team size, and so does everything computed inside a chunk (GEMM tiles: tiling.h), so the
// results do not depend on the thread count.
struct ChunkPlan {
  int64_t frames_per_chunk;
  int64_t nchunks;
};

ChunkPlan plan_chunks(int64_t frames, int32_t j) {
  if (frames <= 0) return ChunkPlan{1, 0};
  const int64_t fmax = std::max<int64_t>(1, chunk_rows() / j);
  // As few chunks as fit fmax frames each, but at least 4 when there are 16+ frames (so that a
  // small team works on whole chunks in parallel instead of splitting every stage).
  const int64_t want = std::max(ceil_div(frames, fmax), std::min<int64_t>(4, frames / 4));
  ChunkPlan cp{};
  cp.frames_per_chunk = ceil_div(frames, std::max<int64_t>(want, 1));
  cp.nchunks = ceil_div(frames, cp.frames_per_chunk);
  return cp;
}

// Chunks run in parallel, one per thread, when there are at least as many as threads;
// otherwise one after another, each stage split across the team. Same arithmetic either way.
bool split_stages(const ChunkPlan& cp, int team_size) {
  return team_size > 1 && cp.nchunks < team_size;
}

struct Layout {  // offsets (floats) inside one chunk workspace of R rows
  size_t z, p, s, y, total;
};

Layout chunk_layout(const GastBlockWeights& w, int64_t rows) {
  Layout l{};
  const size_t r = size_t(rows);
  l.z = 0;
  l.p = l.z + pad16(r * 3 * w.c);
  l.s = l.p + pad16(r * w.pw);
  l.y = l.s + pad16(r * 2 * w.c);
  l.total = l.y + pad16(r * size_t(w.heads) * w.gc);
  return l;
}

// One GEMM of a stage: C[M, N] = A @ B (beta 0), then epi(r0, rows, c0, cols) on each tile
// while it is in cache (bias, activation, scatter).
struct GemmJob {
  int64_t M, N, K;
  const float* A;   // [M, K] (stride lda)
  int64_t lda;
  const float* B;   // [K, N] (stride ldb)
  int64_t ldb;
  float* C;         // [M, N] (stride ldc)
  int64_t ldc;
  const float* Bp;  // B in panels (pack_small_panels), read when the small-M kernel runs
  const uint32_t* Bpairs = nullptr;  // B as bf16 pairs (GastBf16Pairs): the bf16 dot-product GEMM
};

// Either serial (inside one chunk task) or a whole team working on the same stage.
struct Par {
  Team* team;  // null: serial
  // Rows that choose each fp32 GEMM's kernel (conv_gemm_path): the plan's chunk size, the same
  // for every chunk and every team size (the last chunk may be shorter). Jobs with Bpairs
  // always run on the bf16 kernel.
  int64_t path_rows;
  // A bf16 engine's GEMM weights as bf16 pairs and their kernel (null: fp32 arithmetic).
  const GastBf16Pairs* pairs = nullptr;

  // A GEMM's bf16 pairs (a member of *pairs), or null.
  const uint32_t* pairs_of(BigVector<uint32_t> GastBf16Pairs::*m) const {
    return pairs ? (pairs->*m).data() : nullptr;
  }

  bool serial() const { return !team || team->size() == 1; }

  // Element-wise / copy stages: split across the team only when there is real work (a few
  // KB of copying is cheaper than waking the workers).
  template <class F>
  void each(int64_t n, int64_t floats, F&& f) const {
    if (serial() || floats < 32 * 1024) {
      for (int64_t i = 0; i < n; ++i) f(i, 0);
    } else {
      team->parallel_for(n, f);
    }
  }

  // Whether a GEMM runs on the small-M kernel (on its packed weights): from the chunk's row
  // count and the layer, like a conv's (conv_gemm_path).
  bool small(const GemmJob& j) const { return conv_gemm_path(path_rows, j.K) == GemmPath::Small; }

  // The tile grid (tiling.h); on the small-M kernel, column tiles on panel boundaries.
  GemmGrid grid(const GemmJob& j) const {
    GemmGrid g = gemm_grid(j.M, j.N, j.K);
    if (j.Bpairs) g.tile_cols = panel_tile_cols(g.tile_cols, kBf16DotPanel);
    else if (small(j)) g.tile_cols = panel_tile_cols(g.tile_cols);
    return g;
  }

  // Up to two independent GEMMs in ONE parallel region (fewer team synchronisations at
  // batch 1, where every stage is split), each cut into its tile grid (tiling.h), which is the
  // same serial or not.
  template <class E1, class E2>
  void gemms(const GemmJob& j1, E1&& e1, const GemmJob* j2, E2&& e2) const {
    const GemmGrid g1 = grid(j1);
    const int64_t nr1 = ceil_div(j1.M, g1.tile_rows), nc1 = ceil_div(j1.N, g1.tile_cols);
    GemmGrid g2{1, 1};
    int64_t nr2 = 0, nc2 = 1;
    if (j2) {
      g2 = grid(*j2);
      nr2 = ceil_div(j2->M, g2.tile_rows);
      nc2 = ceil_div(j2->N, g2.tile_cols);
    }
    auto tile = [&](int64_t i, int) {
      const bool first = i < nr1 * nc1;
      const GemmJob& j = first ? j1 : *j2;
      const GemmGrid& g = first ? g1 : g2;
      const int64_t nc = first ? nc1 : nc2;
      if (!first) i -= nr1 * nc1;
      const int64_t r0 = (i / nc) * g.tile_rows, c0 = (i % nc) * g.tile_cols;
      const int64_t rows = std::min(g.tile_rows, j.M - r0), cols = std::min(g.tile_cols, j.N - c0);
      if (j.Bpairs) {
        GemmBf16DotParams b{};
        b.a = j.A + r0 * j.lda;
        b.m = rows;
        b.lda = j.lda;
        b.tap_stride = j.K;
        b.taps = 1;
        b.ci = int32_t(j.K);
        b.w_pairs = j.Bpairs;
        b.n_total = j.N;
        b.n0 = c0;
        b.ncols = cols;
        b.c = j.C + r0 * j.ldc + c0;
        b.ldc = j.ldc;
        gemm_bf16_dot(pairs->kernel, b);
      } else if (small(j))
        vec().sgemm_small_packed(rows, c0, cols, j.K, j.A + r0 * j.lda, j.lda, j.Bp, j.K, 0, 0.f,
                                 j.C + r0 * j.ldc + c0, j.ldc);
      else
        cpu::gemm(GemmPath::Blas, rows, cols, j.K, j.A + r0 * j.lda, j.lda, j.B + c0, j.ldb, 0.f,
                  j.C + r0 * j.ldc + c0, j.ldc);
      if (first) e1(r0, rows, c0, cols);
      else e2(r0, rows, c0, cols);
    };
    const int64_t ntiles = nr1 * nc1 + nr2 * nc2;
    if (serial()) {
      for (int64_t i = 0; i < ntiles; ++i) tile(i, 0);
    } else {
      team->parallel_for(ntiles, tile);
    }
  }
};

// All stages of the block for frames [f0, f0 + nf) (global frame g = n * t + tt).
void run_chunk(const GastBlockWeights& w, const GastFrameTables& tab, const float* x, float* y,
               int32_t t, int64_t f0, int64_t nf, float* ws, float* att_scratch,
               size_t att_stride, const Par& par) {
  const VecKernels& vk = vec();
  const int64_t J = w.j, C = w.c, HG = int64_t(w.heads) * w.gc, PW = w.pw;
  const int64_t R = nf * J;
  const Layout l = chunk_layout(w, R);
  float* Z = ws + l.z;  // [R, 3C]
  float* Pm = ws + l.p; // [R, PW]
  float* S = ws + l.s;  // [R, 2C] (then O)
  float* Y = ws + l.y;  // [R, HG]
  auto none = [](int64_t, int64_t, int64_t, int64_t) {};

  // 1. gather x [n, j, t, c] -> Z[:, 0:C] frame-major
  par.each(nf, R * C, [&](int64_t f, int) {
    const int64_t g = f0 + f, n = g / t, tt = g % t;
    for (int64_t i = 0; i < J; ++i)
      std::memcpy(Z + (f * J + i) * 3 * C, x + ((n * J + i) * t + tt) * C, sizeof(float) * C);
  });
  // 2. the three projections in one GEMM; bias only on the logit / g columns [4C, PW)
  par.gemms(GemmJob{R, PW, C, Z, 3 * C, w.w1.data(), PW, Pm, PW, w.w1_p.data(),
                    par.pairs_of(&GastBf16Pairs::w1)},
            [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
              const int64_t b0 = std::max(c0, 4 * C), b1 = c0 + cols;
              if (b0 >= b1) return;
              for (int64_t r = r0; r < r0 + rows; ++r)
                vk.bias_act(Pm + r * PW + b0, w.b1.data() + b0, b1 - b0, 0, nullptr);
            },
            nullptr, none);
  // 3. per frame: local mixing (-> S) and global attention (-> Y)
  par.each(nf, R * (4 * C + HG) * 4, [&](int64_t f, int tid) {
    const float* pf = Pm + f * J * PW;
    vk.gast_local_frame(tab, pf, PW, S + f * J * 2 * C, 2 * C);
    vk.gast_attention_frame(tab, pf + 4 * C, pf + 4 * C + 2 * w.heads, PW, Y + f * J * HG, HG,
                            att_scratch + size_t(tid) * att_stride);
  });
  // 4. loc = relu(S @ loc_cat_w + b) -> Z[:, C:2C];  glb = relu(Y @ glb_cat_w + b) -> Z[:, 2C:3C]
  const GemmJob glb{R, C, HG, Y, HG, w.glb_cat_w.data(), C, Z + 2 * C, 3 * C, w.glb_cat_p.data(),
                    par.pairs_of(&GastBf16Pairs::glb_cat)};
  par.gemms(GemmJob{R, C, 2 * C, S, 2 * C, w.loc_cat_w.data(), C, Z + C, 3 * C, w.loc_cat_p.data(),
                    par.pairs_of(&GastBf16Pairs::loc_cat)},
            [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
              for (int64_t r = r0; r < r0 + rows; ++r)
                vk.bias_act(Z + r * 3 * C + C + c0, w.loc_cat_b.data() + c0, cols, 1, nullptr);
            },
            &glb,
            [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
              for (int64_t r = r0; r < r0 + rows; ++r)
                vk.bias_act(Z + r * 3 * C + 2 * C + c0, w.glb_cat_b.data() + c0, cols, 1, nullptr);
            });
  // 5. out = relu([x | loc | glb] @ cat_w + cat_b): one GEMM, K = 3C, into S (now O), whose
  //    epilogue adds the bias, applies the relu and scatters to the joint-major y [n, j, t, 2c]
  float* O = S;
  par.gemms(GemmJob{R, 2 * C, 3 * C, Z, 3 * C, w.cat_w.data(), 2 * C, O, 2 * C, w.cat_p.data(),
                    par.pairs_of(&GastBf16Pairs::cat)},
            [&](int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
              for (int64_t r = r0; r < r0 + rows; ++r) {
                const int64_t f = r / J, i = r % J, g = f0 + f, n = g / t, tt = g % t;
                vk.bias_act_to(y + ((n * J + i) * t + tt) * 2 * C + c0, O + r * 2 * C + c0,
                               w.cat_b.data() + c0, cols, 1);
              }
            },
            nullptr, none);
}

}  // namespace

GastBlockWeights gast_block_prepare(const GastBlockParams& p) {
  GASTRT_CHECK(p.dtype == DType::F32, "the CPU gast_block is fp32 only");
  GASTRT_CHECK(p.j > 0 && p.c > 0 && p.heads > 0 && p.head_channels > 0,
               "bad gast_block sizes: j=" << p.j << " c=" << p.c << " heads=" << p.heads
                                          << " head_channels=" << p.head_channels);
  GastBlockWeights w;
  const size_t J = p.j, C = p.c, H = p.heads, G = p.head_channels, HG = H * G;
  w.j = p.j;
  w.c = p.c;
  w.heads = p.heads;
  w.gc = p.head_channels;
  w.pw = int32_t(4 * C + 2 * H + HG);
  // plan.GAST_PROJECTION: [loc_w (4c) | glb_u (2h) | glb_g_w (h*gc)]
  const std::vector<float> loc_w = copy_f32(p.loc_w, C * 4 * C, "loc_w");
  const std::vector<float> u = copy_f32(p.glb_u, C * 2 * H, "glb_u");
  const std::vector<float> g_w = copy_f32(p.glb_g_w, C * HG, "glb_g_w");
  w.w1.resize(C * w.pw);
  for (size_t r = 0; r < C; ++r) {
    float* dst = w.w1.data() + r * w.pw;
    std::copy_n(loc_w.data() + r * 4 * C, 4 * C, dst);
    std::copy_n(u.data() + r * 2 * H, 2 * H, dst + 4 * C);
    std::copy_n(g_w.data() + r * HG, HG, dst + 4 * C + 2 * H);
  }
  w.b1.assign(size_t(w.pw), 0.f);
  const std::vector<float> gcb = copy_f32(p.glb_c, 2 * H, "glb_c");
  const std::vector<float> gb = copy_f32(p.glb_g_b, HG, "glb_g_b");
  std::copy(gcb.begin(), gcb.end(), w.b1.begin() + 4 * C);
  std::copy(gb.begin(), gb.end(), w.b1.begin() + 4 * C + 2 * H);
  w.loc_diag = copy_f32(p.loc_diag, 2 * J * C, "loc_diag");
  w.loc_off = copy_f32(p.loc_off, 2 * J * J * C, "loc_off");
  w.loc_b = copy_f32(p.loc_b, 2 * C, "loc_b");
  w.loc_cat_w = copy_f32(p.loc_cat_w, 2 * C * C, "loc_cat_w");
  w.loc_cat_b = copy_f32(p.loc_cat_b, C, "loc_cat_b");
  w.glb_ck = copy_f32(p.glb_ck, H * J * J, "glb_ck");
  w.glb_cat_w = copy_f32(p.glb_cat_w, HG * C, "glb_cat_w");
  w.glb_cat_b = copy_f32(p.glb_cat_b, C, "glb_cat_b");
  w.cat_w = copy_f32(p.cat_w, 3 * C * 2 * C, "cat_w");
  w.cat_b = copy_f32(p.cat_b, 2 * C, "cat_b");
  w.w1_p = pack_small_panels(w.w1.data(), int64_t(C), w.pw);
  w.loc_cat_p = pack_small_panels(w.loc_cat_w.data(), int64_t(2 * C), int64_t(C));
  w.glb_cat_p = pack_small_panels(w.glb_cat_w.data(), int64_t(HG), int64_t(C));
  w.cat_p = pack_small_panels(w.cat_w.data(), int64_t(3 * C), int64_t(2 * C));
  // Sparse neighbour lists of the off-diagonal mixing tables: (i, j) pairs whose weights are
  // zero in every channel are skipped (GAST's diagonal and its non-edges). Any nonzero entry,
  // even a diagonal one the lowering never produces, stays in, so the result always equals
  // the dense einsum of the NumPy oracle.
  w.nbr_start.assign(2 * J + 1, 0);
  for (size_t s = 0; s < 2; ++s)
    for (size_t i = 0; i < J; ++i) {
      for (size_t jj = 0; jj < J; ++jj) {
        const float* o = w.loc_off.data() + ((s * J + i) * J + jj) * C;
        bool nz = false;
        for (size_t c = 0; c < C && !nz; ++c) nz = o[c] != 0.f;
        if (nz) w.nbr.push_back(int32_t(jj));
      }
      w.nbr_start[s * J + i + 1] = int32_t(w.nbr.size());
    }
  return w;
}

size_t gast_block_scratch_floats(const GastBlockWeights& w, int64_t n, int32_t t, int team_size) {
  team_size = std::max(team_size, 1);
  const ChunkPlan cp = plan_chunks(n * t, w.j);
  const Layout l = chunk_layout(w, cp.frames_per_chunk * w.j);
  const int64_t slots = split_stages(cp, team_size) ? 1 : std::min<int64_t>(team_size, cp.nchunks);
  return size_t(slots) * l.total + size_t(team_size) * pad16(size_t(w.j) * w.j);
}

GastBf16Pairs gast_block_bf16_pairs(const GastBlockWeights& w, Bf16DotKernel k) {
  GASTRT_CHECK(k != Bf16DotKernel::None, "gast_block_bf16_pairs: no kernel named");
  GastBf16Pairs p;
  p.kernel = k;
  const int32_t C = w.c, HG = w.heads * w.gc;
  p.w1 = pack_bf16_pairs(w.w1.data(), 1, C, w.pw);
  p.loc_cat = pack_bf16_pairs(w.loc_cat_w.data(), 1, 2 * C, C);
  p.glb_cat = pack_bf16_pairs(w.glb_cat_w.data(), 1, HG, C);
  p.cat = pack_bf16_pairs(w.cat_w.data(), 1, 3 * C, 2 * C);
  return p;
}

void gast_block_f32(const GastBlockWeights& w, const float* x, float* y, int64_t n, int32_t t,
                    float* scratch, Team& team, const GastBf16Pairs* pairs) {
  GASTRT_CHECK(n >= 0 && t >= 1, "gast_block: bad input n=" << n << " t=" << t);
  GASTRT_CHECK(!pairs || pairs->kernel != Bf16DotKernel::None, "gast_block: bf16 pairs without a kernel");
  if (n == 0) return;
  const GastFrameTables tab{w.j,           w.c,           w.heads,
                            w.gc,          w.loc_diag.data(), w.loc_off.data(),
                            w.loc_b.data(), w.nbr_start.data(), w.nbr.data(),
                            w.glb_ck.data()};
  const int64_t frames = n * t;
  const ChunkPlan cp = plan_chunks(frames, w.j);
  const int64_t path_rows = cp.frames_per_chunk * w.j;
  const Layout l = chunk_layout(w, path_rows);
  const bool split = split_stages(cp, team.size());
  const int64_t slots = split ? 1 : std::min<int64_t>(team.size(), cp.nchunks);
  float* att = scratch + size_t(slots) * l.total;
  const size_t att_stride = pad16(size_t(w.j) * w.j);
  if (split) {
    for (int64_t ci = 0; ci < cp.nchunks; ++ci) {
      const int64_t f0 = ci * cp.frames_per_chunk;
      run_chunk(w, tab, x, y, t, f0, std::min(cp.frames_per_chunk, frames - f0), scratch, att,
                att_stride, Par{&team, path_rows, pairs});
    }
    return;
  }
  team.parallel_for(cp.nchunks, [&](int64_t ci, int tid) {
    const int64_t f0 = ci * cp.frames_per_chunk;
    const int64_t nf = std::min(cp.frames_per_chunk, frames - f0);
    run_chunk(w, tab, x, y, t, f0, nf, scratch + size_t(tid) * l.total, att + tid * att_stride,
              att_stride, Par{nullptr, path_rows, pairs});
  });
}

}  // namespace cpu
}  // namespace gastrt
