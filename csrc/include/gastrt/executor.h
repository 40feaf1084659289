// The native CPU executor: a whole plan (python/gastrt/plan.py) as one C++ object.
//
// Built ONCE from the plan (weights copied and rearranged into the kernels' layouts), then
// run(x, n, t, mode) executes a whole forward with no Python in between (the bindings release
// the GIL around it).
//
// Memory: per input shape (n, t, mode) a Schedule (every buffer's shape and its offset in one
// arena, computed once with liveness and first fit (common/arena.h): buffers whose last reader
// has run are reused) and
// Workspaces (arena + kernel scratch, 64-byte aligned) are cached and reused across calls.
// The cache keeps the 8 most recently used shapes; clear_cache() drops everything.
//
// Thread safety: run() may be called from several threads at once. Each call checks a
// Workspace out of the cache's free list for its shape (allocating a new one if all are in
// use) and returns it at the end, so concurrent calls never share scratch memory; the
// Schedule is immutable once built. The shape cache itself is guarded by a mutex held only for
// the look-up. Worker threads: see common/thread_pool.h (a concurrent call that finds the pool
// busy runs on its own thread).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "gastrt/cpu_ops.h"
#include "gastrt/params.h"

namespace gastrt {
namespace cpu {

enum class Mode : int32_t { Window = 0, Sequence = 1 };

enum class OpKind : int32_t {
  InputJointMajor,
  InputFlat,
  Conv,
  GastBlock,
  RieEncode,
  Concat,
  OutputJointMajor,
  OutputFlat,
  OutputAssemble,
};

// One plan op, already resolved (build_plan_spec in gastrt/plan_spec.h makes these).
struct OpSpec {
  OpKind kind = OpKind::Conv;
  std::string name;                 // outputs[0], for error messages
  std::vector<int32_t> inputs;      // buffer ids (0 is the plan input)
  std::vector<int32_t> outputs;
  // conv: w [k*ci, co], b [co]
  int32_t k = 1, dilation = 1, ci = 0, co = 0;
  Act act = Act::None;
  int32_t res_win_offset = 0, res_win_stride = 1, res_seq_offset = 0;
  std::vector<float> w, b;
  // gast_block
  std::shared_ptr<GastBlockWeights> gast;
  // rie_encode: channel groups of the flattened [T, J*F] input
  std::vector<std::vector<int32_t>> groups;
  // output_assemble: output joint q <- (source input, joint within it)
  std::vector<std::pair<int32_t, int32_t>> sources;
};

struct PlanSpec {
  std::string name;
  std::vector<OpSpec> ops;
  int32_t num_buffers = 1;          // ids [0, num_buffers)
  std::vector<std::string> buffer_names;  // plan value name of each id ("input" is 0)
  int32_t in_joints = 0, in_features = 2, out_joints = 0;
  int32_t receptive_field = 1;
  bool has_window = true, has_sequence = true;
};

struct Schedule;
struct Workspace;

class Engine {
 public:
  // weight_dtype: the engine file's weight precision. F16 / BF16: the plan's fp32 weights are
  // widened 16-bit values (checked here; throws otherwise), and conv panels stay 16-bit (half the
  // bytes streamed by batch-1 layers; same results). GASTRT_PANELS_16BIT=0 keeps fp32 panels.
  Engine(PlanSpec plan, int threads, DType weight_dtype = DType::F32);
  ~Engine();

  const PlanSpec& plan() const { return plan_; }
  // What the convs' small-M panels hold: F32, or the engine's 16-bit weight type.
  DType panel_dtype() const { return panel_dtype_; }
  // The bf16 dot-product kernel the convs and the GAST blocks' GEMMs run on (a bf16 engine where
  // bf16_dot_kernel() is not None; its sequence-mode width-3 convs then run Winograd F(2,3) on
  // it, not the fp32 F(4,3)), else None.
  Bf16DotKernel bf16_dot() const { return bf16_dot_; }
  // Bytes of conv weights packed so far: fp32 and 16-bit panels (packed on a conv's first run
  // on the small-M kernel), bf16 pairs (on its first run; GAST blocks' GEMM weights too); not
  // the Winograd-transformed weights of sequence convs. For tests and memory reports; not
  // while a call runs.
  struct PanelBytes {
    size_t f32 = 0, b16 = 0, bf16_pairs = 0;
  };
  PanelBytes panel_bytes() const;
  int threads() const { return threads_; }

  // [N, T_out, J_out, 3] for an input [n, t, in_joints, in_features]; throws on bad shapes.
  std::vector<int64_t> output_shape(int64_t n, int64_t t, Mode mode);
  // x [n, t, in_joints, in_features] (contiguous fp32) -> out (contiguous, output_shape()).
  // op_seconds (optional): wall time of each op (plan order; 0 for aliased view ops).
  void run(const float* x, int64_t n, int64_t t, Mode mode, float* out,
           std::vector<double>* op_seconds = nullptr);
  // The schedule's shape of every plan value for this input shape, by buffer id (names:
  // plan().buffer_names); tests hold it against plan.infer_shapes.
  std::vector<std::vector<int64_t>> buffer_shapes(int64_t n, int64_t t, Mode mode);
  // Peak bytes of one call's workspace (arena + scratch) for this shape; does not allocate it.
  size_t workspace_bytes(int64_t n, int64_t t, Mode mode);
  // The same for a one-thread team: what chunk sizes are planned from, so that they (and with
  // them the results) do not depend on the thread count; each further thread adds its share
  // of kernel scratch on top.
  size_t budget_bytes(int64_t n, int64_t t, Mode mode);
  // Number of cached shapes / workspaces (for tests) and a way to release them.
  std::pair<size_t, size_t> cache_stats();
  void clear_cache();

 private:
  std::shared_ptr<const Schedule> schedule(int64_t n, int64_t t, Mode mode);
  std::unique_ptr<Workspace> checkout(const std::shared_ptr<const Schedule>& s);
  void checkin(const std::shared_ptr<const Schedule>& s, std::unique_ptr<Workspace> ws);

  // Winograd-transformed weights of a sequence-mode width-3 conv, made on first use (a
  // window-only caller never pays their memory); null for ops that never take that path.
  struct WinoWeights {
    std::once_flag once;
    BigVector<float> u;  // conv_winograd_weights: [6, ci, co], or each U_p's panels (AVX2)
    BigVector<uint32_t> u_pairs;  // conv_winograd_bf16_weights instead, when bf16_dot_
  };
  const float* wino_weights(size_t op_index);
  const uint32_t* wino_bf16_weights(size_t op_index);
  // A conv's weights packed for the small-M GEMM (pack_small_panels), made the first time the
  // conv runs on that kernel (few rows; on AVX2 / AVX-512 any): a caller that never does never pays the
  // memory.
  struct PanelWeights {
    std::once_flag once;
    BigVector<float> p;       // [ceil(co / panel), k*ci, panel]  (fp32 engines)
    BigVector<uint16_t> p16;  // the same, 16-bit (panel_dtype_ F16 / BF16)
    BigVector<uint32_t> pairs;  // bf16 pairs (pack_bf16_pairs), instead of both when bf16_dot_
    GastBf16Pairs gast;           // a GastBlock op's GEMM weights as bf16 pairs (when bf16_dot_)
  };
  // Sets the weights conv op op_index reads besides p.w, packing them on first use: its bf16
  // pairs (w_bf16_pairs, bf16_dot) when bf16_dot_ names a kernel, else its small-M panels
  // (w_panels, or w_panels16 and panels16_dtype) when it runs on that kernel.
  void set_conv_weights(size_t op_index, ConvParams& p);
  // A GastBlock op's GEMM weights as bf16 pairs, packed on first use, when bf16_dot_ names a
  // kernel; else null (the block computes in fp32).
  const GastBf16Pairs* gast_pairs(size_t op_index);

  PlanSpec plan_;
  int threads_;
  DType panel_dtype_;  // of the conv panels: F32, or the engine's 16-bit weight type
  Bf16DotKernel bf16_dot_;
  std::vector<std::unique_ptr<WinoWeights>> wino_;
  std::vector<std::unique_ptr<PanelWeights>> panels_;  // one per op (Conv ops; GastBlock ops with bf16_dot_)
  struct CacheEntry;
  std::mutex mu_;
  std::vector<std::unique_ptr<CacheEntry>> cache_;
  uint64_t tick_ = 0;
};

}  // namespace cpu
}  // namespace gastrt
