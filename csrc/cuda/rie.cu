// RIE input encoding (plan.py `rie_encode`, window mode): x [n, t, cin] fp32 ->
//   out[g] [n, t, 3*len_g] = [x[., idx] | x[., idx] - x[., idx % 2] | x[., idx] - x[n, t/2, idx]]
//   current [n, cin] = x[n, t/2, :]
// in the engine dtype. The differences are taken in fp32 before the one rounding, as NumPy
// does them in fp32. Memory-bound and tiny: one thread per output element, grid-stride.
#include <algorithm>

#include "common/check.h"
#include "cuda/device_utils.cuh"
#include "cuda/kernels.h"

namespace gastrt {
namespace cuda {
namespace {

__global__ void rie_encode_kernel(const RieArgs a, int32_t wtot) {
  const int64_t n_enc = a.n * a.t * wtot;
  const int64_t total = n_enc + a.n * a.cin;
  const int tc = a.t / 2;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (e >= n_enc) {  // current = centre frame
      const int64_t q = e - n_enc;
      const int64_t nn = q / a.cin;
      const int c = static_cast<int>(q - nn * a.cin);
      store_from_f32(a.current, q, a.dtype, a.x[(nn * a.t + tc) * a.cin + c]);
      continue;
    }
    const int64_t nt = e / wtot;  // nn * t + tt
    int col = static_cast<int>(e - nt * wtot);
    int g = 0;
    while (g < a.groups - 1 && col >= 3 * a.len[g]) {
      col -= 3 * a.len[g];
      ++g;
    }
    const int len = a.len[g];
    const int part = col / len, u = col - part * len;
    const int ch = a.idx[g][u];
    const float* row = a.x + nt * a.cin;
    const float v = row[ch];
    float o;
    if (part == 0) {
      o = v;
    } else if (part == 1) {
      o = v - row[ch % 2];
    } else {
      const int64_t nn = nt / a.t;
      o = v - a.x[(nn * a.t + tc) * a.cin + ch];
    }
    store_from_f32(a.out[g], nt * (3 * len) + col, a.dtype, o);
  }
}

}  // namespace

void launch_rie_encode(const RieArgs& a, cudaStream_t stream) {
  GASTRT_CHECK(a.x != nullptr && a.current != nullptr, "rie_encode: null operand");
  GASTRT_CHECK(a.groups >= 1 && a.groups <= kRieMaxGroups, "rie_encode: bad group count " << a.groups);
  GASTRT_CHECK(a.n >= 1 && a.t >= 1 && a.cin >= 1, "rie_encode: bad geometry");
  int32_t wtot = 0;
  for (int g = 0; g < a.groups; ++g) {
    GASTRT_CHECK(a.out[g] != nullptr && a.len[g] >= 1 && a.len[g] <= kRieMaxIdx, "rie_encode: bad group " << g);
    for (int u = 0; u < a.len[g]; ++u)
      GASTRT_CHECK(a.idx[g][u] >= 0 && a.idx[g][u] < a.cin, "rie_encode: channel index out of range");
    wtot += 3 * a.len[g];
  }
  const int64_t total = a.n * a.t * wtot + a.n * a.cin;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 20);
  rie_encode_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(a, wtot);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

}  // namespace cuda
}  // namespace gastrt
