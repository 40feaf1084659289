// The vector types of the per-ISA CPU kernels (vec_kernels.cpp, vec_gemm_small.cpp), which are
// compiled once per ISA level with -DGASTRT_VK_NS=<namespace> and the matching -m flags
// (CMakeLists.txt); vec_dispatch.cpp picks one variant at run time. Include only from those files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "vec_kernels.h"

#ifndef GASTRT_VK_NS
#define GASTRT_VK_NS vk_base
#endif

namespace gastrt {
namespace cpu {
namespace GASTRT_VK_NS {

// The small-M GEMM entry points (vec_gemm_small.cpp; contracts: VecKernels in vec_kernels.h).
void sgemm_small(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc);
void sgemm_small_packed(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                        int64_t lda, const float* P, int64_t k_total, int64_t k_off, float beta,
                        float* C, int64_t ldc);
void sgemm_small_packed16(int64_t M, int64_t n0, int64_t ncols, int64_t K, const float* A,
                          int64_t lda, const uint16_t* P, bool bf16, int64_t k_total,
                          int64_t k_off, float beta, float* C, int64_t ldc);
void gemm_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const void* B,
               int64_t ldb, int wfmt, float* C, int64_t ldc);

namespace {

// Whether convs of any row count run on the packed small-M kernel (VecKernels::small_any_rows).
// Measured on AVX2 (Zen 1, one thread, GFLOP/s, packed panels vs OpenBLAS 0.3.34 on a warmed
// thread): 1728 x 768 x 256 44 vs 43, 5184 x 90 x 256 43 vs 41, 1728 x 3072 x 1024 43 vs 44
// (sgemm 2048^3), 64 x 1024 x 1024 41 vs 33, 27 x 3072 x 1024 38 vs 29. And OpenBLAS's narrow
// products fall to 14-30 once its per-thread state goes bad (after OpenVINO ran in the same
// process, RIE-243 at batch 64 lost 20%), which the packed kernel does not have. On AVX-512
// too (Zen 4, 2 threads, fp32 engines, benchmarks/ab_native.py against the row rule, i.e.
// OpenBLAS's SkylakeX sgemm above 40-192 rows): VideoPose3D-243 batch 64 1.10x, sequence 1.15x;
// RIE-243 batch 64 1.07x; GAST-27 batch 64 1.14x; GAST-243 sequence 1.15x; batch 1 unchanged.
#if defined(__AVX2__)
constexpr bool kSmallAnyRows = true;
#else
constexpr bool kSmallAnyRows = false;
#endif

// The per-ISA files' std::vectors take this allocator: a type of the variant's own (internal
// linkage), so the library's out-of-line vector code they instantiate, compiled with the
// variant's -m flags, is theirs alone. With std::allocator it would be a weak symbol shared with
// the baseline files, and the linker might keep the AVX-512 copy for every caller (illegal
// instructions on older CPUs).
template <class T>
struct VariantAlloc {
  using value_type = T;
  VariantAlloc() = default;
  template <class U>
  VariantAlloc(const VariantAlloc<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > std::size_t(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p); }
  template <class U>
  bool operator==(const VariantAlloc<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const VariantAlloc<U>&) const noexcept { return false; }
};
template <class T>
using VariantVec = std::vector<T, VariantAlloc<T>>;

// GCC/Clang vector extensions: one source, lowered to zmm / ymm / xmm by each variant's flags.
// Register tile MR rows x NV vectors: AVX-512 6 x 4 (24 of 32 zmm), AVX2 3 x 4 (12 of 16 ymm; 32-column panels,
// so 256- and 1024-channel layers split into whole panels),
// SSE 4 x 2.
#if defined(__AVX512F__)
constexpr int VW = 16, MR_MAX = 6, NV_MAX = 4;
#elif defined(__AVX2__)
constexpr int VW = 8, MR_MAX = 3, NV_MAX = 4;
#else
constexpr int VW = 4, MR_MAX = 4, NV_MAX = 2;
#endif
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef float vfu __attribute__((vector_size(VW * sizeof(float)), aligned(4)));  // unaligned access

// One float in every lane: one vbroadcastss from memory. (`vf{} + x` must keep -0 + 0 = +0, so
// GCC emitted an add and a register broadcast per row and k, which held a register that the
// AVX2 register tile needed and cost 10-20% of the small-M kernel; an element-wise splat loop
// compiles to masked inserts.)
inline vf splat(float x) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(x);
#elif defined(__AVX__)
  return _mm256_set1_ps(x);
#elif defined(__SSE__)
  return _mm_set1_ps(x);
#else
  vf v;
  for (int i = 0; i < VW; ++i) v[i] = x;
  return v;
#endif
}

}  // namespace
}  // namespace GASTRT_VK_NS
}  // namespace cpu
}  // namespace gastrt
