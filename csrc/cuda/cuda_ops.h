// The C++ API of gastrt's CUDA executor, called by csrc/bindings/cuda.cpp (pybind11; under
// GASTRT_HAVE_CUDA_OPS). Plain C++: no CUDA or pybind11 types, so a host-compiler TU can include
// it. Device pointers and stream handles travel as uintptr_t. Errors throw gastrt::Error
// (common/check.h): gastrt::OutOfMemory when device or pinned memory runs out (its message still
// says "out of memory"), gastrt::CudaError for a failed CUDA call. Nothing here calls exit().
//
// Model: python/gastrt/backends/cuda/lowering.py lowers a plan (plan.py) for one (mode, batch
// bucket, T) into a *program*: a flat int64 array of op records (program_records.h, the one
// definition of the bytecode) whose buffers are byte offsets in one device arena shared by all
// programs of the engine. The engine uploads the weights once (GEMM operands in the engine
// precision, bias / graph tables in fp32), grows the arena on demand (preallocated at program
// creation, so an oversized batch fails there, cleanly), captures each program's body as a CUDA
// graph on first run and replays it on the engine's own stream. The ops that read the user's
// input or write the user's output (the prologue / epilogue) run outside the graph with the
// caller's pointers: device arrays go in and out with no copy.
//
// Files: program.cu (decode + validate records), launch.cu (one op's launch), device.cu (device
// queries, raw memory, errors), engine.cu (weights, arena, graphs, streams: the Engine). Every
// Engine entry point holds the engine's own lock (the bindings release the GIL).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/program_records.h"

namespace gastrt {
namespace cuda {

// ---- device queries ----------------------------------------------------------------------------
int device_count();                  // 0 when no driver / no GPU (never throws)
std::string device_name(int device); // e.g. "NVIDIA H200 (sm_90, 132 SMs, 140.4 GiB)"
std::string runtime_version();       // CUDA runtime, e.g. "13.0"
// Raw device memory for outputs when the caller has neither torch nor CuPy (backends/cuda's
// CudaArray owns it). Throws gastrt::OutOfMemory when the device is full.
uintptr_t device_malloc(int device, int64_t bytes);
void device_free(int device, uintptr_t ptr);
// Synchronous copies between host memory and device memory (tests, CudaArray.get()).
void memcpy_htod(int device, uintptr_t dst, const void* src, int64_t bytes);
void memcpy_dtoh(int device, void* dst, uintptr_t src, int64_t bytes);

// One conv layer shape's tactic choice (Engine::gemm_tactics): our GEMM kernel or cuBLASLt,
// with both median device times (microseconds, -1: not timed) and both max errors relative to a
// float64 host reference on sampled rows (-1: not checked).
struct GemmTacticReport {
  std::string shape;   // "M=.. K=.. N=.. k=.. s=.. d=.. [relu] [+res]"
  std::string chosen;  // "custom" | "cublaslt"
  std::string note;    // why cuBLASLt was not considered, or which tactic failed its check
  double custom_us = -1, cublaslt_us = -1;
  double custom_err = -1, cublaslt_err = -1;
};

// cuBLASLt (loaded at run time; csrc/cuda/cublaslt.h). path "" -> the soname from the loader's
// search path. Returns "" when loaded, else why not.
std::string cublaslt_load(const std::string& path);
std::string cublaslt_status();
bool cublaslt_built();

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
  //          "gemm_tactic" (0: our GEMM kernel only, 1: per layer shape the faster correct one of
  //          ours and cuBLASLt, the default, 2: cuBLASLt wherever it is correct): applies to
  //          programs created afterwards.
  void set_option(const std::string& name, int64_t value);
  int64_t get_option(const std::string& name) const;
  // The tactic decisions made so far, one per distinct conv problem (first program first).
  std::vector<GemmTacticReport> gemm_tactics() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace gastrt
