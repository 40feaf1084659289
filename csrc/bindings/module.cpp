// gastrt._native: the module. Loads OpenBLAS, says what the extension was built with, and adds
// each area's bindings (csrc/bindings/*.cpp). The bindings are the only pybind11 users: they
// convert between NumPy / plan dicts and the torch-free C++ core (csrc/cpu, csrc/common;
// csrc/cuda when built with CUDA), and release the GIL around every kernel / forward.
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "common/blas.h"
#include "common/check.h"
#include "common/thread_pool.h"
#include "cpu/vec_kernels.h"
#include "gastrt/cpu_ops.h"

using namespace gastrt;
using namespace gastrt::bindings;

namespace {

#ifndef GASTRT_CUDA_ARCHS
#define GASTRT_CUDA_ARCHS ""
#endif
#ifndef GASTRT_CUDA_VERSION
#define GASTRT_CUDA_VERSION ""
#endif

// ---- BLAS location -------------------------------------------------------------------------------
// The scipy-openblas32 wheel's shared library, found WITHOUT importing the package (importing it
// dlopens the library, before we could choose OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS).
std::string find_blas_library() {
  if (const char* p = std::getenv("GASTRT_BLAS_LIBRARY")) return p;
  py::object spec = py::module_::import("importlib.util").attr("find_spec")("scipy_openblas32");
  if (spec.is_none())
    throw py::import_error(
        "gastrt._native needs the scipy-openblas32 package (pip install scipy-openblas32)");
  py::object locs = spec.attr("submodule_search_locations");
  if (locs.is_none() || py::len(locs) == 0)
    throw py::import_error("scipy_openblas32 is not a regular package");
  const std::string dir = py::str(py::list(locs)[0]).cast<std::string>() + "/lib";
  py::object os = py::module_::import("os");
  if (!os.attr("path").attr("isdir")(dir).cast<bool>())
    throw py::import_error("scipy-openblas32 has no lib directory at " + dir);
  std::string best;
  for (const auto& f : os.attr("listdir")(dir)) {
    const std::string name = py::str(f);
    if (name.rfind("libscipy_openblas", 0) != 0) continue;
    if (name.find(".so") == std::string::npos && name.find(".dylib") == std::string::npos) continue;
    if (best.empty() || name < best) best = name;
  }
  if (best.empty()) throw py::import_error("no libscipy_openblas shared library in " + dir);
  return dir + "/" + best;
}

int cuda_device_count_safe() {
#ifdef GASTRT_HAVE_CUDA_OPS
  try {
    return gastrt::cuda::device_count();
  } catch (...) {
    return 0;
  }
#else
  return 0;
#endif
}

std::string compiler_string() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

// gastrt.errors' classes, for the translator (held for the life of the process).
PyObject* g_native_error = nullptr;
PyObject* g_out_of_memory_error = nullptr;
constexpr int kCudaErrorMemoryAllocation = 2;  // cudaErrorMemoryAllocation

// Native errors -> typed Python exceptions, messages unchanged: OutOfMemory and a CUDA
// allocation failure -> gastrt.errors.OutOfMemoryError; any other gastrt::Error ->
// NativeError (both RuntimeError subclasses); InvalidArgument -> ValueError, like the
// bindings' own argument checks.
void register_error_translator() {
  py::module_ errors = py::module_::import("gastrt.errors");
  g_native_error = py::object(errors.attr("NativeError")).release().ptr();
  g_out_of_memory_error = py::object(errors.attr("OutOfMemoryError")).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
      py::set_error(PyExc_ValueError, e.what());
    } catch (const OutOfMemory& e) {
      py::set_error(g_out_of_memory_error, e.what());
    } catch (const CudaError& e) {
      py::set_error(e.code == kCudaErrorMemoryAllocation ? g_out_of_memory_error : g_native_error,
                    e.what());
    } catch (const Error& e) {
      py::set_error(g_native_error, e.what());
    }
  });
}

std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == ';' || ch == ',' || ch == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "gastrt native runtime: fused fp32 CPU kernels (OpenBLAS GEMMs) and, when built "
            "with CUDA, the GPU executor.";

  try {
    blas::load(find_blas_library());
  } catch (const py::error_already_set&) {
    throw;
  } catch (const std::exception& e) {
    throw py::import_error(std::string("gastrt._native: ") + e.what());
  }

  register_error_translator();

  m.def("build_config", [] {
    py::dict d;
    d["native"] = true;
#ifdef GASTRT_HAVE_CUDA_OPS
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["cuda_archs"] = split_archs(GASTRT_CUDA_ARCHS);
    const std::string cv = GASTRT_CUDA_VERSION;
    d["cuda_version"] = cv.empty() ? py::object(py::none()) : py::object(py::str(cv));
    d["compiler"] = compiler_string();
    d["blas"] = blas::config();
    d["blas_core"] = blas::corename();
    d["blas_core_note"] = blas::coretype_note();
    d["blas_library"] = blas::library_path();
    d["openmp"] = false;
    d["threading"] = "gastrt thread pool (OpenBLAS single-threaded inside its tasks)";
    d["cpu_isa"] = cpu::vec().isa;
    try {  // the bf16 engines' dot-product kernel here (GASTRT_BF16_DOT; a bad value: its error)
      d["bf16_dot"] = cpu::bf16_dot_kernel_name(cpu::bf16_dot_kernel());
      if (!cpu::bf16_dot_status().empty()) d["bf16_dot_status"] = cpu::bf16_dot_status();
    } catch (const std::exception& e) {
      d["bf16_dot"] = std::string("error: ") + e.what();
    }
#ifdef GASTRT_SANITIZERS
    d["sanitize"] = GASTRT_SANITIZERS;  // a checking build (GASTRT_SANITIZE)
#else
    d["sanitize"] = py::none();
#endif
    d["default_threads"] = available_cpus();
    return d;
  }, "What this extension was compiled with (merged into gastrt.build_config()).");
  m.def("has_cuda", [] {
#ifdef GASTRT_HAVE_CUDA_OPS
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled in (says nothing about a GPU being present).");
  m.def("cuda_device_count", &cuda_device_count_safe,
        "Visible CUDA devices; 0 without a CUDA build, driver or GPU (never raises).");
  m.def("available_cpus", &available_cpus, "CPUs this process may run on (sched_getaffinity).");

  bind_kernels(m);
  bind_cpu_engine(m);
  bind_arena(m);
  bind_cuda(m);
}
