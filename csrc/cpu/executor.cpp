// The native CPU executor (see executor.h): schedule (shapes, buffer aliasing, arena offsets by
// liveness) per input shape, then a straight walk over the ops calling the kernels.
#include "gastrt/executor.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/arena.h"
#include "common/check.h"
#include "common/thread_pool.h"

namespace gastrt {
namespace cpu {

namespace {
inline size_t pad16(size_t n) { return (n + 15) & ~size_t(15); }
enum Storage : int32_t { kArena = 0, kInput = 1, kOutput = 2 };
constexpr size_t kMaxCachedShapes = 8;
}  // namespace

struct Buf {
  int64_t d[4] = {0, 0, 0, 0};
  int32_t root = -1;        // alias class (view ops share memory with their input)
  int64_t floats() const { return d[0] * d[1] * d[2] * d[3]; }
};

struct Schedule {
  int64_t n = 0, t = 0;
  Mode mode = Mode::Window;
  std::vector<Buf> bufs;
  std::vector<int32_t> root_storage;  // per root id
  std::vector<size_t> root_offset;    // floats, in the arena
  std::vector<char> op_noop;          // view ops resolved as aliases
  std::vector<char> op_wino;          // convs run by Winograd (sequence mode): F(4,3), or F(2,3) on bf16_dot
  size_t arena_floats = 0, scratch_floats = 0;
  size_t scratch_floats_one = 0;      // the scratch a one-thread team needs (budget_bytes)
  std::vector<int64_t> out_shape;

  size_t total_floats() const { return arena_floats + scratch_floats; }
};

struct Workspace {
  float* mem = nullptr;
  size_t floats = 0;
  explicit Workspace(size_t n) : floats(n) {
    const size_t bytes = std::max<size_t>(64, pad16(n) * sizeof(float));
    try {
      mem = static_cast<float*>(big_alloc(bytes));  // huge pages: activations are streamed too
    } catch (const std::bad_alloc&) {
      throw OutOfMemory("gastrt: out of memory: could not allocate a " + std::to_string(bytes) +
                        "-byte workspace");
    }
  }
  ~Workspace() { big_free(mem); }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
};

struct Engine::CacheEntry {
  std::shared_ptr<const Schedule> sched;
  std::vector<std::unique_ptr<Workspace>> free;
  uint64_t last_used = 0;
};

namespace {

int64_t conv_out_frames(const OpSpec& op, int64_t t_in, Mode mode) {
  const int64_t stride = mode == Mode::Window ? op.k : 1;
  const int64_t dil = mode == Mode::Window ? 1 : op.dilation;
  const int64_t span = int64_t(op.k - 1) * dil + 1;
  GASTRT_CHECK(t_in >= span, op.name << ": " << t_in << " frames in, the conv needs at least "
                                     << span);
  return (t_in - span) / stride + 1;
}

// The kernel parameters of a conv op for input / output / residual shapes (pointers unset).
ConvParams conv_params(const OpSpec& op, const int64_t* din, const int64_t* dout,
                       const int64_t* dres, Mode mode) {
  const bool win = mode == Mode::Window;
  ConvParams p{};
  p.n_seq = din[0] * din[1];
  p.t_in = int32_t(din[2]);
  p.t_out = int32_t(dout[2]);
  p.t_res = dres ? int32_t(dres[2]) : 0;
  p.ci = op.ci;
  p.co = op.co;
  p.k = op.k;
  p.stride = win ? op.k : 1;
  p.dilation = win ? 1 : op.dilation;
  p.res_offset = win ? op.res_win_offset : op.res_seq_offset;
  p.res_stride = win ? op.res_win_stride : 1;
  p.act = op.act;
  p.dtype = DType::F32;
  return p;
}

// Sequence-mode width-3 convs with enough channels run by Winograd: F(4,3) in fp32, or, on an
// engine whose convs run on a bf16 dot-product kernel (bf16_dot), F(2,3) on that kernel
// (conv_winograd_bf16.cpp: fp32 F(4,3) is slower there than the direct bf16 products, and F(4,3)
// in bf16 loses too much accuracy). GASTRT_CONV_WINOGRAD=0 runs them direct.
bool wino_candidate(const OpSpec& op) {
  return op.kind == OpKind::Conv && op.k == 3 && conv_winograd_pays(op.ci, op.co);
}

size_t wino_scratch_floats(const ConvParams& p, int team_size, bool bf16_dot) {
  return bf16_dot ? conv_winograd_bf16_scratch_floats(p, team_size)
                  : conv_winograd_scratch_floats(p, team_size);
}

// Shapes, aliasing and arena offsets for one input shape.
std::shared_ptr<Schedule> build_schedule(const PlanSpec& plan, int64_t n, int64_t t, Mode mode,
                                         int threads, bool bf16_dot) {
  auto s = std::make_shared<Schedule>();
  s->n = n;
  s->t = t;
  s->mode = mode;
  const int nb = plan.num_buffers;
  const int nops = int(plan.ops.size());
  GASTRT_CHECK(nops > 0, "empty plan");
  s->bufs.assign(size_t(nb), Buf{});
  s->op_noop.assign(size_t(nops), 0);
  std::vector<char> known(size_t(nb), 0);
  auto in_buf = [&](const OpSpec& op, size_t i) -> Buf& {
    GASTRT_CHECK(i < op.inputs.size(), op.name << ": missing input");
    const int32_t id = op.inputs[i];
    GASTRT_CHECK(id >= 0 && id < nb && known[size_t(id)], op.name << ": input used before it is produced");
    return s->bufs[size_t(id)];
  };
  auto set_out = [&](const OpSpec& op, size_t i, int64_t a, int64_t b, int64_t c, int64_t d) {
    GASTRT_CHECK(i < op.outputs.size(), op.name << ": missing output");
    Buf& o = s->bufs[size_t(op.outputs[i])];
    o.d[0] = a, o.d[1] = b, o.d[2] = c, o.d[3] = d;
    known[size_t(op.outputs[i])] = 1;
  };
  s->bufs[0].d[0] = n, s->bufs[0].d[1] = t, s->bufs[0].d[2] = plan.in_joints,
  s->bufs[0].d[3] = plan.in_features;
  known[0] = 1;

  // 1. shapes (plan.infer_shapes)
  for (const OpSpec& op : plan.ops) {
    switch (op.kind) {
      case OpKind::InputJointMajor: {
        const Buf& x = in_buf(op, 0);
        set_out(op, 0, x.d[0], x.d[2], x.d[1], x.d[3]);
        break;
      }
      case OpKind::InputFlat: {
        const Buf& x = in_buf(op, 0);
        set_out(op, 0, x.d[0], 1, x.d[1], x.d[2] * x.d[3]);
        break;
      }
      case OpKind::Conv: {
        const Buf& x = in_buf(op, 0);
        GASTRT_CHECK(x.d[3] == op.ci, op.name << ": input has " << x.d[3] << " channels, the conv takes "
                                              << op.ci);
        const int64_t to = conv_out_frames(op, x.d[2], mode);
        if (op.inputs.size() > 1) {
          const Buf& r = in_buf(op, 1);
          const bool win = mode == Mode::Window;
          const int64_t ro = win ? op.res_win_offset : op.res_seq_offset;
          const int64_t rs = win ? op.res_win_stride : 1;
          GASTRT_CHECK(r.d[0] == x.d[0] && r.d[1] == x.d[1] && r.d[3] == op.co &&
                           ro >= 0 && ro + (to - 1) * rs < r.d[2],
                       op.name << ": residual of shape [" << r.d[0] << ", " << r.d[1] << ", "
                               << r.d[2] << ", " << r.d[3] << "] does not fit the output");
        }
        set_out(op, 0, x.d[0], x.d[1], to, op.co);
        break;
      }
      case OpKind::GastBlock: {
        const Buf& x = in_buf(op, 0);
        GASTRT_CHECK(x.d[1] == op.gast->j && x.d[3] == op.gast->c,
                     op.name << ": gast_block for " << op.gast->j << " joints x " << op.gast->c
                             << " channels got [" << x.d[0] << ", " << x.d[1] << ", " << x.d[2]
                             << ", " << x.d[3] << "]");
        set_out(op, 0, x.d[0], x.d[1], x.d[2], 2 * x.d[3]);
        break;
      }
      case OpKind::RieEncode: {
        GASTRT_CHECK(mode == Mode::Window, "RIE plans run in window mode only");
        const Buf& x = in_buf(op, 0);
        GASTRT_CHECK(op.groups.size() <= 5 && op.outputs.size() == op.groups.size() + 1,
                     op.name << ": rie_encode supports up to 5 groups");
        for (size_t g = 0; g < op.groups.size(); ++g)
          set_out(op, g, x.d[0], 1, x.d[1], 3 * int64_t(op.groups[g].size()));
        set_out(op, op.groups.size(), x.d[0], 1, 1, x.d[2] * x.d[3]);
        break;
      }
      case OpKind::Concat: {
        const Buf& x0 = in_buf(op, 0);
        int64_t c = 0;
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          const Buf& xi = in_buf(op, i);
          GASTRT_CHECK(xi.d[0] == x0.d[0] && xi.d[1] == x0.d[1] && xi.d[2] == x0.d[2],
                       op.name << ": concat inputs differ in shape");
          c += xi.d[3];
        }
        set_out(op, 0, x0.d[0], x0.d[1], x0.d[2], c);
        break;
      }
      case OpKind::OutputJointMajor: {
        const Buf& x = in_buf(op, 0);
        set_out(op, 0, x.d[0], x.d[2], x.d[1], x.d[3]);
        break;
      }
      case OpKind::OutputFlat: {
        const Buf& x = in_buf(op, 0);
        GASTRT_CHECK(x.d[1] == 1 && x.d[3] % 3 == 0, op.name << ": output_flat needs [N, 1, T, 3k]");
        set_out(op, 0, x.d[0], x.d[2], x.d[3] / 3, 3);
        break;
      }
      case OpKind::OutputAssemble: {
        const Buf& x0 = in_buf(op, 0);
        for (size_t i = 0; i < op.inputs.size(); ++i) {
          const Buf& xi = in_buf(op, i);
          GASTRT_CHECK(xi.d[0] == x0.d[0] && xi.d[1] == 1 && xi.d[2] == x0.d[2],
                       op.name << ": output_assemble inputs must be [N, 1, T, 3k]");
        }
        for (const auto& sj : op.sources) {
          GASTRT_CHECK(sj.first >= 0 && size_t(sj.first) < op.inputs.size() && sj.second >= 0 &&
                           3 * int64_t(sj.second) + 3 <= in_buf(op, size_t(sj.first)).d[3],
                       op.name << ": output_assemble source out of range");
        }
        set_out(op, 0, x0.d[0], x0.d[2], int64_t(op.sources.size()), 3);
        break;
      }
    }
  }
  const OpSpec& last = plan.ops.back();
  GASTRT_CHECK(last.kind == OpKind::OutputJointMajor || last.kind == OpKind::OutputFlat ||
                   last.kind == OpKind::OutputAssemble,
               "the plan must end with an output op");
  const int32_t out_id = last.outputs[0];
  const Buf& ob = s->bufs[size_t(out_id)];
  s->out_shape = {ob.d[0], ob.d[1], ob.d[2], ob.d[3]};

  // 2. readers per buffer, aliasing of the view ops
  std::vector<int> readers(size_t(nb), 0);
  for (const OpSpec& op : plan.ops)
    for (int32_t id : op.inputs) readers[size_t(id)]++;
  for (int i = 0; i < nb; ++i) s->bufs[size_t(i)].root = i;
  std::vector<int32_t> storage(size_t(nb), kArena);
  storage[0] = kInput;
  for (int oi = 0; oi < nops; ++oi) {
    const OpSpec& op = plan.ops[size_t(oi)];
    if (op.kind == OpKind::InputFlat) {  // a reshape of whatever it reads: alias
      s->bufs[size_t(op.outputs[0])].root = s->bufs[size_t(op.inputs[0])].root;
      s->op_noop[size_t(oi)] = 1;
    } else if (op.kind == OpKind::OutputFlat && oi == nops - 1) {
      // [N, 1, T, 3J] and [N, T, J, 3] are the same bytes: let the producer write straight
      // into the caller's output array (when nobody else reads its buffer).
      const int32_t in = op.inputs[0];
      const int32_t r = s->bufs[size_t(in)].root;
      int members = 0;
      for (int i = 0; i < nb; ++i) members += s->bufs[size_t(i)].root == r;
      if (storage[size_t(r)] == kArena && readers[size_t(in)] == 1 && members == 1) {
        storage[size_t(r)] = kOutput;
        s->bufs[size_t(op.outputs[0])].root = r;
        s->op_noop[size_t(oi)] = 1;
      }
    }
  }
  const int32_t out_root = s->bufs[size_t(out_id)].root;
  storage[size_t(out_root)] = kOutput;

  // 3. liveness per root (index of the last op reading it) and arena offsets: first fit
  // (common/arena.h), allocating an op's outputs before freeing its inputs.
  std::vector<int> last_use(size_t(nb), -1), def(size_t(nb), -1);
  for (int oi = 0; oi < nops; ++oi) {
    const OpSpec& op = plan.ops[size_t(oi)];
    for (int32_t id : op.inputs) last_use[size_t(s->bufs[size_t(id)].root)] = oi;
    for (int32_t id : op.outputs) {
      const int32_t r = s->bufs[size_t(id)].root;
      if (def[size_t(r)] < 0) def[size_t(r)] = oi;
    }
  }
  s->root_storage = storage;
  s->root_offset.assign(size_t(nb), 0);
  std::vector<size_t> root_size(size_t(nb), 0);
  for (int i = 0; i < nb; ++i) {
    const Buf& b = s->bufs[size_t(i)];
    root_size[size_t(b.root)] = std::max(root_size[size_t(b.root)], pad16(size_t(b.floats())));
  }
  ArenaAllocator arena(16);  // in floats: 64-byte aligned buffers
  std::vector<char> placed(size_t(nb), 0);
  for (int oi = 0; oi < nops; ++oi) {
    const OpSpec& op = plan.ops[size_t(oi)];
    for (int32_t id : op.outputs) {
      const int32_t r = s->bufs[size_t(id)].root;
      if (def[size_t(r)] != oi || storage[size_t(r)] != kArena || r != id) continue;
      s->root_offset[size_t(r)] = size_t(arena.alloc(int64_t(root_size[size_t(r)])));
      placed[size_t(r)] = 1;
    }
    for (int r = 0; r < nb; ++r) {
      if (!placed[size_t(r)]) continue;
      const int end = std::max(last_use[size_t(r)], def[size_t(r)]);
      if (end == oi) arena.release(int64_t(s->root_offset[size_t(r)]), int64_t(root_size[size_t(r)]));
    }
  }
  s->arena_floats = size_t(arena.top());

  // 4. kernel scratch: the largest need of a gast_block or a Winograd conv, for the team
  // sizes a call can get (the engine's thread count, or 1 when the pool is busy).
  size_t scratch = 0, scratch_one = 0;
  s->op_wino.assign(size_t(nops), 0);
  for (int oi = 0; oi < nops; ++oi) {
    const OpSpec& op = plan.ops[size_t(oi)];
    const Buf& x = s->bufs[size_t(op.inputs[0])];
    if (op.kind == OpKind::GastBlock) {
      for (int ts : {1, threads})
        scratch = std::max(scratch, gast_block_scratch_floats(*op.gast, x.d[0], int32_t(x.d[2]), ts));
      scratch_one = std::max(scratch_one, gast_block_scratch_floats(*op.gast, x.d[0], int32_t(x.d[2]), 1));
    } else if (mode == Mode::Sequence && wino_candidate(op)) {
      const ConvParams p = conv_params(op, x.d, s->bufs[size_t(op.outputs[0])].d, nullptr, mode);
      if (!(bf16_dot ? conv_winograd_bf16_shape_ok(p) : conv_winograd_shape_ok(p)) || p.n_seq == 0)
        continue;
      s->op_wino[size_t(oi)] = 1;
      for (int ts : {1, threads}) scratch = std::max(scratch, wino_scratch_floats(p, ts, bf16_dot));
      scratch_one = std::max(scratch_one, wino_scratch_floats(p, 1, bf16_dot));
    }
  }
  s->scratch_floats = pad16(scratch);
  s->scratch_floats_one = pad16(scratch_one);
  return s;
}

}  // namespace

// The thread count is capped like Team's (its scratch is sized for the team a call gets).
Engine::Engine(PlanSpec plan, int threads, DType weight_dtype)
    : plan_(std::move(plan)), threads_(std::clamp(threads, 1, Team::kMaxThreads)),
      panel_dtype_(weight_dtype == DType::F32 || !panels_16bit_enabled() ? DType::F32
                                                                          : weight_dtype),
      bf16_dot_(weight_dtype == DType::BF16 ? bf16_dot_kernel() : Bf16DotKernel::None) {
  GASTRT_CHECK(!plan_.ops.empty(), "empty plan");
  GASTRT_CHECK(plan_.in_joints > 0 && plan_.in_features > 0, "plan without input joints");
  if (weight_dtype != DType::F32)
    for (const OpSpec& op : plan_.ops)
      GASTRT_CHECK(op.kind != OpKind::Conv || weights_exact_in(op.w.data(), op.w.size(), weight_dtype),
                   "op " << op.name << ": weights are not " << (weight_dtype == DType::F16 ? "fp16" : "bf16")
                         << " values, as the engine's precision says they are");
  if (bf16_dot_ != Bf16DotKernel::None)  // the GAST blocks' GEMMs read bf16 pairs of these
    for (const OpSpec& op : plan_.ops)
      if (op.kind == OpKind::GastBlock)
        for (const std::vector<float>* v : {&op.gast->w1, &op.gast->loc_cat_w, &op.gast->glb_cat_w, &op.gast->cat_w})
          GASTRT_CHECK(weights_exact_in(v->data(), v->size(), DType::BF16),
                       "op " << op.name << ": GAST block weights are not bf16 values, as the engine's "
                                           "precision says they are");
  wino_.resize(plan_.ops.size());
  panels_.resize(plan_.ops.size());
  for (size_t i = 0; i < plan_.ops.size(); ++i)
    if ((plan_.ops[i].kind == OpKind::Conv && (small_panels_enabled() || bf16_dot_ != Bf16DotKernel::None)) ||
        (plan_.ops[i].kind == OpKind::GastBlock && bf16_dot_ != Bf16DotKernel::None))
      panels_[i] = std::make_unique<PanelWeights>();
  if (plan_.has_sequence)
    for (size_t i = 0; i < plan_.ops.size(); ++i)
      if (wino_candidate(plan_.ops[i])) wino_[i] = std::make_unique<WinoWeights>();
}

Engine::~Engine() = default;

std::shared_ptr<const Schedule> Engine::schedule(int64_t n, int64_t t, Mode mode) {
  GASTRT_CHECK(n >= 1 && t >= 1, "input must have at least one window and one frame");
  GASTRT_CHECK(mode == Mode::Window ? plan_.has_window : plan_.has_sequence,
               "plan " << plan_.name << " has no " << (mode == Mode::Window ? "window" : "sequence")
                       << " mode");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& e : cache_) {
      if (e->sched->n == n && e->sched->t == t && e->sched->mode == mode) {
        e->last_used = ++tick_;
        return e->sched;
      }
    }
  }
  std::shared_ptr<const Schedule> s = build_schedule(plan_, n, t, mode, threads_, bf16_dot_ != Bf16DotKernel::None);
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : cache_)  // another thread may have built it meanwhile
    if (e->sched->n == n && e->sched->t == t && e->sched->mode == mode) return e->sched;
  auto e = std::make_unique<CacheEntry>();
  e->sched = s;
  e->last_used = ++tick_;
  cache_.push_back(std::move(e));
  if (cache_.size() > kMaxCachedShapes) {
    auto lru = std::min_element(cache_.begin(), cache_.end(),
                                [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
    cache_.erase(lru);  // its workspaces are freed; ones checked out are freed at check-in
  }
  return s;
}

std::unique_ptr<Workspace> Engine::checkout(const std::shared_ptr<const Schedule>& s) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& e : cache_) {
      if (e->sched == s && !e->free.empty()) {
        auto ws = std::move(e->free.back());
        e->free.pop_back();
        return ws;
      }
    }
  }
  return std::make_unique<Workspace>(s->total_floats());
}

void Engine::checkin(const std::shared_ptr<const Schedule>& s, std::unique_ptr<Workspace> ws) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : cache_) {
    if (e->sched == s) {
      e->free.push_back(std::move(ws));
      return;
    }
  }
}

std::vector<int64_t> Engine::output_shape(int64_t n, int64_t t, Mode mode) {
  return schedule(n, t, mode)->out_shape;
}

std::vector<std::vector<int64_t>> Engine::buffer_shapes(int64_t n, int64_t t, Mode mode) {
  std::shared_ptr<const Schedule> s = schedule(n, t, mode);
  std::vector<std::vector<int64_t>> r;
  for (const Buf& b : s->bufs) r.emplace_back(b.d, b.d + 4);
  return r;
}

size_t Engine::workspace_bytes(int64_t n, int64_t t, Mode mode) {
  return schedule(n, t, mode)->total_floats() * sizeof(float);
}

size_t Engine::budget_bytes(int64_t n, int64_t t, Mode mode) {
  const auto s = schedule(n, t, mode);
  return (s->arena_floats + s->scratch_floats_one) * sizeof(float);
}

std::pair<size_t, size_t> Engine::cache_stats() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t nws = 0;
  for (auto& e : cache_) nws += e->free.size();
  return {cache_.size(), nws};
}

void Engine::clear_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  cache_.clear();
}

void Engine::run(const float* x, int64_t n, int64_t t, Mode mode, float* out,
                 std::vector<double>* op_seconds) {
  std::shared_ptr<const Schedule> s = schedule(n, t, mode);
  std::unique_ptr<Workspace> ws = checkout(s);
  float* arena = ws->mem;
  float* scratch = ws->mem + s->arena_floats;
  auto ptr = [&](int32_t id) -> float* {
    const int32_t r = s->bufs[size_t(id)].root;
    switch (s->root_storage[size_t(r)]) {
      case kInput: return const_cast<float*>(x);  // read-only: no op writes a kInput root
      case kOutput: return out;
      default: return arena + s->root_offset[size_t(r)];
    }
  };
  auto dims = [&](int32_t id) -> const int64_t* { return s->bufs[size_t(id)].d; };

  Team team(threads_);
  // Pure data movement smaller than this runs on the caller alone (waking workers for a few
  // kilobytes of copying costs more than the copy).
  constexpr int64_t kSerialFloats = 64 * 1024;
  Team solo(1);
  auto team_for = [&](int64_t floats) -> Team& { return floats < kSerialFloats ? solo : team; };
  const int nops = int(plan_.ops.size());
  if (op_seconds) op_seconds->assign(size_t(nops), 0.0);
  for (int oi = 0; oi < nops; ++oi) {
    if (s->op_noop[size_t(oi)]) continue;
    const OpSpec& op = plan_.ops[size_t(oi)];
    const auto t_op = std::chrono::steady_clock::now();
    switch (op.kind) {
      case OpKind::InputJointMajor:
      case OpKind::OutputJointMajor: {
        // [A, B, C, F] -> [A, C, B, F]
        const int64_t* d = dims(op.inputs[0]);
        const float* src = ptr(op.inputs[0]);
        float* dst = ptr(op.outputs[0]);
        const int64_t A = d[0], B = d[1], C = d[2], F = d[3];
        team_for(A * B * C * F).parallel_for(A * B, [&](int64_t ab, int) {
          const int64_t a = ab / B, b = ab % B;
          for (int64_t c = 0; c < C; ++c)
            std::memcpy(dst + ((a * C + c) * B + b) * F, src + ((a * B + b) * C + c) * F,
                        sizeof(float) * F);
        });
        break;
      }
      case OpKind::InputFlat:
      case OpKind::OutputFlat: {  // not aliased: a plain copy
        const Buf& b = s->bufs[size_t(op.inputs[0])];
        std::memcpy(ptr(op.outputs[0]), ptr(op.inputs[0]), sizeof(float) * size_t(b.floats()));
        break;
      }
      case OpKind::Conv: {
        const bool has_res = op.inputs.size() > 1;
        ConvParams p = conv_params(op, dims(op.inputs[0]), dims(op.outputs[0]),
                                   has_res ? dims(op.inputs[1]) : nullptr, mode);
        p.x = ptr(op.inputs[0]);
        p.w = op.w.data();
        p.b = op.b.data();
        p.res = has_res ? ptr(op.inputs[1]) : nullptr;
        p.y = ptr(op.outputs[0]);
        const bool bf16_dot = bf16_dot_ != Bf16DotKernel::None;
        if (s->op_wino[size_t(oi)] && wino_scratch_floats(p, team.size(), bf16_dot) <= s->scratch_floats) {
          if (bf16_dot) {
            p.bf16_dot = bf16_dot_;
            conv_winograd_bf16(p, wino_bf16_weights(size_t(oi)), scratch, team);
          } else {
            conv_winograd_f32(p, wino_weights(size_t(oi)), scratch, team);
          }
        } else {
          set_conv_weights(size_t(oi), p);
          conv_f32(p, team);
        }
        break;
      }
      case OpKind::GastBlock: {
        const int64_t* d = dims(op.inputs[0]);
        gast_block_f32(*op.gast, ptr(op.inputs[0]), ptr(op.outputs[0]), d[0], int32_t(d[2]),
                       scratch, team, gast_pairs(size_t(oi)));
        break;
      }
      case OpKind::RieEncode: {
        const int64_t* d = dims(op.inputs[0]);
        RieEncodeParams p{};
        p.x = ptr(op.inputs[0]);
        for (size_t g = 0; g < op.groups.size(); ++g) {
          p.out[g] = ptr(op.outputs[g]);
          p.idx[g] = op.groups[g].data();
          p.len[g] = int32_t(op.groups[g].size());
        }
        p.current = ptr(op.outputs[op.groups.size()]);
        p.n = d[0];
        p.t = int32_t(d[1]);
        p.cin = int32_t(d[2] * d[3]);
        rie_encode_f32(p, team_for(p.n * p.t * p.cin));
        break;
      }
      case OpKind::Concat: {
        const int64_t* d = dims(op.outputs[0]);
        const int64_t rows = d[0] * d[1] * d[2], ctot = d[3];
        float* dst = ptr(op.outputs[0]);
        const int64_t per = std::max<int64_t>(1, 16384 / ctot);
        team_for(rows * ctot).parallel_for((rows + per - 1) / per, [&](int64_t task, int) {
          const int64_t r0 = task * per, r1 = std::min(rows, r0 + per);
          int64_t c0 = 0;
          for (int32_t id : op.inputs) {
            const int64_t ci = dims(id)[3];
            const float* src = ptr(id);
            for (int64_t r = r0; r < r1; ++r)
              std::memcpy(dst + r * ctot + c0, src + r * ci, sizeof(float) * ci);
            c0 += ci;
          }
        });
        break;
      }
      case OpKind::OutputAssemble: {
        const int64_t* d = dims(op.outputs[0]);  // [N, T, K, 3]
        const int64_t rows = d[0] * d[1], K = d[2];
        float* dst = ptr(op.outputs[0]);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t q = 0; q < K; ++q) {
            const auto& sj = op.sources[size_t(q)];
            const int32_t id = op.inputs[size_t(sj.first)];
            const float* src = ptr(id) + r * dims(id)[3] + 3 * int64_t(sj.second);
            std::memcpy(dst + (r * K + q) * 3, src, sizeof(float) * 3);
          }
        break;
      }
    }
    if (op_seconds)
      (*op_seconds)[size_t(oi)] =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_op).count();
  }
  checkin(s, std::move(ws));
}

}  // namespace cpu
}  // namespace gastrt
