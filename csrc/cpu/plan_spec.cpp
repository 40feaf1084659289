// Plan validation: PlanDesc + weights -> the executor's PlanSpec (see gastrt/plan_spec.h).
#include "gastrt/plan_spec.h"

#include <climits>
#include <utility>

#include "common/check.h"

namespace gastrt {
namespace cpu {

int64_t ArrayView::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {
[[noreturn]] void invalid(const std::string& what) { throw InvalidArgument(what); }
}  // namespace

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

Act parse_act(const std::string& s) {
  if (s == "none") return Act::None;
  if (s == "relu") return Act::Relu;
  if (s == "lrelu") return Act::LRelu;
  invalid("unknown activation '" + s + "': expected none, relu or lrelu");
}

namespace {

void expect_shape(const ArrayView& a, const std::vector<int64_t>& want, const std::string& what) {
  if (a.shape != want)
    invalid(what + ": expected shape " + shape_str(want) + ", got " + shape_str(a.shape));
}

int32_t as_i32(int64_t v, const std::string& what) {
  if (v < INT32_MIN || v > INT32_MAX) invalid(what + ": " + std::to_string(v) + " is out of range");
  return int32_t(v);
}

// The attributes of one op, read with plan.py's defaults.
struct Attrs {
  const OpDesc& od;
  const std::string& opname;

  const AttrValue* find(const char* key) const {
    auto it = od.attrs.find(key);
    return it == od.attrs.end() ? nullptr : &it->second;
  }
  int32_t integer(const char* key, int32_t dflt) const {
    const AttrValue* v = find(key);
    if (!v) return dflt;
    if (v->type != AttrValue::Type::Int) invalid(opname + ": attribute '" + key + "' must be an integer");
    return as_i32(v->i, opname + ": attribute '" + key + "'");
  }
  std::string string(const char* key, const char* dflt) const {
    const AttrValue* v = find(key);
    if (!v) return dflt;
    if (v->type != AttrValue::Type::Str) invalid(opname + ": attribute '" + key + "' must be a string");
    return v->s;
  }
  std::vector<std::vector<int32_t>> int_lists(const char* key) const {
    const AttrValue* v = find(key);
    if (!v) invalid(opname + ": no '" + key + "' attribute");
    if (v->type != AttrValue::Type::IntLists)
      invalid(opname + ": attribute '" + key + "' must be a list of integer lists");
    std::vector<std::vector<int32_t>> r;
    for (const auto& l : v->lists) {
      r.emplace_back();
      for (int64_t x : l) r.back().push_back(as_i32(x, opname + ": attribute '" + key + "'"));
    }
    return r;
  }
};

const std::map<std::string, OpKind>& op_kinds() {
  static const std::map<std::string, OpKind> kinds = {
      {"input_joint_major", OpKind::InputJointMajor}, {"input_flat", OpKind::InputFlat},
      {"conv", OpKind::Conv},                         {"gast_block", OpKind::GastBlock},
      {"rie_encode", OpKind::RieEncode},              {"concat", OpKind::Concat},
      {"output_joint_major", OpKind::OutputJointMajor}, {"output_flat", OpKind::OutputFlat},
      {"output_assemble", OpKind::OutputAssemble}};
  return kinds;
}

}  // namespace

std::shared_ptr<GastBlockWeights> prepare_gast_block(const ArrayMap& roles, int heads,
                                                     int head_channels, const std::string& what) {
  auto get = [&](const char* role) -> const ArrayView& {
    auto it = roles.find(role);
    if (it == roles.end()) invalid(what + ": weight '" + role + "' is missing");
    return it->second;
  };
  const ArrayView &loc_w = get("loc_w"), &loc_diag = get("loc_diag");
  if (loc_w.shape.size() != 2 || loc_diag.shape.size() != 3)
    invalid(what + ": loc_w must be [c, 4c] and loc_diag [2, j, c]");
  const int64_t c = loc_w.shape[0], j = loc_diag.shape[1], h = heads, hg = int64_t(heads) * head_channels;
  if (heads <= 0 || head_channels <= 0) invalid(what + ": heads and head_channels must be positive");
  const std::vector<std::pair<const char*, std::vector<int64_t>>> shapes = {
      {"loc_w", {c, 4 * c}},       {"loc_diag", {2, j, c}},  {"loc_off", {2, j, j, c}},
      {"loc_b", {2 * c}},          {"loc_cat_w", {2 * c, c}}, {"loc_cat_b", {c}},
      {"glb_u", {c, 2 * h}},       {"glb_c", {2 * h}},        {"glb_g_w", {c, hg}},
      {"glb_g_b", {hg}},           {"glb_ck", {h, j, j}},     {"glb_cat_w", {hg, c}},
      {"glb_cat_b", {c}},          {"cat_w", {3 * c, 2 * c}}, {"cat_b", {2 * c}}};
  for (const auto& rs : shapes) expect_shape(get(rs.first), rs.second, what + "." + rs.first);
  GastBlockParams p{};
  p.j = int32_t(j);
  p.c = int32_t(c);
  p.heads = heads;
  p.head_channels = head_channels;
  p.loc_w = get("loc_w").data;
  p.loc_diag = get("loc_diag").data;
  p.loc_off = get("loc_off").data;
  p.loc_b = get("loc_b").data;
  p.loc_cat_w = get("loc_cat_w").data;
  p.loc_cat_b = get("loc_cat_b").data;
  p.glb_u = get("glb_u").data;
  p.glb_c = get("glb_c").data;
  p.glb_g_w = get("glb_g_w").data;
  p.glb_g_b = get("glb_g_b").data;
  p.glb_ck = get("glb_ck").data;
  p.glb_cat_w = get("glb_cat_w").data;
  p.glb_cat_b = get("glb_cat_b").data;
  p.cat_w = get("cat_w").data;
  p.cat_b = get("cat_b").data;
  p.dtype = DType::F32;
  return std::make_shared<GastBlockWeights>(gast_block_prepare(p));
}

PlanSpec build_plan_spec(const PlanDesc& plan, const ArrayMap& weights) {
  PlanSpec ps;
  ps.name = plan.name;
  ps.in_joints = plan.in_joints;
  ps.out_joints = plan.out_joints;
  ps.in_features = plan.in_features;
  ps.receptive_field = plan.receptive_field;
  ps.has_window = ps.has_sequence = false;
  for (const std::string& m : plan.modes) {
    ps.has_window |= m == "window";
    ps.has_sequence |= m == "sequence";
  }
  std::map<std::string, int32_t> ids{{"input", 0}};
  ps.buffer_names = {"input"};
  auto id_of = [&](const std::string& name, bool define) -> int32_t {
    auto it = ids.find(name);
    if (it != ids.end()) {
      if (define) invalid("plan " + ps.name + ": buffer '" + name + "' is written twice");
      return it->second;
    }
    if (!define) invalid("plan " + ps.name + ": buffer '" + name + "' is read before it is written");
    const int32_t id = int32_t(ids.size());
    ids.emplace(name, id);
    ps.buffer_names.push_back(name);
    return id;
  };
  auto weight = [&](const std::string& wname, const std::string& opname) -> const ArrayView& {
    auto it = weights.find(wname);
    if (it == weights.end()) invalid(opname + ": weight '" + wname + "' is missing");
    return it->second;
  };
  auto role = [&](const OpDesc& od, const char* r, const std::string& opname) -> const ArrayView& {
    auto it = od.weights.find(r);
    if (it == od.weights.end()) invalid(opname + ": no '" + r + "' weight");
    return weight(it->second, opname);
  };
  for (const OpDesc& od : plan.ops) {
    auto kit = op_kinds().find(od.kind);
    if (kit == op_kinds().end()) invalid("plan " + ps.name + ": unknown op kind '" + od.kind + "'");
    OpSpec op;
    op.kind = kit->second;
    for (const std::string& n : od.inputs) op.inputs.push_back(id_of(n, false));
    for (const std::string& n : od.outputs) op.outputs.push_back(id_of(n, true));
    if (op.outputs.empty()) invalid("plan " + ps.name + ": op " + od.kind + " has no output");
    op.name = od.kind + " -> " + od.outputs[0];
    const Attrs attrs{od, op.name};
    switch (op.kind) {
      case OpKind::Conv: {
        op.k = attrs.integer("k", 1);
        op.dilation = attrs.integer("dilation", 1);
        op.act = parse_act(attrs.string("act", "none"));
        op.res_win_offset = attrs.integer("res_win_offset", 0);
        op.res_win_stride = attrs.integer("res_win_stride", 1);
        op.res_seq_offset = attrs.integer("res_seq_offset", 0);
        const ArrayView &w = role(od, "w", op.name), &b = role(od, "b", op.name);
        if (op.k < 1 || w.shape.size() != 2 || w.shape[0] % op.k)
          invalid(op.name + ": conv weight must be [k*ci, co]");
        op.ci = int32_t(w.shape[0] / op.k);
        op.co = int32_t(w.shape[1]);
        expect_shape(b, {op.co}, op.name + " bias");
        op.w.assign(w.data, w.data + w.size());
        op.b.assign(b.data, b.data + b.size());
        if (op.inputs.empty() || op.inputs.size() > 2) invalid(op.name + ": conv takes 1 or 2 inputs");
        break;
      }
      case OpKind::GastBlock: {
        ArrayMap by_role;
        for (const auto& rw : od.weights) by_role.emplace(rw.first, weight(rw.second, op.name));
        op.gast = prepare_gast_block(by_role, attrs.integer("heads", 0),
                                     attrs.integer("head_channels", 0), op.name);
        break;
      }
      case OpKind::RieEncode: {
        op.groups = attrs.int_lists("groups");
        const int32_t cin = ps.in_joints * ps.in_features;
        for (const auto& g : op.groups)
          for (int32_t c : g)
            if (c < 0 || c >= cin) invalid(op.name + ": channel index out of range");
        break;
      }
      case OpKind::OutputAssemble: {
        for (const auto& v : attrs.int_lists("sources")) {
          if (v.size() != 2) invalid(op.name + ": sources must be (input, joint) pairs");
          op.sources.emplace_back(v[0], v[1]);
        }
        break;
      }
      default:
        break;
    }
    ps.ops.push_back(std::move(op));
  }
  ps.num_buffers = int32_t(ids.size());
  return ps;
}

}  // namespace cpu
}  // namespace gastrt
