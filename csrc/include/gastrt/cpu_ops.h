// The native CPU kernels (fp32, torch-free). Semantics: python/gastrt/plan.py; oracle:
// python/gastrt/backends/numpy_backend.py. Every kernel takes the thread Team it may use
// (common/thread_pool.h) and never allocates inside its hot loops: scratch comes from the caller.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gastrt/big_alloc.h"
#include "gastrt/params.h"

namespace gastrt {

class Team;

namespace cpu {

// ---- conv (csrc/cpu/conv.cpp) ------------------------------------------------------------------
// Temporal conv / 1x1 conv / Linear with the fused epilogue of ConvParams (dtype must be F32):
//   x [n_seq, t_in, ci], w [k*ci, co], b [co], res [n_seq, t_res, co] or null -> y [n_seq, t_out, co]
// stride >= k with dilation 1 (window mode, 1x1): ONE GEMM per row tile with K = k*ci and
// lda = stride*ci (the k-frame window is contiguous: no im2col). Otherwise (sequence mode,
// dilated): k shifted GEMMs with K = ci accumulating into the same output tile.
// Then bias + act (+ residual) on the tile while it is in cache. Throws on bad geometry.
void conv_f32(const ConvParams& p, Team& team);
// Whether conv_f32 computes p with the small-M GEMM (few rows; on AVX2 every conv), i.e. whether
// p.w_panels / p.w_panels16 would be read. pack_small_panels: w [K, N] -> the panels that kernel streams
// ([ceil(N / panel), K, panel], zero-padded; panel = the CPU variant's width), once per layer.
bool conv_uses_small_gemm(const ConvParams& p);
// The engine's switches for those panels (read once): GASTRT_SMALL_PANELS=0 reads conv weights
// in place instead; GASTRT_PANELS_16BIT=0 gives an fp16 / bf16 engine fp32 panels of its widened
// weights instead of 16-bit ones. Same results either way (A/B timing, memory).
bool small_panels_enabled();
bool panels_16bit_enabled();
BigVector<float> pack_small_panels(const float* w, int64_t K, int64_t N);
// pack_small_panels16: the same panels as 16-bit bits of dt (F16 / BF16) for an fp16 / bf16
// engine, whose fp32 weights are widened 16-bit values; throws unless every weight is exactly
// representable in dt (weights_exact_in checks without packing).
bool weights_exact_in(const float* w, size_t n, DType dt);
BigVector<uint16_t> pack_small_panels16(const float* w, int64_t K, int64_t N, DType dt);
// Throws unless p describes a conv that stays inside its input / residual (conv_f32's checks).
void conv_check_geometry(const ConvParams& p);
// The residual row that output frame t of sequence s adds (p.res [n_seq, t_res, co] non-null),
// at column 0: the one place the convs' residual slicing (offset, stride) is spelled out.
inline const float* conv_residual_row(const ConvParams& p, int64_t s, int64_t t) {
  return static_cast<const float*>(p.res) + (s * p.t_res + p.res_offset + t * p.res_stride) * int64_t(p.co);
}

// ---- bf16 dot-product GEMM (csrc/cpu/gemm_bf16_dot.cpp, gemm_bf16_dot_select.cpp) -------------
// A bf16 engine's convs with bf16 arithmetic: activations rounded to bf16, products of bf16
// pairs summed in fp32 (vdpbf16ps, AMX tdpbf16ps). bf16_dot_kernel: the kernel engines use
// (Bf16DotKernel, params.h), chosen once: GASTRT_BF16_DOT=auto (default: Amx where the CPU and
// the OS allow it, else Avx512Bf16 where the CPU has it, each only once it matched its
// emulation on a test product here; else None), off (None), emulate, emulate-amx.
Bf16DotKernel bf16_dot_kernel();
// Every kernel (not None), in the order they are listed to users.
constexpr Bf16DotKernel kBf16DotKernels[] = {Bf16DotKernel::Emulated, Bf16DotKernel::AmxEmulated,
                                             Bf16DotKernel::Avx512Bf16, Bf16DotKernel::Amx};
// "none" | "emulated" | "avx512bf16" | "emulated-amx" | "amx"
const char* bf16_dot_kernel_name(Bf16DotKernel k);
// Why a kernel the CPU has is not used ("" when none is missing): a failed check, or the OS
// refusing the AMX tile state (reported whatever GASTRT_BF16_DOT says).
const std::string& bf16_dot_status();
bool cpu_has_avx512bf16();
bool cpu_has_amx_bf16();  // AMX-BF16 + AVX512-BF16, and Linux granted this process the tile state
bool bf16_dot_kernel_runs_here(Bf16DotKernel k);
// Runs p on kernel k (Amx: AMX tiles at >= kBf16AmxMinRows rows, vdpbf16ps below); throws
// unless bf16_dot_kernel_runs_here(k).
void gemm_bf16_dot(Bf16DotKernel k, const GemmBf16DotParams& p);
// w [taps * ci, n] (exact bf16 values) -> [ceil(n / 64), pair rows, 64] pairs of bf16 bits (pair
// row t * ceil(ci / 2) + j: rows k = t * ci + 2j in the low half, + 1 in the high; zero past ci,
// n and taps * ceil(ci / 2) rows, which are rounded up to 16), denormals flushed as the
// instructions read them. Throws unless every weight is a bf16 value.
BigVector<uint32_t> pack_bf16_pairs(const float* w, int32_t taps, int32_t ci, int64_t n);

// ---- dilated width-3 conv by Winograd F(4,3) (csrc/cpu/conv_winograd.cpp) --------------------
// Sequence mode's k = 3, stride-1 convs with half the multiply work of the direct form.
// conv_winograd_shape_ok: fp32, k == 3, stride 1, t_out >= 4*dilation (else use conv_f32).
// conv_winograd_pays: whether the channel counts make it faster than conv_f32 (and
//   GASTRT_CONV_WINOGRAD is not "0").
// conv_winograd_weights: w [3*ci, co] -> U [6, ci, co] (transformed in double, once per engine;
//   where every conv product runs on the packed small-M kernel (AVX2), each U_p is stored as
//   its pack_small_panels form instead: opaque to callers, read only by conv_winograd_f32).
// conv_winograd_f32: same contract as conv_f32 for those shapes; scratch holds
//   conv_winograd_scratch_floats(p, team.size()) floats.
bool conv_winograd_shape_ok(const ConvParams& p);
bool conv_winograd_pays(int32_t ci, int32_t co);
BigVector<float> conv_winograd_weights(const float* w, int32_t ci, int32_t co);
size_t conv_winograd_scratch_floats(const ConvParams& p, int team_size);
void conv_winograd_f32(const ConvParams& p, const float* u, float* scratch, Team& team);

// ---- a bf16 engine's dilated width-3 conv by Winograd F(2,3) (csrc/cpu/conv_winograd_bf16.cpp) -
// Sequence mode's k = 3, stride-1 convs of an engine on a bf16 dot-product kernel, with two thirds
// of the direct form's multiply work, the four products on gemm_bf16_dot (p.bf16_dot).
// conv_winograd_bf16_shape_ok: k == 3, stride 1 (any t_out >= 1: a partial last tile computes
//   only its first output).
// conv_winograd_bf16_weights: w [3*ci, co] (bf16 values) -> the four U_p (transformed in double
//   once per engine, rounded to bf16, packed as pack_bf16_pairs of a 1-tap [ci, co]); opaque to
//   callers, read only by conv_winograd_bf16.
// conv_winograd_bf16: same contract as conv_f32 on bf16 pairs for those shapes, within bf16's
//   tolerance of it (not bit-equal); scratch holds conv_winograd_bf16_scratch_floats(p,
//   team.size()) floats. Whether it pays: conv_winograd_pays.
bool conv_winograd_bf16_shape_ok(const ConvParams& p);
BigVector<uint32_t> conv_winograd_bf16_weights(const float* w, int32_t ci, int32_t co);
size_t conv_winograd_bf16_scratch_floats(const ConvParams& p, int team_size);
void conv_winograd_bf16(const ConvParams& p, const uint32_t* u_pairs, float* scratch, Team& team);

// ---- linear for streaming columns (csrc/cpu/stream_linear.cpp) --------------------------------
// StreamLinearParams: x [m, k] fp32, w [k, n] fp32 / fp16 / bf16 -> y [m, n] fp32 (bias, act,
// residual fused). For few rows (a streaming push): memory-bound on w, which it reads once,
// sequentially (16-bit weights: half the bytes); the team splits K.
void stream_linear_f32(const StreamLinearParams& p, Team& team);

// ---- GAST-Net graph attention block (csrc/cpu/gast_block.cpp) ----------------------------------
// Weights rearranged once (Engine construction): the three projections of x fused into one
// [c, 4c + 2h + h*gc] matrix in the column order of plan.GAST_PROJECTION (shared by every
// backend), the sparse neighbour lists of the two J x J mixing tables.
struct GastBlockWeights {
  int32_t j = 0, c = 0, heads = 0, gc = 0;
  int32_t pw = 0;               // 4c + 2h + h*gc: width of the fused projection
  std::vector<float> w1;        // [c, pw]  [loc_w | glb_u | glb_g_w]
  std::vector<float> b1;        // [pw]     [0 (4c) | glb_c | glb_g_b]
  std::vector<float> loc_diag;  // [2, j, c]
  std::vector<float> loc_off;   // [2, j, j, c]
  std::vector<float> loc_b;     // [2c]
  std::vector<float> loc_cat_w; // [2c, c]
  std::vector<float> loc_cat_b; // [c]
  std::vector<float> glb_ck;    // [h, j, j]
  std::vector<float> glb_cat_w; // [h*gc, c]
  std::vector<float> glb_cat_b; // [c]
  std::vector<float> cat_w;     // [3c, 2c]  rows: x | local | global
  std::vector<float> cat_b;     // [2c]
  // The four GEMM weights above in the small-M kernel's panels (pack_small_panels): what the
  // block's GEMMs read whenever they run on that kernel (same bits as the plain matrices).
  BigVector<float> w1_p, loc_cat_p, glb_cat_p, cat_p;
  // Neighbours with a nonzero off-diagonal weight in any channel: for s in {sym, con} and
  // row i, nbr[nbr_start[s*j + i] .. nbr_start[s*j + i + 1]) (CSR). GAST's tables are sparse
  // (a handful of neighbours per joint); dense random tables work too.
  std::vector<int32_t> nbr_start, nbr;
};

// Copies + rearranges the weights of GastBlockParams (fp32 only; x / y / n / t are ignored).
GastBlockWeights gast_block_prepare(const GastBlockParams& p);

// Scratch floats gast_block_f32 needs for x [n, j, t, c] with a team of `team_size` threads.
size_t gast_block_scratch_floats(const GastBlockWeights& w, int64_t n, int32_t t, int team_size);

// x [n, j, t, c] -> y [n, j, t, 2c]. Frames (n, t) are processed in chunks of ~256 rows
// (frame-major inside the chunk), every stage of the block on a chunk before the next chunk:
// one GEMM for the three projections, the per-frame J x J mixing and 4-head attention, the
// local / global concat projections written straight into column slices of the chunk's
// [x | loc | glb] row block, and the block projection (K = 3c) whose epilogue scatters back to
// the joint-major output. With many frames each thread runs whole chunks (no synchronisation
// inside the block); with fewer frames than 2 x threads (batch-1 windows) every stage is split
// across the team instead (GEMMs by columns).  scratch: gast_block_scratch_floats(..., team.size()).
//
// pairs (optional): a bf16 engine's four GEMM weights as bf16 pairs (gast_block_bf16_pairs); the
// block's GEMMs then run on pairs->kernel, the bf16 dot-product GEMM (activations rounded to
// bf16, fp32 sums), and the rest of the block (mixing, attention, epilogues) stays fp32.
struct GastBf16Pairs {
  Bf16DotKernel kernel = Bf16DotKernel::None;
  BigVector<uint32_t> w1, loc_cat, glb_cat, cat;  // pack_bf16_pairs of w1, loc_cat_w, glb_cat_w, cat_w
};
void gast_block_f32(const GastBlockWeights& w, const float* x, float* y, int64_t n, int32_t t,
                    float* scratch, Team& team, const GastBf16Pairs* pairs = nullptr);

// The pairs of w's four GEMM weights for kernel k; throws unless they are bf16 values.
GastBf16Pairs gast_block_bf16_pairs(const GastBlockWeights& w, Bf16DotKernel k);

// ---- RIE input encoding (csrc/cpu/rie.cpp) -----------------------------------------------------
void rie_encode_f32(const RieEncodeParams& p, Team& team);

}  // namespace cpu
}  // namespace gastrt
