// The CUDA program bytecode: the one definition of every record, read by the executor
// (program.cu decodes, launch.cu launches), exported to Python by the bindings
// (_native.cuda_program_layout / cuda_program_constants), from which backends/cuda/records.py
// encodes the lowering's programs and tests/cuda/sim_engine.py decodes them, all by field name.
// Host-only and dependency-free (no CUDA, no pybind11): any translation unit may include it, a
// CPU-only build too.
//
// A program is a sequence of records [opcode, nfields, word_0 .. word_{nfields-1}], every word an
// int64. A record's words are its struct, field by field (the structs are int64 arrays with
// names). A "grouped" record (conv) carries [count, count x struct]: one grouped GEMM launch.
//
// Buffer references: >= 0 byte offset in the engine's arena (16-byte aligned); kRefNone;
// kRefInput (the user's fp32 input [n, ...]); kRefOutput (the user's fp32 output). Weight
// references: an id from Engine::add_weight. Dtype fields: 0 fp32, 1 fp16, 2 bf16 (gastrt::DType);
// act: 0 none, 1 relu, 2 lrelu (gastrt::Act).
#pragma once
#include <cstddef>
#include <cstdint>

namespace gastrt {
namespace cuda {

constexpr int64_t kRefNone = -1;
constexpr int64_t kRefInput = -2;
constexpr int64_t kRefOutput = -3;

constexpr int kRieMaxGroups = 5;     // RIE branches
constexpr int kRieMaxIdx = 16;       // input channels per RIE branch
constexpr int kAsmMaxSrc = 8;        // output_assemble sources
constexpr int kAsmMaxJoints = 32;    // output_assemble joints
constexpr int kRingMaxTaps = 16;     // conv taps one ring_gather fetches
constexpr int kStreamTableCols = 4;  // int32 words per row of a stream push's slot table
constexpr int kMaxConvGroup = 32;    // problems per conv record (launched kMaxGemmGroup at a time)

enum OpCode : int64_t {
  kOpLayout = 1,
  kOpConv = 2,
  kOpGast = 3,
  kOpRie = 4,
  kOpCopyCols = 5,
  kOpAssemble = 6,
  kOpStreamIn = 7,
  kOpRingWrite = 8,
  kOpRingGather = 9,
};

// src [n, a, b, f] -> dst [n, b, a, f] (swap) or [n, a, b, f], converting src_dtype -> dst_dtype.
struct LayoutRecord {
  int64_t src, dst, n, a, b, f, swap, src_dtype, dst_dtype;
};

// One conv as a GEMM (kernels.h GemmDesc): x [n_seq, t_in, ci] -> rows of y at pitch ldy,
// t_ypitch rows per sequence; w [k*ci, co] (engine dtype), b [co] (fp32); res optional.
struct ConvRecord {
  int64_t x, w, b, res, y, n_seq, t_in, t_out, t_res, t_ypitch, ci, co, k, stride, dilation, res_offset,
      res_stride, ldy, act;
};

// GAST graph-attention block x [n, j, t, c] -> y [n, j, t, 2c]; scratch: scratch_bytes of arena
// for the multi-kernel path (kRefNone / 0 when it runs fused). w1 = [loc_w | glb_u | glb_g_w].
struct GastRecord {
  int64_t x, y, scratch, scratch_bytes, n, j, t, c, heads, gc, w1, b1, loc_diag, loc_off, loc_b, loc_cat_w,
      loc_cat_b, glb_ck, glb_cat_w, glb_cat_b, cat_w, cat_b;
};

// RIE input encoding: x [n, t, cin] fp32 -> out[g] [n, t, 3*len[g]] for g < groups, current [n, cin].
struct RieRecord {
  int64_t x, out[kRieMaxGroups], current, n, t, cin, groups, len[kRieMaxGroups], idx[kRieMaxGroups * kRieMaxIdx];
};

// dst[r, dst_off + c] = src[r * src_ld + c] for r < rows, c < cols: one input of a concat.
struct CopyColsRecord {
  int64_t src, dst, rows, cols, src_ld, dst_ld, dst_off;
};

// out [n, t, k, 3] fp32: joint q is joint jj[q] of source src_of[q] (src[s] [n, 1, t, ch[s]]).
struct AssembleRecord {
  int64_t out, n, t, k, nsrc, src[kAsmMaxSrc], ch[kAsmMaxSrc], src_of[kAsmMaxJoints], jj[kAsmMaxJoints];
};

// Streaming (one new column per op and slot per push; python/gastrt/stream):
// src [n, jf + kStreamTableCols] (the user's fp32 rows; the last words are the int32 slot table
// bit for bit: virtual slot or -1, column counter low / high, fresh) -> col [n, jf], table.
struct StreamInRecord {
  int64_t src, col, table, n, jf;
};

// col [n, g, c] -> ring [nv, g, h, c] at column cnt mod h of each row's slot; a fresh row fills
// all h columns.
struct RingWriteRecord {
  int64_t col, ring, table, n, nv, g, c, h;
};

// dst [n, g, k, c] = the columns (cnt - lag[tau]) mod h of each row's slot (zeros for padding rows).
struct RingGatherRecord {
  int64_t ring, dst, table, n, nv, g, c, h, k, lag[kRingMaxTaps];
};

constexpr int kLayoutFields = 9;
constexpr int kConvFields = 19;
constexpr int kGastFields = 22;
constexpr int kRieFields = 96;
constexpr int kCopyColsFields = 7;
constexpr int kAssembleFields = 85;
constexpr int kStreamInFields = 5;
constexpr int kRingWriteFields = 8;
constexpr int kRingGatherFields = 9 + kRingMaxTaps;
static_assert(sizeof(LayoutRecord) == kLayoutFields * 8, "LayoutRecord");
static_assert(sizeof(ConvRecord) == kConvFields * 8, "ConvRecord");
static_assert(sizeof(GastRecord) == kGastFields * 8, "GastRecord");
static_assert(sizeof(RieRecord) == kRieFields * 8, "RieRecord");
static_assert(sizeof(CopyColsRecord) == kCopyColsFields * 8, "CopyColsRecord");
static_assert(sizeof(AssembleRecord) == kAssembleFields * 8, "AssembleRecord");
static_assert(sizeof(StreamInRecord) == kStreamInFields * 8, "StreamInRecord");
static_assert(sizeof(RingWriteRecord) == kRingWriteFields * 8, "RingWriteRecord");
static_assert(sizeof(RingGatherRecord) == kRingGatherFields * 8, "RingGatherRecord");

// ---- the layout table (what the bindings export) ------------------------------------------------
struct FieldLayout {
  const char* name;
  int offset;  // in words from the start of the record's struct
  int count;   // words (1, or the length of a fixed array)
};

struct RecordLayout {
  const char* name;  // also what describe_program prints
  int64_t opcode;
  int nfields;       // words of one struct
  bool grouped;      // the record is [count, count x struct]
  const FieldLayout* fields;
  int nfield_layouts;
};

#define GASTRT_RECORD_FIELD(R, m) \
  FieldLayout { #m, static_cast<int>(offsetof(R, m) / 8), static_cast<int>(sizeof(R::m) / 8) }

inline constexpr FieldLayout kLayoutRecordFields[] = {
    GASTRT_RECORD_FIELD(LayoutRecord, src),  GASTRT_RECORD_FIELD(LayoutRecord, dst),
    GASTRT_RECORD_FIELD(LayoutRecord, n),    GASTRT_RECORD_FIELD(LayoutRecord, a),
    GASTRT_RECORD_FIELD(LayoutRecord, b),    GASTRT_RECORD_FIELD(LayoutRecord, f),
    GASTRT_RECORD_FIELD(LayoutRecord, swap), GASTRT_RECORD_FIELD(LayoutRecord, src_dtype),
    GASTRT_RECORD_FIELD(LayoutRecord, dst_dtype)};
inline constexpr FieldLayout kConvRecordFields[] = {
    GASTRT_RECORD_FIELD(ConvRecord, x),          GASTRT_RECORD_FIELD(ConvRecord, w),
    GASTRT_RECORD_FIELD(ConvRecord, b),          GASTRT_RECORD_FIELD(ConvRecord, res),
    GASTRT_RECORD_FIELD(ConvRecord, y),          GASTRT_RECORD_FIELD(ConvRecord, n_seq),
    GASTRT_RECORD_FIELD(ConvRecord, t_in),       GASTRT_RECORD_FIELD(ConvRecord, t_out),
    GASTRT_RECORD_FIELD(ConvRecord, t_res),      GASTRT_RECORD_FIELD(ConvRecord, t_ypitch),
    GASTRT_RECORD_FIELD(ConvRecord, ci),         GASTRT_RECORD_FIELD(ConvRecord, co),
    GASTRT_RECORD_FIELD(ConvRecord, k),          GASTRT_RECORD_FIELD(ConvRecord, stride),
    GASTRT_RECORD_FIELD(ConvRecord, dilation),   GASTRT_RECORD_FIELD(ConvRecord, res_offset),
    GASTRT_RECORD_FIELD(ConvRecord, res_stride), GASTRT_RECORD_FIELD(ConvRecord, ldy),
    GASTRT_RECORD_FIELD(ConvRecord, act)};
inline constexpr FieldLayout kGastRecordFields[] = {
    GASTRT_RECORD_FIELD(GastRecord, x),         GASTRT_RECORD_FIELD(GastRecord, y),
    GASTRT_RECORD_FIELD(GastRecord, scratch),   GASTRT_RECORD_FIELD(GastRecord, scratch_bytes),
    GASTRT_RECORD_FIELD(GastRecord, n),         GASTRT_RECORD_FIELD(GastRecord, j),
    GASTRT_RECORD_FIELD(GastRecord, t),         GASTRT_RECORD_FIELD(GastRecord, c),
    GASTRT_RECORD_FIELD(GastRecord, heads),     GASTRT_RECORD_FIELD(GastRecord, gc),
    GASTRT_RECORD_FIELD(GastRecord, w1),        GASTRT_RECORD_FIELD(GastRecord, b1),
    GASTRT_RECORD_FIELD(GastRecord, loc_diag),  GASTRT_RECORD_FIELD(GastRecord, loc_off),
    GASTRT_RECORD_FIELD(GastRecord, loc_b),     GASTRT_RECORD_FIELD(GastRecord, loc_cat_w),
    GASTRT_RECORD_FIELD(GastRecord, loc_cat_b), GASTRT_RECORD_FIELD(GastRecord, glb_ck),
    GASTRT_RECORD_FIELD(GastRecord, glb_cat_w), GASTRT_RECORD_FIELD(GastRecord, glb_cat_b),
    GASTRT_RECORD_FIELD(GastRecord, cat_w),     GASTRT_RECORD_FIELD(GastRecord, cat_b)};
inline constexpr FieldLayout kRieRecordFields[] = {
    GASTRT_RECORD_FIELD(RieRecord, x),   GASTRT_RECORD_FIELD(RieRecord, out), GASTRT_RECORD_FIELD(RieRecord, current),
    GASTRT_RECORD_FIELD(RieRecord, n),   GASTRT_RECORD_FIELD(RieRecord, t),   GASTRT_RECORD_FIELD(RieRecord, cin),
    GASTRT_RECORD_FIELD(RieRecord, groups), GASTRT_RECORD_FIELD(RieRecord, len),
    GASTRT_RECORD_FIELD(RieRecord, idx)};
inline constexpr FieldLayout kCopyColsRecordFields[] = {
    GASTRT_RECORD_FIELD(CopyColsRecord, src),    GASTRT_RECORD_FIELD(CopyColsRecord, dst),
    GASTRT_RECORD_FIELD(CopyColsRecord, rows),   GASTRT_RECORD_FIELD(CopyColsRecord, cols),
    GASTRT_RECORD_FIELD(CopyColsRecord, src_ld), GASTRT_RECORD_FIELD(CopyColsRecord, dst_ld),
    GASTRT_RECORD_FIELD(CopyColsRecord, dst_off)};
inline constexpr FieldLayout kAssembleRecordFields[] = {
    GASTRT_RECORD_FIELD(AssembleRecord, out),    GASTRT_RECORD_FIELD(AssembleRecord, n),
    GASTRT_RECORD_FIELD(AssembleRecord, t),      GASTRT_RECORD_FIELD(AssembleRecord, k),
    GASTRT_RECORD_FIELD(AssembleRecord, nsrc),   GASTRT_RECORD_FIELD(AssembleRecord, src),
    GASTRT_RECORD_FIELD(AssembleRecord, ch),     GASTRT_RECORD_FIELD(AssembleRecord, src_of),
    GASTRT_RECORD_FIELD(AssembleRecord, jj)};
inline constexpr FieldLayout kStreamInRecordFields[] = {
    GASTRT_RECORD_FIELD(StreamInRecord, src), GASTRT_RECORD_FIELD(StreamInRecord, col),
    GASTRT_RECORD_FIELD(StreamInRecord, table), GASTRT_RECORD_FIELD(StreamInRecord, n),
    GASTRT_RECORD_FIELD(StreamInRecord, jf)};
inline constexpr FieldLayout kRingWriteRecordFields[] = {
    GASTRT_RECORD_FIELD(RingWriteRecord, col), GASTRT_RECORD_FIELD(RingWriteRecord, ring),
    GASTRT_RECORD_FIELD(RingWriteRecord, table), GASTRT_RECORD_FIELD(RingWriteRecord, n),
    GASTRT_RECORD_FIELD(RingWriteRecord, nv), GASTRT_RECORD_FIELD(RingWriteRecord, g),
    GASTRT_RECORD_FIELD(RingWriteRecord, c), GASTRT_RECORD_FIELD(RingWriteRecord, h)};
inline constexpr FieldLayout kRingGatherRecordFields[] = {
    GASTRT_RECORD_FIELD(RingGatherRecord, ring), GASTRT_RECORD_FIELD(RingGatherRecord, dst),
    GASTRT_RECORD_FIELD(RingGatherRecord, table), GASTRT_RECORD_FIELD(RingGatherRecord, n),
    GASTRT_RECORD_FIELD(RingGatherRecord, nv), GASTRT_RECORD_FIELD(RingGatherRecord, g),
    GASTRT_RECORD_FIELD(RingGatherRecord, c), GASTRT_RECORD_FIELD(RingGatherRecord, h),
    GASTRT_RECORD_FIELD(RingGatherRecord, k), GASTRT_RECORD_FIELD(RingGatherRecord, lag)};
#undef GASTRT_RECORD_FIELD

template <size_t N>
constexpr RecordLayout record_layout(const char* name, int64_t opcode, int nfields, bool grouped,
                                     const FieldLayout (&fields)[N]) {
  return RecordLayout{name, opcode, nfields, grouped, fields, static_cast<int>(N)};
}

// Indexed by opcode - 1. The names are the plan op kinds they implement (layout: input / output
// layouts; concat: one record per input).
inline constexpr RecordLayout kRecordLayouts[] = {
    record_layout("layout", kOpLayout, kLayoutFields, false, kLayoutRecordFields),
    record_layout("conv", kOpConv, kConvFields, true, kConvRecordFields),
    record_layout("gast_block", kOpGast, kGastFields, false, kGastRecordFields),
    record_layout("rie_encode", kOpRie, kRieFields, false, kRieRecordFields),
    record_layout("concat", kOpCopyCols, kCopyColsFields, false, kCopyColsRecordFields),
    record_layout("output_assemble", kOpAssemble, kAssembleFields, false, kAssembleRecordFields),
    record_layout("stream_in", kOpStreamIn, kStreamInFields, false, kStreamInRecordFields),
    record_layout("ring_write", kOpRingWrite, kRingWriteFields, false, kRingWriteRecordFields),
    record_layout("ring_gather", kOpRingGather, kRingGatherFields, false, kRingGatherRecordFields),
};
constexpr int kRecordKinds = static_cast<int>(sizeof(kRecordLayouts) / sizeof(kRecordLayouts[0]));

// Every table lists its struct's fields in order, without gaps, and the table is by opcode.
constexpr bool layout_is_complete(const RecordLayout& r) {
  int at = 0;
  for (int i = 0; i < r.nfield_layouts; ++i) {
    if (r.fields[i].offset != at || r.fields[i].count < 1) return false;
    at += r.fields[i].count;
  }
  return at == r.nfields;
}
constexpr bool layouts_are_complete() {
  for (int i = 0; i < kRecordKinds; ++i)
    if (kRecordLayouts[i].opcode != i + 1 || !layout_is_complete(kRecordLayouts[i])) return false;
  return true;
}
static_assert(layouts_are_complete(), "program_records.h: a record's field table does not match its struct");

// The layout of an opcode's record, or nullptr.
constexpr const RecordLayout* find_record_layout(int64_t opcode) {
  return opcode >= 1 && opcode <= kRecordKinds ? &kRecordLayouts[opcode - 1] : nullptr;
}

}  // namespace cuda
}  // namespace gastrt
