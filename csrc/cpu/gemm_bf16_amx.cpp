// The bf16 dot-product GEMM on AMX tiles (GemmBf16DotParams, params.h; entry: cpu::gemm_bf16_dot,
// which sends products of at least kBf16AmxMinRows rows here), compiled twice from this source
// (CMakeLists.txt):
//  - bf16amx_hw: tdpbf16ps (AMX-BF16): a 16 x 16 fp32 tile += 16 x 32 bf16 (A) . 32 x 16 bf16
//    (B, as 16 rows of pairs), 8192 multiply-adds per instruction;
//  - bf16amx_emu: the same loops with the tile registers as arrays and each instruction emulated
//    per the Intel SDM's pseudo-code (per element, two fp32 FMAs, even element of the pair first,
//    denormals read as zero and flushed). Runs anywhere: the blocking, padding and edges are
//    tested on every CPU.
// The weights are the same pair panels as the AVX512-BF16 kernel's (pack_bf16_pairs, pair rows
// padded to whole tiles); A's pairs come from that kernel's pack_a_pairs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(GASTRT_BF16_NATIVE)
#include <immintrin.h>
#endif

#include "gemm_bf16_dot.h"

#ifndef GASTRT_AMX_NS
#define GASTRT_AMX_NS bf16amx_emu
#endif

namespace gastrt {
namespace cpu {
namespace GASTRT_AMX_NS {
namespace {

// Tile registers: 0-3 the 2 x 2 block of C tiles (32 rows x 32 columns), 4-5 A (two 16-row
// blocks), 6-7 B (two 16-column halves of the 32). All 16 rows x 64 bytes.
constexpr int kTileRows = 16, kTileBytes = 64;

struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

#if defined(GASTRT_BF16_NATIVE)  // set by CMake for the native variant only (never by -march)

namespace pairs_ns = bf16dot_avx512;  // A's pairs by vcvtne2ps2bf16 (every AMX CPU has AVX512-BF16)

// The tile config's lifetime (ldtilecfg ... tilerelease) around one call.
struct Tiles {
  explicit Tiles(const TileConfig& cfg) { _tile_loadconfig(&cfg); }
  ~Tiles() { _tile_release(); }
};
// GCC's tile intrinsics paste the register number into the instruction text: literal numbers only.
#define GASTRT_TILE_ZERO(tl, T) _tile_zero(T)
#define GASTRT_TILE_LOAD(tl, T, p, stride) _tile_loadd(T, p, stride)
#define GASTRT_TILE_DOT(tl, C, A, B) _tile_dpbf16ps(C, A, B)
#define GASTRT_TILE_STORE(tl, T, p, stride) _tile_stored(T, p, stride)

#else

namespace pairs_ns = bf16dot_emu;

struct Tiles {
  uint32_t t[8][kTileRows][kTileBytes / 4];  // 8 tile registers of 16 rows x 16 dwords
  explicit Tiles(const TileConfig&) {}
  void zero(int T) { std::memset(t[T], 0, sizeof t[T]); }
  void load(int T, const void* p, int64_t stride) {
    for (int r = 0; r < kTileRows; ++r)
      std::memcpy(t[T][r], static_cast<const char*>(p) + r * stride, kTileBytes);
  }
  // C[m][n] += A[m][2k] B[k][2n] then += A[m][2k + 1] B[k][2n + 1], k in order
  void dot(int C, int A, int B) {
    for (int m = 0; m < kTileRows; ++m)
      for (int k = 0; k < kTileRows; ++k)
        for (int n = 0; n < kTileRows; ++n) {
          float s;
          std::memcpy(&s, &t[C][m][n], sizeof s);
          const uint32_t a = t[A][m][k], b = t[B][k][n];
          s = bf16_daz(std::fma(bf16_value_daz(a & 0xffffu), bf16_value_daz(b & 0xffffu), bf16_daz(s)));
          s = bf16_daz(std::fma(bf16_value_daz(a >> 16), bf16_value_daz(b >> 16), s));
          std::memcpy(&t[C][m][n], &s, sizeof s);
        }
  }
  void store(int T, void* p, int64_t stride) {
    for (int r = 0; r < kTileRows; ++r) std::memcpy(static_cast<char*>(p) + r * stride, t[T][r], kTileBytes);
  }
};
#define GASTRT_TILE_ZERO(tl, T) (tl).zero(T)
#define GASTRT_TILE_LOAD(tl, T, p, stride) (tl).load(T, p, stride)
#define GASTRT_TILE_DOT(tl, C, A, B) (tl).dot(C, A, B)
#define GASTRT_TILE_STORE(tl, T, p, stride) (tl).store(T, p, stride)

#endif

// Rows of A per chunk: the chunk's pairs (128 x pair rows x 4 bytes) stay in L2 while every
// half panel of B (pair rows x 128 bytes) is read once per chunk and served to its four
// 32-row blocks (not measured on AMX hardware yet).
constexpr int64_t kChunkRows = 128;

}  // namespace

void gemm(const GemmBf16DotParams& p) {
  if (p.m <= 0 || p.ncols <= 0) return;
  const int64_t kr = bf16_pair_rows(p.taps, p.ci);  // A's row stride = the panels' pair rows
  const int64_t m32 = (p.m + 31) / 32 * 32;
  // A as pairs, padded with zero rows to whole 32-row blocks and zero pairs to whole tiles
  uint32_t* ap = bf16_pairs_scratch(size_t(m32 * kr));
  pairs_ns::pack_a_pairs(p, kr, ap);  // pairs [0, kp) of rows [0, m); the rest is padding
  const int64_t kp = int64_t(p.taps) * bf16_pairs_per_tap(p.ci);
  for (int64_t r = 0; r < p.m; ++r) std::memset(ap + r * kr + kp, 0, size_t(kr - kp) * sizeof(uint32_t));
  std::memset(ap + p.m * kr, 0, size_t((m32 - p.m) * kr) * sizeof(uint32_t));

  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int i = 0; i < 8; ++i) {
    cfg.colsb[i] = kTileBytes;
    cfg.rows[i] = kTileRows;
  }
  Tiles tl(cfg);
  (void)tl;
  alignas(64) float cbuf[32][32];  // a 32 x 32 block of C, then copied into C's valid part

  const int64_t p_first = p.n0 / kBf16DotPanel, p_last = (p.n0 + p.ncols - 1) / kBf16DotPanel;
  const int64_t a_stride = kr * 4, b_stride = int64_t(kBf16DotPanel) * 4;
  for (int64_t c0 = 0; c0 < m32; c0 += kChunkRows) {
    const int64_t c1 = std::min(m32, c0 + kChunkRows);
    for (int64_t pn = p_first; pn <= p_last; ++pn)
      for (int h = 0; h < 2; ++h) {  // the panel's 32-column halves
        const int64_t col0 = pn * kBf16DotPanel + h * 32;
        const int64_t j0 = std::max(col0, p.n0), j1 = std::min(col0 + 32, p.n0 + p.ncols);
        if (j0 >= j1) continue;
        const uint32_t* w = p.w_pairs + pn * kr * kBf16DotPanel + h * 32;
        for (int64_t m0 = c0; m0 < c1; m0 += 32) {
          GASTRT_TILE_ZERO(tl, 0);
          GASTRT_TILE_ZERO(tl, 1);
          GASTRT_TILE_ZERO(tl, 2);
          GASTRT_TILE_ZERO(tl, 3);
          const uint32_t* a0 = ap + m0 * kr;
          for (int64_t k = 0; k < kr; k += kTileRows) {
            GASTRT_TILE_LOAD(tl, 4, a0 + k, a_stride);
            GASTRT_TILE_LOAD(tl, 5, a0 + 16 * kr + k, a_stride);
            GASTRT_TILE_LOAD(tl, 6, w + k * kBf16DotPanel, b_stride);
            GASTRT_TILE_LOAD(tl, 7, w + k * kBf16DotPanel + 16, b_stride);
            GASTRT_TILE_DOT(tl, 0, 4, 6);
            GASTRT_TILE_DOT(tl, 1, 4, 7);
            GASTRT_TILE_DOT(tl, 2, 5, 6);
            GASTRT_TILE_DOT(tl, 3, 5, 7);
          }
          GASTRT_TILE_STORE(tl, 0, &cbuf[0][0], 32 * 4);
          GASTRT_TILE_STORE(tl, 1, &cbuf[0][16], 32 * 4);
          GASTRT_TILE_STORE(tl, 2, &cbuf[16][0], 32 * 4);
          GASTRT_TILE_STORE(tl, 3, &cbuf[16][16], 32 * 4);
          const int64_t rows = std::min<int64_t>(32, p.m - m0);
          for (int64_t r = 0; r < rows; ++r)
            std::memcpy(p.c + (m0 + r) * p.ldc + (j0 - p.n0), &cbuf[r][j0 - col0],
                        size_t(j1 - j0) * sizeof(float));
        }
      }
    if (p.rows_done) p.rows_done(p.rows_done_ctx, c0, std::min(c1, p.m) - c0);  // c0 < m: m32 - 32 < m
  }
}

}  // namespace GASTRT_AMX_NS
}  // namespace cpu
}  // namespace gastrt
