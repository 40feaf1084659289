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

// x[i] = a hash of (i, seed) mapped to [-1, 1), in the engine dtype: random inputs made on the
// device (no host buffer the size of the problem).
__global__ void fill_uniform(void* x, int64_t n, int dtype, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ static_cast<uint32_t>(i >> 32) * 40503u ^ seed;
    h ^= h >> 16;
    h *= 2246822519u;
    h ^= h >> 13;
    h *= 3266489917u;
    h ^= h >> 16;
    const float v = (h >> 8) * (2.0f / 16777216.0f) - 1.0f;
    if (dtype == 0)
      static_cast<float*>(x)[i] = v;
    else if (dtype == 1)
      static_cast<__half*>(x)[i] = __float2half_rn(v);
    else
      static_cast<__nv_bfloat16*>(x)[i] = __float2bfloat16_rn(v);
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

std::shared_ptr<const LtConvPlan> plan_conv(const ConvRecord& r, const TacticContext& c, std::string* why) {
  if (c.lt == nullptr) {
    if (why) *why = "cuBLASLt unavailable: " + lt_status();
    return nullptr;
  }
  const WeightRec& wr = (*c.wrecs)[static_cast<size_t>(r.w)];
  const WeightRec& br = (*c.wrecs)[static_cast<size_t>(r.b)];
  const float* host_b = reinterpret_cast<const float*>(c.wstage->data() + br.offset);
  return c.lt->plan(r, c.dtype, host_b, static_cast<int>(r.x % 16), static_cast<int>(wr.offset % 16),
                    static_cast<int>(r.y % 16), c.stream, why);
}

namespace {

// The probe itself (choose_conv_tactic catches whatever it throws).
void probe(const ConvRecord& r, const TacticContext& c, TacticChoice& out) {
  GemmTacticReport& rep = out.report;
  const DType dt = c.dtype;
  const int es = dtype_size(dt);
  std::string why_plan;
  std::shared_ptr<const LtConvPlan> plan;
  try {
    plan = plan_conv(r, c, &why_plan);
  } catch (const std::exception& e) {
    why_plan = e.what();
    out.definitive = false;
  }
  if (!plan) {
    rep.note = why_plan;
    return;
  }
  const WeightRec& wr = (*c.wrecs)[static_cast<size_t>(r.w)];
  const WeightRec& br = (*c.wrecs)[static_cast<size_t>(r.b)];
  const float* host_b = reinterpret_cast<const float*>(c.wstage->data() + br.offset);
  const unsigned char* host_w = c.wstage->data() + wr.offset;
  // Scratch placed like the arena's buffers modulo 256 bytes: the same alignment, so the plan made
  // for the arena is the one measured here. One y: each tactic's sampled rows are read back
  // right after its runs.
  const int64_t x_elems = r.n_seq * r.t_in * r.ci;
  const int64_t y_elems = ((r.n_seq - 1) * r.t_ypitch + r.t_out - 1) * r.ldy + r.co;
  const int64_t xo = r.x % 256, yo = r.y % 256;
  const size_t y_bytes = static_cast<size_t>(yo + y_elems * es);
  Scratch xs(static_cast<size_t>(xo + x_elems * es)), ys(y_bytes);
  if (xs.p == nullptr || ys.p == nullptr) {
    rep.note = "no device memory to time the tactics";
    out.definitive = false;
    return;
  }
  const uint32_t seed = 12345u + static_cast<uint32_t>(r.co * 131 + r.ci);
  fill_uniform<<<std::min<int64_t>((x_elems + 255) / 256, 4096), 256, 0, c.stream>>>(
      xs.at(xo), x_elems, static_cast<int>(dt), seed);
  GASTRT_CHECK_CUDA_LAST();

  // Up to 16 output rows spread over the problem, and the x rows they read.
  const int64_t rows = r.n_seq * r.t_out;
  const int64_t nsample = std::min<int64_t>(rows, 16);
  std::vector<int64_t> sample(static_cast<size_t>(nsample));
  for (int64_t si = 0; si < nsample; ++si) sample[static_cast<size_t>(si)] = nsample > 1 ? si * (rows - 1) / (nsample - 1) : 0;
  auto y_row_offset = [&](int64_t row) { return (row / r.t_out * r.t_ypitch + row % r.t_out) * r.ldy * es; };
  auto read_rows = [&](std::vector<float>& dst) {  // [nsample, co] of the current y
    std::vector<unsigned char> raw(static_cast<size_t>(r.co * es));
    dst.resize(static_cast<size_t>(nsample * r.co));
    for (int64_t si = 0; si < nsample; ++si) {
      GASTRT_CHECK_CUDA(cudaMemcpyAsync(raw.data(), ys.at(yo + y_row_offset(sample[static_cast<size_t>(si)])),
                                        raw.size(), cudaMemcpyDeviceToHost, c.stream));
      GASTRT_CHECK_CUDA(cudaStreamSynchronize(c.stream));
      for (int64_t n = 0; n < r.co; ++n) dst[static_cast<size_t>(si * r.co + n)] = to_float(raw.data(), dt, n);
    }
  };

  GemmDesc d{};
  d.x = xs.at(xo);
  d.w = c.wdev + wr.offset;
  d.b = reinterpret_cast<const float*>(c.wdev + br.offset);
  d.res = nullptr;
  d.y = ys.at(yo);
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
  std::vector<float> got0, got1;
  GASTRT_CHECK_CUDA(cudaMemsetAsync(ys.p, 0, y_bytes, c.stream));
  rep.custom_us = time_us(c.stream, c.t0, c.t1, [&] { launch_gemm(&d, 1, dt, c.caps, c.stream); });
  read_rows(got0);
  GASTRT_CHECK_CUDA(cudaMemsetAsync(ys.p, 0, y_bytes, c.stream));
  rep.cublaslt_us =
      time_us(c.stream, c.t0, c.t1, [&] { c.lt->launch(*plan, xs.at(xo), c.wdev + wr.offset, ys.at(yo), c.stream); });
  read_rows(got1);

  // float64 reference of the sampled rows: the weights converted once, the x rows read back.
  const int64_t K = r.k * r.ci;
  std::vector<double> w64(static_cast<size_t>(K * r.co));
  for (int64_t i = 0; i < K * r.co; ++i) w64[static_cast<size_t>(i)] = to_float(host_w, dt, i);
  std::vector<unsigned char> xrow(static_cast<size_t>(r.ci * es));
  std::vector<double> ref(static_cast<size_t>(r.co));
  double err0 = 0, err1 = 0, scale = 0;
  bool finite0 = true, finite1 = true;
  for (int64_t si = 0; si < nsample; ++si) {
    const int64_t row = sample[static_cast<size_t>(si)];
    const int64_t s = row / r.t_out, t = row % r.t_out;
    for (int64_t n = 0; n < r.co; ++n) ref[static_cast<size_t>(n)] = host_b[n];
    for (int64_t tau = 0; tau < r.k; ++tau) {
      const int64_t xr = s * r.t_in + t * r.stride + tau * r.dilation;
      GASTRT_CHECK_CUDA(cudaMemcpyAsync(xrow.data(), xs.at(xo + xr * r.ci * es), xrow.size(), cudaMemcpyDeviceToHost,
                                        c.stream));
      GASTRT_CHECK_CUDA(cudaStreamSynchronize(c.stream));
      for (int64_t ci = 0; ci < r.ci; ++ci) {
        const double xv = to_float(xrow.data(), dt, ci);
        const double* wr64 = w64.data() + (tau * r.ci + ci) * r.co;
        for (int64_t n = 0; n < r.co; ++n) ref[static_cast<size_t>(n)] += xv * wr64[n];
      }
    }
    for (int64_t n = 0; n < r.co; ++n) {
      double v = ref[static_cast<size_t>(n)];
      if (r.act == 1) v = std::max(v, 0.0);
      const double a = got0[static_cast<size_t>(si * r.co + n)], b = got1[static_cast<size_t>(si * r.co + n)];
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
  // A 10% margin: a coin flip on timing noise would make results differ from run to run, and the
  // library call leaves our grouped launch (one more launch per problem).
  const bool pick_lt = ok1 && (!ok0 || c.mode == 2 || rep.cublaslt_us < 0.9 * rep.custom_us);
  if (pick_lt) {
    out.lt = plan;
    rep.chosen = "cublaslt";
  }
  std::ostringstream note;
  if (!ok0) note << "custom kernel off by " << rep.custom_err << " (tolerance " << tol << ")";
  if (!ok1) note << (ok0 ? "" : "; ") << "cuBLASLt off by " << rep.cublaslt_err << " (tolerance " << tol << ")";
  if (!ok0 && !ok1) note << ": both wrong, custom kept";
  rep.note = note.str();
}

}  // namespace

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
  if (lt_conv_calls(r, static_cast<int64_t>(c.dtype), calls, &why) == 0) {
    rep.note = why;
    return out;
  }
  if (r.x < 0 || r.y < 0) {
    rep.note = "reads or writes the caller's arrays (prologue / epilogue)";
    return out;
  }
  if (c.lt == nullptr) {
    rep.note = "cuBLASLt unavailable: " + lt_status();
    out.definitive = false;  // a later load may change it
    return out;
  }
  try {
    probe(r, c, out);
  } catch (const std::exception& e) {
    // Custom kept: the probe must never cost more than speed. A sticky CUDA error (a faulting
    // kernel) is not cleared by this and surfaces at the next launch.
    cudaStreamSynchronize(c.stream);
    cudaGetLastError();
    out.lt = nullptr;
    rep.chosen = "custom";
    rep.note = std::string("probe failed: ") + e.what();
    out.definitive = false;
  }
  return out;
}

}  // namespace cuda
}  // namespace gastrt
