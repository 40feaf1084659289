// cuBLASLt as a second GEMM tactic for conv records (nvcc only; internal to csrc/cuda).
//
// The library is loaded at run time (dlopen), never linked: the extension imports, and the
// custom kernels run, where no cuBLAS is installed. Its headers come from the `nvidia-cublas`
// wheel at build time (GASTRT_CUBLASLT_INCLUDE); a build without them compiles cublaslt.cu to
// stubs that report "not built". gemm_tactic.h says how a record maps onto matmuls; tactic.cu
// times and checks both tactics per layer shape at program creation.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>

#include "cuda/gemm_tactic.h"
#include "gastrt/params.h"

namespace gastrt {
namespace cuda {

// Loads libcublasLt once per process: `path` (a file) or, when empty, the soname
// libcublasLt.so.13 from the loader's search path. Returns "" on success, else why not (also
// on later calls). Thread-safe.
std::string lt_load(const std::string& path);
// "cuBLASLt <version> (<path>)" once loaded; else why it is not available.
std::string lt_status();
bool lt_loaded();
bool lt_built();  // compiled with the cuBLASLt headers

struct LtConvPlan;  // descriptors + chosen algorithm of one record's calls (opaque)

// One engine's cuBLASLt context: the handle and a workspace on the engine's device.
class LtRuntime {
 public:
  explicit LtRuntime(int device);  // throws when the library is not loaded or the handle fails
  ~LtRuntime();
  LtRuntime(const LtRuntime&) = delete;
  LtRuntime& operator=(const LtRuntime&) = delete;

  // Plans record r's calls (gemm_tactic.h) for dtype: layouts, epilogue, the heuristic's best
  // algorithm for pointers aligned to align_{x,w,y} bytes, and a device copy of the bias in the
  // engine dtype (cuBLASLt's bias type is the output type), uploaded on `stream` and waited for.
  // nullptr + *why when cuBLASLt declines any of the calls.
  std::shared_ptr<const LtConvPlan> plan(const ConvRecord& r, DType dtype, const float* host_bias, int align_x,
                                         int align_w, int align_y, cudaStream_t stream, std::string* why);
  // Runs the plan: x, w, y as the record's (device pointers). Graph-capture safe.
  void launch(const LtConvPlan& p, const void* x, const void* w, void* y, cudaStream_t stream) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda
}  // namespace gastrt
