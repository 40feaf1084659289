// The C++ API of gastrt's CUDA executor, called by csrc/bindings.cpp (the only pybind11 user;
// its CUDA block is under GASTRT_HAVE_CUDA_OPS). Plain C++: no CUDA or pybind11
// types, so a host-compiler TU can include it. Device pointers and stream handles travel as
// uintptr_t. Errors throw std::runtime_error ("gastrt: ..."); out-of-memory messages contain
// "out of memory". Nothing here calls exit().
//
// Model: python/gastrt/backends/cuda.py lowers a plan (plan.py) for one (mode, batch bucket, T)
// into a *program*: a flat int64 array of op records whose buffers are byte offsets in one
// device arena shared by all programs of the engine. The engine uploads the weights once (GEMM
// operands in the engine precision, bias / graph tables in fp32), grows the arena on demand
// (preallocated at program creation, so an oversized batch fails there, cleanly), captures each
// program's body as a CUDA graph on first run and replays it on the engine's own stream. The
// ops that read the user's input or write the user's output (the prologue / epilogue) run
// outside the graph with the caller's pointers: device arrays go in and out with no copy.
//
// Not thread-safe: one call at a time per Engine (cuda.py holds a lock).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gastrt/params.h"

namespace gastrt {
namespace cuda {

// ---- program bytecode (mirrored in python/gastrt/backends/cuda.py; keep in sync) ------------
// A program is a sequence of records [opcode, nfields, field_0 .. field_{nfields-1}].
// Buffer references: >= 0 byte offset in the arena; kRefNone; kRefInput (the user's fp32 input
// [n, ...]); kRefOutput (the user's fp32 output). Weight references: id from add_weight or -1.
// Dtype fields: 0 fp32, 1 fp16, 2 bf16 (gastrt::DType).
constexpr int64_t kRefNone = -1;
constexpr int64_t kRefInput = -2;
constexpr int64_t kRefOutput = -3;

enum OpCode : int64_t {
  // src, dst, n, a, b, f, swap, src_dtype, dst_dtype:
  //   src [n, a, b, f] -> dst [n, b, a, f] (swap) or [n, a, b, f]
  kOpLayout = 1,
  // count, then count x kConvFields: x, w, b, res, y, n_seq, t_in, t_out, t_res, t_ypitch,
  //   ci, co, k, stride, dilation, res_offset, res_stride, ldy, act  (a grouped launch)
  kOpConv = 2,
  // x, y, scratch, scratch_bytes, n, j, t, c, heads, gc, w1, b1, loc_diag, loc_off, loc_b,
  //   loc_cat_w, loc_cat_b, glb_ck, glb_cat_w, glb_cat_b, cat_w, cat_b
  kOpGast = 3,
  // x, out0..out4, current, n, t, cin, groups, len0..len4, idx[5][16]
  kOpRie = 4,
  // src, dst, rows, cols, src_ld, dst_ld, dst_off          (concat: one record per input)
  kOpCopyCols = 5,
  // out, n, t, k, nsrc, src[8], ch[8], src_of[32], jj[32]
  kOpAssemble = 6,
  // Streaming (one new column per op and slot per push; python/gastrt/stream.py):
  // src, col, table, n, jf: the user's input rows of jf fp32 keypoint values followed by
  //   kStreamTableCols int32 words stored bit for bit in the fp32 array (virtual slot or -1 for
  //   a padding row, column counter low / high word, fresh flag) -> col [n, jf] (engine dtype)
  //   and table [n, kStreamTableCols] int32.
  kOpStreamIn = 7,
  // col, ring, table, n, nv, g, c, h: col [n, g, c] -> ring [nv, g, h, c] at column
  //   cnt mod h of each row's slot; a fresh row fills all h columns (its whole history).
  kOpRingWrite = 8,
  // ring, dst, table, n, nv, g, c, h, k, lag[kRingMaxTaps]: dst [n, g, k, c] = the columns
  //   (cnt - lag[tau]) mod h of each row's slot (zeros for padding rows): a conv's k taps.
  kOpRingGather = 9,
};
constexpr int kLayoutFields = 9;
constexpr int kConvFields = 19;
constexpr int kGastFields = 22;
constexpr int kRieFields = 96;
constexpr int kCopyColsFields = 7;
constexpr int kAssembleFields = 85;
constexpr int kStreamInFields = 5;
constexpr int kRingWriteFields = 8;
constexpr int kRingMaxTaps = 16;
constexpr int kRingGatherFields = 9 + kRingMaxTaps;
constexpr int kStreamTableCols = 4;

// ---- device queries ----------------------------------------------------------------------------
int device_count();                  // 0 when no driver / no GPU (never throws)
std::string device_name(int device); // e.g. "NVIDIA H200 (sm_90, 132 SMs, 140.4 GiB)"
std::string runtime_version();       // CUDA runtime, e.g. "13.0"
// Raw device memory for outputs when the caller has neither torch nor CuPy (cuda.py's
// CudaArray owns it). Throws on failure (message contains "out of memory" for OOM).
uintptr_t device_malloc(int device, int64_t bytes);
void device_free(int device, uintptr_t ptr);
// Kernel-level entry point for C++ callers: plan.py `conv` for `count` ConvParams whose pointers
// are device memory on the current device (same dtype; b fp32), as grouped launches (RIE's five
// branches in one launch) on `stream` (a cudaStream_t; 0 = legacy default stream). Asynchronous.
void conv_forward(const ConvParams* params, int count, uintptr_t stream);
// Synchronous copies between host memory and device memory (tests, CudaArray.get()).
void memcpy_htod(int device, uintptr_t dst, const void* src, int64_t bytes);
void memcpy_dtoh(int device, void* dst, uintptr_t src, int64_t bytes);

class Engine {
 public:
  // dtype: 0 fp32, 1 fp16, 2 bf16. Throws if the device does not exist or has no kernel image
  // for its architecture.
  Engine(int device, int dtype);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int device() const;
  int dtype() const;
  std::string device_name() const;
  uintptr_t stream() const;  // the engine's cudaStream_t
  void synchronize();

  // Weights: fp32 host data, copied now; converted to the engine dtype when engine_dtype
  // (GEMM operands) or kept fp32 (bias, graph tables). Uploaded to the GPU in one allocation
  // before the next run. Returns the weight id.
  int64_t add_weight(const float* data, int64_t count, bool engine_dtype);
  int64_t weight_count() const;

  // Programs. arena_bytes: what the program's offsets need (the arena grows to it now, so an
  // out-of-memory error surfaces here). max_n: the batch the program was lowered for; runs take
  // any n <= max_n (the prologue / epilogue process n items, the graph body max_n).
  // in_per_n / out_per_n: fp32 elements of the user's input / output per batch item.
  int64_t create_program(const int64_t* code, int64_t len, int64_t arena_bytes, int64_t max_n, int64_t in_per_n,
                         int64_t out_per_n);
  void destroy_program(int64_t id);
  std::string describe_program(int64_t id) const;

  // Host arrays: x [n * in_per_n] -> pinned staging -> device, run, -> pinned -> y. Blocks.
  void run_host(int64_t id, const float* x, int64_t x_count, float* y, int64_t y_count, int64_t n, bool use_graph);
  // Device arrays (fp32, contiguous, on this engine's device). With has_ext the engine stream
  // waits for ext_stream before reading x and ext_stream waits for the engine before using y
  // (no host sync); without it, the call returns after y is written.
  void run_device(int64_t id, uintptr_t x, uintptr_t y, int64_t n, uintptr_t ext_stream, bool has_ext,
                  bool use_graph);
  // Runs a program that references no user arrays (single-op test programs). Blocks.
  void run_arena(int64_t id, bool use_graph);
  // Device time of `iters` runs of the program at its max_n (after `warmup` runs), milliseconds
  // per run, measured with CUDA events on the engine stream (inputs: the staging buffers).
  std::vector<double> time_program(int64_t id, int iters, int warmup, bool use_graph);

  // Arena access (tests, benchmarks).
  void reserve_arena(int64_t bytes);
  int64_t arena_bytes() const;
  void arena_write(int64_t offset, const void* src, int64_t bytes);
  void arena_read(int64_t offset, void* dst, int64_t bytes);
  void arena_fill(int64_t offset, int64_t bytes, int byte_value);

  // GAST block planning: scratch bytes a kOpGast record needs (0 when it runs fused), and
  // whether it runs fused, under the current options.
  int64_t gast_scratch_bytes(int64_t n, int j, int t, int c, int heads, int gc) const;
  bool gast_fused(int j, int c, int heads, int gc) const;

  // Options: "gast_fused" (-1 auto, 0 never, 1 when it fits), "gast_scratch_budget" (bytes),
  // "arena_limit" (bytes, -1 none: a growth past it fails like an out-of-memory). Changing an
  // option drops the captured graphs (programs lowered under other options must be rebuilt
  // by the caller: their scratch sizes may differ).
  void set_option(const std::string& name, int64_t value);
  int64_t get_option(const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace gastrt
