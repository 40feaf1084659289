// Plain parameter structs shared by the CPU kernels (csrc/cpu) and the CUDA kernels (csrc/cuda).
// Torch-free: pointers, sizes, strides. Semantics are defined in python/gastrt/plan.py; every
// kernel is tested against the NumPy executor (python/gastrt/backends/numpy_backend.py).
#pragma once
#include <cstddef>
#include <cstdint>

namespace gastrt {

enum class Act : int32_t { None = 0, Relu = 1, LRelu = 2 };
constexpr float kLReluSlope = 0.2f;

// Storage type of activations / weights. The CPU computes in fp32 only; the CUDA kernels take
// fp16 / bf16 operands with fp32 accumulation.
enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2 };

// The CPU's bf16 dot-product GEMM kernels (cpu::bf16_dot_kernel picks one once):
//   Amx         AMX tiles (tdpbf16ps) for products of >= 32 rows, vdpbf16ps below (the CPU has
//               AMX-BF16 and AVX512-BF16, Linux granted the tile state, both passed their check);
//   Avx512Bf16  vdpbf16ps (the CPU has AVX512-BF16, and the kernel passed its check there);
//   Emulated, AmxEmulated  the same kernels with the instructions emulated in C++
//               (GASTRT_BF16_DOT=emulate / emulate-amx: tests on any CPU; slow);
//   None        none: bf16 engines compute in fp32 on their widened weights.
enum class Bf16DotKernel : int32_t { None = 0, Emulated = 1, Avx512Bf16 = 2, AmxEmulated = 3, Amx = 4 };

// Temporal conv (strided or dilated), 1x1 conv and Linear, channels-last, fused epilogue:
//   y[s, t, :] = act( sum_tau x[s, t*stride + tau*dilation, :] @ w[tau*ci : (tau+1)*ci, :] + b )
//              (+ res[s, res_offset + t*res_stride, :])
// for every sequence s in [0, n_seq) (n_seq = N*G: GAST-Net's joints fold into the GEMM's rows).
// With stride == k and dilation == 1 each output row reads one contiguous k*ci window: a GEMM
// with lda = k*ci and no im2col.
struct ConvParams {
  const void* x;    // [n_seq, t_in, ci]
  const void* w;    // [k*ci, co]
  const void* b;    // [co]
  const void* res;  // [n_seq, t_res, co] or nullptr
  void* y;          // [n_seq, t_out, co]
  int64_t n_seq;
  int32_t t_in, t_out, t_res;
  int32_t ci, co, k, stride, dilation;
  int32_t res_offset, res_stride;
  Act act;
  DType dtype;      // of x, w, res and y (b is always fp32)
  // CPU only, optional: w packed for the small-M GEMM (cpu::pack_small_panels), used when the
  // conv runs on that kernel (few rows; on AVX2 every conv); null: read w in place.
  const float* w_panels;  // [ceil(co / panel), k*ci, panel]
  // CPU only, optional: the same panels in 16 bits (an fp16 / bf16 engine's weights, exactly;
  // cpu::pack_small_panels16), read instead of w_panels when set: half the weight bytes.
  const uint16_t* w_panels16;  // [ceil(co / panel), k*ci, panel] fp16 or bf16 bits
  DType panels16_dtype;        // F16 or BF16 (when w_panels16 is set)
  // CPU only, optional: a bf16 engine's weights as bf16 pairs (cpu::pack_bf16_pairs); when set,
  // the conv runs on the bf16 dot-product GEMM (activations rounded to bf16, fp32 sums) at
  // every row count, and w_panels / w_panels16 are not read.
  const uint32_t* w_bf16_pairs;  // [ceil(co / 64), pair rows, 64] (cpu::bf16_pair_rows)
  Bf16DotKernel bf16_dot;        // the kernel that reads them (not None when they are set)
};

// The bf16 dot-product GEMM of the CPU (cpu::gemm_bf16_dot): C[m, n0 : n0 + ncols] =
// bf16(A) @ W over taps x ci input channels, fp32 sums of pair products in k order (each pair in
// the order of the instruction that computes it: vdpbf16ps odd element first, tdpbf16ps even).
// Row r of A reads tap t's ci channels at a + r * lda + t * tap_stride (a conv's window or
// dilated taps, no im2col); they are rounded to bf16 (RNE) as the kernel packs them in pairs.
struct GemmBf16DotParams {
  const float* a;            // [m, taps, ci] strided as above
  int64_t m, lda, tap_stride;
  int32_t taps, ci;
  const uint32_t* w_pairs;   // [ceil(n_total / 64), pair rows, 64] (pack_bf16_pairs)
  int64_t n_total;           // columns of W
  int64_t n0, ncols;         // the columns computed (any range inside [0, n_total))
  float* c;                  // [m, ncols] at column n0, row stride ldc (its old values are never read)
  int64_t ldc;
  // Optional (null: none): called with each chunk of rows [row0, row0 + rows) once its C is
  // final (every column, every K block), so that a caller's epilogue (a conv's bias, activation
  // and residual) reads rows still in L2 rather than a whole tile back from L3 / DRAM. row0 counts
  // from this call's first row (that of a and c), not from the caller's whole product.
  void (*rows_done)(void* ctx, int64_t row0, int64_t rows);
  void* rows_done_ctx;
};

// Linear layer over the few rows of a streaming push (CPU): y[m, :] = act(x[m, :] @ w + b) (+ res[m, :]).
// w is fp32, fp16 or bf16 (an fp16 / bf16 engine's stored weights, converted exactly to fp32 as
// they are read); x, b, res, y and the sums are fp32, so the result equals the fp32 layer of the
// upcast weights up to summation order.
struct StreamLinearParams {
  const float* x;     // [m, k]   (row stride ldx >= k)
  const void* w;      // [k, n]   fp32, fp16 or bf16 bits
  const float* b;     // [n]
  const float* res;   // [m, n] or nullptr
  float* y;           // [m, n]
  int64_t m, ldx;
  int32_t k, n;
  Act act;
  DType wdtype;
};

// GAST-Net GraphAttentionBlock (see plan.py `gast_block`), per (n, t) frame over its J joints:
// x [n, j, t, c] -> y [n, j, t, 2c]. All weights fp32 on the CPU; dtype as above on CUDA.
struct GastBlockParams {
  const void* x;          // [n, j, t, c]
  void* y;                // [n, j, t, 2c]
  int64_t n;
  int32_t j, t, c, heads, head_channels;
  const void* loc_w;      // [c, 4c]   [W0_sym | W1_sym | W0_con | W1_con], BN scale folded
  const float* loc_diag;  // [2, j, c] per-channel self weight (sym, con)
  const float* loc_off;   // [2, j, j, c] per-channel neighbour weights, zero diagonal
  const float* loc_b;     // [2c]
  const void* loc_cat_w;  // [2c, c]
  const float* loc_cat_b; // [c]
  const void* glb_u;      // [c, 2h]   theta / phi folded with concat_project
  const float* glb_c;     // [2h]
  const void* glb_g_w;    // [c, h*gc]
  const float* glb_g_b;   // [h*gc]
  const float* glb_ck;    // [h, j, j]
  const void* glb_cat_w;  // [h*gc, c]
  const float* glb_cat_b; // [c]
  const void* cat_w;      // [3c, 2c]  rows: residual x | local | global
  const float* cat_b;     // [2c]
  DType dtype;
};

// RIE input encoding (window mode): x [n, t, 34] (c = 2*joint + xy) ->
//   out[g] [n, t, 3*len_g] = [x[:, :, idx] | x[:, :, idx] - x[:, :, idx % 2] | x[:, :, idx] - x[:, t/2, idx]]
//   current [n, 34] = x[:, t/2, :]
struct RieEncodeParams {
  const float* x;          // [n, t, cin]
  float* out[5];           // [n, t, 3*len[g]]
  float* current;          // [n, cin]
  const int32_t* idx[5];   // channel indices of each group
  int32_t len[5];
  int64_t n;
  int32_t t, cin;
};

}  // namespace gastrt
