// Memory-bound glue: input / output layout + dtype conversion, concat, RIE output assembly.
// One instantiation each (runtime dtype switch on a uniform value); grid-stride loops over
// int64 element counts; one thread per destination element so writes are coalesced.
#include <algorithm>

#include "common/check.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernels.h"

namespace gastrt {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t total) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20)));
}

__global__ void layout_kernel(const LayoutArgs a) {
  const int64_t per_n = static_cast<int64_t>(a.a) * a.b * a.f;
  const int64_t total = a.n * per_n;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t src = e;
    if (a.swap) {  // dst [n, b, a, f] <- src [n, a, b, f]
      const int64_t nn = e / per_n;
      int64_t r = e - nn * per_n;
      const int fi = static_cast<int>(r % a.f);
      r /= a.f;
      const int ai = static_cast<int>(r % a.a);
      const int bi = static_cast<int>(r / a.a);
      src = nn * per_n + (static_cast<int64_t>(ai) * a.b + bi) * a.f + fi;
    }
    store_from_f32(a.dst, e, a.dst_dtype, load_as_f32(a.src, src, a.src_dtype));
  }
}

__global__ void copy_cols_kernel(const CopyColsArgs a) {
  const int64_t total = a.rows * a.cols;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / a.cols;
    const int c = static_cast<int>(e - r * a.cols);
    const int64_t s = r * a.src_ld + c, d = r * a.dst_ld + a.dst_off + c;
    if (a.dtype == DType::F32)
      static_cast<float*>(a.dst)[d] = static_cast<const float*>(a.src)[s];
    else  // fp16 / bf16: move the 16-bit pattern
      static_cast<uint16_t*>(a.dst)[d] = static_cast<const uint16_t*>(a.src)[s];
  }
}

__global__ void assemble_kernel(const AssembleArgs a) {
  const int64_t total = a.n * a.t * a.k * 3;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(e % 3);
    const int64_t r = e / 3;
    const int kk = static_cast<int>(r % a.k);
    const int64_t nt = r / a.k;  // nn * t + tt
    const int s = a.src_of[kk];
    a.out[e] = load_as_f32(a.src[s], nt * a.ch[s] + 3 * a.jj[kk] + d, a.dtype);
  }
}

}  // namespace

void launch_layout(const LayoutArgs& a, cudaStream_t stream) {
  GASTRT_CHECK(a.src != nullptr && a.dst != nullptr && a.n >= 1 && a.a >= 1 && a.b >= 1 && a.f >= 1,
               "layout: bad arguments");
  const int64_t total = a.n * a.a * a.b * a.f;
  layout_kernel<<<grid_for(total), kThreads, 0, stream>>>(a);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

void launch_copy_cols(const CopyColsArgs& a, cudaStream_t stream) {
  GASTRT_CHECK(a.src != nullptr && a.dst != nullptr && a.rows >= 1 && a.cols >= 1 && a.src_ld >= a.cols &&
                   a.dst_off >= 0 && a.dst_ld >= a.dst_off + a.cols,
               "concat: bad arguments");
  copy_cols_kernel<<<grid_for(a.rows * a.cols), kThreads, 0, stream>>>(a);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

void launch_assemble(const AssembleArgs& a, cudaStream_t stream) {
  GASTRT_CHECK(a.out != nullptr && a.n >= 1 && a.t >= 1 && a.k >= 1 && a.k <= kAsmMaxJoints && a.nsrc >= 1 &&
                   a.nsrc <= kAsmMaxSrc,
               "output_assemble: bad arguments");
  for (int kk = 0; kk < a.k; ++kk) {
    const int s = a.src_of[kk];
    GASTRT_CHECK(s >= 0 && s < a.nsrc && a.src[s] != nullptr && a.jj[kk] >= 0 && 3 * a.jj[kk] + 3 <= a.ch[s],
                 "output_assemble: joint " << kk << " source out of range");
  }
  assemble_kernel<<<grid_for(a.n * a.t * a.k * 3), kThreads, 0, stream>>>(a);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

}  // namespace cuda
}  // namespace gastrt
