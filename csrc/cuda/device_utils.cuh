// Device helpers shared by the kernels: dtype conversion, activations, cp.async.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "gastrt/params.h"

namespace gastrt {
namespace cuda {

template <typename T>
struct Cvt;
template <>
struct Cvt<float> {
  static __device__ __forceinline__ float to_f(float v) { return v; }
  static __device__ __forceinline__ float from_f(float v) { return v; }
};
template <>
struct Cvt<__half> {
  static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
};
template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
};

// Runtime-dtype element access, for the memory-bound glue kernels (one instantiation each
// instead of three; the switch is on a block-uniform value).
__device__ __forceinline__ float load_as_f32(const void* p, int64_t i, DType dt) {
  if (dt == DType::F16) return __half2float(static_cast<const __half*>(p)[i]);
  if (dt == DType::BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_from_f32(void* p, int64_t i, DType dt, float v) {
  if (dt == DType::F16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else if (dt == DType::BF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// plan.py: relu = max(y, 0); lrelu = y if y >= 0 else 0.2 * y (same expression as NumPy).
// Not fmaxf: it returns the other operand for NaN, np.maximum (and the CPU path) keep the NaN.
__device__ __forceinline__ float relu_nan(float v) { return v < 0.f ? 0.f : v; }
__device__ __forceinline__ float apply_act(float v, int act) {
  if (act == static_cast<int>(Act::Relu)) return relu_nan(v);
  if (act == static_cast<int>(Act::LRelu)) return v >= 0.f ? v : v * kLReluSlope;
  return v;
}

// 16-byte async global->shared copy; pred == false zero-fills the 16 bytes without reading
// (src must still be a valid address, callers pass the tensor base).
__device__ __forceinline__ void cp_async16(void* smem_dst, const void* gmem_src, bool pred) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int n = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace cuda
}  // namespace gastrt
