// Memory-bound glue: input / output layout + dtype conversion, concat, RIE output assembly, and
// the streaming rings (per-slot histories of past columns).
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

// ---- streaming: rings of past columns --------------------------------------------------------
// Elements are moved as raw bit patterns (no conversion): 4-byte words when a column row is a
// whole number of them (fp32, or an even channel count in 16 bits), else 2-byte halves.
struct RowRef {
  int32_t slot;  // virtual slot, < 0: padding row
  int64_t cnt;
  bool fresh;
};
__device__ __forceinline__ RowRef row_ref(const int32_t* table, int64_t r) {
  const int32_t* t = table + r * 4;
  RowRef q;
  q.slot = t[0];
  q.cnt = static_cast<int64_t>((static_cast<uint64_t>(static_cast<uint32_t>(t[2])) << 32) |
                               static_cast<uint64_t>(static_cast<uint32_t>(t[1])));
  q.fresh = t[3] != 0;
  return q;
}
__device__ __forceinline__ int64_t ring_pos(int64_t cnt, int64_t lag, int h) {
  const int64_t p = (cnt - lag) % h;
  return p < 0 ? p + h : p;
}

__global__ void stream_in_kernel(const StreamInArgs a) {
  const int64_t ld = static_cast<int64_t>(a.jf) + 4;
  const int64_t total = a.n * ld;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / ld;
    const int i = static_cast<int>(e - r * ld);
    if (i < a.jf)
      store_from_f32(a.col, r * a.jf + i, a.dtype, a.src[e]);
    else  // the table words: bits, not numbers
      a.table[r * 4 + (i - a.jf)] = reinterpret_cast<const int32_t*>(a.src)[e];
  }
}

template <typename W>
__global__ void ring_write_kernel(const RingWriteArgs a, int words) {
  // one thread per (row, g, word) of the column; a fresh row writes its word h times
  const int64_t total = a.geo.n * a.geo.g * words;
  const W* col = static_cast<const W*>(a.col);
  W* ring = static_cast<W*>(a.ring);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t rg = e / words;
    const int w = static_cast<int>(e - rg * words);
    const int64_t r = rg / a.geo.g;
    const int gi = static_cast<int>(rg - r * a.geo.g);
    const RowRef q = row_ref(a.geo.table, r);
    if (q.slot < 0 || q.slot >= a.geo.nv) continue;
    const W v = col[e];
    W* base = ring + ((static_cast<int64_t>(q.slot) * a.geo.g + gi) * a.geo.h) * words + w;
    if (q.fresh) {
      for (int p = 0; p < a.geo.h; ++p) base[static_cast<int64_t>(p) * words] = v;
    } else {
      base[ring_pos(q.cnt, 0, a.geo.h) * words] = v;
    }
  }
}

template <typename W>
__global__ void ring_gather_kernel(const RingGatherArgs a, int words) {
  // one thread per destination word: dst [n, g, k, words]
  const int64_t total = a.geo.n * a.geo.g * a.k * words;
  const W* ring = static_cast<const W*>(a.ring);
  W* dst = static_cast<W*>(a.dst);
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = e / words;
    const int w = static_cast<int>(e - r * words);
    const int tau = static_cast<int>(r % a.k);
    r /= a.k;
    const int gi = static_cast<int>(r % a.geo.g);
    r /= a.geo.g;
    const RowRef q = row_ref(a.geo.table, r);
    if (q.slot < 0 || q.slot >= a.geo.nv) {
      dst[e] = W(0);
      continue;
    }
    const int64_t p = ring_pos(q.cnt, a.lag[tau], a.geo.h);
    dst[e] = ring[((static_cast<int64_t>(q.slot) * a.geo.g + gi) * a.geo.h + p) * words + w];
  }
}

}  // namespace

void launch_stream_in(const StreamInArgs& a, cudaStream_t stream) {
  GASTRT_CHECK(a.src != nullptr && a.col != nullptr && a.table != nullptr && a.n >= 1 && a.jf >= 1,
               "stream_in: bad arguments");
  stream_in_kernel<<<grid_for(a.n * (a.jf + 4)), kThreads, 0, stream>>>(a);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

namespace {
void check_ring(const RingGeom& q, const void* p0, const void* p1, const char* what) {
  GASTRT_CHECK(p0 != nullptr && p1 != nullptr && q.table != nullptr && q.n >= 1 && q.nv >= 1 && q.g >= 1 &&
                   q.c >= 1 && q.h >= 1,
               what << ": bad arguments");
}
// Column rows move as 4-byte words when they are a whole number of them, else as 2-byte halves.
int ring_word_bytes(const RingGeom& q, DType dt) { return (q.c * dtype_size(dt)) % 4 == 0 ? 4 : 2; }
}  // namespace

void launch_ring_write(const RingWriteArgs& a, cudaStream_t stream) {
  check_ring(a.geo, a.col, a.ring, "ring_write");
  const int wb = ring_word_bytes(a.geo, a.dtype);
  const int words = a.geo.c * dtype_size(a.dtype) / wb;
  const unsigned grid = grid_for(a.geo.n * a.geo.g * words);
  if (wb == 4)
    ring_write_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(a, words);
  else
    ring_write_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(a, words);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

void launch_ring_gather(const RingGatherArgs& a, cudaStream_t stream) {
  check_ring(a.geo, a.ring, a.dst, "ring_gather");
  GASTRT_CHECK(a.k >= 1 && a.k <= kRingMaxTaps, "ring_gather: " << a.k << " taps (at most " << kRingMaxTaps << ")");
  for (int tau = 0; tau < a.k; ++tau)
    GASTRT_CHECK(a.lag[tau] >= 0 && a.lag[tau] < a.geo.h,
                 "ring_gather: lag " << a.lag[tau] << " outside [0, " << a.geo.h << ")");
  const int wb = ring_word_bytes(a.geo, a.dtype);
  const int words = a.geo.c * dtype_size(a.dtype) / wb;
  const unsigned grid = grid_for(a.geo.n * a.geo.g * a.k * words);
  if (wb == 4)
    ring_gather_kernel<uint32_t><<<grid, kThreads, 0, stream>>>(a, words);
  else
    ring_gather_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(a, words);
  GASTRT_CHECK_CUDA(cudaGetLastError());
}

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
