#include "common/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "common/check.h"

namespace gastrt {
namespace blas {
namespace {

// CBLAS enums (ABI-stable values; declared here so the build needs no BLAS headers).
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                         int, float, float*, int);
using SetThreadsFn = void (*)(int);
using GetStrFn = char* (*)();

struct Lib {
  void* handle = nullptr;
  SgemmFn sgemm = nullptr;
  GetStrFn get_config = nullptr;
  GetStrFn get_corename = nullptr;
  std::string path;
  std::string coretype_note;
};

Lib g_lib;
std::mutex g_mu;

// Sets (value != null) or removes (value == null) an environment variable for the duration of
// dlopen (under the GIL, during module import), then restores the previous state.
struct ScopedEnv {
  std::string name, old;
  bool had_old = false;
  ScopedEnv(const char* n, const char* value) : name(n) {
    if (const char* cur = std::getenv(n)) {
      had_old = true;
      old = cur;
    }
    if (value) setenv(n, value, 1);
    else unsetenv(n);
  }
  ~ScopedEnv() {
    if (had_old) setenv(name.c_str(), old.c_str(), 1);
    else unsetenv(name.c_str());
  }
};

// Kernel set of gastrt's private OpenBLAS copy. OpenBLAS reads OPENBLAS_CORETYPE once, at load.
// That variable configures the OpenBLAS a user knows about (NumPy's / SciPy's copies; some
// machines pin it, e.g. to Haswell, for NumPy results that are identical across a fleet); it
// is NOT applied to gastrt's copy, which uses OpenBLAS's own CPU detection like torch uses
// oneDNN's, unless GASTRT_OPENBLAS_CORETYPE names a kernel set explicitly (e.g. "Haswell" to
// work around a detection problem). Both are reported by build_config().
const char* coretype_for_load(std::string* note) {
  const char* mine = std::getenv("GASTRT_OPENBLAS_CORETYPE");
  if (mine && *mine) {
    *note = std::string("GASTRT_OPENBLAS_CORETYPE=") + mine;
    return mine;
  }
  const char* global = std::getenv("OPENBLAS_CORETYPE");
  *note = "OpenBLAS CPU auto-detection";
  if (global && *global)
    *note += std::string(" (OPENBLAS_CORETYPE=") + global + " is left to NumPy's copy)";
  return nullptr;
}

}  // namespace

void load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_lib.handle) return;
  std::string note;
  const char* coretype = coretype_for_load(&note);
  void* h = nullptr;
  {
    // OPENBLAS_NUM_THREADS=1: OpenBLAS would otherwise start (and keep) one pthread per core
    // at load; gastrt never uses them (see blas.h). Forced, not defaulted: a user's
    // OPENBLAS_NUM_THREADS is meant for NumPy's BLAS, and gastrt's copy is always
    // single-threaded anyway (set_threads(1) below).
    ScopedEnv threads("OPENBLAS_NUM_THREADS", "1");
    ScopedEnv core("OPENBLAS_CORETYPE", coretype);
    h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (!h) {
    const char* err = dlerror();
    throw Error("cannot load the BLAS library " + path + ": " + (err ? err : "?"));
  }
  auto sym = [&](const char* name) {
    void* p = dlsym(h, name);
    if (!p) {
      dlclose(h);
      throw Error(path + " has no symbol " + name + " (expected scipy-openblas32)");
    }
    return p;
  };
  Lib lib;
  lib.handle = h;
  lib.sgemm = reinterpret_cast<SgemmFn>(sym("scipy_cblas_sgemm"));
  auto set_threads = reinterpret_cast<SetThreadsFn>(sym("scipy_openblas_set_num_threads"));
  lib.get_config = reinterpret_cast<GetStrFn>(sym("scipy_openblas_get_config"));
  lib.get_corename = reinterpret_cast<GetStrFn>(sym("scipy_openblas_get_corename"));
  lib.path = path;
  lib.coretype_note = note;
  // Process-wide for this copy of OpenBLAS (its "_local" variant is global too in pthread
  // builds). This copy belongs to the scipy-openblas32 wheel, which NumPy / SciPy do not use
  // (they bundle their own renamed copies), so nobody else's threading is affected.
  set_threads(1);
  g_lib = lib;
}

bool loaded() { return g_lib.handle != nullptr; }
std::string library_path() { return g_lib.path; }

std::string config() {
  if (!g_lib.get_config) return "";
  const char* s = g_lib.get_config();
  std::string r = s ? s : "";
  while (!r.empty() && r.back() == ' ') r.pop_back();
  while (!r.empty() && r.front() == ' ') r.erase(r.begin());
  return r;
}

std::string corename() {
  if (!g_lib.get_corename) return "";
  const char* s = g_lib.get_corename();
  return s ? s : "";
}

std::string coretype_note() { return g_lib.coretype_note; }

namespace {

// OpenBLAS keeps a working buffer per calling thread. Measured here (AMD EPYC, Zen kernels of
// OpenBLAS 0.3.34): until a thread has run one GEMM with many rows and >= 384 columns, its later
// narrow GEMMs (e.g. 1728 x 768 x 256, RIE's convs) run at a third of the speed (14 instead of
// 44 GFLOP/s, same bits), and stay there: RIE-243 at batch 64 took 352 instead of 199 ms. So
// each thread's first call runs one such GEMM on zeros first (~2.6 ms, once per thread).
void warm_up_thread() {
  constexpr int kM = 2048, kK = 8, kN = 512;
  std::vector<float> a(size_t(kM) * kK, 0.f), b(size_t(kK) * kN, 0.f), c(size_t(kM) * kN);
  g_lib.sgemm(kRowMajor, kNoTrans, kNoTrans, kM, kN, kK, 1.f, a.data(), kK, b.data(), kN, 0.f,
              c.data(), kN);
}

}  // namespace

void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // C = beta * C
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc;
      if (beta == 0.f) {
        std::memset(c, 0, sizeof(float) * N);
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] *= beta;
      }
    }
    return;
  }
  GASTRT_CHECK(g_lib.sgemm, "BLAS library not loaded");
  thread_local bool warmed = false;
  if (!warmed) {
    warmed = true;
    warm_up_thread();
  }
  GASTRT_CHECK(M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31) &&
                   lda < (int64_t(1) << 31) && ldb < (int64_t(1) << 31) &&
                   ldc < (int64_t(1) << 31),
               "GEMM too large for 32-bit BLAS indices: M=" << M << " N=" << N << " K=" << K);
  g_lib.sgemm(kRowMajor, kNoTrans, kNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
}

}  // namespace blas
}  // namespace gastrt
