// The GEMM library of the native CPU runtime: OpenBLAS from the `scipy-openblas32` wheel
// (symbols prefixed `scipy_`), loaded at module import with dlopen(RTLD_LOCAL) and called
// through function pointers. Loading at run time instead of linking means
//   * no rpath games: the wheel's .so is found wherever pip put it (bindings/module.cpp locates it
//     with importlib, without importing the package, see below),
//   * OPENBLAS_NUM_THREADS / OPENBLAS_CORETYPE can be chosen before OpenBLAS's constructor
//     runs (it reads them once, at load): gastrt's copy uses OpenBLAS's CPU detection, or
//     GASTRT_OPENBLAS_CORETYPE; the process-wide OPENBLAS_CORETYPE stays NumPy's business
//     (see coretype_for_load in blas.cpp),
//   * RTLD_LOCAL keeps its symbols away from NumPy's / SciPy's / torch's own BLAS copies.
// OpenBLAS always runs single-threaded here: gastrt's thread pool splits the work (row / column
// tiles) and calls sgemm from each worker, so there is exactly one pool of threads.
#pragma once
#include <cstdint>
#include <string>

namespace gastrt {
namespace blas {

// Loads the library at `path` (throws gastrt::Error with dlerror() on failure).
// Idempotent: later calls are no-ops once a library is loaded.
void load(const std::string& path);
bool loaded();
std::string library_path();
std::string config();    // openblas_get_config(), e.g. "OpenBLAS 0.3.34 DYNAMIC_ARCH ..."
std::string corename();  // the kernel set OpenBLAS picked, e.g. "SkylakeX"
std::string coretype_note();  // where the kernel choice came from (env var or auto-detection)

// Row-major C[M, N] = alpha * A[M, K] @ B[K, N] + beta * C (no transposes), lda >= K,
// ldb >= N, ldc >= N. M, N or K == 0 is handled here (BLAS would still scale C).
void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace blas
}  // namespace gastrt
