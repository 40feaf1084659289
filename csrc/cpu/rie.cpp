// RIE input encoding (window mode), see RieEncodeParams. Pure data movement: parallel over
// windows, one pass over the input.
#include <algorithm>
#include <vector>

#include "common/check.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"

namespace gastrt {
namespace cpu {

void rie_encode_f32(const RieEncodeParams& p, Team& team) {
  GASTRT_CHECK(p.n >= 0 && p.t >= 1 && p.cin >= 2, "rie_encode: bad sizes n=" << p.n << " t="
                                                                               << p.t << " cin="
                                                                               << p.cin);
  for (int g = 0; g < 5; ++g) {
    GASTRT_CHECK(p.len[g] >= 0 && (p.len[g] == 0 || (p.idx[g] && p.out[g])),
                 "rie_encode: group " << g << " is incomplete");
    for (int q = 0; q < p.len[g]; ++q)
      GASTRT_CHECK(p.idx[g][q] >= 0 && p.idx[g][q] < p.cin,
                   "rie_encode: channel index " << p.idx[g][q] << " of group " << g
                                                << " outside [0, " << p.cin << ")");
  }
  const int64_t T = p.t, CIN = p.cin, mid = p.t / 2;
  // Enough windows per task to amortise the hand-out; windows are ~T*CIN*4 bytes each.
  const int64_t per_task = std::max<int64_t>(1, 4096 / (T * CIN / 16 + 1));
  const int64_t ntasks = (p.n + per_task - 1) / per_task;
  team.parallel_for(ntasks, [&](int64_t task, int) {
    const int64_t n0 = task * per_task, n1 = std::min<int64_t>(p.n, n0 + per_task);
    // Hoisted out of the frame loop, which is then loads, two subtractions and three stores per
    // channel: per group, each channel's counterpart on the root joint (c % 2: the root's x or
    // y), once per task; per window, each channel's value in the centre frame.
    std::vector<int32_t> root[5];
    for (int g = 0; g < 5; ++g) {
      root[g].resize(size_t(p.len[g]));
      for (int q = 0; q < p.len[g]; ++q) root[g][size_t(q)] = p.idx[g][q] % 2;
    }
    std::vector<float> cen;
    for (int64_t n = n0; n < n1; ++n) {
      const float* xw = p.x + n * T * CIN;      // [T, CIN]
      const float* centre = xw + mid * CIN;     // [CIN]
      if (p.current) std::copy_n(centre, CIN, p.current + n * CIN);
      for (int g = 0; g < 5; ++g) {
        const int L = p.len[g];
        if (L == 0) continue;
        const int32_t* ch = p.idx[g];
        const int32_t* bs = root[g].data();
        cen.resize(size_t(L));
        for (int q = 0; q < L; ++q) cen[size_t(q)] = centre[ch[q]];
        const float* cn = cen.data();
        float* o = p.out[g] + n * T * 3 * L;    // [T, 3L]
        for (int64_t t = 0; t < T; ++t) {
          const float* xr = xw + t * CIN;
          float* __restrict o0 = o + t * 3 * L;
          float* __restrict o1 = o0 + L;
          float* __restrict o2 = o1 + L;
          for (int q = 0; q < L; ++q) {
            const float v = xr[ch[q]];
            o0[q] = v;
            o1[q] = v - xr[bs[q]];
            o2[q] = v - cn[q];
          }
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace gastrt
