// gastrt._native: the single-kernel entry points (conv, stream_linear, gast_block,
// GastBlockKernel, rie_encode, sgemm). Tests hold them against the NumPy oracle, streaming calls
// GastBlockKernel / stream_linear per push, benchmarks use sgemm; the CPU Engine calls the same
// C++ functions.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bindings/common.h"
#include "common/blas.h"
#include "common/thread_pool.h"
#include "gastrt/cpu_ops.h"
#include "gastrt/plan_spec.h"

namespace gastrt {
namespace bindings {

namespace {

// role -> array dict (plan.py gast_block roles) -> weights checked and prepared by the core.
std::shared_ptr<cpu::GastBlockWeights> gast_weights(const py::dict& W, int heads, int gc,
                                                    const std::string& what) {
  std::vector<FArray> arrays;  // alive until the core has copied them
  cpu::ArrayMap roles;
  for (const auto& kv : W) {
    const std::string role = py::str(kv.first);
    arrays.push_back(as_f32(kv.second, (what + "." + role).c_str()));
    roles.emplace(role, array_view(arrays.back()));
  }
  return cpu::prepare_gast_block(roles, heads, gc, what);
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

// A kernel name (cpu::bf16_dot_kernel_name) or 'auto' (the engines' choice) -> a kernel this CPU
// runs; ValueError else.
Bf16DotKernel parse_bf16_dot(const std::string& s) {
  for (Bf16DotKernel k : cpu::kBf16DotKernels)
    if (s == cpu::bf16_dot_kernel_name(k)) {
      if (!cpu::bf16_dot_kernel_runs_here(k))
        throw py::value_error("bf16_dot='" + s + "': this CPU (or OS) has no " +
                              (k == Bf16DotKernel::Amx ? "AMX-BF16 tiles" : "AVX512-BF16"));
      return k;
    }
  if (s == "auto") {
    const Bf16DotKernel k = cpu::bf16_dot_kernel();
    if (k == Bf16DotKernel::None)
      throw py::value_error("bf16_dot='auto': engines here use no bf16 dot-product kernel (no AVX512-BF16, "
                            "or GASTRT_BF16_DOT=off)" + (cpu::bf16_dot_status().empty() ? std::string()
                                                                                  : "; " + cpu::bf16_dot_status()));
    return k;
  }
  throw py::value_error("bf16_dot must be 'emulated', 'emulated-amx', 'avx512bf16', 'amx' or 'auto', got '" + s + "'");
}

}  // namespace

void bind_kernels(py::module_& m) {
  // ---- standalone kernels (tests; the engine calls the same C++ functions) ----
  m.def(
      "conv",
      [](const py::handle& xh, const py::handle& wh, const py::handle& bh, const py::object& resh,
         int k, int stride, int dilation, int res_offset, int res_stride, const std::string& act,
         const py::object& out, int threads, const std::string& algo, bool small_panels,
         const std::string& panel_dtype, const std::string& bf16_dot) {
        if (algo != "auto" && algo != "direct" && algo != "winograd")
          throw py::value_error("algo must be 'auto', 'direct' or 'winograd', got '" + algo + "'");
        const DType pdt = parse_precision(panel_dtype, "panel_dtype");
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
        Bf16DotKernel bdk = Bf16DotKernel::None;
        try {
          if (bf16_dot != "none") bdk = parse_bf16_dot(bf16_dot);
        } catch (const py::value_error& e) {
          throw py::value_error(std::string(e.what()) + " (or 'none')");
        }
        // 'auto' as the engine chooses: Winograd where it pays, F(2,3) on a bf16 dot-product kernel
        const bool on_bf16 = bdk != Bf16DotKernel::None;
        const bool wino_ok = on_bf16 ? cpu::conv_winograd_bf16_shape_ok(p) : cpu::conv_winograd_shape_ok(p);
        const bool wino =
            algo == "winograd" || (algo == "auto" && wino_ok && cpu::conv_winograd_pays(p.ci, p.co));
        const std::string got = "(got k=" + std::to_string(k) + ", stride=" + std::to_string(stride);
        if (wino && !wino_ok && on_bf16)
          throw py::value_error("algo='winograd' on a bf16 kernel (F(2,3)) needs k=3 and stride=1 " + got + ")");
        if (wino && !wino_ok)
          throw py::value_error("algo='winograd' needs k=3, stride=1 and at least 4*dilation = " +
                                std::to_string(4 * dilation) + " output frames " + got + ", " +
                                std::to_string(To) + " frames)");
        if (pdt != DType::F32 && p.n_seq > 0 && (!small_panels || wino || !cpu::conv_uses_small_gemm(p)))
          throw py::value_error("panel_dtype='" + panel_dtype + "' needs small_panels=True and a direct conv "
                                "on the small-M kernel; this one runs " +
                                (wino ? std::string("Winograd") : small_panels ? "on OpenBLAS here" : "without panels"));
        if (bdk != Bf16DotKernel::None && !cpu::weights_exact_in(w.data(), size_t(w.size()), DType::BF16))
          throw py::value_error("w: bf16_dot needs weights exactly representable in bf16");
        if (pdt != DType::F32 && !cpu::weights_exact_in(w.data(), size_t(w.size()), pdt))
          throw py::value_error("w: panel_dtype='" + panel_dtype + "' needs weights exactly representable in " +
                                panel_dtype);
        const int nt = resolve_threads(threads);
        {
          py::gil_scoped_release nogil;
          Team team(nt);
          if (wino && on_bf16) {
            const BigVector<uint32_t> u = cpu::conv_winograd_bf16_weights(w.data(), p.ci, p.co);
            std::vector<float> scratch(cpu::conv_winograd_bf16_scratch_floats(p, team.size()));
            p.bf16_dot = bdk;
            cpu::conv_winograd_bf16(p, u.data(), scratch.data(), team);
          } else if (wino) {
            const BigVector<float> u = cpu::conv_winograd_weights(w.data(), p.ci, p.co);
            std::vector<float> scratch(cpu::conv_winograd_scratch_floats(p, team.size()));
            cpu::conv_winograd_f32(p, u.data(), scratch.data(), team);
          } else {
            BigVector<float> panels;
            BigVector<uint16_t> panels16;
            BigVector<uint32_t> pairs;
            if (bdk != Bf16DotKernel::None) {
              pairs = cpu::pack_bf16_pairs(w.data(), k, p.ci, Co);
              p.w_bf16_pairs = pairs.data();
              p.bf16_dot = bdk;
            } else if (small_panels && cpu::conv_uses_small_gemm(p) && pdt == DType::F32) {
              panels = cpu::pack_small_panels(w.data(), int64_t(k) * Ci, Co);
              p.w_panels = panels.data();
            } else if (small_panels && cpu::conv_uses_small_gemm(p)) {
              panels16 = cpu::pack_small_panels16(w.data(), int64_t(k) * Ci, Co, pdt);
              p.w_panels16 = panels16.data();
              p.panels16_dtype = pdt;
            }
            cpu::conv_f32(p, team);
          }
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("b"), py::arg("res") = py::none(), py::kw_only(),
      py::arg("k"), py::arg("stride"), py::arg("dilation") = 1, py::arg("res_offset") = 0,
      py::arg("res_stride") = 1, py::arg("act") = "none", py::arg("out") = py::none(),
      py::arg("threads") = 0, py::arg("algo") = "auto", py::arg("small_panels") = false,
      py::arg("panel_dtype") = "fp32", py::arg("bf16_dot") = "none",
      "Temporal conv: x [N, G, T, Ci], w [k*Ci, Co], b [Co] (, res [N, G, Tr, Co]) -> [N, G, To, Co].\n"
      "algo: 'direct' (shifted GEMMs), 'winograd' (k=3, stride 1: F(4,3), or F(2,3) on bf16_dot) or 'auto' (the\n"
      "engine's choice).\n"
      "small_panels: pack w into the small-M GEMM's panels first when the conv runs on that kernel (few rows;\n"
      "on AVX2 / AVX-512 every conv), as the engine does. panel_dtype: 'fp32', or 'fp16' / 'bf16' to pack them in 16 bits\n"
      "as an fp16 / bf16 engine does (w must then hold exact fp16 / bf16 values; ValueError where the conv\n"
      "would not read panels: small_panels=False, Winograd, or OpenBLAS for its rows on this CPU).\n"
      "bf16_dot: 'none', or run the conv on the bf16 dot-product GEMM as a bf16 engine does ('emulated',\n"
      "'emulated-amx', 'avx512bf16', 'amx', or 'auto': the engines' kernel here); w must hold exact bf16 values;\n"
      "direct convs only.");

  m.def(
      "gemm_bf16_dot",
      [](const py::handle& ah, const py::handle& wh, int taps, int64_t tap_stride, int64_t n0,
         int64_t ncols, const std::string& kernel, const py::object& out) {
        FArray a = as_f32(ah, "a"), w = as_f32(wh, "w");
        if (a.ndim() != 2 || w.ndim() != 2) throw py::value_error("gemm_bf16_dot: expected a [M, L] and w [taps*ci, N]");
        if (taps < 1 || w.shape(0) % taps != 0 || w.shape(0) == 0)
          throw py::value_error("gemm_bf16_dot: w must have taps * ci rows, ci >= 1 (taps=" + std::to_string(taps) + ")");
        const int64_t M = a.shape(0), L = a.shape(1), ci = w.shape(0) / taps, N = w.shape(1);
        if (tap_stride == -1) tap_stride = ci;
        if (tap_stride < 0) throw py::value_error("gemm_bf16_dot: tap_stride must be >= 0 (or -1: ci)");
        if (N == 0) throw py::value_error("gemm_bf16_dot: w has no columns");
        if (int64_t(taps - 1) * tap_stride + ci > L)
          throw py::value_error("gemm_bf16_dot: rows of a hold " + std::to_string(L) + " values; taps at stride " +
                                std::to_string(tap_stride) + " of " + std::to_string(ci) + " channels need " +
                                std::to_string(int64_t(taps - 1) * tap_stride + ci));
        if (ncols == -1) ncols = N - n0;
        if (n0 < 0 || ncols < 0 || n0 + ncols > N)
          throw py::value_error("gemm_bf16_dot: columns [n0, n0 + ncols) must lie in [0, " + std::to_string(N) + ")");
        if (!cpu::weights_exact_in(w.data(), size_t(w.size()), DType::BF16))
          throw py::value_error("w: gemm_bf16_dot needs weights exactly representable in bf16");
        const Bf16DotKernel k = parse_bf16_dot(kernel);
        py::array_t<float> c = output_array(out, {M, ncols}, "gemm_bf16_dot");
        const BigVector<uint32_t> pairs = cpu::pack_bf16_pairs(w.data(), taps, int32_t(ci), N);
        GemmBf16DotParams p{};
        p.a = a.data();
        p.m = M;
        p.lda = L;
        p.tap_stride = tap_stride;
        p.taps = taps;
        p.ci = int32_t(ci);
        p.w_pairs = pairs.data();
        p.n_total = N;
        p.n0 = n0;
        p.ncols = ncols;
        p.c = c.mutable_data();
        p.ldc = ncols;
        {
          py::gil_scoped_release nogil;
          cpu::gemm_bf16_dot(k, p);
        }
        return c;
      },
      py::arg("a"), py::arg("w"), py::kw_only(), py::arg("taps") = 1, py::arg("tap_stride") = -1,
      py::arg("n0") = 0, py::arg("ncols") = -1, py::arg("kernel") = "emulated", py::arg("out") = py::none(),
      "bf16 dot-product GEMM (a bf16 engine's convs): a [M, L], w [taps*ci, N] exact bf16 -> C [M, ncols],\n"
      "C[r, j] = sum over taps t, channels c of bf16(a[r, t*tap_stride + c]) * w[t*ci + c, n0 + j] in\n"
      "vdpbf16ps order (pairs of c, fp32 sums). tap_stride defaults to ci; ncols to N - n0.\n"
      "kernel: 'emulated' / 'emulated-amx' (any CPU), 'avx512bf16' / 'amx' (ValueError without them), 'auto'\n"
      "(the engines' kernel). 'amx' runs AMX tiles at >= 32 rows and vdpbf16ps below (so do the emulations).");

  m.def(
      "bf16_dot_kernels",
      [] {
        std::vector<std::string> r;
        for (Bf16DotKernel k : cpu::kBf16DotKernels)
          if (cpu::bf16_dot_kernel_runs_here(k)) r.push_back(cpu::bf16_dot_kernel_name(k));
        return r;
      },
      "The bf16 dot-product kernels this CPU and OS can run (the emulations always).");

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
          // Row blocks, one per thread (a roofline probe; the runtime's own GEMMs use the
          // thread-invariant grid of cpu/tiling.h).
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
}

}  // namespace bindings
}  // namespace gastrt
