// cuBLASLt tactic (cublaslt.h): run-time loading of libcublasLt, plans and launches of the
// matmuls that gemm_tactic.h maps a conv record onto. Without GASTRT_WITH_CUBLASLT (no headers
// at build time) everything here reports "not built" and plan() declines.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <mutex>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "cuda/cublaslt.h"

#if defined(GASTRT_WITH_CUBLASLT)
#include <cublasLt.h>
#include <dlfcn.h>
#endif

namespace gastrt {
namespace cuda {

#if defined(GASTRT_WITH_CUBLASLT)
namespace {

// The entry points we call, resolved from the loaded library (types from the wheel's header).
struct LtApi {
  decltype(&cublasLtGetVersion) GetVersion = nullptr;
  decltype(&cublasLtCreate) Create = nullptr;
  decltype(&cublasLtDestroy) Destroy = nullptr;
  decltype(&cublasLtMatmulDescCreate) DescCreate = nullptr;
  decltype(&cublasLtMatmulDescDestroy) DescDestroy = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) DescSet = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) LayoutCreate = nullptr;
  decltype(&cublasLtMatrixLayoutDestroy) LayoutDestroy = nullptr;
  decltype(&cublasLtMatrixLayoutSetAttribute) LayoutSet = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) PrefCreate = nullptr;
  decltype(&cublasLtMatmulPreferenceDestroy) PrefDestroy = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) PrefSet = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) Heuristic = nullptr;
  decltype(&cublasLtMatmul) Matmul = nullptr;
};

std::mutex g_mu;
std::string g_error = "cuBLASLt is not loaded yet";
std::string g_desc;
LtApi g_api;

template <class F>
bool resolve(void* h, const char* name, F& f, std::string& err) {
  f = reinterpret_cast<F>(dlsym(h, name));
  if (f == nullptr && err.empty()) err = std::string("libcublasLt has no symbol ") + name;
  return f != nullptr;
}

const LtApi& api() {
  GASTRT_CHECK(lt_loaded(), "cuBLASLt: " << lt_status());
  return g_api;
}

#define GASTRT_CHECK_LT(expr)                                                                    \
  do {                                                                                           \
    const cublasStatus_t gastrt_lt_st_ = (expr);                                                 \
    GASTRT_CHECK(gastrt_lt_st_ == CUBLAS_STATUS_SUCCESS, "cuBLASLt status " << static_cast<int>(gastrt_lt_st_)); \
  } while (0)

cudaDataType_t lt_type(DType t) {
  return t == DType::F32 ? CUDA_R_32F : t == DType::F16 ? CUDA_R_16F : CUDA_R_16BF;
}

}  // namespace

std::string lt_load(const std::string& path) {
  std::lock_guard<std::mutex> lk(g_mu);
  if (!g_desc.empty()) return std::string();  // loaded: later calls change nothing
  const std::string name = path.empty() ? std::string("libcublasLt.so.13") : path;
  void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    g_error = "cannot load " + name + (e != nullptr ? std::string(": ") + e : std::string());
    return g_error;
  }
  LtApi a;
  std::string err;
  resolve(h, "cublasLtGetVersion", a.GetVersion, err);
  resolve(h, "cublasLtCreate", a.Create, err);
  resolve(h, "cublasLtDestroy", a.Destroy, err);
  resolve(h, "cublasLtMatmulDescCreate", a.DescCreate, err);
  resolve(h, "cublasLtMatmulDescDestroy", a.DescDestroy, err);
  resolve(h, "cublasLtMatmulDescSetAttribute", a.DescSet, err);
  resolve(h, "cublasLtMatrixLayoutCreate", a.LayoutCreate, err);
  resolve(h, "cublasLtMatrixLayoutDestroy", a.LayoutDestroy, err);
  resolve(h, "cublasLtMatrixLayoutSetAttribute", a.LayoutSet, err);
  resolve(h, "cublasLtMatmulPreferenceCreate", a.PrefCreate, err);
  resolve(h, "cublasLtMatmulPreferenceDestroy", a.PrefDestroy, err);
  resolve(h, "cublasLtMatmulPreferenceSetAttribute", a.PrefSet, err);
  resolve(h, "cublasLtMatmulAlgoGetHeuristic", a.Heuristic, err);
  resolve(h, "cublasLtMatmul", a.Matmul, err);
  if (!err.empty()) {
    dlclose(h);
    g_error = err + " (" + name + ")";
    return g_error;
  }
  const size_t v = a.GetVersion();
  // The headers this build used are CUDA 13's: an older major has another ABI.
  if (v / 10000 != CUBLAS_VER_MAJOR) {
    dlclose(h);
    std::ostringstream os;
    os << name << " is cuBLASLt " << v << ", this build needs major version " << CUBLAS_VER_MAJOR;
    g_error = os.str();
    return g_error;
  }
  g_api = a;  // the handle stays open for the life of the process
  std::ostringstream os;
  os << "cuBLASLt " << v / 10000 << "." << (v / 100) % 100 << "." << v % 100 << " (" << name << ")";
  g_desc = os.str();
  return std::string();
}

std::string lt_status() {
  std::lock_guard<std::mutex> lk(g_mu);
  return g_desc.empty() ? g_error : g_desc;
}
bool lt_loaded() {
  std::lock_guard<std::mutex> lk(g_mu);
  return !g_desc.empty();
}
bool lt_built() { return true; }

// ---- plans --------------------------------------------------------------------------------------
struct LtConvPlan {
  struct Call {
    LtGemmCall g;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  std::vector<Call> calls;
  DType dtype = DType::F32;
  void* bias = nullptr;  // [co], engine dtype, owned
  int device = 0;
  size_t workspace = 0;

  ~LtConvPlan() {
    if (!lt_loaded()) return;
    const LtApi& f = g_api;
    for (Call& c : calls) {
      if (c.desc) f.DescDestroy(c.desc);
      for (cublasLtMatrixLayout_t l : {c.a, c.b, c.d})
        if (l) f.LayoutDestroy(l);
    }
    if (bias != nullptr) cudaFree(bias);
    cudaGetLastError();
  }
};

struct LtRuntime::Impl {
  int device = 0;
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t(32) << 20;
};

LtRuntime::LtRuntime(int device) : impl_(new Impl) {
  const LtApi& f = api();
  impl_->device = device;
  GASTRT_CHECK_LT(f.Create(&impl_->handle));
  const cudaError_t e = cudaMalloc(&impl_->workspace, impl_->workspace_bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    f.Destroy(impl_->handle);
    impl_->handle = nullptr;
    GASTRT_CHECK_CUDA(e);
  }
}

LtRuntime::~LtRuntime() {
  if (!impl_) return;
  if (impl_->workspace != nullptr) cudaFree(impl_->workspace);
  if (impl_->handle != nullptr && lt_loaded()) g_api.Destroy(impl_->handle);
  cudaGetLastError();
}

std::shared_ptr<const LtConvPlan> LtRuntime::plan(const ConvRecord& r, DType dtype, const float* host_bias,
                                                  int align_x, int align_w, int align_y, cudaStream_t stream,
                                                  std::string* why) {
  const LtApi& f = api();
  LtGemmCall calls[kLtMaxCalls];
  const char* reason = nullptr;
  const int n = lt_conv_calls(r, static_cast<int64_t>(dtype), calls, &reason);
  if (n == 0) {
    if (why) *why = reason;
    return nullptr;
  }
  auto p = std::make_shared<LtConvPlan>();
  p->dtype = dtype;
  p->device = impl_->device;
  p->workspace = impl_->workspace_bytes;
  const int es = dtype == DType::F32 ? 4 : 2;
  // The bias in the output type: cuBLASLt's BIAS epilogue reads it as Dtype.
  std::vector<unsigned char> hb(static_cast<size_t>(r.co) * es);
  for (int64_t i = 0; i < r.co; ++i) {
    if (dtype == DType::F32)
      reinterpret_cast<float*>(hb.data())[i] = host_bias[i];
    else if (dtype == DType::F16)
      reinterpret_cast<__half*>(hb.data())[i] = __float2half_rn(host_bias[i]);
    else
      reinterpret_cast<__nv_bfloat16*>(hb.data())[i] = __float2bfloat16_rn(host_bias[i]);
  }
  GASTRT_CHECK_CUDA(cudaMalloc(&p->bias, hb.size()));
  // On the engine's (non-blocking) stream, then waited for: a legacy-stream copy would not be
  // ordered before the first launch that reads it.
  GASTRT_CHECK_CUDA(cudaMemcpyAsync(p->bias, hb.data(), hb.size(), cudaMemcpyHostToDevice, stream));
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));

  const cudaDataType_t t = lt_type(dtype);
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // no TF32: fp32 engines stay fp32-exact
  cublasLtMatmulPreference_t pref = nullptr;
  GASTRT_CHECK_LT(f.PrefCreate(&pref));
  struct PrefGuard {
    const LtApi& f;
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { f.PrefDestroy(p); }
  } pg{f, pref};
  const uint64_t ws = impl_->workspace_bytes;
  GASTRT_CHECK_LT(f.PrefSet(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));

  auto align_of = [&](int base, int64_t elements) {  // largest power of two <= 16 dividing both
    int64_t v = elements * es;
    int a = 16;
    while (a > 1 && ((base % a) != 0 || (v % a) != 0)) a >>= 1;
    return static_cast<uint32_t>(a);
  };
  p->calls.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    LtConvPlan::Call& c = p->calls[static_cast<size_t>(i)];
    c.g = calls[i];
    const LtGemmCall& g = c.g;
    GASTRT_CHECK_LT(f.DescCreate(&c.desc, compute, CUDA_R_32F));
    const cublasOperation_t op = CUBLAS_OP_N;
    GASTRT_CHECK_LT(f.DescSet(c.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op, sizeof(op)));
    GASTRT_CHECK_LT(f.DescSet(c.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op, sizeof(op)));
    const cublasLtEpilogue_t epi = g.epilogue == kLtEpilogueReluBias ? CUBLASLT_EPILOGUE_RELU_BIAS
                                   : g.epilogue == kLtEpilogueBias   ? CUBLASLT_EPILOGUE_BIAS
                                                                     : CUBLASLT_EPILOGUE_DEFAULT;
    GASTRT_CHECK_LT(f.DescSet(c.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    if (g.epilogue != kLtEpilogueNone) {
      const void* bp = p->bias;
      GASTRT_CHECK_LT(f.DescSet(c.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)));
    }
    GASTRT_CHECK_LT(f.LayoutCreate(&c.a, t, static_cast<uint64_t>(g.m), static_cast<uint64_t>(g.k), g.lda));
    GASTRT_CHECK_LT(f.LayoutCreate(&c.b, t, static_cast<uint64_t>(g.k), static_cast<uint64_t>(g.n), g.ldb));
    GASTRT_CHECK_LT(f.LayoutCreate(&c.d, t, static_cast<uint64_t>(g.m), static_cast<uint64_t>(g.n), g.ldd));
    if (g.batch > 1) {
      const int32_t bc = static_cast<int32_t>(g.batch);
      const int64_t zero = 0;
      GASTRT_CHECK_LT(f.LayoutSet(c.a, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)));
      GASTRT_CHECK_LT(f.LayoutSet(c.a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &zero, sizeof(zero)));
      GASTRT_CHECK_LT(f.LayoutSet(c.b, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)));
      GASTRT_CHECK_LT(f.LayoutSet(c.b, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &g.b_batch_stride,
                                  sizeof(g.b_batch_stride)));
      GASTRT_CHECK_LT(f.LayoutSet(c.d, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)));
      GASTRT_CHECK_LT(f.LayoutSet(c.d, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &g.d_batch_stride,
                                  sizeof(g.d_batch_stride)));
    }
    const uint32_t aa = align_of(align_w, g.a_offset), ab = align_of(align_x, g.b_offset), ad = align_of(align_y, 0);
    GASTRT_CHECK_LT(f.PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)));
    GASTRT_CHECK_LT(f.PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)));
    GASTRT_CHECK_LT(f.PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof(ad)));
    GASTRT_CHECK_LT(f.PrefSet(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof(ad)));
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    const cublasStatus_t st = f.Heuristic(impl_->handle, c.desc, c.a, c.b, c.d, c.d, pref, 1, &res, &found);
    if (st != CUBLAS_STATUS_SUCCESS || found < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
      if (why) {
        std::ostringstream os;
        os << "no cuBLASLt algorithm (status " << static_cast<int>(st) << ", " << found << " found)";
        *why = os.str();
      }
      return nullptr;  // p's destructor frees what was made
    }
    c.algo = res.algo;
  }
  return p;
}

void LtRuntime::launch(const LtConvPlan& p, const void* x, const void* w, void* y, cudaStream_t stream) const {
  const LtApi& f = api();
  const int es = p.dtype == DType::F32 ? 4 : 2;
  const float one = 1.f, zero = 0.f;
  for (const LtConvPlan::Call& c : p.calls) {
    const char* a = static_cast<const char*>(w) + c.g.a_offset * es;
    const char* b = static_cast<const char*>(x) + c.g.b_offset * es;
    GASTRT_CHECK_LT(f.Matmul(impl_->handle, c.desc, &one, a, c.a, b, c.b, c.g.accumulate ? &one : &zero, y, c.d, y,
                             c.d, &c.algo, impl_->workspace, impl_->workspace_bytes, stream));
  }
}

#else  // no cuBLASLt headers at build time

struct LtConvPlan {};
struct LtRuntime::Impl {};

std::string lt_load(const std::string&) { return lt_status(); }
std::string lt_status() {
  return "this build has no cuBLASLt tactic (built without the nvidia-cublas headers: set GASTRT_CUBLASLT_INCLUDE)";
}
bool lt_loaded() { return false; }
bool lt_built() { return false; }

LtRuntime::LtRuntime(int) { GASTRT_CHECK(false, lt_status()); }
LtRuntime::~LtRuntime() = default;
std::shared_ptr<const LtConvPlan> LtRuntime::plan(const ConvRecord&, DType, const float*, int, int, int,
                                                  cudaStream_t, std::string* why) {
  if (why) *why = lt_status();
  return nullptr;
}
void LtRuntime::launch(const LtConvPlan&, const void*, const void*, void*, cudaStream_t) const {
  GASTRT_CHECK(false, lt_status());
}

#endif

}  // namespace cuda
}  // namespace gastrt
