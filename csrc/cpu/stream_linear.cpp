// Linear layer for the few rows of a streaming push on the CPU (see StreamLinearParams). A push of
// a dilated model computes one column per layer: a handful of rows against all of the layer's
// weights, so its time is the time to read the weights once. BLAS GEMM kernels pack B (a second
// pass over it); the small-M kernel reads it in short strided pieces; this reads it row by row.
// Engines built with precision fp16 / bf16 store 16-bit weights; reading them as such (converted
// exactly to fp32 in L1) halves the bytes without changing the arithmetic of the fp32 CPU path.
//
// Threads split K (each reads whole, contiguous weight rows: DRAM streams best that way; a split
// by columns made every thread read short strided pieces of each row, ~3x slower from DRAM) into
// partial sums that are added in order, then the epilogue. The number of parts depends on the
// sizes only (up to max_gemm_tiles(), tiling.h), never on the team, so the sum's order, and the
// result, is the same for any thread count.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/check.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"
#include "tiling.h"
#include "vec_kernels.h"

namespace gastrt {
namespace cpu {

void stream_linear_f32(const StreamLinearParams& p, Team& team) {

  GASTRT_CHECK(p.m >= 0 && p.k > 0 && p.n > 0 && p.ldx >= p.k,
               "stream_linear: bad geometry m=" << p.m << " k=" << p.k << " n=" << p.n
                                             << " ldx=" << p.ldx);
  if (p.m == 0) return;
  const VecKernels& vk = vec();
  const int wfmt = p.wdtype == DType::F32 ? 0 : p.wdtype == DType::F16 ? 1 : 2;
  const size_t wsize = p.wdtype == DType::F32 ? 4 : 2;
  const char* w = static_cast<const char*>(p.w);
  const int64_t m = p.m, n = p.n, k = p.k;
  // A part per >= ~128K weights (below that a second thread costs more to wake than it saves).
  const int64_t parts =
      std::max<int64_t>(1, std::min<int64_t>({max_gemm_tiles(), k * n / (128 * 1024), k}));
  const int act = int(p.act);
  if (parts == 1) {
    vk.gemm_rows(m, n, k, p.x, p.ldx, w, n, wfmt, p.y, n);
  } else {
    std::vector<float> partial(size_t((parts - 1) * m * n));  // part 0 writes y itself
    const int64_t kc = (k + parts - 1) / parts;
    team.parallel_for(parts, [&](int64_t t, int) {
      const int64_t k0 = t * kc, kn = std::min(kc, k - k0);
      float* dst = t == 0 ? p.y : partial.data() + (t - 1) * m * n;
      if (kn <= 0) {
        std::fill(dst, dst + m * n, 0.f);
        return;
      }
      vk.gemm_rows(m, n, kn, p.x + k0, p.ldx, w + size_t(k0 * n) * wsize, n, wfmt, dst, n);
    });
    for (int64_t t = 1; t < parts; ++t) {
      const float* src = partial.data() + (t - 1) * m * n;
      for (int64_t i = 0; i < m * n; ++i) p.y[i] += src[i];
    }
  }
  for (int64_t r = 0; r < m; ++r)
    vk.bias_act(p.y + r * n, p.b, n, act, p.res ? p.res + r * n : nullptr);
}

}  // namespace cpu
}  // namespace gastrt
