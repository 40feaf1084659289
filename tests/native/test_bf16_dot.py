"""The bf16 dot-product GEMMs (csrc/cpu/gemm_bf16_dot.cpp: vdpbf16ps; gemm_bf16_amx.cpp: AMX
tiles): a bf16 engine's convs with bf16 arithmetic (activations rounded to bf16, fp32 sums of
bf16 pairs). Four kernels: 'avx512bf16' and 'amx' (run where the CPU has them), and the same
kernels with the instructions emulated in C++, 'emulated' and 'emulated-amx' (run everywhere:
GASTRT_BF16_DOT=emulate / emulate-amx). All are held against a float64 model of the
instructions; engines against the eager model in float64 within the bf16 tolerance. The suite
itself pins GASTRT_BF16_DOT=off (tests/conftest.py); the engine tests here run in child
processes with the mode they test."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gastrt import _native
from gastrt_testutil import (SMALL_ENGINE_CONFIGS, bf16_activations, conv_reference64, eager_reference64, rel_err,
                             round_to_16bit, save_checkpoint, subprocess_env)

U = 2.0 ** -24  # fp32 unit roundoff


KERNELS = ["emulated", "emulated-amx", "avx512bf16", "amx"]


def _kernels() -> list[str]:
    return list(_native.bf16_dot_kernels())


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return set()
    return set(line.split(":", 1)[-1].split())


def _skip_unless_runs(kernel):
    if kernel not in _kernels():
        pytest.skip(f"this CPU / OS cannot run the {kernel} kernel")


def test_kernels_found_where_the_cpu_has_them():
    """The emulations run everywhere; the native kernels wherever /proc/cpuinfo lists the units,
    except AMX where Linux refused the process the tile state (it does while some thread's
    alternate signal stack is too small for it), which build_config()['bf16_dot_status'] says."""
    ks, flags = _kernels(), _cpu_flags()
    assert ks[:2] == ["emulated", "emulated-amx"]
    assert ("avx512bf16" in ks) == ({"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= flags)
    amx_cpu = {"avx512_bf16", "amx_tile", "amx_bf16", "avx512f", "avx512bw", "avx512vl"} <= flags
    if amx_cpu and "amx" not in ks:
        assert "tile state" in _native.build_config().get("bf16_dot_status", ""), _native.build_config()
    else:
        assert ("amx" in ks) == amx_cpu


def dot_model(a, w, taps, tap_stride):
    """float64 C = bf16(A) @ W (A's taps gathered), and per element the bound on an fp32 chain of
    K sums: (K + 1) * u * sum |a| |w|."""
    ci = w.shape[0] // taps
    g = np.concatenate([a[:, t * tap_stride: t * tap_stride + ci] for t in range(taps)], axis=1)
    g = bf16_activations(g).astype(np.float64)
    w64 = w.astype(np.float64)
    return g @ w64, (w.shape[0] + 1) * U * (np.abs(g) @ np.abs(w64))


def _bf16(rng, shape):
    return round_to_16bit(rng.standard_normal(shape), "bf16")


SHAPES = [  # (M, taps, ci, tap_stride (None: ci), N, n0, ncols (None: to the end))
    (1, 1, 1, None, 1, 0, None),
    (1, 1, 64, None, 64, 0, None),
    (5, 1, 33, None, 65, 0, None),
    (6, 3, 31, None, 150, 5, 140),
    (7, 3, 32, 96, 130, 64, 66),     # dilated taps: stride 3 * ci between them
    (13, 2, 2, 5, 17, 3, 11),
    (31, 1, 40, None, 40, 0, None),  # AMX kernels: the last row count below their tiles
    (32, 1, 32, None, 32, 0, None),  # one whole 32 x 32 block, one tile of K
    (33, 3, 11, 20, 97, 31, 34),     # a second, 1-row block; K of 17 pairs: a padded tile
    (97, 3, 45, 45, 200, 0, None),   # two row chunks
    (70, 2, 1601, None, 70, 0, None),  # 1602 pairs: two K blocks of the vdpbf16ps kernel; two row chunks
    (200, 1, 130, None, 70, 1, 68),
    (5, 1, 16, None, 64, 0, None),   # A's channel tail (past whole 32s) of 16, then 17
    (9, 2, 49, None, 64, 0, None),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "m{}t{}c{}s{}n{}@{}+{}".format(*s))
def test_gemm_against_float64_model(kernel, shape):
    _skip_unless_runs(kernel)
    m, taps, ci, ts, n, n0, ncols = shape
    ts = ci if ts is None else ts
    ncols = n - n0 if ncols is None else ncols
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, (taps - 1) * ts + ci + 3)).astype(np.float32)
    w = _bf16(rng, (taps * ci, n))
    out = np.full((m, ncols), np.nan, np.float32)
    c = _native.gemm_bf16_dot(a, w, taps=taps, tap_stride=ts, n0=n0, ncols=ncols, kernel=kernel, out=out)
    ref, bound = dot_model(a, w, taps, ts)
    err = np.abs(c - ref[:, n0:n0 + ncols])
    assert np.isfinite(c).all() and (err <= bound[:, n0:n0 + ncols]).all(), \
        f"seed {seed}: max err {err.max()} vs bound {bound.max()}"
    # activations really are rounded to bf16: fp32 A would miss the model by far more than the bound
    exact = (a[:, :ci].astype(np.float64) @ w[:ci].astype(np.float64)) if taps == 1 else None
    if exact is not None and ci >= 16:
        assert np.abs(exact[:, n0:n0 + ncols] - ref[:, n0:n0 + ncols]).max() > bound.max()


@pytest.mark.parametrize("kernel,emulation", [("avx512bf16", "emulated"), ("amx", "emulated-amx")])
@pytest.mark.parametrize("m", [29, 77])
def test_native_kernel_agrees_with_its_emulation(kernel, emulation, m):
    """A native kernel against its emulation (the same sums in the same order per the SDM's
    pseudo-code: each element within the fp32 chain bound of the other)."""
    _skip_unless_runs(kernel)
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, 3 * 77)).astype(np.float32)
    w = _bf16(rng, (3 * 77, 190))
    ce = _native.gemm_bf16_dot(a, w, taps=3, kernel=emulation)
    ch = _native.gemm_bf16_dot(a, w, taps=3, kernel=kernel)
    _, bound = dot_model(a, w, 3, 77)
    assert np.isfinite(ch).all() and (np.abs(ce - ch) <= bound).all(), f"seed {seed}"


@pytest.mark.parametrize("kernel", ["emulated", "emulated-amx"])
def test_emulated_edge_values(kernel):
    """NaN and infinity propagate (a NaN activation poisons its row only), denormal activations
    read as zero (the instructions' DAZ), odd ci leaves the last pair's high half out; 40 rows
    put the AMX emulation on its tiles."""
    w = round_to_16bit(np.linspace(-2, 2, 5 * 7).reshape(5, 7), "bf16")
    a = np.ones((40, 5), np.float32)
    a[1, 2] = np.nan
    a[2, 0] = np.inf
    a[3, :] = 1e-40  # fp32 denormals
    c = _native.gemm_bf16_dot(a, w, kernel=kernel)
    assert np.isnan(c[1]).all() and not np.isnan(np.delete(c, [1, 2], 0)).any()
    assert (np.isinf(c[2]) | np.isnan(c[2])).all()
    assert np.array_equal(c[3], np.zeros(7, np.float32))
    np.testing.assert_allclose(c[[0, 4, 39]], np.tile(w.astype(np.float64).sum(0), (3, 1)), rtol=1e-6, atol=1e-6)


def test_gemm_bad_input():
    w = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="bf16"):
        _native.gemm_bf16_dot(np.ones((2, 4), np.float32), w + np.float32(1e-3))
    with pytest.raises(ValueError, match="taps"):
        _native.gemm_bf16_dot(np.ones((2, 4), np.float32), w, taps=3)
    with pytest.raises(ValueError, match="need"):
        _native.gemm_bf16_dot(np.ones((2, 3), np.float32), w)
    with pytest.raises(ValueError, match="columns"):
        _native.gemm_bf16_dot(np.ones((2, 4), np.float32), w, n0=2, ncols=2)
    with pytest.raises(ValueError, match="kernel|bf16_dot"):
        _native.gemm_bf16_dot(np.ones((2, 4), np.float32), w, kernel="amx")
    for k in ("avx512bf16", "amx"):
        if k not in _kernels():
            with pytest.raises(ValueError, match="AVX512-BF16|AMX"):
                _native.gemm_bf16_dot(np.ones((2, 4), np.float32), w, kernel=k)


CONVS = [  # (n, t, ci, co, k, stride, dilation, act, residual)
    (1, 27, 34, 70, 3, 3, 1, "relu", False),    # window mode: fused taps
    (3, 9, 64, 64, 3, 3, 1, "none", True),
    (16, 27, 34, 130, 3, 3, 1, "relu", True),   # 144 rows: AMX tiles
    (2, 40, 33, 129, 3, 1, 2, "lrelu", False),  # sequence mode: dilated taps
    (1, 30, 16, 17, 3, 1, 3, "relu", True),
    (5, 7, 48, 96, 1, 1, 1, "none", False),     # 1x1
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "n{}t{}ci{}co{}k{}s{}d{}{}{}".format(*c[:8], "r" if c[8] else ""))
def test_conv_against_float64(kernel, cfg):
    """conv(bf16_dot=...) against the float64 conv of the bf16-rounded input, bias, activation
    and residual included; thread counts give the same bits (tiles depend on the shape only), and
    on the vdpbf16ps kernels batch sizes too (each element's sum is one chain whatever the
    tiles)."""
    _skip_unless_runs(kernel)
    n, t, ci, co, k, stride, dil, act, has_res = cfg
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, t, ci)).astype(np.float32)
    w = _bf16(rng, (k * ci, co))
    b = (rng.standard_normal(co) * 0.3).astype(np.float32)
    ref, scale = conv_reference64(bf16_activations(x), w, b, k, stride, dil)
    to = ref.shape[1]
    res = (rng.standard_normal((n, 1, to, co)).astype(np.float32) if has_res else None)
    ref = np.maximum(ref, 0) if act == "relu" else np.where(ref > 0, ref, 0.2 * ref) if act == "lrelu" else ref
    if has_res:
        ref = ref + res[:, 0]
    kw = dict(k=k, stride=stride, dilation=dil, act=act, algo="direct", bf16_dot=kernel)
    y1 = _native.conv(x, w, b, res, threads=1, **kw)
    y2 = _native.conv(x, w, b, res, threads=2, **kw)
    assert np.array_equal(y1, y2), f"seed {seed}"
    err = np.abs(y1[:, 0].astype(np.float64) - ref).max()
    assert np.isfinite(y1).all() and err <= (k * ci + 4) * U * (scale + 4), (err, scale, seed)
    if n > 1 and "amx" not in kernel:  # one sequence alone: the same bits as inside the batch
        # (AMX kernels: a tile of >= 32 rows sums pairs even element first, vdpbf16ps below it
        # odd first, so there results may differ in the last bits between batch sizes)
        y0 = _native.conv(x[1:2], w, b, None if res is None else res[1:2], threads=2, **kw)
        assert np.array_equal(y0[0], y1[1]), f"seed {seed}"


EPILOGUES = [  # (n, t, ci, co, k, stride, dilation, act, residual (t_res, offset, stride) or None)
    (3, 27, 34, 130, 3, 3, 1, "relu", (27, 1, 3)),     # window mode: tiles across windows, residual slices
    (16, 27, 20, 70, 3, 3, 1, "lrelu", (12, 2, 1)),    # ... and a residual of other rows
    (2, 60, 40, 129, 3, 1, 4, "lrelu", (55, 3, 1)),    # sequence mode: tiles within a sequence
    (1, 9, 48, 96, 1, 1, 1, "none", (9, 0, 1)),
    (5, 7, 33, 64, 1, 1, 1, "relu", None),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("cfg", EPILOGUES, ids=lambda c: "n{}t{}ci{}co{}k{}s{}d{}{}".format(*c[:8]))
def test_conv_epilogue_is_numpys(kernel, cfg):
    """The conv's bias, activation and residual (run on each chunk of rows the kernel finishes)
    give, bit for bit, NumPy's float32 act(c + b) (+ res) on the same conv's bare sums."""
    _skip_unless_runs(kernel)
    n, t, ci, co, k, stride, dil, act, rspec = cfg
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    x = rng.standard_normal((n, 1, t, ci)).astype(np.float32)
    w = _bf16(rng, (k * ci, co))
    b = rng.standard_normal(co).astype(np.float32)
    kw = dict(k=k, stride=stride, dilation=dil, algo="direct", bf16_dot=kernel)
    bare = _native.conv(x, w, np.zeros(co, np.float32), **kw)
    to = bare.shape[2]
    v = bare + b
    if act == "relu":
        v = np.where(v < 0, np.float32(0), v)
    elif act == "lrelu":
        v = np.where(v >= 0, v, v * np.float32(0.2))
    res = None
    if rspec:
        t_res, off, rs = rspec
        res = rng.standard_normal((n, 1, t_res, co)).astype(np.float32)
        v = v + res[:, :, off: off + (to - 1) * rs + 1: rs]
        kw.update(res_offset=off, res_stride=rs)
    y = _native.conv(x, w, b, res, act=act, **kw)
    assert v.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_array_equal(y, v)


def test_conv_bad_input():
    x = np.ones((1, 1, 9, 4), np.float32)
    w = np.ones((12, 5), np.float32)
    b = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match="bf16"):
        _native.conv(x, w + np.float32(1e-3), b, k=3, stride=3, bf16_dot="emulated")
    with pytest.raises(ValueError, match="bf16_dot"):
        _native.conv(x, w, b, k=3, stride=3, bf16_dot="fast")


ENGINE_CHILD = r'''
import json, sys
import numpy as np
import gastrt
from gastrt import _native
spec = json.loads(sys.argv[1])
e = gastrt.load(spec["engine"], backend="native")
pos = e.backend._engines["pos"]
out = {"window": e.lift(np.load(spec["windows"]))}
if spec["sequence"]:
    seq = np.load(spec["sequence"])
    out["sequence"] = e.lift_sequence(seq)
    sys.path.insert(0, spec["tests"])   # the shared helpers
    from gastrt_testutil import drive_stream
    out["stream"] = drive_stream(e.stream(slots=1, kernels="native"), [seq], [0])[0].poses
np.savez(spec["out"], **out)
print(json.dumps({"bf16_dot": pos.bf16_dot, "bytes": pos.panel_bytes, "panels": pos.weight_panels,
                  "config": _native.build_config()["bf16_dot"], "kernels": _native.bf16_dot_kernels()}))
'''

ENGINE_CONFIGS = SMALL_ENGINE_CONFIGS


def _child(code: str, spec: dict, mode: str, env: dict | None = None) -> dict:
    """Python ``code`` in a child process under GASTRT_BF16_DOT=mode (read once per process) and
    ``env``, given ``spec`` as JSON; -> the JSON of its last stdout line."""
    r = subprocess.run([sys.executable, "-c", code, json.dumps(spec)],
                       env={**subprocess_env(), "GASTRT_BF16_DOT": mode, **(env or {})}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _run_engine(tmp_path, engine, x, seq, mode, tag, env=None):
    np.save(tmp_path / "x.npy", x)
    if seq is not None:
        np.save(tmp_path / "s.npy", seq)
    spec = {"engine": engine, "windows": str(tmp_path / "x.npy"),
            "sequence": str(tmp_path / "s.npy") if seq is not None else None, "out": str(tmp_path / f"{tag}.npz"),
            "tests": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    return _child(ENGINE_CHILD, spec, mode, env), np.load(tmp_path / f"{tag}.npz")


@pytest.mark.parametrize("mode", ["emulate", "emulate-amx", "auto"])
@pytest.mark.parametrize("family", list(ENGINE_CONFIGS))
def test_bf16_engine_against_float64(tmp_path, family, mode):
    """A bf16 engine on the bf16 dot-product kernels (emulated anywhere; 'auto': AMX, else
    AVX512-BF16 where the CPU has them, else fp32 arithmetic) against the eager model in float64,
    within the bf16 tolerance (engine_file.PRECISION_TOLERANCE), windows and sequences (whose
    convs have enough rows for the AMX tiles); the fp32 engine's convs never take them."""
    pytest.importorskip("torch")
    import gastrt
    from gastrt.engine_file import PRECISION_TOLERANCE

    config = ENGINE_CONFIGS[family]
    ck = save_checkpoint(tmp_path / "ck.bin", family, config, seed=5)
    eng = gastrt.build(ck, str(tmp_path / "bf16.gastrt"), precision="bf16")
    rf = int(np.prod(config["filter_widths"]))
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, rf, 17, 2)) * 0.5).astype(np.float32)
    seq = None if family == "rie" else (rng.standard_normal((rf + 30, 17, 2)) * 0.5).astype(np.float32)
    info, got = _run_engine(tmp_path, eng, x, seq, mode, "y")
    native = [k for k in ("amx", "avx512bf16") if k in info["kernels"]]   # the child's own
    expect = {"emulate": "emulated", "emulate-amx": "emulated-amx"}.get(mode) or (native[0] if native else "none")
    assert info["bf16_dot"] == info["config"] == expect, info
    if expect != "none":
        assert info["bytes"]["bf16_pairs"] > 0 and info["bytes"]["16bit"] == 0, info
        assert info["panels"] == "bf16-pairs", info
    ref_w, ref_s = eager_reference64(ck, family, config, x, seq)
    w = got["window"]
    assert rel_err(w[:, 0] if w.ndim == 4 else w, ref_w) <= PRECISION_TOLERANCE["bf16"], f"seed {seed}"
    if seq is not None:
        assert rel_err(got["sequence"], ref_s) <= PRECISION_TOLERANCE["bf16"], f"seed {seed}"
        # the stream computes in fp32 on the same bf16 weights: within the tolerance, not exact
        assert rel_err(got["stream"], ref_s) <= PRECISION_TOLERANCE["bf16"], f"seed {seed}"
    if mode != "auto":  # the fp32 engine of the same checkpoint: no bf16 arithmetic
        eng32 = gastrt.build(ck, str(tmp_path / "fp32.gastrt"), precision="fp32")
        info32, _ = _run_engine(tmp_path, eng32, x, None, mode, "y32")
        assert info32["bf16_dot"] == "none" and info32["bytes"]["bf16_pairs"] == 0, info32


def _sequence_and_windows(tmp_path, family, mode, env):
    """A bf16 engine's lift_sequence of a random sequence and lift of each frame's edge-padded
    window, in a child under GASTRT_BF16_DOT=mode and env -> (info, sequence, windows, seed)."""
    import gastrt

    if mode == "auto" and "avx512bf16" not in _kernels():
        pytest.skip("this CPU has no AVX512-BF16 ('auto' computes in fp32 here)")
    config = SMALL_ENGINE_CONFIGS[family]
    assert family != "videopose3d" or config["channels"] >= 128   # conv_winograd_pays
    ck = save_checkpoint(tmp_path / "ck.bin", family, config, seed=7)
    eng = gastrt.build(ck, str(tmp_path / "bf16.gastrt"), precision="bf16")
    rf = int(np.prod(config["filter_widths"]))
    pad = (rf - 1) // 2
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    seq = (rng.standard_normal((3 * rf + 7, 17, 2)) * 0.5).astype(np.float32)
    padded = np.pad(seq, ((pad, pad), (0, 0), (0, 0)), mode="edge")
    windows = np.stack([padded[i:i + rf] for i in range(len(seq))])
    info, got = _run_engine(tmp_path, eng, windows, seq, mode, "y", env)
    w = got["window"]
    w = w[:, 0] if w.ndim == 4 else w
    assert np.isfinite(w).all() and np.isfinite(got["sequence"]).all()
    return info, got["sequence"], w, seed


@pytest.mark.parametrize("mode", ["emulate", "auto"])
@pytest.mark.parametrize("family", ["videopose3d", "gast"])
def test_bf16_dot_sequence_is_its_windows(tmp_path, family, mode):
    """With GASTRT_CONV_WINOGRAD=0, an engine on a bf16 dot-product kernel runs all its GEMMs on
    it, direct: its sequence-mode width-3 convs (not Winograd) and its GAST blocks' four GEMMs,
    whose fp32 kernels' rounding depends on the rows of a chunk. The vdpbf16ps kernel's sums do
    not depend on the rows of the product, so every frame of lift_sequence equals, bit for bit,
    lift of its own edge-padded window; an fp32 path would not (checked once by making the GAST
    blocks skip their pairs: the gast cases failed). Not on AMX: products of >= 32 rows go to the
    tiles, which sum a pair in the other order, so there the bits depend on the rows (never on
    the thread count)."""
    if mode == "auto" and "amx" in _kernels():
        pytest.skip("'auto' is AMX here: its bits depend on the product's rows (see the docstring)")
    info, seq, win, seed = _sequence_and_windows(tmp_path, family, mode, {"GASTRT_CONV_WINOGRAD": "0"})
    assert info["bf16_dot"] in ("emulated", "avx512bf16"), info
    np.testing.assert_array_equal(seq, win, err_msg=f"seed {seed}")


@pytest.mark.parametrize("mode", ["emulate", "auto"])
def test_bf16_dot_sequence_runs_winograd(tmp_path, mode):
    """By default a bf16 engine's sequence-mode width-3 convs with >= 128 channels run Winograd
    F(2,3) on the kernel (conv_winograd_bf16.cpp): lift_sequence then differs from the windows'
    direct convs in its rounding (so the path ran), within the bf16 tolerance of them. Not 'auto'
    on AMX: there the bits depend on the product's rows anyway, so a difference proves nothing."""
    from gastrt.engine_file import PRECISION_TOLERANCE

    if mode == "auto" and "amx" in _kernels():
        pytest.skip("'auto' is AMX here: its sequences differ from its windows even without Winograd")

    info, seq, win, seed = _sequence_and_windows(tmp_path, "videopose3d", mode, None)
    assert info["bf16_dot"] in ("emulated", "avx512bf16", "amx"), info
    assert not np.array_equal(seq, win), f"seed {seed}: the sequence ran the direct convs"
    assert rel_err(seq, win) <= PRECISION_TOLERANCE["bf16"], f"seed {seed}"


def test_bad_mode_is_one_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from gastrt import _native; print(_native.build_config()['bf16_dot'])"],
                       env={**subprocess_env(), "GASTRT_BF16_DOT": "fastest"}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "GASTRT_BF16_DOT must be auto, off, emulate or emulate-amx" in r.stdout, \
        r.stdout + r.stderr


@pytest.mark.parametrize("mode,says", [("emulate", "bf16 dot products (emulated)"),
                                       ("emulate-amx", "bf16 dot products (emulated-amx)"),
                                       ("off", "fp32 on bf16 weights")])
def test_info_says_what_a_bf16_engine_computes_in(tmp_path, mode, says):
    import gastrt

    ck = save_checkpoint(tmp_path / "ck.bin", "rie", ENGINE_CONFIGS["rie"], seed=2)
    eng = gastrt.build(ck, str(tmp_path / "bf16.gastrt"), precision="bf16")
    r = subprocess.run([sys.executable, "-m", "gastrt", "info", eng], env={**subprocess_env(), "GASTRT_BF16_DOT": mode},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("precision")][0]
    assert line.split()[1].startswith("bf16") and f"computes in {says}" in line, line


GAST_INEXACT_CHILD = r'''
import json, sys
import numpy as np
import gastrt
from gastrt import _native
from gastrt.errors import NativeError
spec = json.loads(sys.argv[1])
eng = gastrt.load(spec["engine"], backend="numpy")
plan = eng.plans["pos"]
op = next(o for o in plan.ops if o.kind == "gast_block")
weights = {k: np.array(v, np.float32) for k, v in eng.weights.items()}
_native.Engine(plan.to_json(), weights, 1, "bf16")   # its own weights: bf16 values
name = op.weights[spec["role"]]
weights[name] = weights[name] * np.float32(1 + 2.0 ** -20)   # no longer bf16 values
try:
    _native.Engine(plan.to_json(), weights, 1, "bf16")
    print(json.dumps({"error": None}))
except NativeError as e:
    print(json.dumps({"error": str(e)}))
'''


@pytest.mark.parametrize("role", ["loc_w", "loc_cat_w", "glb_cat_w", "cat_w"])
def test_gast_block_weights_must_be_bf16_values(tmp_path, role):
    """A bf16 engine on a bf16 dot-product kernel reads its GAST blocks' GEMM weights as bf16
    pairs: weights that are not bf16 values are refused when the engine is made, naming the op
    (not rounded, and not left to fail at the first call)."""
    import gastrt

    ck = save_checkpoint(tmp_path / "ck.bin", "gast", SMALL_ENGINE_CONFIGS["gast"], seed=2)
    eng = gastrt.build(ck, str(tmp_path / "bf16.gastrt"), precision="bf16")
    err = _child(GAST_INEXACT_CHILD, {"engine": eng, "role": role}, "emulate")["error"]
    assert err and "gast_block" in err and "GAST block weights are not bf16 values" in err, err
