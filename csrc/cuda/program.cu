// Programs: each record decoded once into its struct (program_records.h) and validated before
// anything runs: buffers inside the arena (or the user's arrays, sized by max_n), weights of the
// right size and dtype, geometry the kernels accept.
#include <cstring>
#include <sstream>

#include "common/check.h"
#include "cuda/executor.h"

namespace gastrt {
namespace cuda {
namespace {

template <class R>
R read_record(const int64_t* words) {
  R r;
  std::memcpy(&r, words, sizeof(R));
  return r;
}

// Checks one record's references; `io` ends true when it touches the user's input or output.
struct Checker {
  const std::vector<WeightRec>& wrecs;
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
    GASTRT_CHECK(id >= 0 && id < static_cast<int64_t>(wrecs.size()), "program: " << what << " has bad weight id " << id);
    const WeightRec& w = wrecs[static_cast<size_t>(id)];
    GASTRT_CHECK(w.count >= count, "program: weight " << what << " has " << w.count << " values, needs " << count);
    GASTRT_CHECK(w.dtype == dt, "program: weight " << what << " has the wrong dtype");
  }
};

void check(Checker& c, const LayoutRecord& r) {
  const int64_t cnt = r.n * r.a * r.b * r.f;
  const DType sd = to_dtype(r.src_dtype), dd = to_dtype(r.dst_dtype);
  c.buf(r.src, cnt * dtype_size(sd), "layout src");
  c.buf(r.dst, cnt * dtype_size(dd), "layout dst");
  c.io_fp32(r.src, sd, "layout src");
  c.io_fp32(r.dst, dd, "layout dst");
}

void check(Checker& c, const std::vector<ConvRecord>& convs, int es, DType dtype) {
  for (const ConvRecord& g : convs) {
    GASTRT_CHECK(g.n_seq >= 1 && g.t_out >= 1 && g.ci >= 1 && g.co >= 1 && g.k >= 1 && g.ldy >= g.co &&
                     g.t_ypitch >= g.t_out,
                 "program: bad conv geometry");
    c.buf(g.x, g.n_seq * g.t_in * g.ci * es, "conv x");
    c.weight(g.w, g.k * g.ci * g.co, dtype, "conv w");
    c.weight(g.b, g.co, DType::F32, "conv b");
    c.buf(g.res, g.n_seq * g.t_res * g.co * es, "conv res", true);
    c.buf(g.y, (((g.n_seq - 1) * g.t_ypitch + g.t_out - 1) * g.ldy + g.co) * es, "conv y");
  }
  GASTRT_CHECK(!c.io, "program: a conv cannot read or write the user's arrays");
}

void check(Checker& c, const GastRecord& r, int es, DType dtype) {
  const int64_t ch = r.c, h = r.heads, j = r.j;
  GASTRT_CHECK(r.n >= 1 && j >= 1 && r.t >= 1 && ch >= 1 && h >= 1 && r.gc >= 1, "program: bad gast geometry");
  const int64_t rows = r.n * j * r.t, ld1 = 4 * ch + 2 * h + h * r.gc;
  c.buf(r.x, rows * ch * es, "gast x");
  c.buf(r.y, rows * 2 * ch * es, "gast y");
  c.buf(r.scratch, r.scratch_bytes, "gast scratch", r.scratch_bytes == 0);
  c.weight(r.w1, ch * ld1, dtype, "gast w1");
  c.weight(r.b1, ld1, DType::F32, "gast b1");
  c.weight(r.loc_diag, 2 * j * ch, DType::F32, "gast loc_diag");
  c.weight(r.loc_off, 2 * j * j * ch, DType::F32, "gast loc_off");
  c.weight(r.loc_b, 2 * ch, DType::F32, "gast loc_b");
  c.weight(r.loc_cat_w, 2 * ch * ch, dtype, "gast loc_cat_w");
  c.weight(r.loc_cat_b, ch, DType::F32, "gast loc_cat_b");
  c.weight(r.glb_ck, h * j * j, DType::F32, "gast glb_ck");
  c.weight(r.glb_cat_w, h * r.gc * ch, dtype, "gast glb_cat_w");
  c.weight(r.glb_cat_b, ch, DType::F32, "gast glb_cat_b");
  c.weight(r.cat_w, 3 * ch * 2 * ch, dtype, "gast cat_w");
  c.weight(r.cat_b, 2 * ch, DType::F32, "gast cat_b");
  GASTRT_CHECK(!c.io, "program: a gast block cannot read or write the user's arrays");
}

void check(Checker& c, const RieRecord& r, int es) {
  GASTRT_CHECK(r.n >= 1 && r.t >= 1 && r.cin >= 1 && r.groups >= 1 && r.groups <= kRieMaxGroups,
               "program: bad rie geometry");
  c.buf(r.x, r.n * r.t * r.cin * 4, "rie x");
  c.io_fp32(r.x, DType::F32, "rie x");
  for (int64_t g = 0; g < r.groups; ++g) {
    GASTRT_CHECK(r.len[g] >= 1 && r.len[g] <= kRieMaxIdx, "program: bad rie group length");
    c.buf(r.out[g], r.n * r.t * 3 * r.len[g] * es, "rie out");
    GASTRT_CHECK(r.out[g] >= 0, "program: rie outputs live in the arena");
  }
  c.buf(r.current, r.n * r.cin * es, "rie current");
  GASTRT_CHECK(r.current >= 0, "program: rie outputs live in the arena");
}

void check(Checker& c, const CopyColsRecord& r, int es) {
  GASTRT_CHECK(r.rows >= 1 && r.cols >= 1 && r.src_ld >= r.cols && r.dst_off >= 0 && r.dst_ld >= r.dst_off + r.cols,
               "program: bad copy");
  c.buf(r.src, ((r.rows - 1) * r.src_ld + r.cols) * es, "copy src");
  c.buf(r.dst, ((r.rows - 1) * r.dst_ld + r.dst_off + r.cols) * es, "copy dst");
  GASTRT_CHECK(!c.io, "program: a concat cannot read or write the user's arrays");
}

void check(Checker& c, const AssembleRecord& r, int es) {
  GASTRT_CHECK(r.n >= 1 && r.t >= 1 && r.k >= 1 && r.k <= kAsmMaxJoints && r.nsrc >= 1 && r.nsrc <= kAsmMaxSrc,
               "program: bad assemble geometry");
  c.buf(r.out, r.n * r.t * r.k * 3 * 4, "assemble out");
  c.io_fp32(r.out, DType::F32, "assemble out");
  for (int64_t s = 0; s < r.nsrc; ++s) {
    c.buf(r.src[s], r.n * r.t * r.ch[s] * es, "assemble src");
    GASTRT_CHECK(r.src[s] >= 0, "program: assemble sources live in the arena");
  }
  for (int64_t q = 0; q < r.k; ++q) {
    const int64_t s = r.src_of[q], jj = r.jj[q];
    GASTRT_CHECK(s >= 0 && s < r.nsrc && jj >= 0 && 3 * jj + 3 <= r.ch[s], "program: bad assemble source");
  }
}

void check(Checker& c, const StreamInRecord& r, int es) {
  GASTRT_CHECK(r.n >= 1 && r.jf >= 1, "program: bad stream_in geometry");
  // it runs on the call's rows (exactly max_n), so its record must say max_n: sized here with
  // fewer, its writes would run past col / table
  GASTRT_CHECK(r.n == c.p.max_n && c.p.in_per_n == r.jf + kStreamTableCols,
               "program: stream_in must cover all " << c.p.max_n << " rows of " << r.jf << " + " << kStreamTableCols
                                                    << " words");
  c.buf(r.src, r.n * (r.jf + kStreamTableCols) * 4, "stream_in src");
  c.buf(r.col, r.n * r.jf * es, "stream_in col");
  c.buf(r.table, r.n * kStreamTableCols * 4, "stream_in table");
  GASTRT_CHECK(r.col >= 0 && r.table >= 0, "program: stream_in outputs live in the arena");
}

void check(Checker& c, const RingWriteRecord& r, int es) {
  GASTRT_CHECK(r.n >= 1 && r.nv >= 1 && r.g >= 1 && r.c >= 1 && r.h >= 1, "program: bad ring_write geometry");
  GASTRT_CHECK(r.n == c.p.max_n, "program: ring_write must cover all " << c.p.max_n << " table rows");
  c.buf(r.col, r.n * r.g * r.c * es, "ring_write col");
  c.buf(r.ring, r.nv * r.g * r.h * r.c * es, "ring_write ring");
  c.buf(r.table, r.n * kStreamTableCols * 4, "ring_write table");
  GASTRT_CHECK(!c.io, "program: a ring write cannot read or write the user's arrays");
}

void check(Checker& c, const RingGatherRecord& r, int es) {
  GASTRT_CHECK(r.n >= 1 && r.nv >= 1 && r.g >= 1 && r.c >= 1 && r.h >= 1 && r.k >= 1 && r.k <= kRingMaxTaps,
               "program: bad ring_gather geometry");
  GASTRT_CHECK(r.n == c.p.max_n, "program: ring_gather must cover all " << c.p.max_n << " table rows");
  for (int64_t tau = 0; tau < r.k; ++tau)
    GASTRT_CHECK(r.lag[tau] >= 0 && r.lag[tau] < r.h, "program: ring_gather lag outside the ring");
  c.buf(r.ring, r.nv * r.g * r.h * r.c * es, "ring_gather ring");
  c.buf(r.dst, r.n * r.g * r.k * r.c * es, "ring_gather dst");
  c.buf(r.table, r.n * kStreamTableCols * 4, "ring_gather table");
  GASTRT_CHECK(!c.io, "program: a ring gather cannot read or write the user's arrays");
}

// The record of `op` in words[0, nwords), decoded and checked.
Step decode_step(int64_t op, const int64_t* words, int64_t nwords, const std::vector<WeightRec>& wrecs, DType dtype,
                 const Program& p) {
  const RecordLayout* lay = find_record_layout(op);
  GASTRT_CHECK(lay != nullptr, "program: unknown opcode " << op);
  Checker c{wrecs, p, p.max_n * p.in_per_n * 4, p.max_n * p.out_per_n * 4};
  const int es = dtype_size(dtype);
  Step s;
  s.op = op;
  if (lay->grouped) {
    GASTRT_CHECK(nwords >= 1 && words[0] >= 1 && words[0] <= kMaxConvGroup && nwords == 1 + words[0] * lay->nfields,
                 "program: " << lay->name << " record size");
  } else {
    GASTRT_CHECK(nwords == lay->nfields, "program: " << lay->name << " record size");
  }
  switch (op) {
    case kOpLayout: s.rec = read_record<LayoutRecord>(words); check(c, std::get<LayoutRecord>(s.rec)); break;
    case kOpConv: {
      std::vector<ConvRecord> convs(static_cast<size_t>(words[0]));
      for (size_t i = 0; i < convs.size(); ++i) convs[i] = read_record<ConvRecord>(words + 1 + i * kConvFields);
      check(c, convs, es, dtype);
      s.rec = std::move(convs);
      break;
    }
    case kOpGast: s.rec = read_record<GastRecord>(words); check(c, std::get<GastRecord>(s.rec), es, dtype); break;
    case kOpRie: s.rec = read_record<RieRecord>(words); check(c, std::get<RieRecord>(s.rec), es); break;
    case kOpCopyCols: s.rec = read_record<CopyColsRecord>(words); check(c, std::get<CopyColsRecord>(s.rec), es); break;
    case kOpAssemble: s.rec = read_record<AssembleRecord>(words); check(c, std::get<AssembleRecord>(s.rec), es); break;
    case kOpStreamIn: s.rec = read_record<StreamInRecord>(words); check(c, std::get<StreamInRecord>(s.rec), es); break;
    case kOpRingWrite:
      s.rec = read_record<RingWriteRecord>(words);
      check(c, std::get<RingWriteRecord>(s.rec), es);
      break;
    case kOpRingGather:
      s.rec = read_record<RingGatherRecord>(words);
      check(c, std::get<RingGatherRecord>(s.rec), es);
      break;
    default:
      GASTRT_CHECK(false, "program: unknown opcode " << op);
  }
  s.io = c.io;
  return s;
}

}  // namespace

void decode_program(const int64_t* code, int64_t len, const std::vector<WeightRec>& w, DType dtype, Program& p) {
  int64_t i = 0;
  while (i < len) {
    GASTRT_CHECK(i + 2 <= len, "program: truncated record at " << i);
    const int64_t nf = code[i + 1];
    GASTRT_CHECK(nf >= 0 && nf <= len - i - 2, "program: truncated record at " << i);
    p.steps.push_back(decode_step(code[i], code + i + 2, nf, w, dtype, p));
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
}

std::string describe_step(const Step& s) {
  std::ostringstream os;
  const RecordLayout* lay = find_record_layout(s.op);
  os << (lay != nullptr ? lay->name : "?");
  if (s.op == kOpConv) {
    const auto& convs = std::get<std::vector<ConvRecord>>(s.rec);
    os << " x" << convs.size();
    for (const ConvRecord& g : convs)
      os << " [M=" << g.n_seq * g.t_out << " K=" << g.k * g.ci << " N=" << g.co << " k=" << g.k << " s=" << g.stride
         << " d=" << g.dilation << (g.res != kRefNone ? " +res" : "") << "]";
  } else if (s.op == kOpGast) {
    const GastRecord& r = std::get<GastRecord>(s.rec);
    os << " rows=" << r.n * r.j * r.t << " c=" << r.c;
  }
  return os.str();
}

}  // namespace cuda
}  // namespace gastrt
