// The GPU executor behind cuda_ops.h: weights, arena, programs (bytecode from cuda.py), CUDA
// graph capture / replay, pinned host staging, stream ordering with the caller's stream.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "common/check.h"
#include "cuda/cuda_ops.h"
#include "cuda/kernels.h"

static_assert(gastrt::cuda::kRingTaps == gastrt::cuda::kRingMaxTaps, "cuda_ops.h and kernels.h disagree");

namespace gastrt {
namespace cuda {
namespace {

// Whether `device`'s primary context exists. Since CUDA 12, cudaSetDevice creates it at once:
// a thread that never used CUDA reads device 0 from cudaGetDevice, and "restoring" that would
// create a context (hundreds of MiB, or an error in exclusive-process mode) on a GPU the user
// never touched. The driver's cuDevicePrimaryCtxGetState is looked up through the runtime, so
// nothing links libcuda. Unknown (no entry point): true, i.e. restore as before.
bool primary_context_active(int device) {
  using StateFn = int (*)(int, unsigned int*, int*);
  static StateFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &f, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuDevicePrimaryCtxGetState", &f, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return static_cast<StateFn>(nullptr);
    }
    return reinterpret_cast<StateFn>(f);
  }();
  if (fn == nullptr) return true;
  unsigned int flags = 0;
  int active = 0;
  return fn(device, &flags, &active) != 0 || active != 0;  // CUresult 0 = success
}

// Restores the caller's current device (the user's torch / CuPy code may be on another GPU),
// unless that device has no context yet (see primary_context_active).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) {
      cudaGetLastError();
      prev_ = -1;
    }
    if (prev_ != device) GASTRT_CHECK_CUDA(cudaSetDevice(device));
  }
  ~DeviceGuard() { restore_device(prev_); }
  static void restore_device(int prev) {
    int cur = -1;
    if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev && primary_context_active(prev))
      cudaSetDevice(prev);
    cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

std::string mib(int64_t bytes) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << static_cast<double>(bytes) / (1024.0 * 1024.0) << " MiB";
  return os.str();
}

[[noreturn]] void throw_oom(int device, int64_t bytes, const char* what) {
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) cudaGetLastError();
  std::ostringstream os;
  os << "gastrt: CUDA out of memory on cuda:" << device << ": " << what;
  if (bytes > 0) os << " needs " << mib(bytes);  // 0: the size is not known (graph instantiation)
  os << " (" << mib(static_cast<int64_t>(free_b)) << " free of " << mib(static_cast<int64_t>(total_b)) << ")";
  throw std::runtime_error(os.str());
}

DType to_dtype(int64_t v) {
  GASTRT_CHECK(v >= 0 && v <= 2, "bad dtype code " << v);
  return static_cast<DType>(v);
}

struct WeightRec {
  size_t offset;  // bytes into the weight buffer
  int64_t count;
  DType dtype;
};

struct Step {
  int64_t op;
  std::vector<int64_t> f;  // fields
  bool io = false;         // references the user's input or output
};

struct Program {
  std::vector<Step> steps;
  size_t body_begin = 0, body_end = 0;  // [begin, end): captured; before: prologue; after: epilogue
  bool io_in_body = false;              // then no graph (the user pointers change per call)
  bool exact_n = false;                 // stream programs: every run fills all max_n table rows
  int64_t arena_bytes = 0, max_n = 0, in_per_n = 0, out_per_n = 0;
  cudaGraphExec_t exec = nullptr;
  uint64_t exec_gen = 0;  // generation of arena / weights / options it was captured with
  bool ran_plain = false;  // a program's first run is not captured (see run_all)
};

}  // namespace

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
      throw std::runtime_error(os.str());
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

  static void grow_device(void*& p, int64_t& have, int64_t need, int device, const char* what,
                          cudaStream_t stream) {
    if (need <= have) return;
    if (p != nullptr) GASTRT_CHECK_CUDA(cudaFree(p));
    p = nullptr;
    have = 0;
    const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(need));
    if (e != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
      if (e == cudaErrorMemoryAllocation) throw_oom(device, need, what);
      GASTRT_CHECK_CUDA(e);
    }
    GASTRT_CHECK_CUDA(cudaMemsetAsync(p, 0, static_cast<size_t>(need), stream));
    have = need;
  }
  static void grow_pinned(void*& p, int64_t& have, int64_t need, int device) {
    if (need <= have) return;
    if (p != nullptr) GASTRT_CHECK_CUDA(cudaFreeHost(p));
    p = nullptr;
    have = 0;
    const cudaError_t e = cudaMallocHost(&p, static_cast<size_t>(need));
    if (e != cudaSuccess) {
      cudaGetLastError();
      p = nullptr;
      if (e == cudaErrorMemoryAllocation) throw_oom(device, need, "the pinned host staging buffer");
      GASTRT_CHECK_CUDA(e);
    }
    have = need;
  }
  void ensure_io_device(int64_t in_bytes, int64_t out_bytes) {
    if (in_bytes > d_in_bytes || out_bytes > d_out_bytes) GASTRT_CHECK_CUDA(cudaStreamSynchronize(stream));
    grow_device(d_in, d_in_bytes, in_bytes, device, "the input staging buffer", stream);
    grow_device(d_out, d_out_bytes, out_bytes, device, "the output staging buffer", stream);
  }

  void drop_graphs() {
    for (auto& kv : progs) {
      if (kv.second.exec != nullptr) cudaGraphExecDestroy(kv.second.exec);
      kv.second.exec = nullptr;
    }
    ++gen;
  }

  // ---- program validation --------------------------------------------------------------------
  struct Checker {
    const Impl& im;
    const Program& p;
    int64_t in_bytes, out_bytes;
    bool io = false;
    void buf(int64_t ref, int64_t bytes, const char* what, bool allow_none = false) {
      if (ref == kRefNone) {
        GASTRT_CHECK(allow_none, "program: " << what << " is missing");
        return;
      }
      GASTRT_CHECK(bytes >= 0, "program: " << what << " has a negative size");
      if (ref == kRefInput || ref == kRefOutput) {
        io = true;
        const int64_t cap = ref == kRefInput ? in_bytes : out_bytes;
        GASTRT_CHECK(bytes <= cap, "program: " << what << " reads/writes " << bytes << " bytes of the user's "
                                               << (ref == kRefInput ? "input" : "output") << " (" << cap << ")");
        return;
      }
      GASTRT_CHECK(ref >= 0 && ref % 16 == 0, "program: " << what << " has a bad offset " << ref);
      GASTRT_CHECK(ref + bytes <= p.arena_bytes, "program: " << what << " [" << ref << ", " << ref + bytes
                                                             << ") is past the arena (" << p.arena_bytes << ")");
    }
    void io_fp32(int64_t ref, DType dt, const char* what) {
      if (ref == kRefInput || ref == kRefOutput) GASTRT_CHECK(dt == DType::F32, "program: " << what << " must be fp32");
    }
    void weight(int64_t id, int64_t count, DType dt, const char* what) {
      GASTRT_CHECK(id >= 0 && id < static_cast<int64_t>(im.wrecs.size()), "program: " << what << " has bad weight id " << id);
      const WeightRec& w = im.wrecs[static_cast<size_t>(id)];
      GASTRT_CHECK(w.count >= count, "program: weight " << what << " has " << w.count << " values, needs " << count);
      GASTRT_CHECK(w.dtype == dt, "program: weight " << what << " has the wrong dtype");
    }
  };

  void check_step(Step& s, Program& p) {
    Checker c{*this, p, p.max_n * p.in_per_n * 4, p.max_n * p.out_per_n * 4};
    const auto& f = s.f;
    const int es = dtype_size(dtype);
    switch (s.op) {
      case kOpLayout: {
        GASTRT_CHECK(f.size() == kLayoutFields, "program: layout record size");
        const int64_t cnt = f[2] * f[3] * f[4] * f[5];
        const DType sd = to_dtype(f[7]), dd = to_dtype(f[8]);
        c.buf(f[0], cnt * dtype_size(sd), "layout src");
        c.buf(f[1], cnt * dtype_size(dd), "layout dst");
        c.io_fp32(f[0], sd, "layout src");
        c.io_fp32(f[1], dd, "layout dst");
        break;
      }
      case kOpConv: {
        GASTRT_CHECK(!f.empty() && f[0] >= 1 && f.size() == 1 + static_cast<size_t>(f[0]) * kConvFields,
                     "program: conv record size");
        for (int64_t i = 0; i < f[0]; ++i) {
          const int64_t* g = f.data() + 1 + i * kConvFields;
          const int64_t nseq = g[5], t_in = g[6], t_out = g[7], t_res = g[8], t_yp = g[9], ci = g[10], co = g[11],
                        k = g[12], ldy = g[17];
          GASTRT_CHECK(nseq >= 1 && t_out >= 1 && ci >= 1 && co >= 1 && k >= 1 && ldy >= co && t_yp >= t_out,
                       "program: bad conv geometry");
          c.buf(g[0], nseq * t_in * ci * es, "conv x");
          c.weight(g[1], k * ci * co, dtype, "conv w");
          c.weight(g[2], co, DType::F32, "conv b");
          c.buf(g[3], nseq * t_res * co * es, "conv res", true);
          c.buf(g[4], (((nseq - 1) * t_yp + t_out - 1) * ldy + co) * es, "conv y");
        }
        GASTRT_CHECK(!c.io, "program: a conv cannot read or write the user's arrays");
        break;
      }
      case kOpGast: {
        GASTRT_CHECK(f.size() == kGastFields, "program: gast record size");
        const int64_t n = f[4], j = f[5], t = f[6], ch = f[7], h = f[8], gc = f[9];
        GASTRT_CHECK(n >= 1 && j >= 1 && t >= 1 && ch >= 1 && h >= 1 && gc >= 1, "program: bad gast geometry");
        const int64_t rows = n * j * t, ld1 = 4 * ch + 2 * h + h * gc;
        c.buf(f[0], rows * ch * es, "gast x");
        c.buf(f[1], rows * 2 * ch * es, "gast y");
        c.buf(f[2], f[3], "gast scratch", f[3] == 0);
        c.weight(f[10], ch * ld1, dtype, "gast w1");
        c.weight(f[11], ld1, DType::F32, "gast b1");
        c.weight(f[12], 2 * j * ch, DType::F32, "gast loc_diag");
        c.weight(f[13], 2 * j * j * ch, DType::F32, "gast loc_off");
        c.weight(f[14], 2 * ch, DType::F32, "gast loc_b");
        c.weight(f[15], 2 * ch * ch, dtype, "gast loc_cat_w");
        c.weight(f[16], ch, DType::F32, "gast loc_cat_b");
        c.weight(f[17], h * j * j, DType::F32, "gast glb_ck");
        c.weight(f[18], h * gc * ch, dtype, "gast glb_cat_w");
        c.weight(f[19], ch, DType::F32, "gast glb_cat_b");
        c.weight(f[20], 3 * ch * 2 * ch, dtype, "gast cat_w");
        c.weight(f[21], 2 * ch, DType::F32, "gast cat_b");
        GASTRT_CHECK(!c.io, "program: a gast block cannot read or write the user's arrays");
        break;
      }
      case kOpRie: {
        GASTRT_CHECK(f.size() == kRieFields, "program: rie record size");
        const int64_t n = f[7], t = f[8], cin = f[9], groups = f[10];
        GASTRT_CHECK(n >= 1 && t >= 1 && cin >= 1 && groups >= 1 && groups <= kRieMaxGroups, "program: bad rie geometry");
        c.buf(f[0], n * t * cin * 4, "rie x");
        c.io_fp32(f[0], DType::F32, "rie x");
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t len = f[11 + g];
          GASTRT_CHECK(len >= 1 && len <= kRieMaxIdx, "program: bad rie group length");
          c.buf(f[1 + g], n * t * 3 * len * es, "rie out");
          GASTRT_CHECK(f[1 + g] >= 0, "program: rie outputs live in the arena");
        }
        c.buf(f[6], n * cin * es, "rie current");
        GASTRT_CHECK(f[6] >= 0, "program: rie outputs live in the arena");
        break;
      }
      case kOpCopyCols: {
        GASTRT_CHECK(f.size() == kCopyColsFields, "program: copy record size");
        const int64_t rows = f[2], cols = f[3], sld = f[4], dld = f[5], doff = f[6];
        GASTRT_CHECK(rows >= 1 && cols >= 1 && sld >= cols && doff >= 0 && dld >= doff + cols, "program: bad copy");
        c.buf(f[0], ((rows - 1) * sld + cols) * es, "copy src");
        c.buf(f[1], ((rows - 1) * dld + doff + cols) * es, "copy dst");
        GASTRT_CHECK(!c.io, "program: a concat cannot read or write the user's arrays");
        break;
      }
      case kOpAssemble: {
        GASTRT_CHECK(f.size() == kAssembleFields, "program: assemble record size");
        const int64_t n = f[1], t = f[2], k = f[3], nsrc = f[4];
        GASTRT_CHECK(n >= 1 && t >= 1 && k >= 1 && k <= kAsmMaxJoints && nsrc >= 1 && nsrc <= kAsmMaxSrc,
                     "program: bad assemble geometry");
        c.buf(f[0], n * t * k * 3 * 4, "assemble out");
        c.io_fp32(f[0], DType::F32, "assemble out");
        for (int64_t s = 0; s < nsrc; ++s) {
          c.buf(f[5 + s], n * t * f[13 + s] * es, "assemble src");
          GASTRT_CHECK(f[5 + s] >= 0, "program: assemble sources live in the arena");
        }
        for (int64_t q = 0; q < k; ++q) {
          const int64_t s = f[21 + q], jj = f[53 + q];
          GASTRT_CHECK(s >= 0 && s < nsrc && jj >= 0 && 3 * jj + 3 <= f[13 + s], "program: bad assemble source");
        }
        break;
      }
      case kOpStreamIn: {
        GASTRT_CHECK(f.size() == kStreamInFields, "program: stream_in record size");
        const int64_t n = f[3], jf = f[4];
        GASTRT_CHECK(n >= 1 && jf >= 1, "program: bad stream_in geometry");
        // it runs on the call's rows (exactly max_n), so its record must say max_n: sized here
        // with fewer, its writes would run past col / table
        GASTRT_CHECK(n == p.max_n && p.in_per_n == jf + kStreamTableCols,
                     "program: stream_in must cover all " << p.max_n << " rows of " << jf << " + "
                                                          << kStreamTableCols << " words");
        c.buf(f[0], n * (jf + kStreamTableCols) * 4, "stream_in src");
        c.buf(f[1], n * jf * es, "stream_in col");
        c.buf(f[2], n * kStreamTableCols * 4, "stream_in table");
        GASTRT_CHECK(f[1] >= 0 && f[2] >= 0, "program: stream_in outputs live in the arena");
        break;
      }
      case kOpRingWrite: {
        GASTRT_CHECK(f.size() == kRingWriteFields, "program: ring_write record size");
        const int64_t n = f[3], nv = f[4], g = f[5], ch = f[6], h = f[7];
        GASTRT_CHECK(n >= 1 && nv >= 1 && g >= 1 && ch >= 1 && h >= 1, "program: bad ring_write geometry");
        GASTRT_CHECK(n == p.max_n, "program: ring_write must cover all " << p.max_n << " table rows");
        c.buf(f[0], n * g * ch * es, "ring_write col");
        c.buf(f[1], nv * g * h * ch * es, "ring_write ring");
        c.buf(f[2], n * kStreamTableCols * 4, "ring_write table");
        GASTRT_CHECK(!c.io, "program: a ring write cannot read or write the user's arrays");
        break;
      }
      case kOpRingGather: {
        GASTRT_CHECK(f.size() == kRingGatherFields, "program: ring_gather record size");
        const int64_t n = f[3], nv = f[4], g = f[5], ch = f[6], h = f[7], k = f[8];
        GASTRT_CHECK(n >= 1 && nv >= 1 && g >= 1 && ch >= 1 && h >= 1 && k >= 1 && k <= kRingMaxTaps,
                     "program: bad ring_gather geometry");
        GASTRT_CHECK(n == p.max_n, "program: ring_gather must cover all " << p.max_n << " table rows");
        for (int64_t tau = 0; tau < k; ++tau)
          GASTRT_CHECK(f[9 + tau] >= 0 && f[9 + tau] < h, "program: ring_gather lag outside the ring");
        c.buf(f[0], nv * g * h * ch * es, "ring_gather ring");
        c.buf(f[1], n * g * k * ch * es, "ring_gather dst");
        c.buf(f[2], n * kStreamTableCols * 4, "ring_gather table");
        GASTRT_CHECK(!c.io, "program: a ring gather cannot read or write the user's arrays");
        break;
      }
      default:
        GASTRT_CHECK(false, "program: unknown opcode " << s.op);
    }
    s.io = c.io;
  }

  // ---- launching ----------------------------------------------------------------------------
  void* ref(int64_t r, void* in, void* out) const {
    if (r >= 0) return static_cast<char*>(arena) + r;
    if (r == kRefInput) return in;
    if (r == kRefOutput) return out;
    return nullptr;
  }
  const void* wref(int64_t id) const {
    if (id < 0) return nullptr;
    return static_cast<const char*>(wdev) + wrecs[static_cast<size_t>(id)].offset;
  }
  const float* wf(int64_t id) const { return static_cast<const float*>(wref(id)); }

  // fields 2..7 of a ring_write / ring_gather record: table, n, nv, g, c, h
  RingGeom ring_geom(const std::vector<int64_t>& f, void* in, void* out) const {
    RingGeom q{};
    q.table = static_cast<const int32_t*>(ref(f[2], in, out));
    q.n = f[3];
    q.nv = f[4];
    q.g = static_cast<int32_t>(f[5]);
    q.c = static_cast<int32_t>(f[6]);
    q.h = static_cast<int32_t>(f[7]);
    return q;
  }

  void launch_step(const Step& s, void* in, void* out, int64_t n_io) {
    const auto& f = s.f;
    switch (s.op) {
      case kOpLayout: {
        LayoutArgs a{};
        a.src = ref(f[0], in, out);
        a.dst = ref(f[1], in, out);
        a.n = s.io ? n_io : f[2];
        a.a = static_cast<int32_t>(f[3]);
        a.b = static_cast<int32_t>(f[4]);
        a.f = static_cast<int32_t>(f[5]);
        a.swap = static_cast<int32_t>(f[6]);
        a.src_dtype = to_dtype(f[7]);
        a.dst_dtype = to_dtype(f[8]);
        launch_layout(a, stream);
        break;
      }
      case kOpConv: {
        GemmDesc d[kMaxGemmGroup * 4];
        const int64_t cnt = f[0];
        GASTRT_CHECK(cnt <= kMaxGemmGroup * 4, "program: conv group too large");
        for (int64_t i = 0; i < cnt; ++i) {
          const int64_t* g = f.data() + 1 + i * kConvFields;
          GemmDesc& q = d[i];
          q = GemmDesc{};
          q.x = ref(g[0], in, out);
          q.w = wref(g[1]);
          q.b = wf(g[2]);
          q.res = ref(g[3], in, out);
          q.y = ref(g[4], in, out);
          q.n_seq = g[5];
          q.t_in = static_cast<int32_t>(g[6]);
          q.t_out = static_cast<int32_t>(g[7]);
          q.t_res = static_cast<int32_t>(g[8]);
          q.t_ypitch = static_cast<int32_t>(g[9]);
          q.ci = static_cast<int32_t>(g[10]);
          q.co = static_cast<int32_t>(g[11]);
          q.k = static_cast<int32_t>(g[12]);
          q.stride = static_cast<int32_t>(g[13]);
          q.dilation = static_cast<int32_t>(g[14]);
          q.res_offset = static_cast<int32_t>(g[15]);
          q.res_stride = static_cast<int32_t>(g[16]);
          q.ldy = static_cast<int32_t>(g[17]);
          q.act = static_cast<int32_t>(g[18]);
        }
        launch_gemm(d, static_cast<int>(cnt), dtype, caps, stream);
        break;
      }
      case kOpGast: {
        GastArgs a{};
        a.x = ref(f[0], in, out);
        a.y = ref(f[1], in, out);
        a.n = f[4];
        a.j = static_cast<int32_t>(f[5]);
        a.t = static_cast<int32_t>(f[6]);
        a.c = static_cast<int32_t>(f[7]);
        a.heads = static_cast<int32_t>(f[8]);
        a.gc = static_cast<int32_t>(f[9]);
        a.w1 = wref(f[10]);
        a.b1 = wf(f[11]);
        a.loc_diag = wf(f[12]);
        a.loc_off = wf(f[13]);
        a.loc_b = wf(f[14]);
        a.loc_cat_w = wref(f[15]);
        a.loc_cat_b = wf(f[16]);
        a.glb_ck = wf(f[17]);
        a.glb_cat_w = wref(f[18]);
        a.glb_cat_b = wf(f[19]);
        a.cat_w = wref(f[20]);
        a.cat_b = wf(f[21]);
        a.dtype = dtype;
        launch_gast_block(a, f[3] > 0 ? ref(f[2], in, out) : nullptr, f[3], caps, gast_fused_mode, stream);
        break;
      }
      case kOpRie: {
        RieArgs a{};
        a.x = static_cast<const float*>(ref(f[0], in, out));
        for (int g = 0; g < kRieMaxGroups; ++g) a.out[g] = ref(f[1 + g], in, out);
        a.current = ref(f[6], in, out);
        a.n = s.io ? n_io : f[7];
        a.t = static_cast<int32_t>(f[8]);
        a.cin = static_cast<int32_t>(f[9]);
        a.groups = static_cast<int32_t>(f[10]);
        for (int g = 0; g < kRieMaxGroups; ++g) {
          a.len[g] = static_cast<int32_t>(f[11 + g]);
          for (int u = 0; u < kRieMaxIdx; ++u) a.idx[g][u] = static_cast<int32_t>(f[16 + g * kRieMaxIdx + u]);
        }
        a.dtype = dtype;
        launch_rie_encode(a, stream);
        break;
      }
      case kOpCopyCols: {
        CopyColsArgs a{};
        a.src = ref(f[0], in, out);
        a.dst = ref(f[1], in, out);
        a.rows = f[2];
        a.cols = static_cast<int32_t>(f[3]);
        a.src_ld = static_cast<int32_t>(f[4]);
        a.dst_ld = static_cast<int32_t>(f[5]);
        a.dst_off = static_cast<int32_t>(f[6]);
        a.dtype = dtype;
        launch_copy_cols(a, stream);
        break;
      }
      case kOpAssemble: {
        AssembleArgs a{};
        a.out = static_cast<float*>(ref(f[0], in, out));
        a.n = s.io ? n_io : f[1];
        a.t = static_cast<int32_t>(f[2]);
        a.k = static_cast<int32_t>(f[3]);
        a.nsrc = static_cast<int32_t>(f[4]);
        for (int q = 0; q < kAsmMaxSrc; ++q) {
          a.src[q] = ref(f[5 + q], in, out);
          a.ch[q] = static_cast<int32_t>(f[13 + q]);
        }
        for (int q = 0; q < kAsmMaxJoints; ++q) {
          a.src_of[q] = static_cast<int32_t>(f[21 + q]);
          a.jj[q] = static_cast<int32_t>(f[53 + q]);
        }
        a.dtype = dtype;
        launch_assemble(a, stream);
        break;
      }
      case kOpStreamIn: {
        StreamInArgs a{};
        a.src = static_cast<const float*>(ref(f[0], in, out));
        a.col = ref(f[1], in, out);
        a.table = static_cast<int32_t*>(ref(f[2], in, out));
        a.n = s.io ? n_io : f[3];
        a.jf = static_cast<int32_t>(f[4]);
        a.dtype = dtype;
        launch_stream_in(a, stream);
        break;
      }
      case kOpRingWrite: {
        RingWriteArgs a{};
        a.col = ref(f[0], in, out);
        a.ring = ref(f[1], in, out);
        a.geo = ring_geom(f, in, out);
        a.dtype = dtype;
        launch_ring_write(a, stream);
        break;
      }
      case kOpRingGather: {
        RingGatherArgs a{};
        a.ring = ref(f[0], in, out);
        a.dst = ref(f[1], in, out);
        a.geo = ring_geom(f, in, out);
        a.k = static_cast<int32_t>(f[8]);
        for (int tau = 0; tau < kRingTaps; ++tau) a.lag[tau] = tau < a.k ? static_cast<int32_t>(f[9 + tau]) : 0;
        a.dtype = dtype;
        launch_ring_gather(a, stream);
        break;
      }
      default:
        GASTRT_CHECK(false, "program: unknown opcode " << s.op);
    }
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
      for (size_t i = p.body_begin; i < p.body_end; ++i) launch_step(p.steps[i], nullptr, nullptr, 0);
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
    for (size_t i = 0; i < p.body_begin; ++i) launch_step(p.steps[i], in, out, n);
    if (p.body_end > p.body_begin) {
      // The first run launches the body directly: lazily loaded kernels (CUDA >= 12.2's default)
      // load outside a capture, which older drivers require, and a faulting kernel reports at
      // its own launch rather than at a graph replay.
      if (use_graph && !p.io_in_body && p.ran_plain) {
        if (p.exec == nullptr || p.exec_gen != gen) capture(p);
        GASTRT_CHECK_CUDA(cudaGraphLaunch(p.exec, stream));
      } else {
        p.ran_plain = true;
        for (size_t i = p.body_begin; i < p.body_end; ++i) launch_step(p.steps[i], in, out, n);
      }
    }
    for (size_t i = p.body_end; i < p.steps.size(); ++i) launch_step(p.steps[i], in, out, n);
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
};

// ================================================================================================
int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  GASTRT_CHECK(device >= 0 && device < device_count(), "device cuda:" << device << " does not exist");
  GASTRT_CHECK_CUDA(cudaGetDeviceProperties(&prop, device));
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(1);
  os << prop.name << " (sm_" << prop.major << prop.minor << ", " << prop.multiProcessorCount << " SMs, "
     << static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0) << " GiB)";
  return os.str();
}

std::string runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return "unknown";
  }
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

uintptr_t device_malloc(int device, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0, "device_malloc: negative size");
  DeviceGuard g(device);
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(std::max<int64_t>(bytes, 1)));
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (e == cudaErrorMemoryAllocation) throw_oom(device, bytes, "an output array");
    GASTRT_CHECK_CUDA(e);
  }
  return reinterpret_cast<uintptr_t>(p);
}

void device_free(int device, uintptr_t ptr) {
  if (ptr == 0) return;
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaFree(reinterpret_cast<void*>(ptr)));
}

void conv_forward(const ConvParams* params, int count, uintptr_t stream) {
  int dev = 0;
  GASTRT_CHECK_CUDA(cudaGetDevice(&dev));
  launch_conv(params, count, query_caps(dev), reinterpret_cast<cudaStream_t>(stream));
}

void memcpy_htod(int device, uintptr_t dst, const void* src, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0 && (bytes == 0 || (dst != 0 && src != nullptr)), "memcpy_htod: bad arguments");
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaMemcpy(reinterpret_cast<void*>(dst), src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
  // A pageable copy may return before its DMA lands; the engines' streams are non-blocking.
  GASTRT_CHECK_CUDA(cudaStreamSynchronize(0));
}

void memcpy_dtoh(int device, void* dst, uintptr_t src, int64_t bytes) {
  GASTRT_CHECK(bytes >= 0 && (bytes == 0 || (dst != nullptr && src != 0)), "memcpy_dtoh: bad arguments");
  DeviceGuard g(device);
  GASTRT_CHECK_CUDA(cudaMemcpy(dst, reinterpret_cast<const void*>(src), static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
}

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
  int64_t i = 0;
  while (i < len) {
    GASTRT_CHECK(i + 2 <= len, "program: truncated record at " << i);
    Step s;
    s.op = code[i];
    const int64_t nf = code[i + 1];
    GASTRT_CHECK(nf >= 0 && i + 2 + nf <= len, "program: truncated record at " << i);
    s.f.assign(code + i + 2, code + i + 2 + nf);
    m.check_step(s, p);
    p.steps.push_back(std::move(s));
    i += 2 + nf;
  }
  GASTRT_CHECK(!p.steps.empty(), "program: empty");
  size_t b = 0;
  while (b < p.steps.size() && p.steps[b].io) ++b;
  size_t e = p.steps.size();
  while (e > b && p.steps[e - 1].io) --e;
  p.body_begin = b;
  p.body_end = e;
  for (size_t k = b; k < e; ++k) p.io_in_body = p.io_in_body || p.steps[k].io;
  // The ring ops run on all max_n rows of the slot table; fewer input rows would leave stale
  // rows (last push's slots) that they would write into live rings.
  for (const Step& st : p.steps) p.exact_n = p.exact_n || st.op == kOpStreamIn;
  DeviceGuard g(m.device);
  m.prepare(p);  // weights uploaded and the workspace allocated now: OOM surfaces here
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
  static const char* names[] = {"?",      "layout",    "conv",       "gast_block", "rie_encode",
                                "concat", "output_assemble", "stream_in", "ring_write", "ring_gather"};
  for (size_t i = 0; i < p.steps.size(); ++i) {
    const Step& s = p.steps[i];
    os << "  " << i << ": " << (s.op >= 1 && s.op <= 9 ? names[s.op] : "?");
    if (s.op == kOpConv) {
      os << " x" << s.f[0];
      for (int64_t q = 0; q < s.f[0]; ++q) {
        const int64_t* g = s.f.data() + 1 + q * kConvFields;
        os << " [M=" << g[5] * g[7] << " K=" << g[12] * g[10] << " N=" << g[11] << " k=" << g[12] << " s=" << g[13]
           << " d=" << g[14] << (g[3] != kRefNone ? " +res" : "") << "]";
      }
    } else if (s.op == kOpGast) {
      const bool fused = gast_fused_ok(static_cast<int>(s.f[5]), static_cast<int>(s.f[7]), static_cast<int>(s.f[8]),
                                       static_cast<int>(s.f[9]), m.dtype, m.caps, m.gast_fused_mode);
      os << " rows=" << s.f[4] * s.f[5] * s.f[6] << " c=" << s.f[7] << (fused ? " fused" : " multi-kernel");
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
  GASTRT_CHECK(n >= 1 && n <= p.max_n, "run: batch " << n << " outside [1, " << p.max_n << "] of this program");
  GASTRT_CHECK(!p.exact_n || n == p.max_n, "run: a stream program runs on all " << p.max_n << " rows, got " << n);
  GASTRT_CHECK(x_count == n * p.in_per_n && y_count == n * p.out_per_n,
               "run: input / output sizes " << x_count << " / " << y_count << " do not match batch " << n);
  GASTRT_CHECK(x != nullptr && y != nullptr, "run: null array");
  DeviceGuard g(m.device);
  m.prepare(p);
  const int64_t xb = x_count * 4, yb = y_count * 4;
  m.ensure_io_device(xb, yb);
  Impl::grow_pinned(m.h_in, m.h_in_bytes, xb, m.device);
  Impl::grow_pinned(m.h_out, m.h_out_bytes, yb, m.device);
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
  GASTRT_CHECK(n >= 1 && n <= p.max_n, "run: batch " << n << " outside [1, " << p.max_n << "] of this program");
  GASTRT_CHECK(!p.exact_n || n == p.max_n, "run: a stream program runs on all " << p.max_n << " rows, got " << n);
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
  } else {
    GASTRT_CHECK(false, "unknown option " << name << " (gast_fused, gast_scratch_budget, arena_limit)");
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
  GASTRT_CHECK(false, "unknown option " << name);
  return 0;
}

}  // namespace cuda
}  // namespace gastrt
