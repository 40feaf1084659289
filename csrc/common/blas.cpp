#include "common/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

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

// Temporarily sets an environment variable if it is unset; restores (unsets) it on scope exit.
// Only used around dlopen, under the GIL during module import.
struct ScopedDefaultEnv {
  const char* name;
  bool set = false;
  ScopedDefaultEnv(const char* n, const char* value) : name(n) {
    if (value && !std::getenv(n)) set = setenv(n, value, 0) == 0;
  }
  ~ScopedDefaultEnv() {
    if (set) unsetenv(name);
  }
};

// OpenBLAS 0.3.x's DYNAMIC_ARCH does not know AMD Zen 5 (family 0x1A) and falls back to its
// AVX2 "Haswell" kernels, 2-3x slower than its AVX-512 "SkylakeX" sgemm on those cores. On AMD
// CPUs with the AVX-512 subsets the SkylakeX kernels need, we ask for them explicitly (unless the
// user already set OPENBLAS_CORETYPE). Intel AVX-512 CPUs are detected correctly: left alone.
const char* coretype_default(std::string* note) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512cd");
  if (std::getenv("OPENBLAS_CORETYPE")) {
    *note = "OPENBLAS_CORETYPE set by the user";
    return nullptr;
  }
  if (avx512 && __builtin_cpu_is("amd")) {
    *note = "AMD CPU with AVX-512: OPENBLAS_CORETYPE=SkylakeX at load";
    return "SkylakeX";
  }
  *note = "OpenBLAS auto-detection";
#else
  *note = "OpenBLAS auto-detection";
#endif
  return nullptr;
}

}  // namespace

void load(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_lib.handle) return;
  std::string note;
  const char* coretype = coretype_default(&note);
  void* h = nullptr;
  {
    // OPENBLAS_NUM_THREADS=1: OpenBLAS would otherwise start (and keep) one pthread per core
    // at load; gastrt never uses them (see blas.h).
    ScopedDefaultEnv threads("OPENBLAS_NUM_THREADS", "1");
    ScopedDefaultEnv core("OPENBLAS_CORETYPE", coretype);
    h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  }
  if (!h) {
    const char* err = dlerror();
    GASTRT_CHECK(false, "cannot load the BLAS library " << path << ": " << (err ? err : "?"));
  }
  auto sym = [&](const char* name) {
    void* p = dlsym(h, name);
    if (!p) {
      dlclose(h);
      GASTRT_CHECK(false, path << " has no symbol " << name << " (expected scipy-openblas32)");
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
  GASTRT_CHECK(M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31) &&
                   lda < (int64_t(1) << 31) && ldb < (int64_t(1) << 31) &&
                   ldc < (int64_t(1) << 31),
               "GEMM too large for 32-bit BLAS indices: M=" << M << " N=" << N << " K=" << K);
  g_lib.sgemm(kRowMajor, kNoTrans, kNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
}

}  // namespace blas
}  // namespace gastrt
