// Element-wise loops, written for the auto-vectoriser (unit-stride inner loops over channels,
// __restrict, no calls inside); the small-M GEMM is in vec_gemm_small.cpp. This file is compiled once per ISA level with
// -DGASTRT_VK_NS=<namespace> and the matching -m flags (see CMakeLists.txt); vec_dispatch.cpp
// picks one at run time. No -ffast-math: NaN / inf propagate exactly like NumPy's float ops
// (relu(NaN) = NaN, as np.maximum).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gastrt/params.h"
#include "vec_simd.h"

#define GASTRT_STR2(x) #x
#define GASTRT_STR(x) GASTRT_STR2(x)

namespace gastrt {
namespace cpu {
namespace GASTRT_VK_NS {
namespace {

// NaN-propagating activations (NumPy: np.maximum(y, 0), np.where(y >= 0, y, 0.2 * y)).
template <int ACT>
inline float act(float v) {
  if (ACT == 1) return v < 0.f ? 0.f : v;
  if (ACT == 2) return v >= 0.f ? v : v * kLReluSlope;
  return v;
}

// The same activations on whole vectors (a vector select, NaN-propagating like act<>): the
// scalar form's branch kept GCC from vectorising the epilogue, which then took 12% of an
// RIE-243 batch-64 forward.
template <int ACT>
inline vf act_v(vf v) {
  if (ACT == 1) return v < 0.f ? vf{} : v;
  if (ACT == 2) return v >= 0.f ? v : v * kLReluSlope;
  return v;
}

template <int ACT, bool RES>
void bias_act_t(float* __restrict y, const float* __restrict b, int64_t n,
                const float* __restrict res) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW) {
    vf v = act_v<ACT>(*reinterpret_cast<const vfu*>(y + i) + *reinterpret_cast<const vfu*>(b + i));
    if (RES) v += *reinterpret_cast<const vfu*>(res + i);
    *reinterpret_cast<vfu*>(y + i) = v;
  }
  for (; i < n; ++i) {
    float v = act<ACT>(y[i] + b[i]);
    if (RES) v += res[i];
    y[i] = v;
  }
}

void bias_act(float* y, const float* b, int64_t n, int a, const float* res) {
  if (res) {
    if (a == 1) bias_act_t<1, true>(y, b, n, res);
    else if (a == 2) bias_act_t<2, true>(y, b, n, res);
    else bias_act_t<0, true>(y, b, n, res);
  } else {
    if (a == 1) bias_act_t<1, false>(y, b, n, nullptr);
    else if (a == 2) bias_act_t<2, false>(y, b, n, nullptr);
    else bias_act_t<0, false>(y, b, n, nullptr);
  }
}

template <int ACT>
void bias_act_to_t(float* __restrict dst, const float* __restrict src, const float* __restrict b,
                   int64_t n) {
  int64_t i = 0;
  for (; i + VW <= n; i += VW)
    *reinterpret_cast<vfu*>(dst + i) =
        act_v<ACT>(*reinterpret_cast<const vfu*>(src + i) + *reinterpret_cast<const vfu*>(b + i));
  for (; i < n; ++i) dst[i] = act<ACT>(src[i] + b[i]);
}

void bias_act_to(float* dst, const float* src, const float* b, int64_t n, int a) {
  if (a == 1) bias_act_to_t<1>(dst, src, b, n);
  else if (a == 2) bias_act_to_t<2>(dst, src, b, n);
  else bias_act_to_t<0>(dst, src, b, n);
}

void gast_local_frame(const GastFrameTables& t, const float* P, int64_t ldp, float* S,
                      int64_t lds) {
  const int J = t.j, C = t.c;
  for (int s = 0; s < 2; ++s) {
    const float* __restrict lb = t.loc_b + s * C;
    for (int i = 0; i < J; ++i) {
      float* __restrict out = S + i * lds + s * C;
      const float* __restrict h0 = P + i * ldp + (2 * s) * C;
      const float* __restrict d = t.loc_diag + (int64_t(s) * J + i) * C;
      for (int c = 0; c < C; ++c) out[c] = d[c] * h0[c];
      for (int k = t.nbr_start[s * J + i]; k < t.nbr_start[s * J + i + 1]; ++k) {
        const int jj = t.nbr[k];
        const float* __restrict h1 = P + jj * ldp + (2 * s + 1) * C;
        const float* __restrict o = t.loc_off + ((int64_t(s) * J + i) * J + jj) * C;
        for (int c = 0; c < C; ++c) out[c] += o[c] * h1[c];
      }
      for (int c = 0; c < C; ++c) out[c] = act<1>(out[c] + lb[c]);
    }
  }
}

// out[0:n] = sum_j w[j] * g[j*ldg + 0:n], four rows of g at a time (fewer passes over out).
inline void weighted_rows(float* __restrict out, const float* __restrict w, int nj,
                          const float* __restrict g, int64_t ldg, int n) {
  for (int c = 0; c < n; ++c) out[c] = 0.f;
  int j = 0;
  for (; j + 4 <= nj; j += 4) {
    const float w0 = w[j], w1 = w[j + 1], w2 = w[j + 2], w3 = w[j + 3];
    const float* __restrict g0 = g + j * ldg;
    const float* __restrict g1 = g0 + ldg;
    const float* __restrict g2 = g1 + ldg;
    const float* __restrict g3 = g2 + ldg;
    for (int c = 0; c < n; ++c) out[c] += w0 * g0[c] + w1 * g1[c] + w2 * g2[c] + w3 * g3[c];
  }
  for (; j < nj; ++j) {
    const float wj = w[j];
    const float* __restrict gj = g + j * ldg;
    for (int c = 0; c < n; ++c) out[c] += wj * gj[c];
  }
}

void gast_attention_frame(const GastFrameTables& t, const float* ab, const float* G,
                          int64_t ldp, float* Y, int64_t ldy, float* scratch) {
  const int J = t.j, H = t.heads, gc = t.gc;
  for (int h = 0; h < H; ++h) {
    const float* ck = t.glb_ck + int64_t(h) * J * J;
    for (int i = 0; i < J; ++i) {
      float* row = scratch + i * J;
      const float a = ab[i * ldp + h];
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < J; ++j) {
        const float z = act<2>(a + ab[j * ldp + H + h]);
        row[j] = z;
        mx = z > mx ? z : mx;
      }
      float sum = 0.f;
      for (int j = 0; j < J; ++j) {
        const float e = std::exp(row[j] - mx);
        row[j] = e;
        sum += e;
      }
      for (int j = 0; j < J; ++j) row[j] = row[j] / sum + ck[i * J + j];
    }
    for (int i = 0; i < J; ++i)
      weighted_rows(Y + i * ldy + h * gc, scratch + i * J, J, G + h * gc, ldp, gc);
  }
}

// Winograd F(4,3) transforms (points 0, +-1, +-2, inf; conv_winograd.cpp has the derivation).
// Input: the 6 taps d_j = x + j*ld_tap (n floats each) -> V_p = x_out + p*ld_v, p = 0..5.
void wino_f43_input(const float* __restrict x, int64_t ld_tap, int64_t n, float* __restrict v,
                    int64_t ld_v) {
  const float* __restrict d0 = x;
  const float* __restrict d1 = x + ld_tap;
  const float* __restrict d2 = x + 2 * ld_tap;
  const float* __restrict d3 = x + 3 * ld_tap;
  const float* __restrict d4 = x + 4 * ld_tap;
  const float* __restrict d5 = x + 5 * ld_tap;
  float* __restrict v0 = v;
  float* __restrict v1 = v + ld_v;
  float* __restrict v2 = v + 2 * ld_v;
  float* __restrict v3 = v + 3 * ld_v;
  float* __restrict v4 = v + 4 * ld_v;
  float* __restrict v5 = v + 5 * ld_v;
  for (int64_t i = 0; i < n; ++i) {
    const float a1 = d1[i], a2 = d2[i], a3 = d3[i], a4 = d4[i];
    const float s = a4 - 4.f * a2, t = a3 - 4.f * a1;   // rows 1, 2: s +- t
    const float u = a4 - a2, w = 2.f * (a3 - a1);       // rows 3, 4: u +- w
    v0[i] = 4.f * d0[i] - 5.f * a2 + a4;
    v1[i] = s + t;
    v2[i] = s - t;
    v3[i] = u + w;
    v4[i] = u - w;
    v5[i] = 4.f * a1 - 5.f * a3 + d5[i];
  }
}

// Output: the 6 products M_p = m + p*ld_m (n floats each) -> rows y + i*ld_y, i = 0..3:
//   y0 = M0 + M1 + M2 + M3 + M4,  y1 = (M1 - M2) + 2 (M3 - M4),
//   y2 = (M1 + M2) + 4 (M3 + M4), y3 = (M1 - M2) + 8 (M3 - M4) + M5
void wino_f43_output(const float* __restrict m, int64_t ld_m, int64_t n, float* __restrict y,
                     int64_t ld_y) {
  const float* __restrict m0 = m;
  const float* __restrict m1 = m + ld_m;
  const float* __restrict m2 = m + 2 * ld_m;
  const float* __restrict m3 = m + 3 * ld_m;
  const float* __restrict m4 = m + 4 * ld_m;
  const float* __restrict m5 = m + 5 * ld_m;
  float* __restrict y0 = y;
  float* __restrict y1 = y + ld_y;
  float* __restrict y2 = y + 2 * ld_y;
  float* __restrict y3 = y + 3 * ld_y;
  for (int64_t i = 0; i < n; ++i) {
    const float p12 = m1[i] + m2[i], q12 = m1[i] - m2[i];
    const float p34 = m3[i] + m4[i], q34 = m3[i] - m4[i];
    y0[i] = m0[i] + p12 + p34;
    y1[i] = q12 + 2.f * q34;
    y2[i] = p12 + 4.f * p34;
    y3[i] = q12 + 8.f * q34 + m5[i];
  }
}

// Winograd F(2,3) transforms (points 0, +-1, inf; conv_winograd_bf16.cpp has the derivation).
// Input: the taps d_j = x + j*ld_tap (n floats each; d3 absent when has3 is false: read as zero)
// -> V_p = v + p*ld_v:  V0 = d0 - d2, V1 = d1 + d2, V2 = d2 - d1, V3 = d1 - d3.
void wino_f23_input(const float* __restrict x, int64_t ld_tap, int64_t n, bool has3,
                    float* __restrict v, int64_t ld_v) {
  const float* __restrict d0 = x;
  const float* __restrict d1 = x + ld_tap;
  const float* __restrict d2 = x + 2 * ld_tap;
  float* __restrict v0 = v;
  float* __restrict v1 = v + ld_v;
  float* __restrict v2 = v + 2 * ld_v;
  float* __restrict v3 = v + 3 * ld_v;
  for (int64_t i = 0; i < n; ++i) {
    const float a1 = d1[i], a2 = d2[i];
    v0[i] = d0[i] - a2;
    v1[i] = a1 + a2;
    v2[i] = a2 - a1;
  }
  if (has3) {
    const float* __restrict d3 = x + 3 * ld_tap;
    for (int64_t i = 0; i < n; ++i) v3[i] = d1[i] - d3[i];
  } else {
    for (int64_t i = 0; i < n; ++i) v3[i] = d1[i];
  }
}

// Output: the 4 products M_p = m + p*ld_m (n floats each) -> y0 = M0 + M1 + M2 and
// y1 = M1 - M2 - M3 (y1 null: a tile whose second output lies past the sequence's end).
void wino_f23_output(const float* __restrict m, int64_t ld_m, int64_t n, float* __restrict y0,
                     float* __restrict y1) {
  const float* __restrict m0 = m;
  const float* __restrict m1 = m + ld_m;
  const float* __restrict m2 = m + 2 * ld_m;
  const float* __restrict m3 = m + 3 * ld_m;
  if (y1) {
    for (int64_t i = 0; i < n; ++i) {
      const float a = m1[i], b = m2[i];
      y0[i] = m0[i] + a + b;
      y1[i] = a - b - m3[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y0[i] = m0[i] + m1[i] + m2[i];
  }
}

}  // namespace

extern const VecKernels kernels;
const VecKernels kernels = {GASTRT_STR(GASTRT_VK_NS), bias_act, bias_act_to, gast_local_frame,
                            gast_attention_frame, sgemm_small, NV_MAX * VW, kSmallAnyRows,
                            sgemm_small_packed, sgemm_small_packed16, wino_f43_input,
                            wino_f43_output, wino_f23_input, wino_f23_output,
                            gemm_rows};

}  // namespace GASTRT_VK_NS
}  // namespace cpu
}  // namespace gastrt
