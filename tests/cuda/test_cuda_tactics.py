"""The cuBLASLt GEMM tactic (csrc/cuda/gemm_tactic.h, cublaslt.cu, tactic.cu).

Everywhere: the mapping of a conv record onto cuBLASLt's column-major matmuls
(_native.cuda_lt_conv_calls, the very function the GPU path calls) is executed with NumPy by a
small independent column-major emulator and compared with the conv's definition, over odd
geometries; and the whole CUDA backend runs on the simulator with every eligible conv through
those calls (gemm_tactic=cublaslt) against the NumPy executor. On a GPU: the real engine with each
tactic mode against the NumPy executor, and the per-layer report."""
from __future__ import annotations

import os

import numpy as np
import pytest

import gastrt
from gastrt.backends.base import native_module

MOD = native_module()
pytestmark = pytest.mark.skipif(MOD is None, reason="needs the compiled extension (gastrt._native)")

REF_NONE = -1


def _record(**kw):
    r = dict(x=0, w=0, b=1, res=REF_NONE, y=0, n_seq=1, t_in=1, t_out=1, t_res=0, t_ypitch=1, ci=1, co=1, k=1,
             stride=1, dilation=1, res_offset=0, res_stride=1, ldy=1, act=0)
    r.update(kw)
    return r


def _conv_definition(r, x, w, b):
    """y rows of the record (kernels.h GemmDesc), float64: [n_seq, t_out, co]."""
    ns, ti, to, ci, co, k = r["n_seq"], r["t_in"], r["t_out"], r["ci"], r["co"], r["k"]
    xs = x[:ns * ti * ci].reshape(ns, ti, ci)
    ws = w.reshape(k * ci, co)
    y = np.broadcast_to(b, (ns, to, co)).astype(np.float64).copy()
    for tau in range(k):
        rows = np.arange(to) * r["stride"] + tau * r["dilation"]
        y += xs[:, rows, :] @ ws[tau * ci:(tau + 1) * ci]
    return np.maximum(y, 0) if r["act"] == 1 else y


def _run_calls(calls, x, w, b, y_len):
    """Column-major matmuls as cuBLASLt defines them, on flat arrays (float64)."""
    y = np.full(y_len, np.nan)  # never-written positions stay NaN
    for c in calls:
        m, n, k = c["m"], c["n"], c["k"]
        assert c["lda"] >= m and c["ldb"] >= k and c["ldd"] >= m  # cuBLASLt's leading-dimension rules
        A = np.array([[w[c["a_offset"] + kk * c["lda"] + i] for kk in range(k)] for i in range(m)])
        for bt in range(c["batch"]):
            B = np.array([[x[c["b_offset"] + bt * c["b_batch_stride"] + j * c["ldb"] + kk] for j in range(n)]
                          for kk in range(k)])
            D = A @ B
            for j in range(n):
                for i in range(m):
                    p = bt * c["d_batch_stride"] + j * c["ldd"] + i
                    v = D[i, j] + (y[p] if c["accumulate"] else 0.0)
                    if c["epilogue"] >= 1:
                        v += b[i]
                    if c["epilogue"] == 2:
                        v = max(v, 0.0)
                    y[p] = v
    return y


def _geometries(seed=7, count=40):
    rng = np.random.default_rng(seed)
    out = [
        _record(n_seq=3, t_in=9, t_out=3, t_ypitch=3, ci=5, co=7, k=3, stride=3, ldy=7, act=1),   # windows, merged
        _record(n_seq=2, t_in=13, t_out=5, t_ypitch=5, ci=3, co=4, k=3, dilation=2, ldy=4),      # dilated, per tap
        _record(n_seq=1, t_in=4, t_out=4, t_ypitch=4, ci=6, co=5, k=1, ldy=9, act=1),             # 1x1 into a slice
        _record(n_seq=4, t_in=1, t_out=1, t_ypitch=1, ci=34, co=11, k=1, ldy=11),                 # Linear
    ]
    for _ in range(count):
        k = int(rng.integers(1, 5))
        stride = int(rng.integers(1, 4))
        dil = int(rng.integers(1, 4))
        t_out = int(rng.integers(1, 6))
        t_in = (t_out - 1) * stride + (k - 1) * dil + 1 + int(rng.integers(0, 3))
        co = int(rng.integers(1, 9))
        out.append(_record(n_seq=int(rng.integers(1, 4)), t_in=t_in, t_out=t_out,
                           t_ypitch=t_out + int(rng.integers(0, 3)), ci=int(rng.integers(1, 7)), co=co, k=k,
                           stride=stride, dilation=dil, ldy=co + int(rng.integers(0, 4)),
                           act=int(rng.integers(0, 2))))
    return out


@pytest.mark.parametrize("r", _geometries(), ids=lambda r: "k{k}s{stride}d{dilation}n{n_seq}t{t_out}c{ci}x{co}l{ldy}"
                         .format(**r))
def test_lt_calls_compute_the_conv(r):
    rng = np.random.default_rng(r["k"] * 1000 + r["ci"] * 10 + r["co"])
    x = rng.standard_normal(r["n_seq"] * r["t_in"] * r["ci"])
    w = rng.standard_normal(r["k"] * r["ci"] * r["co"])
    b = rng.standard_normal(r["co"])
    calls, why = MOD.cuda_lt_conv_calls(r, 0)
    assert why is None and 1 <= len(calls) <= r["k"]
    single = r["k"] == 1 or (r["dilation"] == 1 and r["stride"] >= r["k"])
    assert len(calls) == (1 if single else r["k"])
    y_len = ((r["n_seq"] - 1) * r["t_ypitch"] + r["t_out"] - 1) * r["ldy"] + r["co"]
    y = _run_calls(calls, x, w, b, y_len)
    ref = _conv_definition(r, x, w, b)
    for s in range(r["n_seq"]):
        for t in range(r["t_out"]):
            row = (s * r["t_ypitch"] + t) * r["ldy"]
            np.testing.assert_allclose(y[row:row + r["co"]], ref[s, t], rtol=1e-12, atol=1e-12)
    # exactly the record's rows and columns are written: the gaps (pitch, slice) stay untouched
    written = np.zeros(y_len, bool)
    for s in range(r["n_seq"]):
        for t in range(r["t_out"]):
            row = (s * r["t_ypitch"] + t) * r["ldy"]
            written[row:row + r["co"]] = True
    assert np.isnan(y[~written]).all() and np.isfinite(y[written]).all()


@pytest.mark.parametrize("kw, dtype, why", [
    (dict(res=4096), 0, "residual"),
    (dict(act=2), 0, "leaky ReLU"),
    (dict(k=17, dilation=2, t_in=40), 0, "taps"),
    (dict(k=3, dilation=2, t_in=7, t_out=3, t_ypitch=3), 1, "16 bits"),
    (dict(k=3, dilation=1, stride=1, t_in=5, t_out=3, t_ypitch=3), 2, "16 bits"),
])
def test_lt_declines_what_the_custom_kernel_does_better(kw, dtype, why):
    calls, reason = MOD.cuda_lt_conv_calls(_record(**kw), dtype)
    assert calls == [] and why in reason


@pytest.mark.parametrize("dtype", [1, 2])
def test_lt_takes_single_matmul_convs_in_16_bits(dtype):
    calls, why = MOD.cuda_lt_conv_calls(_record(k=3, stride=3, t_in=9, t_out=3, t_ypitch=3, ci=4, co=5, ldy=5), dtype)
    assert why is None and len(calls) == 1 and calls[0]["k"] == 12


def test_lt_calls_need_every_field():
    r = _record()
    del r["ldy"]
    with pytest.raises(ValueError, match="ldy"):
        MOD.cuda_lt_conv_calls(r, 0)


def test_tactic_names(monkeypatch):
    from gastrt.backends.cuda import cublaslt

    assert [cublaslt.tactic_code(v) for v in ("custom", "AUTO", "cublaslt")] == [0, 1, 2]
    monkeypatch.setenv(cublaslt.ENV_TACTIC, "cublaslt")
    assert cublaslt.tactic_code() == 2
    monkeypatch.setenv(cublaslt.ENV_TACTIC, "fastest")
    with pytest.raises(ValueError, match="GASTRT_GEMM_TACTIC='fastest': expected one of custom, auto, cublaslt"):
        cublaslt.tactic_code()
    assert cublaslt.library_candidates()[-1] == ""


# ---- the whole backend on the simulator, every eligible conv through the cuBLASLt calls ----------
torch = pytest.importorskip("torch")

from gastrt.backends import cuda as C  # noqa: E402
from gastrt.backends.numpy_backend import NumpyBackend  # noqa: E402

from _models import TINY, engine_file, keypoints, rel_err  # noqa: E402
from sim_engine import SimEngine  # noqa: E402

MODEL_TOL = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 8e-2}


@pytest.fixture(scope="module")
def files(module_dir):
    d = module_dir
    return {k: {p: engine_file(d, k, precision=p) for p in ("fp32", "fp16", "bf16")} for k in TINY}


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_backend_with_cublaslt_tactic_matches_numpy(files, key, precision):
    eng = gastrt.load(files[key][precision], backend="numpy")
    sim = SimEngine(0, C.DTYPE_CODE[precision])
    be = C.CudaBackend(eng.plans, eng.weights, 0, precision, gemm_tactic="cublaslt", _engine=sim)
    ref = NumpyBackend(eng.plans, eng.weights)
    assert be.get_option("gemm_tactic") == 2 and be.describe()["gemm_tactic"] == "cublaslt"
    rng = np.random.default_rng(3)
    for pname, plan in eng.plans.items():
        j, rf = plan.in_joints, plan.receptive_field
        for n in (1, 3):
            x = keypoints(rng, n, rf, j)
            assert rel_err(be.run(pname, x, "window"), ref.run(pname, x, "window")) <= MODEL_TOL[precision]
        if "sequence" in plan.modes:
            x = keypoints(rng, 2, rf + 9, j)
            assert rel_err(be.run(pname, x, "sequence"), ref.run(pname, x, "sequence")) <= MODEL_TOL[precision]
    chosen = [t["chosen"] for t in be.gemm_tactics()]
    assert "cublaslt" in chosen, be.gemm_tactics()  # the library path really ran
    for t in be.gemm_tactics():
        assert t["chosen"] == "cublaslt" or t["note"], t  # every custom choice says why


def test_custom_mode_makes_no_decisions(files):
    eng = gastrt.load(files["vp3d"]["fp32"], backend="numpy")
    be = C.CudaBackend(eng.plans, eng.weights, 0, "fp32", gemm_tactic="custom", _engine=SimEngine(0, 0))
    x = keypoints(np.random.default_rng(0), 2, eng.receptive_field, 17)
    be.run(next(iter(eng.plans)), x, "window")
    assert be.gemm_tactics() == []


# ---- on a GPU --------------------------------------------------------------------------------
TACTIC_TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}


@pytest.mark.skipif(not gastrt.cuda_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_gpu_tactics_agree(files, key, precision):
    eng = gastrt.load(files[key][precision], backend="numpy")
    ref = NumpyBackend(eng.plans, eng.weights)
    outs = {}
    for mode in ("custom", "auto", "cublaslt"):
        be = C.CudaBackend(eng.plans, eng.weights, 0, precision, gemm_tactic=mode)
        if mode != "custom" and not be.cublaslt_status.startswith("cuBLASLt "):
            pytest.skip(f"cuBLASLt unavailable: {be.cublaslt_status}")
        for pname, plan in eng.plans.items():
            x = keypoints(np.random.default_rng(5), 4, plan.receptive_field, plan.in_joints)
            outs[mode, pname] = be.run(pname, x, "window")
            tol = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 8e-2}[precision]
            assert rel_err(outs[mode, pname], ref.run(pname, x, "window")) <= tol, (mode, pname)
        if mode != "custom":
            reports = be.gemm_tactics()
            assert reports and all(r["chosen"] in ("custom", "cublaslt") for r in reports)
            for r in reports:
                if r["cublaslt_us"] > 0:  # timed: both checked against the float64 reference
                    assert r["custom_err"] >= 0 and r["cublaslt_err"] >= 0, r
        be.close()
    for pname in eng.plans:
        assert rel_err(outs["cublaslt", pname], outs["custom", pname]) <= TACTIC_TOL[precision] * 10, pname
