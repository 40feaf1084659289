// The Engine of cuda_ops.h: weights (one device buffer), the arena shared by the engine's
// programs, pinned host staging, CUDA graph capture / replay of each program's body, and stream
// ordering with the caller's stream. Programs are decoded by program.cu, launched by launch.cu.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "common/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/executor.h"

namespace gastrt {
namespace cuda {

struct Engine::Impl {
  int device = 0;
  DType dtype = DType::F32;
  DeviceCaps caps;
  std::string name;
  cudaStream_t stream = nullptr;
  cudaEvent_t ev_in = nullptr, ev_out = nullptr, t0 = nullptr, t1 = nullptr;

  std::vector<unsigned char> wstage;  // host copy of all weights, converted
  std::vector<WeightRec> wrecs;
  void* wdev = nullptr;
  size_t wdev_bytes = 0;
  bool wdirty = false;

  void* arena = nullptr;
  int64_t arena_size = 0;
  int64_t arena_limit = -1;
  uint64_t gen = 1;  // bumped whenever captured graphs become stale

  void* d_in = nullptr;
  int64_t d_in_bytes = 0;
  void* d_out = nullptr;
  int64_t d_out_bytes = 0;
  void* h_in = nullptr;  // pinned
  int64_t h_in_bytes = 0;
  void* h_out = nullptr;
  int64_t h_out_bytes = 0;

  std::unordered_map<int64_t, Program> progs;
  int64_t next_id = 1;

  int gast_fused_mode = -1;
  int64_t gast_budget = int64_t(256) << 20;

  // GEMM tactics (tactic.cu): mode, the cuBLASLt context (made on first need), one timed
  // decision per class of conv problems (tactic_class), the plans of exact problems, and the
  // timed decisions in the order they were made.
  int gemm_tactic = 1;
  std::unique_ptr<LtRuntime> lt;
  std::map<std::string, bool> tactic_decisions;  // class -> cuBLASLt wins
  std::map<std::string, std::shared_ptr<const LtConvPlan>> tactic_plans;  // exact problem -> plan
  std::vector<GemmTacticReport> tactic_log;

  // Every entry point holds it: the bindings release the GIL, and the stream, its events, the
  // pinned staging and a capture in progress on the stream are shared state (a launch from
  // another thread on a capturing stream would join that capture). Recursive: entry points
  // may call each other.
  mutable std::recursive_mutex mu;
  std::unique_lock<std::recursive_mutex> lock() const { return std::unique_lock<std::recursive_mutex>(mu); }

  // Frees everything this engine holds (the destructor, and a constructor that failed halfway).
  void release() {
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    cudaSetDevice(device);
    if (stream != nullptr) cudaStreamSynchronize(stream);
    for (auto& kv : progs)
      if (kv.second.exec != nullptr) cudaGraphExecDestroy(kv.second.exec);
    progs.clear();
    tactic_plans.clear();  // the plans' bias copies live on this device
    tactic_decisions.clear();
    lt.reset();
    for (void* p : {arena, wdev, d_in, d_out})
      if (p != nullptr) cudaFree(p);
    for (void* p : {h_in, h_out})
      if (p != nullptr) cudaFreeHost(p);
    arena = wdev = d_in = d_out = h_in = h_out = nullptr;
    arena_size = d_in_bytes = d_out_bytes = h_in_bytes = h_out_bytes = 0;
    wdev_bytes = 0;
    for (cudaEvent_t* ev : {&ev_in, &ev_out, &t0, &t1}) {
      if (*ev != nullptr) cudaEventDestroy(*ev);
      *ev = nullptr;
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
    stream = nullptr;
    cudaGetLastError();  // reports nothing: it runs in destructors and error paths
    DeviceGuard::restore_device(prev);
  }

  // ---- memory ------------------------------------------------------------------------------
  void ensure_weights() {
    if (!wdirty) return;
    GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));
    if (wdev != nullptr) {
      GASTRT_CHECK_CUDA(cudaFree(wdev));
      wdev = nullptr;
      wdev_bytes = 0;
    }
    const size_t bytes = std::max<size_t>(wstage.size(), 256);
    const cudaError_t e = cudaMalloc(&wdev, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();
      wdev = nullptr;
      if (e == cudaErrorMemoryAllocation) throw_oom(device, static_cast<int64_t>(bytes), "the weights");
      GASTRT_CHECK_CUDA(e);
    }
    wdev_bytes = bytes;
    // On the engine's stream, then synced: it is non-blocking, so it would not wait for a copy on
    // the legacy stream (and a pageable cudaMemcpy may return before its DMA has landed).
    if (!wstage.empty()) {
      GASTRT_CHECK_CUDA(cudaMemcpyAsync(wdev, wstage.data(), wstage.size(), cudaMemcpyHostToDevice, stream));
      GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));
    }
    wdirty = false;
    ++gen;
  }

  void ensure_arena(int64_t bytes) {
    if (bytes <= arena_size) return;
    if (arena_limit >= 0 && bytes > arena_limit) {
      std::ostringstream os;
      os << "gastrt: CUDA out of memory on cuda:" << device << ": the workspace needs " << mib(bytes)
         << " (over the engine's arena_limit of " << mib(arena_limit) << ")";
      throw OutOfMemory(os.str());
    }
    GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes));
    if (e == cudaErrorMemoryAllocation) {
      // Retry without the old arena, then put back what we can so the engine keeps working
      // for the batches it already served.
      cudaGetLastError();
      const int64_t old = arena_size;
      if (arena != nullptr) cudaFree(arena);
      arena = nullptr;
      arena_size = 0;
      ++gen;
      e = cudaMalloc(&p, static_cast<size_t>(bytes));
      if (e != cudaSuccess) {
        cudaGetLastError();
        p = nullptr;
        if (old > 0 && cudaMalloc(&arena, static_cast<size_t>(old)) == cudaSuccess) {
          arena_size = old;
          if (cudaMemsetAsync(arena, 0, static_cast<size_t>(old), stream) != cudaSuccess ||
              cudaStreamSynchronize(stream) != cudaSuccess)
            cudaGetLastError();
        } else {
          cudaGetLastError();
          arena = nullptr;
        }
        throw_oom(device, bytes, "the workspace");
      }
    } else if (e != cudaSuccess) {
      cudaGetLastError();
      GASTRT_CHECK_CUDA(e);
    }
    // Zeroed once: rows past a call's n (inside the batch bucket) are then finite, not garbage.
    // What the old arena held is kept (a stream's rings live there); all on the engine's stream.
    const int64_t keep = arena != nullptr ? arena_size : 0;
    cudaError_t ez = cudaMemsetAsync(static_cast<char*>(p) + keep, 0, static_cast<size_t>(bytes - keep), stream);
    if (ez == cudaSuccess && keep > 0)
      ez = cudaMemcpyAsync(p, arena, static_cast<size_t>(keep), cudaMemcpyDeviceToDevice, stream);
    if (ez == cudaSuccess) ez = cudaStreamSynchronize(stream);
    if (ez != cudaSuccess) {
      cudaGetLastError();
      cudaFree(p);
      GASTRT_CHECK_CUDA(ez);
    }
    if (arena != nullptr) GASTRT_CHECK_CUDA(cudaFree(arena));
    arena = p;
    arena_size = bytes;
    ++gen;
  }

  void ensure_io_device(int64_t in_bytes, int64_t out_bytes) {
    if (in_bytes > d_in_bytes || out_bytes > d_out_bytes) GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));
    grow_device_buffer(d_in, d_in_bytes, in_bytes, device, "the input staging buffer", stream);
    grow_device_buffer(d_out, d_out_bytes, out_bytes, device, "the output staging buffer", stream);
  }

  void drop_graphs() {
    for (auto& kv : progs) {
      if (kv.second.exec != nullptr) cudaGraphExecDestroy(kv.second.exec);
      kv.second.exec = nullptr;
    }
    ++gen;
  }

  LaunchContext context(void* in, void* out, int64_t n_io) const {
    return LaunchContext{static_cast<char*>(arena), static_cast<const char*>(wdev), &wrecs, dtype, caps,
                         gast_fused_mode, stream, in, out, n_io, lt.get()};
  }

  void capture(Program& p) {
    if (p.exec != nullptr) {
      cudaGraphExecDestroy(p.exec);
      p.exec = nullptr;
    }
    cudaGraph_t g = nullptr;
    // Thread-local mode: other threads' CUDA calls (the user's torch code) are not affected.
    GASTRT_CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      const LaunchContext c = context(nullptr, nullptr, 0);
      for (size_t i = p.body_begin; i < p.body_end; ++i) launch_step(p.steps[i], c);
    } catch (...) {
      cudaStreamEndCapture(stream, &g);
      if (g != nullptr) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    GASTRT_CHECK_CUDA(cudaStreamEndCapture(stream, &g));
    const cudaError_t e = cudaGraphInstantiate(&p.exec, g, 0ULL);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      p.exec = nullptr;
      cudaGetLastError();
      if (e == cudaErrorMemoryAllocation) throw_oom(device, 0, "instantiating the CUDA graph");
      GASTRT_CHECK_CUDA(e);
    }
    p.exec_gen = gen;
  }

  void run_all(Program& p, void* in, void* out, int64_t n, bool use_graph) {
    const LaunchContext c = context(in, out, n);
    for (size_t i = 0; i < p.body_begin; ++i) launch_step(p.steps[i], c);
    if (p.body_end > p.body_begin) {
      // The first run launches the body directly: lazily loaded kernels (CUDA >= 12.2's default)
      // load outside a capture, which older drivers require, and a faulting kernel reports at
      // its own launch rather than at a graph replay.
      if (use_graph && !p.io_in_body && p.ran_plain) {
        if (p.exec == nullptr || p.exec_gen != gen) capture(p);
        GASTRT_CHECK_CUDA(cudaGraphLaunch(p.exec, stream));
      } else {
        p.ran_plain = true;
        for (size_t i = p.body_begin; i < p.body_end; ++i) launch_step(p.steps[i], c);
      }
    }
    for (size_t i = p.body_end; i < p.steps.size(); ++i) launch_step(p.steps[i], c);
  }

  Program& get(int64_t id) {
    auto it = progs.find(id);
    GASTRT_CHECK(it != progs.end(), "unknown program id " << id);
    return it->second;
  }
  const Program& get(int64_t id) const {
    auto it = progs.find(id);
    GASTRT_CHECK(it != progs.end(), "unknown program id " << id);
    return it->second;
  }
  void prepare(Program& p) {
    ensure_weights();
    ensure_arena(p.arena_bytes);
  }

  LtRuntime* lt_runtime() {
    if (!lt && lt_loaded()) {
      try {
        lt.reset(new LtRuntime(device));
      } catch (const Error&) {
        lt.reset();  // cuBLASLt then stays out: choose_conv_tactic reports lt_status()
      }
    }
    return lt.get();
  }

  // A class of conv problems shares one timed decision: everything but the batch / sequence
  // extent, whose row count is rounded up to a power of two (sequence mode creates a program per
  // exact (n, T), which must not re-time every layer). The exact key adds the extent back.
  std::string tactic_class(const ConvRecord& r) const {
    std::ostringstream os;
    auto place = [](int64_t ref) { return ref < 0 ? ref : ref % 256; };
    int64_t rows = 1;
    while (rows < r.n_seq * r.t_out) rows <<= 1;
    const bool merged = r.n_seq == 1 || (r.t_in == r.t_out * r.stride && r.t_ypitch == r.t_out);
    os << gemm_tactic << ':' << place(r.x) << ':' << r.w << ':' << r.b << ':' << (r.res != kRefNone) << ':'
       << place(r.y) << ':' << r.ci << ':' << r.co << ':' << r.k << ':' << r.stride << ':' << r.dilation << ':'
       << r.ldy << ':' << r.act << ':' << merged << ':' << rows;
    return os.str();
  }
  std::string tactic_exact(const ConvRecord& r, const std::string& cls) const {
    std::ostringstream os;
    os << cls << '|' << r.n_seq << ':' << r.t_in << ':' << r.t_out << ':' << r.t_ypitch;
    return os.str();
  }

  // Picks each conv problem's tactic (after prepare: the weights are on the device). Probe
  // failures are never cached (a later program retries); a plan for a new exact problem of a
  // class cuBLASLt won is made without timing.
  void assign_tactics(Program& p) {
    if (gemm_tactic == 0) return;
    const TacticContext tc{dtype, caps, stream, t0, t1, lt_runtime(), static_cast<const char*>(wdev), &wrecs,
                           &wstage, gemm_tactic};
    for (Step& s : p.steps) {
      if (s.op != kOpConv) continue;
      const auto& convs = std::get<std::vector<ConvRecord>>(s.rec);
      s.lt.assign(convs.size(), nullptr);
      bool any = false;
      for (size_t i = 0; i < convs.size(); ++i) {
        const ConvRecord& r = convs[i];
        const std::string cls = tactic_class(r), exact = tactic_exact(r, cls);
        auto dit = tactic_decisions.find(cls);
        if (dit == tactic_decisions.end()) {
          TacticChoice ch = choose_conv_tactic(r, tc);
          tactic_log.push_back(ch.report);
          if (ch.definitive) tactic_decisions[cls] = static_cast<bool>(ch.lt);
          if (ch.lt) tactic_plans[exact] = ch.lt;
          s.lt[i] = ch.lt;
        } else if (dit->second) {
          auto pit = tactic_plans.find(exact);
          if (pit == tactic_plans.end()) {
            std::shared_ptr<const LtConvPlan> plan;
            try {
              plan = plan_conv(r, tc, nullptr);
            } catch (const std::exception&) {
              plan = nullptr;  // our kernel runs this one
            }
            pit = tactic_plans.emplace(exact, plan).first;
          }
          s.lt[i] = pit->second;
        }
        any = any || static_cast<bool>(s.lt[i]);
      }
      if (!any) s.lt.clear();
    }
    // Plans no program holds any more (sequence lengths come and go): bounded.
    if (tactic_plans.size() > 512)
      for (auto it = tactic_plans.begin(); it != tactic_plans.end();)
        it = it->second.use_count() <= 1 ? tactic_plans.erase(it) : std::next(it);
  }
};

std::string cublaslt_load(const std::string& path) { return lt_load(path); }
std::string cublaslt_status() { return lt_status(); }
bool cublaslt_built() { return lt_built(); }

// ================================================================================================
Engine::Engine(int device, int dtype) : impl_(new Impl) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  const int n = device_count();
  GASTRT_CHECK(n > 0, "no CUDA GPU is visible");
  GASTRT_CHECK(device >= 0 && device < n,
               "device cuda:" << device << " does not exist (" << n << " GPU" << (n > 1 ? "s" : "") << " visible)");
  m.device = device;
  m.dtype = to_dtype(dtype);
  DeviceGuard g(device);
  m.caps = query_caps(device);
  m.name = ::gastrt::cuda::device_name(device);
  GASTRT_CHECK(m.caps.cc_major >= 8, "gastrt's CUDA kernels need compute capability 8.0 or newer; cuda:"
                                         << device << " is " << m.name);
  // Fails with cudaErrorNoKernelImageForDevice when this build has no code for the GPU.
  const cudaError_t e = [] {
    try {
      init_gemm_kernels();
      return cudaSuccess;
    } catch (const CudaError& ce) {
      return static_cast<cudaError_t>(ce.code);
    } catch (const std::exception&) {
      return cudaErrorUnknown;
    }
  }();
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction) {
    GASTRT_CHECK(false, "this gastrt build has no CUDA code for " << m.name
                                                               << " (rebuild with GASTRT_CUDA_ARCHS including "
                                                               << m.caps.cc_major << m.caps.cc_minor << ")");
  }
  init_gemm_kernels();  // rethrows any other error with its message
  init_gast_kernels(m.caps);
  try {  // no destructor runs for a constructor that throws: free what was made so far
    GASTRT_CHECK_CUDA(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
    GASTRT_CHECK_CUDA(cudaEventCreateWithFlags(&m.ev_in, cudaEventDisableTiming));
    GASTRT_CHECK_CUDA(cudaEventCreateWithFlags(&m.ev_out, cudaEventDisableTiming));
    GASTRT_CHECK_CUDA(cudaEventCreate(&m.t0));
    GASTRT_CHECK_CUDA(cudaEventCreate(&m.t1));
  } catch (...) {
    m.release();
    throw;
  }
}

Engine::~Engine() {
  if (impl_) {
    const auto lock = impl_->lock();
    impl_->release();
  }
}

int Engine::device() const { return impl_->device; }
int Engine::dtype() const { return static_cast<int>(impl_->dtype); }
std::string Engine::device_name() const { return impl_->name; }
uintptr_t Engine::stream() const { return reinterpret_cast<uintptr_t>(impl_->stream); }

void Engine::synchronize() {
  const auto lock = impl_->lock();
  DeviceGuard g(impl_->device);
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(impl_->stream));
}

int64_t Engine::add_weight(const float* data, int64_t count, bool engine_dtype) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  GASTRT_CHECK(count >= 0 && (data != nullptr || count == 0), "add_weight: bad arguments");
  const DType dt = engine_dtype ? m.dtype : DType::F32;
  const size_t off = (m.wstage.size() + 255) & ~size_t(255);  // 256 B: every weight is 16 B aligned
  const size_t bytes = static_cast<size_t>(count) * dtype_size(dt);
  m.wstage.resize(off + bytes);
  unsigned char* dst = m.wstage.data() + off;
  if (dt == DType::F32) {
    if (bytes) std::memcpy(dst, data, bytes);
  } else if (dt == DType::F16) {
    __half* h = reinterpret_cast<__half*>(dst);
    for (int64_t i = 0; i < count; ++i) h[i] = __float2half_rn(data[i]);
  } else {
    __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(dst);
    for (int64_t i = 0; i < count; ++i) h[i] = __float2bfloat16_rn(data[i]);
  }
  m.wrecs.push_back(WeightRec{off, count, dt});
  m.wdirty = true;
  return static_cast<int64_t>(m.wrecs.size()) - 1;
}

int64_t Engine::weight_count() const {
  const auto lock = impl_->lock();
  return static_cast<int64_t>(impl_->wrecs.size());
}

int64_t Engine::create_program(const int64_t* code, int64_t len, int64_t arena_bytes, int64_t max_n,
                               int64_t in_per_n, int64_t out_per_n) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  GASTRT_CHECK(code != nullptr || len == 0, "create_program: null code");
  GASTRT_CHECK(arena_bytes >= 0 && max_n >= 1 && in_per_n >= 0 && out_per_n >= 0, "create_program: bad sizes");
  Program p;
  p.arena_bytes = arena_bytes;
  p.max_n = max_n;
  p.in_per_n = in_per_n;
  p.out_per_n = out_per_n;
  decode_program(code, len, m.wrecs, m.dtype, p);
  DeviceGuard g(m.device);
  m.prepare(p);  // weights uploaded and the workspace allocated now: OOM surfaces here
  m.assign_tactics(p);
  const int64_t id = m.next_id++;
  m.progs.emplace(id, std::move(p));
  return id;
}

void Engine::destroy_program(int64_t id) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  auto it = m.progs.find(id);
  if (it == m.progs.end()) return;
  DeviceGuard g(m.device);
  if (it->second.exec != nullptr) {
    cudaStreamSynchronize(m.stream);
    cudaGraphExecDestroy(it->second.exec);
  }
  m.progs.erase(it);
}

std::string Engine::describe_program(int64_t id) const {
  const Impl& m = *impl_;
  const auto lock = m.lock();
  const Program& p = m.get(id);
  std::ostringstream os;
  os << "program " << id << ": " << p.steps.size() << " steps, arena " << mib(p.arena_bytes) << ", max_n " << p.max_n
     << ", graph body [" << p.body_begin << ", " << p.body_end << ")" << (p.io_in_body ? " (no graph)" : "") << "\n";
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    os << "  " << i << ": " << describe_step(s);
    if (s.op == kOpGast) {
      const GastRecord& r = std::get<GastRecord>(s.rec);
      const bool fused = gast_fused_ok(static_cast<int>(r.j), static_cast<int>(r.c), static_cast<int>(r.heads),
                                       static_cast<int>(r.gc), m.dtype, m.caps, m.gast_fused_mode);
      os << (fused ? " fused" : " multi-kernel");
    }
    if (s.op == kOpConv && !s.lt.empty()) {
      const auto nlt = std::count_if(s.lt.begin(), s.lt.end(), [](const auto& q) { return static_cast<bool>(q); });
      os << " cublaslt " << nlt << "/" << s.lt.size();
    }
    if (s.io) os << " (io)";
    os << "\n";
  }
  return os.str();
}

void Engine::run_host(int64_t id, const float* x, int64_t x_count, float* y, int64_t y_count, int64_t n,
                      bool use_graph) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  Program& p = m.get(id);
  p.check_batch(n);
  GASTRT_CHECK(x_count == n * p.in_per_n && y_count == n * p.out_per_n,
               "run: input / output sizes " << x_count << " / " << y_count << " do not match batch " << n);
  GASTRT_CHECK(x != nullptr && y != nullptr, "run: null array");
  DeviceGuard g(m.device);
  m.prepare(p);
  const int64_t xb = x_count * 4, yb = y_count * 4;
  m.ensure_io_device(xb, yb);
  grow_pinned_buffer(m.h_in, m.h_in_bytes, xb, m.device);
  grow_pinned_buffer(m.h_out, m.h_out_bytes, yb, m.device);
  // The previous call ended with a stream sync, so the pinned buffers are free to reuse.
  std::memcpy(m.h_in, x, static_cast<size_t>(xb));
  try {
    GASTRT_CHECK_CUDA(cudaMemcpyAsync(m.d_in, m.h_in, static_cast<size_t>(xb), cudaMemcpyHostToDevice, m.stream));
    m.run_all(p, m.d_in, m.d_out, n, use_graph);
    GASTRT_CHECK_CUDA(cudaMemcpyAsync(m.h_out, m.d_out, static_cast<size_t>(yb), cudaMemcpyDeviceToHost, m.stream));
    GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
  } catch (...) {
    // queued copies still read h_in / write h_out: the next call must not touch (or free) them
    cudaStreamSynchronize(m.stream);
    cudaGetLastError();
    throw;
  }
  std::memcpy(y, m.h_out, static_cast<size_t>(yb));
}

void Engine::run_device(int64_t id, uintptr_t x, uintptr_t y, int64_t n, uintptr_t ext_stream, bool has_ext,
                        bool use_graph) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  Program& p = m.get(id);
  p.check_batch(n);
  GASTRT_CHECK(x != 0 && y != 0, "run: null device pointer");
  DeviceGuard g(m.device);
  for (uintptr_t ptr : {x, y}) {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
    if (e != cudaSuccess) cudaGetLastError();
    GASTRT_CHECK(e == cudaSuccess && (attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged),
                 "run: array at 0x" << std::hex << ptr << std::dec << " is not CUDA device memory");
    GASTRT_CHECK(attr.type == cudaMemoryTypeManaged || attr.device == m.device,
                 "run: array is on cuda:" << attr.device << " but the engine is on cuda:" << m.device);
  }
  cudaStream_t ext = reinterpret_cast<cudaStream_t>(ext_stream);
  if (has_ext) {
    // Inside the caller's graph capture (torch.cuda.graph, ...) the engine's stream would join
    // that capture, baking in arena / weight pointers a later growth frees, and the syncs a cold
    // program needs would invalidate it.
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    GASTRT_CHECK_CUDA(cudaStreamIsCapturing(ext, &cs));
    GASTRT_CHECK(cs == cudaStreamCaptureStatusNone,
                 "run_device: the caller's stream is capturing a CUDA graph; gastrt replays its own graphs "
                 "and cannot be captured into another (call it outside the capture)");
  }
  m.prepare(p);
  if (has_ext) {
    GASTRT_CHECK_CUDA(cudaEventRecord(m.ev_in, ext));
    GASTRT_CHECK_CUDA(cudaStreamWaitEvent(m.stream, m.ev_in, 0));
  }
  try {
    m.run_all(p, reinterpret_cast<void*>(x), reinterpret_cast<void*>(y), n, use_graph);
  } catch (...) {
    // Kernels already queued may still read x / write y: the caller's stream must wait for them
    // before it reuses those arrays, failure or not.
    if (has_ext && cudaEventRecord(m.ev_out, m.stream) == cudaSuccess) cudaStreamWaitEvent(ext, m.ev_out, 0);
    if (!has_ext) cudaStreamSynchronize(m.stream);
    cudaGetLastError();
    throw;
  }
  if (has_ext) {
    GASTRT_CHECK_CUDA(cudaEventRecord(m.ev_out, m.stream));
    GASTRT_CHECK_CUDA(cudaStreamWaitEvent(ext, m.ev_out, 0));
  } else {
    GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
  }
}

void Engine::run_arena(int64_t id, bool use_graph) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  Program& p = m.get(id);
  GASTRT_CHECK(p.body_begin == 0 && p.body_end == p.steps.size() && !p.io_in_body,
               "run_arena: the program reads or writes user arrays");
  DeviceGuard g(m.device);
  m.prepare(p);
  m.run_all(p, nullptr, nullptr, p.max_n, use_graph);
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
}

std::vector<double> Engine::time_program(int64_t id, int iters, int warmup, bool use_graph) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  Program& p = m.get(id);
  GASTRT_CHECK(iters >= 1 && warmup >= 0, "time_program: bad counts");
  DeviceGuard g(m.device);
  m.prepare(p);
  m.ensure_io_device(p.max_n * p.in_per_n * 4, p.max_n * p.out_per_n * 4);
  // >= 2 warm-up runs: the first runs uncaptured, the second captures and instantiates the graph
  // (host time that would sit between the timing events).
  for (int i = 0; i < std::max(warmup, 2); ++i) m.run_all(p, m.d_in, m.d_out, p.max_n, use_graph);
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    GASTRT_CHECK_CUDA(cudaEventRecord(m.t0, m.stream));
    m.run_all(p, m.d_in, m.d_out, p.max_n, use_graph);
    GASTRT_CHECK_CUDA(cudaEventRecord(m.t1, m.stream));
    GASTRT_CHECK_CUDA(cudaEventSynchronize(m.t1));
    float v = 0.f;
    GASTRT_CHECK_CUDA(cudaEventElapsedTime(&v, m.t0, m.t1));
    ms.push_back(v);
  }
  return ms;
}

void Engine::reserve_arena(int64_t bytes) {
  GASTRT_CHECK(bytes >= 0, "reserve_arena: negative size");
  const auto lock = impl_->lock();
  DeviceGuard g(impl_->device);
  impl_->ensure_arena(bytes);
}

int64_t Engine::arena_bytes() const {
  const auto lock = impl_->lock();
  return impl_->arena_size;
}

void Engine::arena_write(int64_t offset, const void* src, int64_t bytes) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  GASTRT_CHECK(offset >= 0 && bytes >= 0 && offset + bytes <= m.arena_size, "arena_write: out of range");
  DeviceGuard g(m.device);
  GASTRT_CHECK_CUDA(cudaMemcpyAsync(static_cast<char*>(m.arena) + offset, src, static_cast<size_t>(bytes),
                                    cudaMemcpyHostToDevice, m.stream));
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
}

void Engine::arena_read(int64_t offset, void* dst, int64_t bytes) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  GASTRT_CHECK(offset >= 0 && bytes >= 0 && offset + bytes <= m.arena_size, "arena_read: out of range");
  DeviceGuard g(m.device);
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
  GASTRT_CHECK_CUDA(cudaMemcpy(dst, static_cast<const char*>(m.arena) + offset, static_cast<size_t>(bytes),
                               cudaMemcpyDeviceToHost));
}

void Engine::arena_fill(int64_t offset, int64_t bytes, int byte_value) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  GASTRT_CHECK(offset >= 0 && bytes >= 0 && offset + bytes <= m.arena_size, "arena_fill: out of range");
  DeviceGuard g(m.device);
  GASTRT_CHECK_CUDA(cudaMemsetAsync(static_cast<char*>(m.arena) + offset, byte_value, static_cast<size_t>(bytes),
                                    m.stream));
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(m.stream));
}

int64_t Engine::gast_scratch_bytes(int64_t n, int j, int t, int c, int heads, int gc) const {
  const Impl& m = *impl_;
  const auto lock = m.lock();
  return ::gastrt::cuda::gast_scratch_bytes(n, j, t, c, heads, gc, m.dtype, m.caps, m.gast_fused_mode, m.gast_budget);
}

bool Engine::gast_fused(int j, int c, int heads, int gc) const {
  const Impl& m = *impl_;
  const auto lock = m.lock();
  return gast_fused_ok(j, c, heads, gc, m.dtype, m.caps, m.gast_fused_mode);
}

void Engine::set_option(const std::string& name, int64_t value) {
  Impl& m = *impl_;
  const auto lock = m.lock();
  DeviceGuard g(m.device);
  if (name == "gast_fused") {
    GASTRT_CHECK(value >= -1 && value <= 1, "gast_fused: expected -1, 0 or 1");
    m.gast_fused_mode = static_cast<int>(value);
  } else if (name == "gast_scratch_budget") {
    GASTRT_CHECK(value >= 0, "gast_scratch_budget: expected bytes >= 0");
    m.gast_budget = value;
  } else if (name == "arena_limit") {
    m.arena_limit = value < 0 ? -1 : value;
  } else if (name == "gemm_tactic") {
    GASTRT_CHECK(value >= 0 && value <= 2, "gemm_tactic: expected 0 (custom), 1 (auto) or 2 (cublaslt)");
    m.gemm_tactic = static_cast<int>(value);
  } else {
    GASTRT_CHECK(false, "unknown option " << name << " (gast_fused, gast_scratch_budget, arena_limit, gemm_tactic)");
  }
  cudaStreamSynchronize(m.stream);
  m.drop_graphs();
}

int64_t Engine::get_option(const std::string& name) const {
  const Impl& m = *impl_;
  const auto lock = m.lock();
  if (name == "gast_fused") return m.gast_fused_mode;
  if (name == "gast_scratch_budget") return m.gast_budget;
  if (name == "arena_limit") return m.arena_limit;
  if (name == "gemm_tactic") return m.gemm_tactic;
  GASTRT_CHECK(false, "unknown option " << name);
  return 0;
}

std::vector<GemmTacticReport> Engine::gemm_tactics() const {
  const auto lock = impl_->lock();
  return impl_->tactic_log;
}

}  // namespace cuda
}  // namespace gastrt
