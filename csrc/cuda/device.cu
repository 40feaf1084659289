// Device queries, raw device memory and copies (CudaArray), the device guard and the
// out-of-memory error shared by the executor's translation units.
#include <cuda_runtime.h>

#include <algorithm>
#include <sstream>

#include "common/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/executor.h"

namespace gastrt {
namespace cuda {
namespace {

// Whether `device`'s primary context exists. Since CUDA 12, cudaSetDevice creates it at once:
// a thread that never used CUDA reads device 0 from cudaGetDevice, and "restoring" that would
// create a context (hundreds of MiB, or an error in exclusive-process mode) on a GPU the user
// never touched. The driver's cuDevicePrimaryCtxGetState is looked up through the runtime, so
// nothing links libcuda. Unknown (no entry point): true, i.e. restore as before.
bool primary_context_active(int device) {
  using StateFn = int (*)(int, unsigned int*, int*);
  static StateFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &f, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuDevicePrimaryCtxGetState", &f, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<StateFn>(nullptr);
    }
    return reinterpret_cast<StateFn>(f);
  }();
  if (fn == nullptr) return true;
  unsigned int flags = 0;
  int active = 0;
  return fn(device, &flags, &active) != 0 || active != 0;  // CUresult 0 = success
}

}  // namespace

DeviceGuard::DeviceGuard(int device) {
  if (cudaGetDevice(&prev_) != cudaSuccess) {
    cudaGetLastError();
    prev_ = -1;
  }
  if (prev_ != device) GASTRT_CHECK_CUDA(cudaSetDevice(device));
}

void DeviceGuard::restore_device(int prev) {
  int cur = -1;
  if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev && primary_context_active(prev))
    cudaSetDevice(prev);
  cudaGetLastError();
}

std::string mib(int64_t bytes) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return os.str();
}

[[noreturn]] void throw_oom(int device, int64_t bytes, const char* what) {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
  std::ostringstream os;
  os << "gastrt: CUDA out of memory on cuda:" << device << ": " << what;
  if (bytes > 0) os << " needs " << mib(bytes);  // 0: the size is not known (graph instantiation)
  os << " (" << mib(static_cast<int64_t>(free_b)) << " free of " << mib(static_cast<int64_t>(total_b)) << ")";
  throw OutOfMemory(os.str());
}

void grow_device_buffer(void*& p, int64_t& have, int64_t need, int device, const char* what, cudaStream_t stream) {
  if (need <= have) return;
  if (p != nullptr) GASTRT_CHECK_CUDA(cudaFree(p));
  p = nullptr;
  have = 0;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(need));
  if (e != cudaSuccess) {
    cudaGetLastError();
    p = nullptr;
    if (e == cudaErrorMemoryAllocation) throw_oom(device, need, what);
    GASTRT_CHECK_CUDA(e);
  }
  GASTRT_CHECK_CUDA(cudaMemsetAsync(p, 0, static_cast<size_t>(need), stream));
  have = need;
}

void grow_pinned_buffer(void*& p, int64_t& have, int64_t need, int device) {
  if (need <= have) return;
  if (p != nullptr) GASTRT_CHECK_CUDA(cudaFreeHost(p));
  p = nullptr;
  have = 0;
  const cudaError_t e = cudaMallocHost(&p, static_cast<size_t>(need));
  if (e != cudaSuccess) {
    cudaGetLastError();
    p = nullptr;
    if (e == cudaErrorMemoryAllocation) throw_oom(device, need, "the pinned host staging buffer");
    GASTRT_CHECK_CUDA(e);
  }
  have = need;
}

DType to_dtype(int64_t v) {
  GASTRT_CHECK(v >= 0 && v <= 2, "bad dtype code " << v);
  return static_cast<DType>(v);
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  GASTRT_CHECK(device >= 0 && device < device_count(), "device cuda:" << device << " does not exist");
  GASTRT_CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount << " SMs, "
     << static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0) << " GiB)";
  return os.str();
}

std::string runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return "unknown";
  }
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

uintptr_t device_malloc(int device, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0, "device_malloc: negative size");
  DeviceGuard g(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1)));
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation) throw_oom(device, bytes, "an output array");
    GASTRT_CHECK_CUDA(e);
  }
  return reinterpret_cast<uintptr_t>(p);
}

void device_free(int device, uintptr_t ptr) {
  if (ptr == 0) return;
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaFree(reinterpret_cast<void*>(ptr)));
}

void memcpy_htod(int device, uintptr_t dst, const void* src, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0 && (bytes == 0 || (dst != 0 && src != nullptr)), "memcpy_htod: bad arguments");
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaMemcpy(reinterpret_cast<void*>(dst), src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
  // A pageable copy may return before its DMA lands; the engines' streams are non-blocking.
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(0));
}

void memcpy_dtoh(int device, void* dst, uintptr_t src, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0 && (bytes == 0 || (dst != nullptr && src != 0)), "memcpy_dtoh: bad arguments");
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaMemcpy(dst, reinterpret_cast<const void*>(src), static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
}

}  // namespace cuda
}  // namespace gastrt
