// Temporal conv / 1x1 conv / Linear on the CPU: GEMMs straight on the channels-last activations
// (no im2col), epilogue fused per output tile. See cpu_ops.h for the two GEMM forms.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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

struct Segment {  // rows [row0, row0 + rows) of the output whose A rows are uniformly strided
  int64_t row0, rows;
};

}  // namespace

void conv_check_geometry(const ConvParams& p) {
  GASTRT_CHECK(p.dtype == DType::F32, "the CPU conv is fp32 only");
  GASTRT_CHECK(p.n_seq >= 0 && p.ci > 0 && p.co > 0 && p.k > 0 && p.stride > 0 && p.dilation > 0,
               "bad conv geometry: n_seq=" << p.n_seq << " ci=" << p.ci << " co=" << p.co
                                           << " k=" << p.k << " stride=" << p.stride
                                           << " dilation=" << p.dilation);
  const int64_t span = int64_t(p.k - 1) * p.dilation + 1;
  GASTRT_CHECK(p.t_out >= 1 && int64_t(p.t_out - 1) * p.stride + span <= p.t_in,
               "conv reads past its input: t_in=" << p.t_in << " t_out=" << p.t_out
                                                  << " k=" << p.k << " stride=" << p.stride
                                                  << " dilation=" << p.dilation);
  if (p.res) {
    GASTRT_CHECK(p.res_offset >= 0 && p.res_stride >= 1 &&
                     p.res_offset + int64_t(p.t_out - 1) * p.res_stride < p.t_res,
                 "residual window out of range: t_res=" << p.t_res << " offset=" << p.res_offset
                                                        << " stride=" << p.res_stride);
  }
}

namespace {

// The conv's GEMM form: rows, K, and whether K = k*ci is one GEMM (see conv_f32).
struct ConvGemm {
  int64_t rows, K;
  bool fused_k;
};

ConvGemm conv_gemm(const ConvParams& p) {
  const bool fused_k = p.k == 1 || (p.dilation == 1 && p.stride >= p.k);
  return {p.n_seq * p.t_out, fused_k ? int64_t(p.k) * p.ci : int64_t(p.ci), fused_k};
}

}  // namespace

// GASTRT_SMALL_PANELS=0 reads the weights of convs on the small-M kernel (few-row ones; on AVX2
// every one) in place instead of packing them (the results are bit-identical either way; for
// A/B timing and memory). GAST blocks always keep their packed copy (gast_block_prepare).
bool small_panels_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("GASTRT_SMALL_PANELS");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

// GASTRT_PANELS_16BIT=0: an fp16 / bf16 engine's convs read fp32 panels of its widened weights
// (bit-identical results; for A/B timing of the 16-bit panels).
bool panels_16bit_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("GASTRT_PANELS_16BIT");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

bool conv_uses_small_gemm(const ConvParams& p) {
  const ConvGemm g = conv_gemm(p);
  return p.n_seq > 0 && conv_gemm_path(g.rows, g.K) == GemmPath::Small;
}

namespace {

// w [K, N] -> panels [ceil(N / nb), K, nb] of T (zero-padded), each value through
// put(v, T&) -> bool; ok (optional): false when put returned false for some value.
template <class T, class Put>
BigVector<T> pack_panels(const float* w, int64_t K, int64_t N, Put put, bool* ok = nullptr) {
  bool all = true;
  const int64_t nb = vec().small_panel;
  const int64_t np = ceil_div(N, nb);
  BigVector<T> out(size_t(np * K * nb), T(0));
  for (int64_t p = 0; p < np; ++p) {
    const int64_t c0 = p * nb, w_cols = std::min(nb, N - c0);
    T* dst = out.data() + size_t(p * K * nb);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < w_cols; ++j) all &= put(w[k * N + c0 + j], dst[k * nb + j]);
  }
  if (ok) *ok = all;
  return out;
}

}  // namespace

BigVector<float> pack_small_panels(const float* w, int64_t K, int64_t N) {
  return pack_panels<float>(w, K, N, [](float v, float& d) { d = v; return true; });
}

namespace {

// f -> the bits of dt (F16 / BF16) holding exactly f; false when no such value exists. A NaN maps
// to a NaN (its payload need not survive).
bool to_16bit_exact(float f, DType dt, uint16_t& h) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  if (dt == DType::BF16) {
    h = uint16_t(b >> 16);
    if (std::isnan(f)) h |= 0x0040u;  // stays a NaN when its payload was in the low half
    return (b & 0xffffu) == 0 || std::isnan(f);
  }
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  const uint32_t e = (b >> 23) & 0xffu, man = b & 0x7fffffu;
  if (e == 0xff) {  // inf / NaN
    h = uint16_t(sign | 0x7c00u | (man ? 0x200u : 0u));
    return man == 0 || std::isnan(f);
  }
  if (e == 0) {  // zero (fp32 subnormals are far below fp16's smallest)
    h = sign;
    return man == 0;
  }
  const int ue = int(e) - 127;
  if (ue > 15) return false;
  if (ue >= -14) {  // normal fp16: the low 13 mantissa bits must be zero
    h = uint16_t(sign | uint32_t(ue + 15) << 10 | man >> 13);
    return (man & 0x1fffu) == 0;
  }
  const int shift = 13 + (-14 - ue);  // fp16 subnormal: (1.man) * 2^ue = m * 2^-24
  if (shift > 24) return false;
  const uint32_t sig = 0x800000u | man;
  h = uint16_t(sign | sig >> shift);
  return (sig & ((1u << shift) - 1)) == 0;
}

}  // namespace

bool weights_exact_in(const float* w, size_t n, DType dt) {
  GASTRT_CHECK(dt == DType::F16 || dt == DType::BF16, "16-bit weights are F16 or BF16");
  uint16_t h;
  for (size_t i = 0; i < n; ++i)
    if (!to_16bit_exact(w[i], dt, h)) return false;
  return true;
}

BigVector<uint16_t> pack_small_panels16(const float* w, int64_t K, int64_t N, DType dt) {
  GASTRT_CHECK(dt == DType::F16 || dt == DType::BF16, "16-bit weights are F16 or BF16");
  bool ok = true;
  BigVector<uint16_t> out = pack_panels<uint16_t>(
      w, K, N, [dt](float v, uint16_t& d) { return to_16bit_exact(v, dt, d); }, &ok);
  GASTRT_CHECK(ok, "weights are not exactly representable in " << (dt == DType::F16 ? "fp16" : "bf16")
                                                               << " (16-bit panels hold an fp16 / "
                                                                  "bf16 engine's own weights)");
  return out;
}

void conv_f32(const ConvParams& p, Team& team) {
  conv_check_geometry(p);
  if (p.n_seq == 0) return;

  const float* x = static_cast<const float*>(p.x);  // [n_seq, t_in, ci]
  const float* w = static_cast<const float*>(p.w);  // [k*ci, co]
  const float* b = static_cast<const float*>(p.b);  // [co]
  const float* res = static_cast<const float*>(p.res);  // [n_seq, t_res, co] or null
  float* y = static_cast<float*>(p.y);              // [n_seq, t_out, co]
  const int64_t ci = p.ci, co = p.co, t_in = p.t_in, t_out = p.t_out;

  // One GEMM with K = k*ci when each output row's k input frames are one contiguous window
  // that does not overlap the next row's (BLAS needs lda >= K); else k shifted GEMMs, K = ci.
  const ConvGemm cg = conv_gemm(p);
  const bool fused_k = cg.fused_k;
  const int64_t lda = int64_t(p.stride) * ci;
  // Rows of consecutive sequences continue the same stride when t_in == t_out * stride
  // (window mode: 27 -> 9 -> 3 -> 1), so the whole batch is one GEMM.
  const bool uniform = p.n_seq == 1 || t_in == t_out * p.stride;
  const int64_t R = cg.rows;  // n_seq * t_out

  std::vector<Segment> segs;
  if (uniform) {
    segs.push_back({0, R});
  } else {
    segs.reserve(size_t(p.n_seq));
    for (int64_t s = 0; s < p.n_seq; ++s) segs.push_back({s * t_out, t_out});
  }

  // Tiling (tiling.h); row tiles never cross a segment (sequence) boundary.
  const GemmPath path = conv_gemm_path(cg.rows, cg.K);
  const uint16_t* panels16 = path == GemmPath::Small ? p.w_panels16 : nullptr;
  const float* panels = path == GemmPath::Small && !panels16 ? p.w_panels : nullptr;
  GASTRT_CHECK(!panels16 || p.panels16_dtype == DType::F16 || p.panels16_dtype == DType::BF16,
               "w_panels16: panels16_dtype must be F16 or BF16");
  const bool bf16 = p.panels16_dtype == DType::BF16;
  // A bf16 engine's bf16 dot-product GEMM: at every row count, whatever path says.
  const uint32_t* pairs = p.w_bf16_pairs;
  GASTRT_CHECK(!pairs || p.bf16_dot != Bf16DotKernel::None, "w_bf16_pairs: bf16_dot must name a kernel");
  // the vdpbf16ps kernel's rows follow the team (tiling.h: bf16_pairs_grid); AMX's do not
  const bool team_rows = pairs && p.bf16_dot != Bf16DotKernel::Amx &&
                         p.bf16_dot != Bf16DotKernel::AmxEmulated && bf16_row_tiled(R);
  const GemmGrid grid = team_rows ? bf16_pairs_grid(R, co, team.size())
                                  : gemm_grid(R, co, int64_t(p.k) * ci);
  const int64_t tile_rows = std::max<int64_t>(grid.tile_rows, 1);
  const int64_t tile_cols =
      pairs ? panel_tile_cols(grid.tile_cols, kBf16DotPanel)
      : panels || panels16 ? panel_tile_cols(grid.tile_cols) : grid.tile_cols;
  const int64_t ncol = ceil_div(co, tile_cols);

  struct Tile {
    int64_t row0, rows, col0, cols;
  };
  std::vector<Tile> tiles;
  for (const Segment& sg : segs) {
    // team-sized row tiles: the segment's rows split evenly, so no thread gets a short rest on
    // top of its share
    const int64_t nrow = team_rows ? ceil_div(sg.rows, tile_rows) : 0;
    for (int64_t i = 0, r = 0; r < sg.rows; ++i) {
      const int64_t rows =
          team_rows ? sg.rows * (i + 1) / nrow - r : std::min(tile_rows, sg.rows - r);
      for (int64_t cidx = 0; cidx < ncol; ++cidx) {
        const int64_t c0 = cidx * tile_cols;
        tiles.push_back({sg.row0 + r, rows, c0, std::min(tile_cols, co - c0)});
      }
      r += rows;
    }
  }

  const VecKernels& vk = vec();
  const int act = int(p.act);
  const int64_t k_total = int64_t(p.k) * ci;
  // Bias, activation, then the residual, on rows [row0, row0 + rows) of columns [col0, col0 + cols).
  auto epilogue = [&](int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
    for (int64_t r = row0; r < row0 + rows; ++r) {
      const float* rr = res ? conv_residual_row(p, r / t_out, r % t_out) + col0 : nullptr;
      vk.bias_act(y + r * co + col0, b + col0, cols, act, rr);
    }
  };
  team.parallel_for(int64_t(tiles.size()), [&](int64_t ti, int) {
    const Tile& tl = tiles[size_t(ti)];
    // A row of output row r = (s, t): x + (s * t_in + t * stride) * ci (+ tau * dilation * ci).
    const int64_t s0 = tl.row0 / t_out, t0 = tl.row0 % t_out;
    const float* a0 = x + (s0 * t_in + t0 * p.stride) * ci;
    float* c0 = y + tl.row0 * co + tl.col0;
    if (pairs) {  // the k taps in one product: fused or dilated, tap t at t * dilation * ci
      GemmBf16DotParams g{};
      g.a = a0;
      g.m = tl.rows;
      g.lda = lda;
      g.tap_stride = int64_t(p.dilation) * ci;
      g.taps = p.k;
      g.ci = p.ci;
      g.w_pairs = pairs;
      g.n_total = co;
      g.n0 = tl.col0;
      g.ncols = tl.cols;
      g.c = c0;
      g.ldc = co;
      // the epilogue on each chunk of rows the kernel finishes, while they are in L2
      struct Done {
        decltype(epilogue)* epi;
        const Tile* tl;
      } done{&epilogue, &tl};
      g.rows_done = [](void* ctx, int64_t row0, int64_t rows) {
        const Done& d = *static_cast<const Done*>(ctx);
        (*d.epi)(d.tl->row0 + row0, rows, d.tl->col0, d.tl->cols);
      };
      g.rows_done_ctx = &done;
      gemm_bf16_dot(p.bf16_dot, g);
    } else if (panels16 && fused_k) {
      vk.sgemm_small_packed16(tl.rows, tl.col0, tl.cols, k_total, a0, lda, panels16, bf16,
                              k_total, 0, 0.f, c0, co);
    } else if (panels16) {
      for (int tau = 0; tau < p.k; ++tau)
        vk.sgemm_small_packed16(tl.rows, tl.col0, tl.cols, ci, a0 + int64_t(tau) * p.dilation * ci,
                                lda, panels16, bf16, k_total, int64_t(tau) * ci, tau ? 1.f : 0.f,
                                c0, co);
    } else if (panels && fused_k) {
      vk.sgemm_small_packed(tl.rows, tl.col0, tl.cols, k_total, a0, lda, panels, k_total, 0, 0.f,
                            c0, co);
    } else if (panels) {
      for (int tau = 0; tau < p.k; ++tau)
        vk.sgemm_small_packed(tl.rows, tl.col0, tl.cols, ci, a0 + int64_t(tau) * p.dilation * ci,
                              lda, panels, k_total, int64_t(tau) * ci, tau ? 1.f : 0.f, c0, co);
    } else if (fused_k) {
      gemm(path, tl.rows, tl.cols, int64_t(p.k) * ci, a0, lda, w + tl.col0, co, 0.f, c0, co);
    } else {
      for (int tau = 0; tau < p.k; ++tau)
        gemm(path, tl.rows, tl.cols, ci, a0 + int64_t(tau) * p.dilation * ci, lda,
             w + int64_t(tau) * ci * co + tl.col0, co, tau ? 1.f : 0.f, c0, co);
    }
    if (!pairs) epilogue(tl.row0, tl.rows, tl.col0, tl.cols);
  });
}

}  // namespace cpu
}  // namespace gastrt
