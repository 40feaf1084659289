// One decoded program step -> its kernels (kernels.h launchers), reading the record's named
// fields. Buffer references resolve against the arena and the call's user arrays; weight ids
// against the uploaded weight buffer.
#include "common/check.h"
#include "cuda/executor.h"

namespace gastrt {
namespace cuda {
namespace {

struct Refs {
  const LaunchContext& c;

  void* buf(int64_t r) const {
    if (r >= 0) return c.arena + r;
    if (r == kRefInput) return c.in;
    if (r == kRefOutput) return c.out;
    return nullptr;
  }
  const void* weight(int64_t id) const {
    if (id < 0) return nullptr;
    return c.weights + (*c.wrecs)[static_cast<size_t>(id)].offset;
  }
  const float* wf32(int64_t id) const { return static_cast<const float*>(weight(id)); }
  int64_t rows(const Step& s, int64_t n) const { return s.io ? c.n_io : n; }  // io steps: the call's rows
};

int32_t i32(int64_t v) { return static_cast<int32_t>(v); }

void launch(const Refs& r, const Step& s, const LayoutRecord& q) {
  LayoutArgs a{};
  a.src = r.buf(q.src);
  a.dst = r.buf(q.dst);
  a.n = r.rows(s, q.n);
  a.a = i32(q.a);
  a.b = i32(q.b);
  a.f = i32(q.f);
  a.swap = i32(q.swap);
  a.src_dtype = to_dtype(q.src_dtype);
  a.dst_dtype = to_dtype(q.dst_dtype);
  launch_layout(a, r.c.stream);
}

// Problems whose tactic is cuBLASLt run through their plan; the rest as one grouped launch.
void launch(const Refs& r, const Step& s, const std::vector<ConvRecord>& convs) {
  GemmDesc d[kMaxConvGroup];
  GASTRT_CHECK(convs.size() <= static_cast<size_t>(kMaxConvGroup), "program: conv group too large");
  int nd = 0;
  for (size_t i = 0; i < convs.size(); ++i) {
    const ConvRecord& g = convs[i];
    if (!s.lt.empty() && s.lt[i]) {
      GASTRT_CHECK(r.c.lt != nullptr, "program: a cuBLASLt tactic without a cuBLASLt context");
      r.c.lt->launch(*s.lt[i], r.buf(g.x), r.weight(g.w), r.buf(g.y), r.c.stream);
      continue;
    }
    GemmDesc& q = d[nd++];
    q = GemmDesc{};
    q.x = r.buf(g.x);
    q.w = r.weight(g.w);
    q.b = r.wf32(g.b);
    q.res = r.buf(g.res);
    q.y = r.buf(g.y);
    q.n_seq = g.n_seq;
    q.t_in = i32(g.t_in);
    q.t_out = i32(g.t_out);
    q.t_res = i32(g.t_res);
    q.t_ypitch = i32(g.t_ypitch);
    q.ci = i32(g.ci);
    q.co = i32(g.co);
    q.k = i32(g.k);
    q.stride = i32(g.stride);
    q.dilation = i32(g.dilation);
    q.res_offset = i32(g.res_offset);
    q.res_stride = i32(g.res_stride);
    q.ldy = i32(g.ldy);
    q.act = i32(g.act);
  }
  if (nd > 0) launch_gemm(d, nd, r.c.dtype, r.c.caps, r.c.stream);
}

void launch(const Refs& r, const GastRecord& q) {
  GastArgs a{};
  a.x = r.buf(q.x);
  a.y = r.buf(q.y);
  a.n = q.n;
  a.j = i32(q.j);
  a.t = i32(q.t);
  a.c = i32(q.c);
  a.heads = i32(q.heads);
  a.gc = i32(q.gc);
  a.w1 = r.weight(q.w1);
  a.b1 = r.wf32(q.b1);
  a.loc_diag = r.wf32(q.loc_diag);
  a.loc_off = r.wf32(q.loc_off);
  a.loc_b = r.wf32(q.loc_b);
  a.loc_cat_w = r.weight(q.loc_cat_w);
  a.loc_cat_b = r.wf32(q.loc_cat_b);
  a.glb_ck = r.wf32(q.glb_ck);
  a.glb_cat_w = r.weight(q.glb_cat_w);
  a.glb_cat_b = r.wf32(q.glb_cat_b);
  a.cat_w = r.weight(q.cat_w);
  a.cat_b = r.wf32(q.cat_b);
  a.dtype = r.c.dtype;
  launch_gast_block(a, q.scratch_bytes > 0 ? r.buf(q.scratch) : nullptr, q.scratch_bytes, r.c.caps,
                    r.c.gast_fused_mode, r.c.stream);
}

void launch(const Refs& r, const Step& s, const RieRecord& q) {
  RieArgs a{};
  a.x = static_cast<const float*>(r.buf(q.x));
  for (int g = 0; g < kRieMaxGroups; ++g) a.out[g] = r.buf(q.out[g]);
  a.current = r.buf(q.current);
  a.n = r.rows(s, q.n);
  a.t = i32(q.t);
  a.cin = i32(q.cin);
  a.groups = i32(q.groups);
  for (int g = 0; g < kRieMaxGroups; ++g) {
    a.len[g] = i32(q.len[g]);
    for (int u = 0; u < kRieMaxIdx; ++u) a.idx[g][u] = i32(q.idx[g * kRieMaxIdx + u]);
  }
  a.dtype = r.c.dtype;
  launch_rie_encode(a, r.c.stream);
}

void launch(const Refs& r, const CopyColsRecord& q) {
  CopyColsArgs a{};
  a.src = r.buf(q.src);
  a.dst = r.buf(q.dst);
  a.rows = q.rows;
  a.cols = i32(q.cols);
  a.src_ld = i32(q.src_ld);
  a.dst_ld = i32(q.dst_ld);
  a.dst_off = i32(q.dst_off);
  a.dtype = r.c.dtype;
  launch_copy_cols(a, r.c.stream);
}

void launch(const Refs& r, const Step& s, const AssembleRecord& q) {
  AssembleArgs a{};
  a.out = static_cast<float*>(r.buf(q.out));
  a.n = r.rows(s, q.n);
  a.t = i32(q.t);
  a.k = i32(q.k);
  a.nsrc = i32(q.nsrc);
  for (int i = 0; i < kAsmMaxSrc; ++i) {
    a.src[i] = r.buf(q.src[i]);
    a.ch[i] = i32(q.ch[i]);
  }
  for (int i = 0; i < kAsmMaxJoints; ++i) {
    a.src_of[i] = i32(q.src_of[i]);
    a.jj[i] = i32(q.jj[i]);
  }
  a.dtype = r.c.dtype;
  launch_assemble(a, r.c.stream);
}

void launch(const Refs& r, const Step& s, const StreamInRecord& q) {
  StreamInArgs a{};
  a.src = static_cast<const float*>(r.buf(q.src));
  a.col = r.buf(q.col);
  a.table = static_cast<int32_t*>(r.buf(q.table));
  a.n = r.rows(s, q.n);
  a.jf = i32(q.jf);
  a.dtype = r.c.dtype;
  launch_stream_in(a, r.c.stream);
}

// The rows of a push and the ring they address (ring_write and ring_gather share these fields).
template <class R>
RingGeom ring_geom(const Refs& r, const R& q) {
  RingGeom g{};
  g.table = static_cast<const int32_t*>(r.buf(q.table));
  g.n = q.n;
  g.nv = q.nv;
  g.g = i32(q.g);
  g.c = i32(q.c);
  g.h = i32(q.h);
  return g;
}

void launch(const Refs& r, const RingWriteRecord& q) {
  RingWriteArgs a{};
  a.col = r.buf(q.col);
  a.ring = r.buf(q.ring);
  a.geo = ring_geom(r, q);
  a.dtype = r.c.dtype;
  launch_ring_write(a, r.c.stream);
}

void launch(const Refs& r, const RingGatherRecord& q) {
  RingGatherArgs a{};
  a.ring = r.buf(q.ring);
  a.dst = r.buf(q.dst);
  a.geo = ring_geom(r, q);
  a.k = i32(q.k);
  for (int tau = 0; tau < kRingMaxTaps; ++tau) a.lag[tau] = tau < a.k ? i32(q.lag[tau]) : 0;
  a.dtype = r.c.dtype;
  launch_ring_gather(a, r.c.stream);
}

}  // namespace

void launch_step(const Step& s, const LaunchContext& c) {
  const Refs r{c};
  switch (s.op) {
    case kOpLayout: launch(r, s, std::get<LayoutRecord>(s.rec)); break;
    case kOpConv: launch(r, s, std::get<std::vector<ConvRecord>>(s.rec)); break;
    case kOpGast: launch(r, std::get<GastRecord>(s.rec)); break;
    case kOpRie: launch(r, s, std::get<RieRecord>(s.rec)); break;
    case kOpCopyCols: launch(r, std::get<CopyColsRecord>(s.rec)); break;
    case kOpAssemble: launch(r, s, std::get<AssembleRecord>(s.rec)); break;
    case kOpStreamIn: launch(r, s, std::get<StreamInRecord>(s.rec)); break;
    case kOpRingWrite: launch(r, std::get<RingWriteRecord>(s.rec)); break;
    case kOpRingGather: launch(r, std::get<RingGatherRecord>(s.rec)); break;
    default: GASTRT_CHECK(false, "program: unknown opcode " << s.op);
  }
}

}  // namespace cuda
}  // namespace gastrt
