// The library tactic of a conv record: how one ConvRecord (kernels.h GemmDesc semantics) maps
// onto cuBLASLt's column-major matmuls, and which records it can take. Host-only and
// dependency-free like program_records.h: the bindings export it (_native.cuda_lt_conv_calls) so
// tests/cuda/sim_engine.py runs the very same calls on the CPU, and csrc/cuda/cublaslt.cu hands
// them to cuBLASLt on a GPU.
//
// A row-major y[r, :] = act(A(r, :) @ w + b) is, column-major, D = W^T X^T with
//   A = W^T  [co x K]  at w,  lda = co      (w is [K, co] row-major)
//   B = X^T  [K x rows] at x, ldb = stride*ci (row r of the im2col matrix starts stride*ci later)
//   D = Y^T  [co x rows] at y, ldd = ldy
// A conv whose im2col rows are contiguous (k == 1, or dilation 1 with stride >= k) is one matmul;
// any other conv (dilated, sequence mode) is one matmul per tap, accumulated in y (beta = 1),
// the bias + ReLU epilogue on the last tap only: fp32 engines only, since fp16 / bf16 partial
// sums stored in y would be rounded (and could overflow) k-1 times where the custom kernel
// accumulates in fp32.
#pragma once
#include <cstdint>

#include "cuda/program_records.h"

namespace gastrt {
namespace cuda {

constexpr int kLtMaxCalls = 16;  // taps of a per-tap conv

enum LtEpilogue : int64_t { kLtEpilogueNone = 0, kLtEpilogueBias = 1, kLtEpilogueReluBias = 2 };

// One cuBLASLt matmul, in elements of the engine dtype relative to the record's x / w / y:
//   D(i, r) [+]= sum_kk A(i, kk) B(kk, r),  i < m, r < n, kk < k, for each batch b < batch
//   A(i, kk) = w[a_offset + kk*lda + i]
//   B(kk, r) = x[b_offset + b*b_batch_stride + r*ldb + kk]
//   D(i, r)  = y[b*d_batch_stride + r*ldd + i]
struct LtGemmCall {
  int64_t m, n, k;
  int64_t a_offset, lda;
  int64_t b_offset, ldb, b_batch_stride;
  int64_t ldd, d_batch_stride;
  int64_t batch;
  int64_t accumulate;  // 1: beta = 1 (C = D, in place); 0: beta = 0
  int64_t epilogue;    // LtEpilogue
};

// Fills calls[0, count) for record r of an engine of `dtype` (0 fp32, 1 fp16, 2 bf16) and returns
// count, or returns 0 and sets *why (a static string) when the custom kernel must run it: a
// residual epilogue (cuBLASLt applies C before the activation, the model adds the residual after
// it), a leaky ReLU (no cuBLASLt epilogue), a per-tap conv in 16 bits, or more taps than
// kLtMaxCalls.
inline int lt_conv_calls(const ConvRecord& r, int64_t dtype, LtGemmCall* calls, const char** why) {
  const char* reason = nullptr;
  if (r.res != kRefNone)
    reason = "residual epilogue (the custom kernel fuses it)";
  else if (r.act != 0 && r.act != 1)
    reason = "leaky ReLU (cuBLASLt has no such epilogue)";
  else if (r.k < 1 || r.ci < 1 || r.co < 1 || r.t_out < 1 || r.n_seq < 1 || r.stride < 1 || r.dilation < 1)
    reason = "empty problem";
  const bool single = r.k == 1 || (r.dilation == 1 && r.stride >= r.k);
  if (reason == nullptr && !single && dtype != 0)
    reason = "per-tap conv in 16 bits (partial sums would be rounded between taps)";
  if (reason == nullptr && !single && r.k > kLtMaxCalls) reason = "more taps than kLtMaxCalls";
  if (reason != nullptr) {
    if (why != nullptr) *why = reason;
    return 0;
  }
  // Sequences laid end to end in x and y form one matrix: one batch of n_seq * t_out rows.
  const bool merged = r.n_seq == 1 || (r.t_in == r.t_out * r.stride && r.t_ypitch == r.t_out);
  const int64_t act_epilogue = r.act == 1 ? kLtEpilogueReluBias : kLtEpilogueBias;
  const int ncalls = single ? 1 : static_cast<int>(r.k);
  for (int tau = 0; tau < ncalls; ++tau) {
    LtGemmCall& c = calls[tau];
    c.m = r.co;
    c.n = merged ? r.n_seq * r.t_out : r.t_out;
    c.k = single ? r.k * r.ci : r.ci;
    c.a_offset = single ? 0 : int64_t(tau) * r.ci * r.co;
    c.lda = r.co;
    c.b_offset = single ? 0 : int64_t(tau) * r.dilation * r.ci;
    c.ldb = r.stride * r.ci;
    c.b_batch_stride = merged ? 0 : r.t_in * r.ci;
    c.ldd = r.ldy;
    c.d_batch_stride = merged ? 0 : r.t_ypitch * r.ldy;
    c.batch = merged ? 1 : r.n_seq;
    c.accumulate = tau > 0 ? 1 : 0;
    c.epilogue = tau == ncalls - 1 ? act_epilogue : kLtEpilogueNone;
  }
  if (why != nullptr) *why = nullptr;
  return ncalls;
}

}  // namespace cuda
}  // namespace gastrt
