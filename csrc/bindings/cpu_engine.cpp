// gastrt._native.Engine: a plan (Plan.to_json() + its weights) compiled for the native CPU
// runtime (csrc/cpu/executor.cpp). Every forward releases the GIL.
#include <memory>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "gastrt/cpu_ops.h"
#include "gastrt/executor.h"
#include "gastrt/plan_spec.h"

namespace gastrt {
namespace bindings {

namespace {

// ---- plan dict (Plan.to_json()) -> plain C++ values; checked and resolved by build_plan_spec ----
cpu::AttrValue attr_value(const py::handle& v) {
  cpu::AttrValue a;
  if (py::isinstance<py::str>(v)) {
    a.type = cpu::AttrValue::Type::Str;
    a.s = v.cast<std::string>();
    return a;
  }
  try {
    a.i = v.cast<int64_t>();
    a.type = cpu::AttrValue::Type::Int;
    return a;
  } catch (const py::cast_error&) {
  }
  try {
    a.lists = v.cast<std::vector<std::vector<int64_t>>>();
    a.type = cpu::AttrValue::Type::IntLists;
  } catch (const py::cast_error&) {
  }
  return a;
}

std::vector<std::string> strings(const py::handle& seq) {
  std::vector<std::string> r;
  for (const auto& s : seq) r.push_back(py::str(s));
  return r;
}

cpu::PlanSpec parse_plan(const py::dict& plan, const py::dict& weights) {
  cpu::PlanDesc d;
  if (plan.contains("name")) d.name = py::str(plan["name"]);
  d.in_joints = plan["in_joints"].cast<int32_t>();
  d.out_joints = plan["out_joints"].cast<int32_t>();
  if (plan.contains("in_features")) d.in_features = plan["in_features"].cast<int32_t>();
  d.receptive_field = plan["receptive_field"].cast<int32_t>();
  d.modes = strings(plan["modes"]);
  std::vector<FArray> arrays;  // the weights the ops name, alive until the core has copied them
  cpu::ArrayMap views;
  for (const auto& oh : plan["ops"]) {
    const py::dict od = py::reinterpret_borrow<py::dict>(oh);
    cpu::OpDesc op;
    op.kind = py::str(od["kind"]);
    if (od.contains("attrs"))
      for (const auto& kv : py::dict(od["attrs"])) op.attrs.emplace(py::str(kv.first), attr_value(kv.second));
    if (od.contains("weights")) {
      for (const auto& kv : py::dict(od["weights"])) {
        const std::string wname = py::str(kv.second);
        op.weights.emplace(py::str(kv.first), wname);
        if (views.count(wname) || !weights.contains(wname.c_str())) continue;
        arrays.push_back(as_f32(weights[wname.c_str()], wname.c_str()));
        views.emplace(wname, array_view(arrays.back()));
      }
    }
    op.inputs = strings(od["inputs"]);
    op.outputs = strings(od["outputs"]);
    d.ops.push_back(std::move(op));
  }
  return cpu::build_plan_spec(d, views);
}

// ---- the Python-facing engine ----------------------------------------------------------------------
class PyEngine {
 public:
  PyEngine(const py::dict& plan, const py::dict& weights, int threads, const std::string& precision)
      : eng_(std::make_shared<cpu::Engine>(parse_plan(plan, weights), resolve_threads(threads),
                                           parse_precision(precision, "precision"))) {}

  py::array_t<float> run(const py::handle& xh, const std::string& mode_s, const py::object& out) {
    const cpu::Mode mode = parse_mode(mode_s);
    FArray x = as_f32(xh, "x");
    const auto& ps = eng_->plan();
    if (x.ndim() != 4 || x.shape(2) != ps.in_joints || x.shape(3) != ps.in_features)
      throw py::value_error("x: expected shape (N, T, " + std::to_string(ps.in_joints) + ", " +
                            std::to_string(ps.in_features) + "), got " + shape_str(shape_of(x)));
    const int64_t n = x.shape(0), t = x.shape(1);
    std::vector<int64_t> oshape;
    {
      py::gil_scoped_release nogil;
      oshape = eng_->output_shape(n, t, mode);
    }
    py::array_t<float> y = output_array(out, oshape, "run");
    const float* xp = x.data();
    float* yp = y.mutable_data();
    std::shared_ptr<cpu::Engine> eng = eng_;  // alive even if the Python object goes away
    {
      py::gil_scoped_release nogil;
      eng->run(xp, n, t, mode, yp);
    }
    return y;
  }

  // One forward with per-op wall times: [(op description, seconds)].
  py::list profile(const py::handle& xh, const std::string& mode_s) {
    const cpu::Mode mode = parse_mode(mode_s);
    FArray x = as_f32(xh, "x");
    const auto& ps = eng_->plan();
    if (x.ndim() != 4 || x.shape(2) != ps.in_joints || x.shape(3) != ps.in_features)
      throw py::value_error("x: bad shape " + shape_str(shape_of(x)));
    const int64_t n = x.shape(0), t = x.shape(1);
    auto oshape = eng_->output_shape(n, t, mode);
    py::array_t<float> y(oshape);
    std::vector<double> secs;
    const float* xp = x.data();
    float* yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      eng_->run(xp, n, t, mode, yp, &secs);
    }
    py::list r;
    for (size_t i = 0; i < secs.size(); ++i) r.append(py::make_tuple(ps.ops[i].name, secs[i]));
    return r;
  }

  std::string weight_panels() const {
    if (eng_->bf16_dot() != Bf16DotKernel::None) return "bf16-pairs";
    if (!cpu::small_panels_enabled()) return "none";
    const DType d = eng_->panel_dtype();
    return d == DType::F16 ? "fp16" : d == DType::BF16 ? "bf16" : "fp32";
  }
  py::dict panel_bytes() const {
    const auto b = eng_->panel_bytes();
    py::dict r;
    r["fp32"] = b.f32;
    r["16bit"] = b.b16;
    r["bf16_pairs"] = b.bf16_pairs;
    return r;
  }
  std::string bf16_dot() const { return cpu::bf16_dot_kernel_name(eng_->bf16_dot()); }

  std::vector<int64_t> output_shape(int64_t n, int64_t t, const std::string& mode) {
    return eng_->output_shape(n, t, parse_mode(mode));
  }
  py::dict schedule_shapes(int64_t n, int64_t t, const std::string& mode) {
    const auto shapes = eng_->buffer_shapes(n, t, parse_mode(mode));
    const auto& names = eng_->plan().buffer_names;
    py::dict r;
    for (size_t i = 0; i < shapes.size(); ++i) r[py::str(names[i])] = py::tuple(py::cast(shapes[i]));
    return r;
  }
  size_t workspace_bytes(int64_t n, int64_t t, const std::string& mode) {
    return eng_->workspace_bytes(n, t, parse_mode(mode));
  }
  size_t budget_bytes(int64_t n, int64_t t, const std::string& mode) {
    return eng_->budget_bytes(n, t, parse_mode(mode));
  }
  int threads() const { return eng_->threads(); }
  std::string name() const { return eng_->plan().name; }
  py::tuple cache_stats() {
    auto s = eng_->cache_stats();
    return py::make_tuple(s.first, s.second);
  }
  void clear_cache() { eng_->clear_cache(); }

 private:
  std::shared_ptr<cpu::Engine> eng_;
};

}  // namespace

void bind_cpu_engine(py::module_& m) {
  py::class_<PyEngine>(m, "Engine", "A plan compiled for the native CPU runtime (thread-safe).")
      .def(py::init<const py::dict&, const py::dict&, int, const std::string&>(), py::arg("plan"),
           py::arg("weights"), py::arg("threads") = 0, py::arg("precision") = "fp32")
      .def("run", &PyEngine::run, py::arg("x"), py::arg("mode") = "window", py::arg("out") = py::none(),
           "x [N, T, J, F] float32 -> [N, T_out, J_out, 3]; releases the GIL for the whole forward.")
      .def("profile", &PyEngine::profile, py::arg("x"), py::arg("mode") = "window",
           "One forward, returning [(op, seconds)] in plan order (benchmarks).")
      .def_property_readonly("weight_panels", &PyEngine::weight_panels,
                             "What the convs' small-M weight panels hold: 'fp32', or 'fp16' / 'bf16' "
                             "(a 16-bit engine's weights as stored; GASTRT_PANELS_16BIT=0: 'fp32'; "
                             "GASTRT_SMALL_PANELS=0: 'none'); 'bf16-pairs' where the convs run on a bf16 "
                             "dot-product kernel (bf16_dot) instead.")
      .def_property_readonly("panel_bytes", &PyEngine::panel_bytes,
                             "{'fp32': bytes, '16bit': bytes, 'bf16_pairs': bytes} of conv weights packed so "
                             "far (panels on a conv's first run on the small-M kernel, bf16 pairs on its "
                             "first run; bf16_pairs also counts the GAST blocks' GEMM weights); not during a "
                             "call.")
      .def_property_readonly("bf16_dot", &PyEngine::bf16_dot,
                             "The bf16 dot-product kernel this engine's convs and GAST-block GEMMs run on: 'amx', 'avx512bf16', "
                             "'emulated' or 'emulated-amx' (a bf16 engine; GASTRT_BF16_DOT), else 'none' "
                             "(fp32 arithmetic).")
      .def("output_shape", &PyEngine::output_shape, py::arg("n"), py::arg("t"), py::arg("mode") = "window")
      .def("schedule_shapes", &PyEngine::schedule_shapes, py::arg("n"), py::arg("t"),
           py::arg("mode") = "window",
           "{value name: shape} of the C++ schedule for an input [n, t, J, F] (plan.infer_shapes' geometry).")
      .def("workspace_bytes", &PyEngine::workspace_bytes, py::arg("n"), py::arg("t"),
           py::arg("mode") = "window",
           "Bytes of one call's workspace (activation arena + kernel scratch) for an input [n, t, J, F].")
      .def("budget_bytes", &PyEngine::budget_bytes, py::arg("n"), py::arg("t"),
           py::arg("mode") = "window",
           "workspace_bytes for a one-thread team: what chunk sizes are planned from (thread-invariant).")
      .def("cache_stats", &PyEngine::cache_stats, "(cached shapes, idle cached workspaces)")
      .def("clear_cache", &PyEngine::clear_cache)
      .def_property_readonly("threads", &PyEngine::threads)
      .def_property_readonly("name", &PyEngine::name);
}

}  // namespace bindings
}  // namespace gastrt
