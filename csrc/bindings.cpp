// gastrt._native: the only pybind11 translation unit. Converts between NumPy / plan dicts and
// the torch-free C++ core (csrc/cpu, csrc/common; csrc/cuda when built with CUDA), and releases
// the GIL around every kernel / forward.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/blas.h"
#include "common/check.h"
#include "common/thread_pool.h"
#include "cpu/vec_kernels.h"
#include "gastrt/cpu_ops.h"
#include "gastrt/executor.h"
#include "gastrt/params.h"

#ifdef GASTRT_WITH_CUDA
#if defined(__has_include)
#if __has_include("cuda/cuda_ops.h")
#include "cuda/cuda_ops.h"
#define GASTRT_HAVE_CUDA_OPS 1
#endif
#endif
#endif

namespace py = pybind11;
using namespace gastrt;

namespace {

#ifndef GASTRT_CUDA_ARCHS
#define GASTRT_CUDA_ARCHS ""
#endif
#ifndef GASTRT_CUDA_VERSION
#define GASTRT_CUDA_VERSION ""
#endif

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Any array-like -> C-contiguous float32 (copies only when needed: non-contiguous / other dtype).
FArray as_f32(const py::handle& h, const char* what) {
  FArray a = FArray::ensure(h);  // null (error cleared) when h cannot become a float array
  if (!a) throw py::type_error(std::string(what) + ": expected a float array");
  return a;
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + (s.size() == 1 ? ",)" : ")");
}

void expect_shape(const py::array& a, const std::vector<int64_t>& want, const std::string& what) {
  if (shape_of(a) != want)
    throw py::value_error(what + ": expected shape " + shape_str(want) + ", got " +
                          shape_str(shape_of(a)));
}

// The caller's output array: float32, C-contiguous, writeable, exact shape; or a new one.
py::array_t<float> output_array(const py::object& out, const std::vector<int64_t>& shape,
                                const char* what) {
  if (out.is_none()) return py::array_t<float>(shape);
  if (!py::isinstance<py::array>(out))
    throw py::type_error(std::string(what) + ": out must be a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(out);
  if (!a.dtype().is(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) || !a.writeable())
    throw py::value_error(std::string(what) + ": out must be a writeable C-contiguous float32 array");
  expect_shape(a, shape, std::string(what) + " out");
  return py::reinterpret_borrow<py::array_t<float>>(out);
}

int resolve_threads(int threads) { return threads > 0 ? threads : available_cpus(); }

Act parse_act(const std::string& s) {
  if (s == "none") return Act::None;
  if (s == "relu") return Act::Relu;
  if (s == "lrelu") return Act::LRelu;
  throw py::value_error("unknown activation '" + s + "': expected none, relu or lrelu");
}

cpu::Mode parse_mode(const std::string& s) {
  if (s == "window") return cpu::Mode::Window;
  if (s == "sequence") return cpu::Mode::Sequence;
  throw py::value_error("unknown mode '" + s + "': expected 'window' or 'sequence'");
}

// ---- gast_block weights from a role -> array dict ------------------------------------------------
std::shared_ptr<cpu::GastBlockWeights> gast_weights(const py::dict& W, int heads, int gc,
                                                    const std::string& what) {
  auto get = [&](const char* role) -> FArray {
    if (!W.contains(role)) throw py::value_error(what + ": weight '" + role + "' is missing");
    return as_f32(W[role], (what + "." + role).c_str());
  };
  FArray loc_w = get("loc_w"), loc_diag = get("loc_diag");
  if (loc_w.ndim() != 2 || loc_diag.ndim() != 3)
    throw py::value_error(what + ": loc_w must be [c, 4c] and loc_diag [2, j, c]");
  const int64_t c = loc_w.shape(0), j = loc_diag.shape(1), h = heads, hg = int64_t(heads) * gc;
  if (heads <= 0 || gc <= 0) throw py::value_error(what + ": heads and head_channels must be positive");
  std::map<std::string, FArray> a;
  const std::vector<std::pair<const char*, std::vector<int64_t>>> shapes = {
      {"loc_w", {c, 4 * c}},       {"loc_diag", {2, j, c}},  {"loc_off", {2, j, j, c}},
      {"loc_b", {2 * c}},          {"loc_cat_w", {2 * c, c}}, {"loc_cat_b", {c}},
      {"glb_u", {c, 2 * h}},       {"glb_c", {2 * h}},        {"glb_g_w", {c, hg}},
      {"glb_g_b", {hg}},           {"glb_ck", {h, j, j}},     {"glb_cat_w", {hg, c}},
      {"glb_cat_b", {c}},          {"cat_w", {3 * c, 2 * c}}, {"cat_b", {2 * c}}};
  for (const auto& rs : shapes) {
    FArray arr = get(rs.first);
    expect_shape(arr, rs.second, what + "." + rs.first);
    a.emplace(rs.first, arr);
  }
  GastBlockParams p{};
  p.j = int32_t(j);
  p.c = int32_t(c);
  p.heads = heads;
  p.head_channels = gc;
  p.loc_w = a.at("loc_w").data();
  p.loc_diag = a.at("loc_diag").data();
  p.loc_off = a.at("loc_off").data();
  p.loc_b = a.at("loc_b").data();
  p.loc_cat_w = a.at("loc_cat_w").data();
  p.loc_cat_b = a.at("loc_cat_b").data();
  p.glb_u = a.at("glb_u").data();
  p.glb_c = a.at("glb_c").data();
  p.glb_g_w = a.at("glb_g_w").data();
  p.glb_g_b = a.at("glb_g_b").data();
  p.glb_ck = a.at("glb_ck").data();
  p.glb_cat_w = a.at("glb_cat_w").data();
  p.glb_cat_b = a.at("glb_cat_b").data();
  p.cat_w = a.at("cat_w").data();
  p.cat_b = a.at("cat_b").data();
  p.dtype = DType::F32;
  return std::make_shared<cpu::GastBlockWeights>(cpu::gast_block_prepare(p));
}

// x [N, J, T, C] -> [N, J, T, 2C] with prepared weights; scratch grown as needed (caller-owned).
py::array_t<float> run_gast_block(const cpu::GastBlockWeights& gw, const py::handle& xh,
                                  const py::object& out, int threads, std::vector<float>& scratch) {
  FArray x = as_f32(xh, "x");
  if (x.ndim() != 4) throw py::value_error("x: expected [N, J, T, C]");
  if (x.shape(1) != gw.j || x.shape(3) != gw.c)
    throw py::value_error("x: expected [N, " + std::to_string(gw.j) + ", T, " + std::to_string(gw.c) +
                          "], got " + shape_str(shape_of(x)));
  const int64_t N = x.shape(0), J = x.shape(1), T = x.shape(2), C = x.shape(3);
  py::array_t<float> y = output_array(out, {N, J, T, 2 * C}, "gast_block");
  const float* xp = x.data();
  float* yp = y.mutable_data();
  const int nt = resolve_threads(threads);
  {
    py::gil_scoped_release nogil;
    Team team(nt);
    const size_t need = cpu::gast_block_scratch_floats(gw, N, int32_t(T), team.size()) + 16;
    if (scratch.size() < need) scratch.resize(need);
    cpu::gast_block_f32(gw, xp, yp, N, int32_t(T), scratch.data(), team);
  }
  return y;
}

// A gast_block with its weights prepared once (streaming calls it once per push). Not
// thread-safe (one scratch): one per thread.
struct GastBlockKernel {
  std::shared_ptr<cpu::GastBlockWeights> w;
  std::vector<float> scratch;
};

// ---- plan dict (Plan.to_json()) -> PlanSpec --------------------------------------------------------
cpu::PlanSpec parse_plan(const py::dict& plan, const py::dict& weights) {
  cpu::PlanSpec ps;
  ps.name = plan.contains("name") ? py::str(plan["name"]).cast<std::string>() : "plan";
  ps.in_joints = plan["in_joints"].cast<int32_t>();
  ps.out_joints = plan["out_joints"].cast<int32_t>();
  ps.in_features = plan.contains("in_features") ? plan["in_features"].cast<int32_t>() : 2;
  ps.receptive_field = plan["receptive_field"].cast<int32_t>();
  ps.has_window = ps.has_sequence = false;
  for (const auto& m : plan["modes"]) {
    const std::string s = py::str(m);
    ps.has_window |= s == "window";
    ps.has_sequence |= s == "sequence";
  }
  std::map<std::string, int32_t> ids{{"input", 0}};
  auto id_of = [&](const std::string& name, bool define) -> int32_t {
    auto it = ids.find(name);
    if (it != ids.end()) {
      if (define) throw py::value_error("plan " + ps.name + ": buffer '" + name + "' is written twice");
      return it->second;
    }
    if (!define) throw py::value_error("plan " + ps.name + ": buffer '" + name + "' is read before it is written");
    const int32_t id = int32_t(ids.size());
    ids.emplace(name, id);
    return id;
  };
  auto weight = [&](const py::dict& roles, const char* role, const std::string& opname) -> FArray {
    if (!roles.contains(role)) throw py::value_error(opname + ": no '" + role + "' weight");
    const std::string wname = py::str(roles[role]);
    if (!weights.contains(wname.c_str())) throw py::value_error(opname + ": weight '" + wname + "' is missing");
    return as_f32(weights[wname.c_str()], wname.c_str());
  };
  static const std::map<std::string, cpu::OpKind> kinds = {
      {"input_joint_major", cpu::OpKind::InputJointMajor}, {"input_flat", cpu::OpKind::InputFlat},
      {"conv", cpu::OpKind::Conv},                         {"gast_block", cpu::OpKind::GastBlock},
      {"rie_encode", cpu::OpKind::RieEncode},              {"concat", cpu::OpKind::Concat},
      {"output_joint_major", cpu::OpKind::OutputJointMajor}, {"output_flat", cpu::OpKind::OutputFlat},
      {"output_assemble", cpu::OpKind::OutputAssemble}};
  for (const auto& oh : plan["ops"]) {
    const py::dict od = py::reinterpret_borrow<py::dict>(oh);
    const std::string kind = py::str(od["kind"]);
    auto kit = kinds.find(kind);
    if (kit == kinds.end()) throw py::value_error("plan " + ps.name + ": unknown op kind '" + kind + "'");
    cpu::OpSpec op;
    op.kind = kit->second;
    const py::dict attrs = od.contains("attrs") ? py::dict(od["attrs"]) : py::dict();
    const py::dict roles = od.contains("weights") ? py::dict(od["weights"]) : py::dict();
    for (const auto& n : od["inputs"]) op.inputs.push_back(id_of(py::str(n), false));
    for (const auto& n : od["outputs"]) op.outputs.push_back(id_of(py::str(n), true));
    if (op.outputs.empty()) throw py::value_error("plan " + ps.name + ": op " + kind + " has no output");
    op.name = kind + " -> " + py::str(od["outputs"].cast<py::list>()[0]).cast<std::string>();
    auto attr_int = [&](const char* k, int32_t dflt) {
      return attrs.contains(k) ? attrs[k].cast<int32_t>() : dflt;
    };
    switch (op.kind) {
      case cpu::OpKind::Conv: {
        op.k = attr_int("k", 1);
        op.dilation = attr_int("dilation", 1);
        op.act = parse_act(attrs.contains("act") ? py::str(attrs["act"]).cast<std::string>() : "none");
        op.res_win_offset = attr_int("res_win_offset", 0);
        op.res_win_stride = attr_int("res_win_stride", 1);
        op.res_seq_offset = attr_int("res_seq_offset", 0);
        FArray w = weight(roles, "w", op.name), b = weight(roles, "b", op.name);
        if (op.k < 1 || w.ndim() != 2 || w.shape(0) % op.k)
          throw py::value_error(op.name + ": conv weight must be [k*ci, co]");
        op.ci = int32_t(w.shape(0) / op.k);
        op.co = int32_t(w.shape(1));
        expect_shape(b, {op.co}, op.name + " bias");
        op.w.assign(w.data(), w.data() + w.size());
        op.b.assign(b.data(), b.data() + b.size());
        if (op.inputs.empty() || op.inputs.size() > 2) throw py::value_error(op.name + ": conv takes 1 or 2 inputs");
        break;
      }
      case cpu::OpKind::GastBlock: {
        py::dict W;
        for (const auto& kv : roles) {
          const std::string wname = py::str(kv.second);
          if (!weights.contains(wname.c_str())) throw py::value_error(op.name + ": weight '" + wname + "' is missing");
          W[kv.first] = weights[wname.c_str()];
        }
        op.gast = gast_weights(W, attr_int("heads", 0), attr_int("head_channels", 0), op.name);
        break;
      }
      case cpu::OpKind::RieEncode: {
        for (const auto& g : attrs["groups"]) op.groups.push_back(g.cast<std::vector<int32_t>>());
        const int32_t cin = ps.in_joints * ps.in_features;
        for (const auto& g : op.groups)
          for (int32_t c : g)
            if (c < 0 || c >= cin) throw py::value_error(op.name + ": channel index out of range");
        break;
      }
      case cpu::OpKind::OutputAssemble: {
        for (const auto& sj : attrs["sources"]) {
          auto v = sj.cast<std::vector<int32_t>>();
          if (v.size() != 2) throw py::value_error(op.name + ": sources must be (input, joint) pairs");
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

// ---- the Python-facing engine ----------------------------------------------------------------------
class PyEngine {
 public:
  PyEngine(const py::dict& plan, const py::dict& weights, int threads)
      : eng_(std::make_shared<cpu::Engine>(parse_plan(plan, weights), resolve_threads(threads))) {}

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

  std::vector<int64_t> output_shape(int64_t n, int64_t t, const std::string& mode) {
    return eng_->output_shape(n, t, parse_mode(mode));
  }
  size_t workspace_bytes(int64_t n, int64_t t, const std::string& mode) {
    return eng_->workspace_bytes(n, t, parse_mode(mode));
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

// ---- BLAS location -------------------------------------------------------------------------------
// The scipy-openblas32 wheel's shared library, found WITHOUT importing the package (importing it
// dlopens the library, before we could choose OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS).
std::string find_blas_library() {
  if (const char* p = std::getenv("GASTRT_BLAS_LIBRARY")) return p;
  py::object spec = py::module_::import("importlib.util").attr("find_spec")("scipy_openblas32");
  if (spec.is_none())
    throw py::import_error(
        "gastrt._native needs the scipy-openblas32 package (pip install scipy-openblas32)");
  py::object locs = spec.attr("submodule_search_locations");
  if (locs.is_none() || py::len(locs) == 0)
    throw py::import_error("scipy_openblas32 is not a regular package");
  const std::string dir = py::str(py::list(locs)[0]).cast<std::string>() + "/lib";
  py::object os = py::module_::import("os");
  if (!os.attr("path").attr("isdir")(dir).cast<bool>())
    throw py::import_error("scipy-openblas32 has no lib directory at " + dir);
  std::string best;
  for (const auto& f : os.attr("listdir")(dir)) {
    const std::string name = py::str(f);
    if (name.rfind("libscipy_openblas", 0) != 0) continue;
    if (name.find(".so") == std::string::npos && name.find(".dylib") == std::string::npos) continue;
    if (best.empty() || name < best) best = name;
  }
  if (best.empty()) throw py::import_error("no libscipy_openblas shared library in " + dir);
  return dir + "/" + best;
}

int cuda_device_count_safe() {
#ifdef GASTRT_HAVE_CUDA_OPS
  try {
    return gastrt::cuda::device_count();
  } catch (...) {
    return 0;
  }
#else
  return 0;
#endif
}

std::string compiler_string() {
#if defined(__clang__)
  return std::string("Clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#else
  return "unknown";
#endif
}

std::vector<std::string> split_archs(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == ';' || ch == ',' || ch == ' ') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "gastrt native runtime: fused fp32 CPU kernels (OpenBLAS GEMMs) and, when built "
            "with CUDA, the GPU executor.";

  try {
    blas::load(find_blas_library());
  } catch (const py::error_already_set&) {
    throw;
  } catch (const std::exception& e) {
    throw py::import_error(std::string("gastrt._native: ") + e.what());
  }

  m.def("build_config", [] {
    py::dict d;
    d["native"] = true;
#ifdef GASTRT_HAVE_CUDA_OPS
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["cuda_archs"] = split_archs(GASTRT_CUDA_ARCHS);
    const std::string cv = GASTRT_CUDA_VERSION;
    d["cuda_version"] = cv.empty() ? py::object(py::none()) : py::object(py::str(cv));
    d["compiler"] = compiler_string();
    d["blas"] = blas::config();
    d["blas_core"] = blas::corename();
    d["blas_core_note"] = blas::coretype_note();
    d["blas_library"] = blas::library_path();
    d["openmp"] = false;
    d["threading"] = "gastrt thread pool (OpenBLAS single-threaded inside its tasks)";
    d["cpu_isa"] = cpu::vec().isa;
    d["default_threads"] = available_cpus();
    return d;
  }, "What this extension was compiled with (merged into gastrt.build_config()).");
  m.def("has_cuda", [] {
#ifdef GASTRT_HAVE_CUDA_OPS
    return true;
#else
    return false;
#endif
  }, "True when the CUDA kernels were compiled in (says nothing about a GPU being present).");
  m.def("cuda_device_count", &cuda_device_count_safe,
        "Visible CUDA devices; 0 without a CUDA build, driver or GPU (never raises).");
  m.def("available_cpus", &available_cpus, "CPUs this process may run on (sched_getaffinity).");

  // ---- standalone kernels (tests; the engine calls the same C++ functions) ----
  m.def(
      "conv",
      [](const py::handle& xh, const py::handle& wh, const py::handle& bh, const py::object& resh,
         int k, int stride, int dilation, int res_offset, int res_stride, const std::string& act,
         const py::object& out, int threads, const std::string& algo) {
        if (algo != "auto" && algo != "direct" && algo != "winograd")
          throw py::value_error("algo must be 'auto', 'direct' or 'winograd', got '" + algo + "'");
        FArray x = as_f32(xh, "x"), w = as_f32(wh, "w"), b = as_f32(bh, "b");
        if (x.ndim() != 4) throw py::value_error("x: expected [N, G, T, Ci]");
        if (k < 1 || stride < 1 || dilation < 1) throw py::value_error("k, stride, dilation must be >= 1");
        const int64_t N = x.shape(0), G = x.shape(1), T = x.shape(2), Ci = x.shape(3);
        if (w.ndim() != 2 || w.shape(0) != k * Ci) throw py::value_error("w: expected [k*Ci, Co]");
        const int64_t Co = w.shape(1);
        expect_shape(b, {Co}, "b");
        const int64_t span = int64_t(k - 1) * dilation + 1;
        if (T < span) throw py::value_error("x has " + std::to_string(T) + " frames, the conv needs " + std::to_string(span));
        const int64_t To = (T - span) / stride + 1;
        FArray res;
        int64_t Tr = 0;
        if (!resh.is_none()) {
          res = as_f32(resh, "res");
          if (res.ndim() != 4 || res.shape(0) != N || res.shape(1) != G || res.shape(3) != Co)
            throw py::value_error("res: expected [N, G, Tr, Co]");
          Tr = res.shape(2);
        }
        py::array_t<float> y = output_array(out, {N, G, To, Co}, "conv");
        ConvParams p{};
        p.x = x.data();
        p.w = w.data();
        p.b = b.data();
        p.res = resh.is_none() ? nullptr : res.data();
        p.y = y.mutable_data();
        p.n_seq = N * G;
        p.t_in = int32_t(T);
        p.t_out = int32_t(To);
        p.t_res = int32_t(Tr);
        p.ci = int32_t(Ci);
        p.co = int32_t(Co);
        p.k = k;
        p.stride = stride;
        p.dilation = dilation;
        p.res_offset = res_offset;
        p.res_stride = res_stride;
        p.act = parse_act(act);
        p.dtype = DType::F32;
        const bool wino = algo == "winograd" ||
                          (algo == "auto" && cpu::conv_winograd_shape_ok(p) &&
                           cpu::conv_winograd_pays(p.ci, p.co));
        if (wino && !cpu::conv_winograd_shape_ok(p))
          throw py::value_error("algo='winograd' needs k=3, stride=1 and at least 4*dilation = " +
                                std::to_string(4 * dilation) + " output frames (got k=" +
                                std::to_string(k) + ", stride=" + std::to_string(stride) + ", " +
                                std::to_string(To) + " frames)");
        const int nt = resolve_threads(threads);
        {
          py::gil_scoped_release nogil;
          Team team(nt);
          if (wino) {
            const std::vector<float> u = cpu::conv_winograd_weights(w.data(), p.ci, p.co);
            std::vector<float> scratch(cpu::conv_winograd_scratch_floats(p, team.size()));
            cpu::conv_winograd_f32(p, u.data(), scratch.data(), team);
          } else {
            cpu::conv_f32(p, team);
          }
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("res") = py::none(), py::kw_only(),
      py::arg("k"), py::arg("stride"), py::arg("dilation") = 1, py::arg("res_offset") = 0,
      py::arg("res_stride") = 1, py::arg("act") = "none", py::arg("out") = py::none(),
      py::arg("threads") = 0, py::arg("algo") = "auto",
      "Temporal conv: x [N, G, T, Ci], w [k*Ci, Co], b [Co] (, res [N, G, Tr, Co]) -> [N, G, To, Co].\n"
      "algo: 'direct' (shifted GEMMs), 'winograd' (F(4,3); k=3, stride 1) or 'auto' (the engine's choice).");

  m.def(
      "stream_linear",
      [](const py::handle& xh, const py::array& wh, const py::handle& bh, const py::object& resh,
         const std::string& act, const py::object& out, int threads) {
        FArray x = as_f32(xh, "x"), b = as_f32(bh, "b");
        if (x.ndim() != 2) throw py::value_error("x: expected [M, K]");
        const char kind = wh.dtype().kind();
        const ssize_t isz = wh.itemsize();
        DType wdt;
        if (kind == 'f' && isz == 4) wdt = DType::F32;
        else if (kind == 'f' && isz == 2) wdt = DType::F16;
        else if (kind == 'u' && isz == 2) wdt = DType::BF16;
        else throw py::type_error("w: expected float32, float16 or uint16 (bfloat16 bits) weights");
        if (wh.ndim() != 2 || !(wh.flags() & py::array::c_style))
          throw py::value_error("w: expected a C-contiguous [K, N] array");
        const int64_t M = x.shape(0), K = x.shape(1), N = wh.shape(1);
        if (wh.shape(0) != K)
          throw py::value_error("w: expected " + std::to_string(K) + " rows, got " +
                                std::to_string(wh.shape(0)));
        expect_shape(b, {N}, "b");
        FArray res;
        if (!resh.is_none()) {
          res = as_f32(resh, "res");
          expect_shape(res, {M, N}, "res");
        }
        py::array_t<float> y = output_array(out, {M, N}, "stream_linear");
        StreamLinearParams p{};
        p.x = x.data();
        p.w = wh.data();
        p.b = b.data();
        p.res = resh.is_none() ? nullptr : res.data();
        p.y = y.mutable_data();
        p.m = M;
        p.ldx = K;
        p.k = int32_t(K);
        p.n = int32_t(N);
        p.act = parse_act(act);
        p.wdtype = wdt;
        const int nt = resolve_threads(threads);
        {
          py::gil_scoped_release nogil;
          Team team(nt);
          cpu::stream_linear_f32(p, team);
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("res") = py::none(), py::kw_only(),
      py::arg("act") = "none", py::arg("out") = py::none(), py::arg("threads") = 0,
      "Linear for few rows (streaming columns): x [M, K] fp32, w [K, N] float32 / float16 / uint16 "
      "bfloat16 bits, b [N] (, res [M, N]) -> act(x @ w + b) (+ res) [M, N] fp32.");

  m.def(
      "gast_block",
      [](const py::handle& xh, const py::dict& W, int heads, int head_channels,
         const py::object& out, int threads) {
        auto gw = gast_weights(W, heads, head_channels, "gast_block");
        std::vector<float> scratch;
        return run_gast_block(*gw, xh, out, threads, scratch);
      },
      py::arg("x"), py::arg("weights"), py::kw_only(), py::arg("heads"), py::arg("head_channels"),
      py::arg("out") = py::none(), py::arg("threads") = 0,
      "GAST-Net graph attention block: x [N, J, T, C] -> [N, J, T, 2C] (weights: role -> array).");

  py::class_<GastBlockKernel>(m, "GastBlockKernel",
                              "gast_block with its weights prepared once (not thread-safe: one per thread).")
      .def(py::init([](const py::dict& W, int heads, int head_channels) {
             return GastBlockKernel{gast_weights(W, heads, head_channels, "GastBlockKernel"), {}};
           }),
           py::arg("weights"), py::kw_only(), py::arg("heads"), py::arg("head_channels"))
      .def("__call__",
           [](GastBlockKernel& k, const py::handle& xh, const py::object& out, int threads) {
             return run_gast_block(*k.w, xh, out, threads, k.scratch);
           },
           py::arg("x"), py::kw_only(), py::arg("out") = py::none(), py::arg("threads") = 0,
           "x [N, J, T, C] -> [N, J, T, 2C]");

  m.def(
      "rie_encode",
      [](const py::handle& xh, const std::vector<std::vector<int32_t>>& groups,
         const py::object& outs, int threads) {
        FArray x = as_f32(xh, "x");
        if (x.ndim() != 4) throw py::value_error("x: expected [N, T, J, F]");
        if (groups.empty() || groups.size() > 5) throw py::value_error("rie_encode takes 1 to 5 groups");
        const int64_t N = x.shape(0), T = x.shape(1), CIN = x.shape(2) * x.shape(3);
        for (const auto& g : groups)
          for (int32_t c : g)
            if (c < 0 || c >= CIN) throw py::value_error("rie_encode: channel index out of range");
        std::vector<py::object> given;
        if (!outs.is_none()) {
          given = outs.cast<std::vector<py::object>>();
          if (given.size() != groups.size() + 1)
            throw py::value_error("rie_encode: outs must hold one array per group plus the centre");
        }
        std::vector<py::array_t<float>> ys;
        RieEncodeParams p{};
        for (size_t g = 0; g < groups.size(); ++g) {
          ys.push_back(output_array(given.empty() ? py::object(py::none()) : given[g],
                                    {N, 1, T, 3 * int64_t(groups[g].size())}, "rie_encode"));
          p.out[g] = ys.back().mutable_data();
          p.idx[g] = groups[g].data();
          p.len[g] = int32_t(groups[g].size());
        }
        ys.push_back(output_array(given.empty() ? py::object(py::none()) : given.back(), {N, 1, 1, CIN},
                                  "rie_encode"));
        p.current = ys.back().mutable_data();
        p.x = x.data();
        p.n = N;
        p.t = int32_t(T);
        p.cin = int32_t(CIN);
        const int nt = resolve_threads(threads);
        {
          py::gil_scoped_release nogil;
          Team team(nt);
          cpu::rie_encode_f32(p, team);
        }
        py::list r;
        for (auto& y : ys) r.append(y);
        return r;
      },
      py::arg("x"), py::arg("groups"), py::kw_only(), py::arg("outs") = py::none(),
      py::arg("threads") = 0,
      "RIE encoding: x [N, T, J, F] -> [N, 1, T, 3*len(g)] per group + centre [N, 1, 1, J*F].");

  m.def(
      "sgemm",
      [](const py::handle& ah, const py::handle& bh, const py::object& out, int threads) {
        FArray a = as_f32(ah, "a"), b = as_f32(bh, "b");
        if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(0))
          throw py::value_error("sgemm: expected a [M, K] and b [K, N]");
        const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
        py::array_t<float> c = output_array(out, {M, N}, "sgemm");
        const float* ap = a.data();
        const float* bp = b.data();
        float* cp = c.mutable_data();
        const int nt = resolve_threads(threads);
        {
          py::gil_scoped_release nogil;
          Team team(nt);
          // Row blocks, one per thread: how the runtime splits its large GEMMs.
          const int64_t P = team.size(), rows = (M + P - 1) / P;
          team.parallel_for(P, [&](int64_t i, int) {
            const int64_t r0 = i * rows, r1 = std::min(M, r0 + rows);
            if (r1 > r0) blas::sgemm(r1 - r0, N, K, 1.f, ap + r0 * K, K, bp, N, 0.f, cp + r0 * N, N);
          });
        }
        return c;
      },
      py::arg("a"), py::arg("b"), py::kw_only(), py::arg("out") = py::none(), py::arg("threads") = 0,
      "Plain C = A @ B through the runtime's BLAS and thread pool (the benchmarks' GEMM roofline).");

  py::class_<PyEngine>(m, "Engine", "A plan compiled for the native CPU runtime (thread-safe).")
      .def(py::init<const py::dict&, const py::dict&, int>(), py::arg("plan"), py::arg("weights"),
           py::arg("threads") = 0)
      .def("run", &PyEngine::run, py::arg("x"), py::arg("mode") = "window", py::arg("out") = py::none(),
           "x [N, T, J, F] float32 -> [N, T_out, J_out, 3]; releases the GIL for the whole forward.")
      .def("profile", &PyEngine::profile, py::arg("x"), py::arg("mode") = "window",
           "One forward, returning [(op, seconds)] in plan order (benchmarks).")
      .def("output_shape", &PyEngine::output_shape, py::arg("n"), py::arg("t"), py::arg("mode") = "window")
      .def("workspace_bytes", &PyEngine::workspace_bytes, py::arg("n"), py::arg("t"),
           py::arg("mode") = "window",
           "Bytes of one call's workspace (activation arena + kernel scratch) for an input [n, t, J, F].")
      .def("cache_stats", &PyEngine::cache_stats, "(cached shapes, idle cached workspaces)")
      .def("clear_cache", &PyEngine::clear_cache)
      .def_property_readonly("threads", &PyEngine::threads)
      .def_property_readonly("name", &PyEngine::name);

  // ---- CUDA executor (API: csrc/cuda/cuda_ops.h) ----
#ifdef GASTRT_HAVE_CUDA_OPS
  {
    namespace gc = gastrt::cuda;
    using U8 = py::array_t<uint8_t, py::array::c_style>;
    using F32In = py::array_t<float, py::array::c_style | py::array::forcecast>;
    using F32Out = py::array_t<float, py::array::c_style>;
    using I64In = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

    m.def("cuda_device_name", &gc::device_name, py::arg("device"));
    m.def("cuda_runtime_version", &gc::runtime_version);
    m.def("cuda_malloc", [](int device, int64_t bytes) {
      py::gil_scoped_release nogil;
      return static_cast<uint64_t>(gc::device_malloc(device, bytes));
    }, py::arg("device"), py::arg("bytes"));
    m.def("cuda_free", [](int device, uint64_t ptr) {
      py::gil_scoped_release nogil;
      gc::device_free(device, static_cast<uintptr_t>(ptr));
    }, py::arg("device"), py::arg("ptr"));
    m.def("cuda_memcpy_htod", [](int device, uint64_t dst, U8 src) {
      const void* p = src.data();
      const int64_t n = static_cast<int64_t>(src.size());
      py::gil_scoped_release nogil;
      gc::memcpy_htod(device, static_cast<uintptr_t>(dst), p, n);
    }, py::arg("device"), py::arg("dst"), py::arg("src"));
    m.def("cuda_memcpy_dtoh", [](int device, U8 dst, uint64_t src) {
      void* p = dst.mutable_data();
      const int64_t n = static_cast<int64_t>(dst.size());
      py::gil_scoped_release nogil;
      gc::memcpy_dtoh(device, p, static_cast<uintptr_t>(src), n);
    }, py::arg("device"), py::arg("dst").noconvert(), py::arg("src"));

    py::class_<gc::Engine>(m, "CudaEngine",
                           "GPU executor (csrc/cuda/cuda_ops.h): weights, arena, programs, CUDA graphs.")
        .def(py::init([](int device, int dtype) {
               py::gil_scoped_release nogil;
               return std::make_unique<gc::Engine>(device, dtype);
             }),
             py::arg("device"), py::arg("dtype"))
        .def("device", &gc::Engine::device)
        .def("dtype", &gc::Engine::dtype)
        .def("device_name", &gc::Engine::device_name)
        .def("stream", [](const gc::Engine& e) { return static_cast<uint64_t>(e.stream()); })
        .def("synchronize", &gc::Engine::synchronize, py::call_guard<py::gil_scoped_release>())
        .def("add_weight", [](gc::Engine& e, F32In a, bool engine_dtype) {
               return e.add_weight(a.data(), static_cast<int64_t>(a.size()), engine_dtype);
             }, py::arg("data"), py::arg("engine_dtype"))
        .def("weight_count", &gc::Engine::weight_count)
        .def("create_program", [](gc::Engine& e, I64In code, int64_t arena_bytes, int64_t max_n,
                                  int64_t in_per_n, int64_t out_per_n) {
               const int64_t* p = code.data();
               const int64_t n = static_cast<int64_t>(code.size());
               py::gil_scoped_release nogil;
               return e.create_program(p, n, arena_bytes, max_n, in_per_n, out_per_n);
             }, py::arg("code"), py::arg("arena_bytes"), py::arg("max_n"), py::arg("in_per_n"),
             py::arg("out_per_n"))
        .def("destroy_program", &gc::Engine::destroy_program, py::arg("id"),
             py::call_guard<py::gil_scoped_release>())
        .def("describe_program", &gc::Engine::describe_program, py::arg("id"))
        .def("run_host", [](gc::Engine& e, int64_t id, F32In x, F32Out y, int64_t n, bool use_graph) {
               const float* xp = x.data();
               const int64_t xc = static_cast<int64_t>(x.size());
               float* yp = y.mutable_data();
               const int64_t yc = static_cast<int64_t>(y.size());
               py::gil_scoped_release nogil;
               e.run_host(id, xp, xc, yp, yc, n, use_graph);
             }, py::arg("id"), py::arg("x"), py::arg("y").noconvert(), py::arg("n"), py::arg("use_graph") = true)
        .def("run_device", [](gc::Engine& e, int64_t id, uint64_t x, uint64_t y, int64_t n, uint64_t ext_stream,
                              bool has_ext, bool use_graph) {
               py::gil_scoped_release nogil;
               e.run_device(id, static_cast<uintptr_t>(x), static_cast<uintptr_t>(y), n,
                            static_cast<uintptr_t>(ext_stream), has_ext, use_graph);
             }, py::arg("id"), py::arg("x"), py::arg("y"), py::arg("n"), py::arg("ext_stream"), py::arg("has_ext"),
             py::arg("use_graph") = true)
        .def("run_arena", &gc::Engine::run_arena, py::arg("id"), py::arg("use_graph") = false,
             py::call_guard<py::gil_scoped_release>())
        .def("time_program", &gc::Engine::time_program, py::arg("id"), py::arg("iters"), py::arg("warmup"),
             py::arg("use_graph") = true, py::call_guard<py::gil_scoped_release>())
        .def("reserve_arena", &gc::Engine::reserve_arena, py::arg("bytes"),
             py::call_guard<py::gil_scoped_release>())
        .def("arena_bytes", &gc::Engine::arena_bytes)
        .def("arena_write", [](gc::Engine& e, int64_t offset, U8 data) {
               const void* p = data.data();
               const int64_t n = static_cast<int64_t>(data.size());
               py::gil_scoped_release nogil;
               e.arena_write(offset, p, n);
             }, py::arg("offset"), py::arg("data"))
        .def("arena_read", [](gc::Engine& e, int64_t offset, U8 out) {
               void* p = out.mutable_data();
               const int64_t n = static_cast<int64_t>(out.size());
               py::gil_scoped_release nogil;
               e.arena_read(offset, p, n);
             }, py::arg("offset"), py::arg("out").noconvert())
        .def("arena_fill", &gc::Engine::arena_fill, py::arg("offset"), py::arg("bytes"), py::arg("byte_value"),
             py::call_guard<py::gil_scoped_release>())
        .def("gast_scratch_bytes", &gc::Engine::gast_scratch_bytes, py::arg("n"), py::arg("j"), py::arg("t"),
             py::arg("c"), py::arg("heads"), py::arg("gc"))
        .def("gast_fused", &gc::Engine::gast_fused, py::arg("j"), py::arg("c"), py::arg("heads"), py::arg("gc"))
        .def("set_option", &gc::Engine::set_option, py::arg("name"), py::arg("value"),
             py::call_guard<py::gil_scoped_release>())
        .def("get_option", &gc::Engine::get_option, py::arg("name"));
  }
#endif
}
