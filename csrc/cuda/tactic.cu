// Tactic selection for conv records, as TensorRT's builder does it: at program creation, each
// distinct layer shape runs through both tactics (our GEMM kernel and cuBLASLt) on scratch
// buffers holding random data, each is timed with CUDA events and checked against a float64 host
// reference on sampled rows, and the faster correct one is kept. A wrong or slow tactic then
// costs speed, never correctness.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "cuda/executor.h"

namespace gastrt {
namespace cuda {
namespace {

float to_float(const unsigned char* p, DType t, int64_t i) {
  if (t == DType::F32) {
    float v;
    std::memcpy(&v, p + i * 4, 4);
    return v;
  }
  uint16_t bits;
  std::memcpy(&bits, p + i * 2, 2);
  if (t == DType::F16) {
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
  }
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

void from_float(unsigned char* p, DType t, int64_t i, float v) {
  if (t == DType::F32) {
    std::memcpy(p + i * 4, &v, 4);
  } else if (t == DType::F16) {
    const __half h = __float2half_rn(v);
    std::memcpy(p + i * 2, &h, 2);
  } else {
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    std::memcpy(p + i * 2, &h, 2);
  }
}

// Device scratch that frees itself.
struct Scratch {
  void* p = nullptr;
  explicit Scratch(size_t bytes) {
    const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
    if (e != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
  }
  ~Scratch() {
    if (p != nullptr) cudaFree(p);
  }
  char* at(int64_t byte_offset) const { return static_cast<char*>(p) + byte_offset; }
};

// Median device time (microseconds) of fn() on `stream`, after warm-up runs.
template <class F>
double time_us(cudaStream_t stream, cudaEvent_t t0, cudaEvent_t t1, F&& fn) {
  for (int i = 0; i < 2; ++i) fn();
  std::vector<double> v;
  for (int i = 0; i < 7; ++i) {
    GASTRT_CHECK_CUDA(cudaEventRecord(t0, stream));
    fn();
    GASTRT_CHECK_CUDA(cudaEventRecord(t1, stream));
    GASTRT_CHECK_CUDA(cudaEventSynchronize(t1));
    float ms = 0.f;
    GASTRT_CHECK_CUDA(cudaEventElapsedTime(&ms, t0, t1));
    v.push_back(ms * 1000.0);
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

double tactic_tolerance(DType t) { return t == DType::F32 ? 1e-4 : t == DType::F16 ? 1e-2 : 4e-2; }

TacticChoice choose_conv_tactic(const ConvRecord& r, const TacticContext& c) {
  TacticChoice out;
  GemmTacticReport& rep = out.report;
  {
    std::ostringstream os;
    os << "M=" << r.n_seq * r.t_out << " K=" << r.k * r.ci << " N=" << r.co << " k=" << r.k << " s=" << r.stride
       << " d=" << r.dilation << (r.act == 1 ? " relu" : r.act == 2 ? " lrelu" : "") << (r.res != kRefNone ? " +res" : "");
    rep.shape = os.str();
  }
  rep.chosen = "custom";
  if (c.mode == 0) {
    rep.note = "gemm_tactic=custom";
    return out;
  }
  const char* why = nullptr;
  LtGemmCall calls[kLtMaxCalls];
  if (lt_conv_calls(r, calls, &why) == 0) {
    rep.note = why;
    return out;
  }
  if (r.x < 0 || r.y < 0) {
    rep.note = "reads or writes the caller's arrays (prologue / epilogue)";
    return out;
  }
  if (c.lt == nullptr) {
    rep.note = "cuBLASLt unavailable: " + lt_status();
    return out;
  }
  const DType dt = c.dtype;
  const int es = dtype_size(dt);
  const WeightRec& wr = (*c.wrecs)[static_cast<size_t>(r.w)];
  const WeightRec& br = (*c.wrecs)[static_cast<size_t>(r.b)];
  const float* host_b = reinterpret_cast<const float*>(c.wstage->data() + br.offset);
  const unsigned char* host_w = c.wstage->data() + wr.offset;
  // Scratch placed like the arena's buffers modulo 256 bytes: the same alignment, so the
  // algorithm planned for the arena is the one measured here.
  const int64_t x_elems = r.n_seq * r.t_in * r.ci;
  const int64_t y_elems = ((r.n_seq - 1) * r.t_ypitch + r.t_out - 1) * r.ldy + r.co;
  const int64_t xo = r.x % 256, yo = r.y % 256;
  std::string why_plan;
  std::shared_ptr<const LtConvPlan> plan;
  try {
    plan = c.lt->plan(r, dt, host_b, static_cast<int>(r.x % 16), static_cast<int>(wr.offset % 16),
                      static_cast<int>(r.y % 16), &why_plan);
  } catch (const Error& e) {
    why_plan = e.what();
  }
  if (!plan) {
    rep.note = why_plan;
    return out;
  }
  Scratch xs(static_cast<size_t>(xo + x_elems * es)), y0(static_cast<size_t>(yo + y_elems * es)),
      y1(static_cast<size_t>(yo + y_elems * es));
  if (xs.p == nullptr || y0.p == nullptr || y1.p == nullptr) {
    rep.note = "no device memory to time the tactics";
    return out;
  }
  // Random inputs in the engine dtype (their host copy feeds the reference).
  std::vector<unsigned char> hx(static_cast<size_t>(x_elems * es));
  std::mt19937 rng(12345u + static_cast<unsigned>(r.co * 131 + r.ci));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (int64_t i = 0; i < x_elems; ++i) from_float(hx.data(), dt, i, u(rng));
  GASTRT_CHECK_CUDA(cudaMemcpy(xs.at(xo), hx.data(), hx.size(), cudaMemcpyHostToDevice));
  GASTRT_CHECK_CUDA(cudaMemset(y0.p, 0, static_cast<size_t>(yo + y_elems * es)));
  GASTRT_CHECK_CUDA(cudaMemset(y1.p, 0, static_cast<size_t>(yo + y_elems * es)));

  GemmDesc d{};
  d.x = xs.at(xo);
  d.w = c.wdev + wr.offset;
  d.b = reinterpret_cast<const float*>(c.wdev + br.offset);
  d.res = nullptr;
  d.y = y0.at(yo);
  d.n_seq = r.n_seq;
  d.t_in = static_cast<int32_t>(r.t_in);
  d.t_out = static_cast<int32_t>(r.t_out);
  d.t_res = static_cast<int32_t>(r.t_res);
  d.t_ypitch = static_cast<int32_t>(r.t_ypitch);
  d.ci = static_cast<int32_t>(r.ci);
  d.co = static_cast<int32_t>(r.co);
  d.k = static_cast<int32_t>(r.k);
  d.stride = static_cast<int32_t>(r.stride);
  d.dilation = static_cast<int32_t>(r.dilation);
  d.ldy = static_cast<int32_t>(r.ldy);
  d.act = static_cast<int32_t>(r.act);
  try {
    rep.custom_us = time_us(c.stream, c.t0, c.t1, [&] { launch_gemm(&d, 1, dt, c.caps, c.stream); });
    rep.cublaslt_us =
        time_us(c.stream, c.t0, c.t1, [&] { c.lt->launch(*plan, xs.at(xo), c.wdev + wr.offset, y1.at(yo), c.stream); });
  } catch (const Error& e) {
    cudaStreamSynchronize(c.stream);
    cudaGetLastError();
    rep.note = std::string("timing failed: ") + e.what();
    return out;
  }
  // float64 reference on up to 16 rows spread over the problem; error relative to the largest
  // reference magnitude of those rows.
  const int64_t rows = r.n_seq * r.t_out;
  const int64_t nsample = std::min<int64_t>(rows, 16);
  std::vector<unsigned char> row0(static_cast<size_t>(r.co * es)), row1(row0.size());
  double err0 = 0, err1 = 0, scale = 0;
  std::vector<double> ref(static_cast<size_t>(r.co));
  bool finite0 = true, finite1 = true;
  for (int64_t si = 0; si < nsample; ++si) {
    const int64_t row = nsample > 1 ? si * (rows - 1) / (nsample - 1) : 0;
    const int64_t s = row / r.t_out, t = row % r.t_out;
    for (int64_t n = 0; n < r.co; ++n) ref[static_cast<size_t>(n)] = host_b[n];
    for (int64_t tau = 0; tau < r.k; ++tau) {
      const int64_t xrow = s * r.t_in + t * r.stride + tau * r.dilation;
      for (int64_t ci = 0; ci < r.ci; ++ci) {
        const double xv = to_float(hx.data(), dt, xrow * r.ci + ci);
        if (xv == 0.0) continue;
        const int64_t wrow = (tau * r.ci + ci) * r.co;
        for (int64_t n = 0; n < r.co; ++n) ref[static_cast<size_t>(n)] += xv * to_float(host_w, dt, wrow + n);
      }
    }
    const int64_t yoff = (s * r.t_ypitch + t) * r.ldy * es;
    GASTRT_CHECK_CUDA(cudaMemcpy(row0.data(), y0.at(yo + yoff), row0.size(), cudaMemcpyDeviceToHost));
    GASTRT_CHECK_CUDA(cudaMemcpy(row1.data(), y1.at(yo + yoff), row1.size(), cudaMemcpyDeviceToHost));
    for (int64_t n = 0; n < r.co; ++n) {
      double v = ref[static_cast<size_t>(n)];
      if (r.act == 1) v = std::max(v, 0.0);
      const double a = to_float(row0.data(), dt, n), b = to_float(row1.data(), dt, n);
      finite0 = finite0 && std::isfinite(a);
      finite1 = finite1 && std::isfinite(b);
      scale = std::max(scale, std::fabs(v));
      err0 = std::max(err0, std::fabs(a - v));
      err1 = std::max(err1, std::fabs(b - v));
    }
  }
  scale = std::max(scale, 1e-6);
  rep.custom_err = finite0 ? err0 / scale : INFINITY;
  rep.cublaslt_err = finite1 ? err1 / scale : INFINITY;
  const double tol = tactic_tolerance(dt);
  const bool ok0 = rep.custom_err <= tol, ok1 = rep.cublaslt_err <= tol;
  const bool pick_lt = ok1 && (!ok0 || c.mode == 2 || rep.cublaslt_us < rep.custom_us);
  if (pick_lt) {
    out.lt = plan;
    rep.chosen = "cublaslt";
  }
  std::ostringstream note;
  if (!ok0) note << "custom kernel off by " << rep.custom_err << " (tolerance " << tol << ")";
  if (!ok1) note << (ok0 ? "" : "; ") << "cuBLASLt off by " << rep.cublaslt_err << " (tolerance " << tol << ")";
  if (!ok0 && !ok1) note << ": both wrong, custom kept";
  rep.note = note.str();
  return out;
}

}  // namespace cuda
}  // namespace gastrt
