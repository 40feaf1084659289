// Element-wise inner loops and the small-M GEMM of the CPU kernels, compiled several times
// (baseline x86-64, AVX2+FMA, AVX-512) from vec_kernels.cpp and vec_gemm_small.cpp and picked
// once at run time by CPUID, so the wheel runs on any x86-64 machine and still uses the wide
// vectors where they exist. Large GEMMs are OpenBLAS's (which dispatches by itself) where the
// small-M kernel was not measured to win; the element-wise loops are the epilogues and GAST's
// per-frame mixing and attention, a few percent of the FLOPs but far more of the time if left
// scalar.
#pragma once
#include <cstdint>

namespace gastrt {
namespace cpu {

// Read-only tables of one GAST block's per-frame part (pointers into GastBlockWeights).
struct GastFrameTables {
  int32_t j, c, heads, gc;
  const float* loc_diag;     // [2, j, c]
  const float* loc_off;      // [2, j, j, c]
  const float* loc_b;        // [2c]
  const int32_t* nbr_start;  // [2j + 1]
  const int32_t* nbr;
  const float* glb_ck;       // [h, j, j]
};

struct VecKernels {
  const char* isa;
  // y[0:n] = act(y + b) (+ res) ; act 0 none, 1 relu, 2 lrelu(0.2); res may be null.
  void (*bias_act)(float* y, const float* b, int64_t n, int act, const float* res);
  // dst[0:n] = act(src + b) (separate destination: the scatter of a frame-major tile).
  void (*bias_act_to)(float* dst, const float* src, const float* b, int64_t n, int act);
  // Local mixing of one frame: P rows i (stride ldp) hold [h0_sym | h1_sym | h0_con | h1_con]
  // (c each); S rows i (stride lds) get [relu(sym) | relu(con)].
  void (*gast_local_frame)(const GastFrameTables& t, const float* P, int64_t ldp, float* S,
                           int64_t lds);
  // Global attention of one frame: logits from ab (row i at ab + i*ldp: [a_0..a_{h-1} |
  // b_0..b_{h-1}], biases included), softmax over j, + C_k, then Y rows i (stride ldy)
  // [h*gc] = sum_j att[h, i, j] * G row j (stride ldp, biases included). scratch: j*j floats.
  void (*gast_attention_frame)(const GastFrameTables& t, const float* ab, const float* G,
                               int64_t ldp, float* Y, int64_t ldy, float* scratch);
  // Row-major C[M, N] = A[M, K] @ B[K, N] (+ beta * C; beta == 0 never reads C). Made for few
  // rows (batch-1 layers: M = 1..~32 rows against MBs of weights; on AVX2 / AVX-512 it also takes every
  // conv, any M, in 144-row blocks). Register-blocked rows x vectors; B read from its row-major
  // layout, each K block of a column strip copied once into a contiguous buffer (no packing of
  // all of B, which for a few rows would cost as much as the multiply).
  void (*sgemm_small)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
  // Columns per panel of the packed form of B below (pack_small_panels, conv.cpp).
  int small_panel;
  // Whether convs of ANY row count run on sgemm_small_packed (gemm.h, conv_gemm_path), not
  // only few-row ones. Set where it was measured to pay (AVX2, AVX-512: see vec_simd.h kSmallAnyRows).
  bool small_any_rows;
  // sgemm_small on B packed into panels P [ceil(N / small_panel), k_total, small_panel]: rows
  // [k_off, k_off + K) and columns [n0, n0 + ncols) of B; C points at column n0. Bit-identical
  // to sgemm_small on the unpacked B; streams each panel contiguously.
  void (*sgemm_small_packed)(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                             int64_t lda, const float* P, int64_t k_total, int64_t k_off,
                             float beta, float* C, int64_t ldc);
  // The same on 16-bit panels (an fp16 / bf16 engine's weights, pack_small_panels16): bf16 or
  // IEEE fp16 bits in the same layout, converted exactly to fp32 a K block at a time; results
  // are bit-identical to sgemm_small_packed on the widened weights, for half the weight bytes.
  void (*sgemm_small_packed16)(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                               int64_t lda, const uint16_t* P, bool bf16, int64_t k_total,
                               int64_t k_off, float beta, float* C, int64_t ldc);
  // Winograd F(4,3) input transform of one tile: the 6 taps x + j*ld_tap (n channels each) ->
  // the 6 transformed rows v + p*ld_v (conv_winograd.cpp).
  void (*wino_f43_input)(const float* x, int64_t ld_tap, int64_t n, float* v, int64_t ld_v);
  // Winograd F(4,3) output transform of one tile: the 6 products m + p*ld_m (n channels each) ->
  // the 4 output rows y + i*ld_y (before bias / activation / residual).
  void (*wino_f43_output)(const float* m, int64_t ld_m, int64_t n, float* y, int64_t ld_y);
  // Winograd F(2,3) input transform of one tile (conv_winograd_bf16.cpp): the 4 taps x + j*ld_tap
  // (n channels each; the last absent, read as zero, when has3 is false) -> the 4 transformed
  // rows v + p*ld_v.
  void (*wino_f23_input)(const float* x, int64_t ld_tap, int64_t n, bool has3, float* v,
                         int64_t ld_v);
  // Winograd F(2,3) output transform of one tile: the 4 products m + p*ld_m (n channels each) ->
  // its output rows y0 and y1 (null: skipped), before bias / activation / residual.
  void (*wino_f23_output)(const float* m, int64_t ld_m, int64_t n, float* y0, float* y1);
  // C[M, N] = A[M, K] @ B[K, N] for few rows (streaming columns), B read once row by row:
  // B fp32 (wfmt 0), IEEE fp16 (1) or bf16 bits (2), converted exactly; fp32 accumulation.
  void (*gemm_rows)(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B,
                    int64_t ldb, int wfmt, float* C, int64_t ldc);
};

const VecKernels& vec();  // the best variant for this CPU (chosen once)

// The variants (vec_kernels.cpp and vec_gemm_small.cpp compiled with the matching flags; only
// vk_base exists on non-x86 builds).
namespace vk_base { extern const VecKernels kernels; }
namespace vk_avx2 { extern const VecKernels kernels; }
namespace vk_avx512 { extern const VecKernels kernels; }

}  // namespace cpu
}  // namespace gastrt
