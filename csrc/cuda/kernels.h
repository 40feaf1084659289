// Internal interface between the CUDA kernels (conv.cu, gast_block.cu, rie.cu, layout.cu) and
// the executor (launch.cu builds these argument structs from the program records). Compiled by
// nvcc only; the bindings never see this header (they include cuda_ops.h, which is CUDA-free).
//
// Every launcher validates its geometry on the host and throws (GASTRT_CHECK) before launching:
// a wrong program should be a Python exception, never an out-of-bounds write on the GPU.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/program_records.h"
#include "gastrt/params.h"

namespace gastrt {
namespace cuda {

constexpr int kMaxGemmGroup = 8;  // problems per grouped GEMM launch (RIE: 5 branches + global)

inline int dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }

// What the launchers need to know about the device (queried once per engine; never during a
// stream capture).
struct DeviceCaps {
  int num_sms = 1;
  int max_smem_optin = 48 * 1024;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int cc_major = 0, cc_minor = 0;
};

// A temporal conv as a GEMM (plan.py `conv`, ConvParams) with an output row pitch so GEMMs can
// write into column slices of a wider buffer and into a time window of a longer sequence:
//   rows r = s*t_out + t  (s < n_seq, t < t_out), K = k*ci
//   A(r, tau*ci + c) = x[(s*t_in + t*stride + tau*dilation)*ci + c]
//   y[(s*t_ypitch + t)*ldy + n] = act(A(r,:) @ w[:, n] + b[n]) (+ res[(s*t_res + res_offset + t*res_stride)*co + n])
struct GemmDesc {
  const void* x;     // [n_seq, t_in, ci]                     dtype
  const void* w;     // [k*ci, co]                            dtype
  const float* b;    // [co]                                  fp32 (never null)
  const void* res;   // [n_seq, t_res, co] or nullptr         dtype
  void* y;           // rows of co values at pitch ldy        dtype
  int64_t n_seq;
  int32_t t_in, t_out, t_res, t_ypitch;
  int32_t ci, co, k, stride, dilation;
  int32_t res_offset, res_stride;
  int32_t ldy;
  int32_t act;       // Act
};

// Same-dtype problems launched together (one kernel launch per <= kMaxGemmGroup problems).
void launch_gemm(const GemmDesc* descs, int count, DType dtype, const DeviceCaps& caps,
                 cudaStream_t stream);
DeviceCaps query_caps(int device);
// Sets the kernels' attributes (called once per engine, outside any capture).
void init_gemm_kernels();

// GAST-Net graph attention block (plan.py `gast_block`), CUDA form of GastBlockParams: the
// three row-wise projections of x are one GEMM with w1 = [loc_w | glb_u | glb_g_w] and
// b1 = [0 (4c) | glb_c | glb_g_b].
struct GastArgs {
  const void* x;           // [n, j, t, c]              dtype
  void* y;                 // [n, j, t, 2c]             dtype
  int64_t n;
  int32_t j, t, c, heads, gc;
  const void* w1;          // [c, 4c + 2h + h*gc]       dtype
  const float* b1;         // [4c + 2h + h*gc]
  const float* loc_diag;   // [2, j, c]
  const float* loc_off;    // [2, j, j, c]
  const float* loc_b;      // [2c]
  const void* loc_cat_w;   // [2c, c]                   dtype
  const float* loc_cat_b;  // [c]
  const float* glb_ck;     // [h, j, j]
  const void* glb_cat_w;   // [h*gc, c]                 dtype
  const float* glb_cat_b;  // [c]
  const void* cat_w;       // [3c, 2c]                  dtype
  const float* cat_b;      // [2c]
  DType dtype;
};

// fused_mode: -1 auto, 0 never fuse, 1 fuse whenever the tile fits in shared memory.
bool gast_fused_ok(int j, int c, int heads, int gc, DType dtype, const DeviceCaps& caps, int fused_mode);
// Scratch bytes the block needs (0 on the fused path). Multi-kernel path: the intermediates of
// a time chunk of tc frames of every sequence, tc chosen so they fit `budget` bytes (>= 1 frame).
int64_t gast_scratch_bytes(int64_t n, int j, int t, int c, int heads, int gc, DType dtype,
                           const DeviceCaps& caps, int fused_mode, int64_t budget);
void launch_gast_block(const GastArgs& a, void* scratch, int64_t scratch_bytes, const DeviceCaps& caps,
                       int fused_mode, cudaStream_t stream);
void init_gast_kernels(const DeviceCaps& caps);

// RIE input encoding (plan.py `rie_encode`), CUDA form of RieEncodeParams: outputs in the engine
// dtype, indices by value (no device allocation, graph-capture friendly).
struct RieArgs {
  const float* x;                   // [n, t, cin] fp32
  void* out[kRieMaxGroups];         // [n, t, 3*len[g]]   dtype
  void* current;                    // [n, cin]           dtype
  int32_t idx[kRieMaxGroups][kRieMaxIdx];
  int32_t len[kRieMaxGroups];
  int32_t groups;
  int64_t n;
  int32_t t, cin;
  DType dtype;
};
void launch_rie_encode(const RieArgs& a, cudaStream_t stream);

// src [n, a, b, f] -> dst [n, b, a, f] (swap) or [n, a, b, f] (copy), converting dtypes.
struct LayoutArgs {
  const void* src;
  void* dst;
  int64_t n;
  int32_t a, b, f;
  int32_t swap;
  DType src_dtype, dst_dtype;
};
void launch_layout(const LayoutArgs& a, cudaStream_t stream);

// dst[r, dst_off + c] = src[r*src_ld + c] for r < rows, c < cols (same dtype): concat.
struct CopyColsArgs {
  const void* src;
  void* dst;
  int64_t rows;
  int32_t cols, src_ld, dst_ld, dst_off;
  DType dtype;
};
void launch_copy_cols(const CopyColsArgs& a, cudaStream_t stream);

// out[n, t, k, d] = src[src_of[k]][(n*t_len + t)*ch[src_of[k]] + 3*jj[k] + d]  (fp32 out)
struct AssembleArgs {
  const void* src[kAsmMaxSrc];   // [n, 1, t, ch[s]]   dtype
  int32_t ch[kAsmMaxSrc];
  int32_t src_of[kAsmMaxJoints];
  int32_t jj[kAsmMaxJoints];
  int32_t nsrc, k;
  float* out;                    // [n, t, k, 3] fp32
  int64_t n;
  int32_t t;
  DType dtype;
};
void launch_assemble(const AssembleArgs& a, cudaStream_t stream);

// Streaming (program_records.h kOpStreamIn / kOpRingWrite / kOpRingGather). The per-row table
// is int32 [n, 4]: virtual slot (-1: a padding row of the batch bucket), column counter low and
// high words, fresh flag. Rings are [nv, g, h, c]: column cnt of slot v lives at cnt mod h.
struct StreamInArgs {
  const float* src;    // [n, jf + 4] fp32; the last 4 words are the int32 table bit patterns
  void* col;           // [n, jf]                dtype
  int32_t* table;      // [n, 4]
  int64_t n;
  int32_t jf;
  DType dtype;
};
void launch_stream_in(const StreamInArgs& a, cudaStream_t stream);

// The rows of a push and the ring they address (shared by write and gather).
struct RingGeom {
  const int32_t* table;  // [n, 4]
  int64_t n, nv;         // rows of the push, virtual slots of the ring
  int32_t g, c, h;       // groups (joints or 1), channels, ring depth in columns
};

struct RingWriteArgs {
  const void* col;       // [n, g, c]            dtype
  void* ring;            // [nv, g, h, c]        dtype
  RingGeom geo;
  DType dtype;
};
void launch_ring_write(const RingWriteArgs& a, cudaStream_t stream);

struct RingGatherArgs {
  const void* ring;      // [nv, g, h, c]        dtype
  void* dst;             // [n, g, k, c]         dtype
  RingGeom geo;
  int32_t k;
  int32_t lag[kRingMaxTaps];  // columns back from the newest, per tap (0 <= lag < h)
  DType dtype;
};
void launch_ring_gather(const RingGatherArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gastrt
