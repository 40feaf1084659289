// gastrt._native bindings, shared by the per-area binding files (csrc/bindings/*.cpp, the only
// pybind11 users): NumPy array helpers, the string -> enum parsers, and the bind_* entry points
// that module.cpp calls. The C++ core (csrc/common, csrc/cpu, csrc/cuda) never sees this header.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gastrt/executor.h"
#include "gastrt/params.h"
#include "gastrt/plan_spec.h"

#ifdef GASTRT_WITH_CUDA
#if defined(__has_include)
#if __has_include("cuda/cuda_ops.h")
#include "cuda/cuda_ops.h"
#define GASTRT_HAVE_CUDA_OPS 1
#endif
#endif
#endif

namespace gastrt {
namespace bindings {

namespace py = pybind11;

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Any array-like -> C-contiguous float32 (copies only when needed: non-contiguous / other dtype).
FArray as_f32(const py::handle& h, const char* what);
std::vector<int64_t> shape_of(const py::array& a);
// The core's view of an array (valid while `a` lives).
cpu::ArrayView array_view(const FArray& a);
using cpu::shape_str;  // csrc/cpu/plan_spec.cpp
// Throws ValueError "<what>: expected shape (...), got (...)".
void expect_shape(const py::array& a, const std::vector<int64_t>& want, const std::string& what);
// The caller's output array: float32, C-contiguous, writeable, exact shape; or a new one.
py::array_t<float> output_array(const py::object& out, const std::vector<int64_t>& shape,
                                const char* what);
// threads <= 0: every CPU this process may run on.
int resolve_threads(int threads);
// "fp32" / "fp16" / "bf16" (an engine's precision) -> DType; ValueError naming arg otherwise.
DType parse_precision(const std::string& s, const char* arg);
using cpu::parse_act;  // csrc/cpu/plan_spec.cpp (InvalidArgument -> ValueError)
cpu::Mode parse_mode(const std::string& s);

// Each adds one area's functions / classes to the module (module.cpp calls them in order).
void bind_kernels(py::module_& m);     // kernels.cpp: single kernels (tests, streaming, benchmarks)
void bind_cpu_engine(py::module_& m);  // cpu_engine.cpp: the CPU Engine
void bind_arena(py::module_& m);       // arena.cpp: the arena allocator (CUDA lowering)
void bind_cuda(py::module_& m);        // cuda.cpp: the CUDA executor (nothing without CUDA)

}  // namespace bindings
}  // namespace gastrt
