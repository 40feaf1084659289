// Internal interface of the CUDA executor's translation units (nvcc only):
//   program.cu  decodes a program's records into their structs (program_records.h) and
//               validates each against the arena, the weights and the user's array sizes;
//   launch.cu   launches one decoded step (record -> kernels.h argument struct);
//   device.cu   device queries, raw memory, DeviceGuard, the out-of-memory error;
//   engine.cu   the Engine: weights, arena, pinned staging, CUDA graphs, stream ordering;
//   tactic.cu   per-layer choice between our GEMM kernel and cuBLASLt (cublaslt.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "common/check.h"
#include "cuda/cublaslt.h"
#include "cuda/cuda_ops.h"
#include "cuda/kernels.h"
#include "cuda/program_records.h"

namespace gastrt {
namespace cuda {

// ---- device.cu ---------------------------------------------------------------------------------
// Makes `device` current for its lifetime and restores the caller's device (the user's torch /
// CuPy code may be on another GPU), unless that device has no context yet.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard() { restore_device(prev_); }
  static void restore_device(int prev);
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

std::string mib(int64_t bytes);
// Throws gastrt::OutOfMemory "gastrt: CUDA out of memory on cuda:<device>: <what> needs <bytes>
// (<free> free of <total>)"; bytes 0: the size is not known.
[[noreturn]] void throw_oom(int device, int64_t bytes, const char* what);
DType to_dtype(int64_t v);  // a record's dtype word, checked
// Staging buffers that only grow: p (have bytes) becomes >= need bytes, its contents dropped
// (device: zeroed on `stream`). Out of memory: p is freed (have 0) and gastrt::OutOfMemory thrown.
void grow_device_buffer(void*& p, int64_t& have, int64_t need, int device, const char* what, cudaStream_t stream);
void grow_pinned_buffer(void*& p, int64_t& have, int64_t need, int device);

// ---- program.cu --------------------------------------------------------------------------------
struct WeightRec {
  size_t offset;  // bytes into the weight buffer
  int64_t count;
  DType dtype;
};

// One record, decoded once (conv: its problems).
using Record = std::variant<LayoutRecord, std::vector<ConvRecord>, GastRecord, RieRecord, CopyColsRecord,
                            AssembleRecord, StreamInRecord, RingWriteRecord, RingGatherRecord>;

struct Step {
  int64_t op = 0;   // OpCode
  Record rec;
  bool io = false;  // references the user's input or output
  // conv: the cuBLASLt plan of each problem (nullptr: our kernel), or empty (all ours)
  std::vector<std::shared_ptr<const LtConvPlan>> lt;
};

struct Program {
  std::vector<Step> steps;
  size_t body_begin = 0, body_end = 0;  // [begin, end): captured; before: prologue; after: epilogue
  bool io_in_body = false;              // then no graph (the user pointers change per call)
  bool exact_n = false;                 // stream programs: every run fills all max_n table rows
  int64_t arena_bytes = 0, max_n = 0, in_per_n = 0, out_per_n = 0;
  cudaGraphExec_t exec = nullptr;
  uint64_t exec_gen = 0;  // generation of arena / weights / options it was captured with
  bool ran_plain = false;  // a program's first run is not captured (see Engine::Impl::run_all)

  // A run's batch n: 1..max_n, and exactly max_n for a stream program (all its table rows).
  void check_batch(int64_t n) const {
    GASTRT_CHECK(n >= 1 && n <= max_n, "run: batch " << n << " outside [1, " << max_n << "] of this program");
    GASTRT_CHECK(!exact_n || n == max_n, "run: a stream program runs on all " << max_n << " rows, got " << n);
  }
};

// Decodes code[0, len) into p.steps (p's sizes set by the caller) and finds the graph body:
// every record checked against the arena, the weights `w` and the engine dtype, so a lowering bug
// is an exception here, never a stray write on the GPU.
void decode_program(const int64_t* code, int64_t len, const std::vector<WeightRec>& w, DType dtype, Program& p);
// "conv x2 [M=.. K=.. N=..]", "gast_block rows=.. c=..", "layout", ...: one step, for describe.
std::string describe_step(const Step& s);

// ---- launch.cu ---------------------------------------------------------------------------------
struct LaunchContext {
  char* arena;
  const char* weights;
  const std::vector<WeightRec>* wrecs;
  DType dtype;
  DeviceCaps caps;
  int gast_fused_mode;
  cudaStream_t stream;
  void* in;       // the user's input / output (nullptr inside a graph capture)
  void* out;
  int64_t n_io;   // rows of the user's arrays (the prologue / epilogue run on these)
  const LtRuntime* lt;  // the engine's cuBLASLt context (nullptr: none)
};

void launch_step(const Step& s, const LaunchContext& c);

// ---- tactic.cu ---------------------------------------------------------------------------------
struct TacticContext {
  DType dtype;
  DeviceCaps caps;
  cudaStream_t stream;
  cudaEvent_t t0, t1;                         // timing events (the engine's)
  LtRuntime* lt;                              // nullptr: cuBLASLt unavailable
  const char* wdev;                           // uploaded weights
  const std::vector<WeightRec>* wrecs;
  const std::vector<unsigned char>* wstage;   // their host copy (engine dtype / fp32)
  int mode;                                   // 0 custom, 1 auto (fastest correct), 2 cuBLASLt when correct
};
struct TacticChoice {
  std::shared_ptr<const LtConvPlan> lt;  // nullptr: our kernel
  GemmTacticReport report;
  bool definitive = true;  // false: a passing condition (no library yet, no memory, a failed probe)
};
// Relative error a tactic may show against the float64 reference, per engine dtype.
double tactic_tolerance(DType t);
// Times and checks both tactics of one conv problem on scratch buffers (never the arena).
// Never throws: a failed probe keeps our kernel, with a note.
TacticChoice choose_conv_tactic(const ConvRecord& r, const TacticContext& c);
// The cuBLASLt plan of record r for this engine (no timing), or nullptr + *why.
std::shared_ptr<const LtConvPlan> plan_conv(const ConvRecord& r, const TacticContext& c, std::string* why);

}  // namespace cuda
}  // namespace gastrt
