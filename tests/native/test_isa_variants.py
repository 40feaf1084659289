"""Every CPU kernel variant the machine can run (GASTRT_ISA=base / avx2 / avx512 caps the run-time
choice; it is read once per process, so each variant runs in a child process): its direct and
Winograd convs (packed panels or not, fp32 or 16-bit panels) and GAST's fused block against
float64 / the NumPy oracle. CI covers the fallbacks on any x86 CPU."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

_native = pytest.importorskip("gastrt._native")

from gastrt_testutil import SMALL_ENGINE_CONFIGS, subprocess_env  # noqa: E402

CHILD = r'''
import json, sys
import numpy as np
from gastrt import _native
sys.path.insert(0, sys.argv[2])   # tests/: the shared helpers
from gastrt_testutil import all_finite_16bit, conv_reference64, gast_weights, one_hot_rows, round_to_16bit
rng = np.random.default_rng(int(sys.argv[1]))
errs, same = {}, {}
# n, t, ci, co, k, stride, dilation: few rows (small-M kernel), many rows on narrow and wide
# convs, partial panels, per-tap and fused K, several K blocks with few and many rows (1 x 1800:
# 160-row tiles, more than one 144-row block per K block), per-tap K blocks past the first on
# few rows (3 x 5, 1 x 20), one 180-row tile on every variant (K blocks widened once for two
# row blocks)
CASES = [(1, 27, 64, 300, 3, 3, 1), (1, 9, 171, 37, 3, 3, 1), (3, 301, 90, 200, 3, 3, 1),
         (2, 130, 257, 256, 1, 1, 1), (1, 700, 31, 97, 3, 1, 2), (2, 75, 128, 520, 3, 3, 1),
         (1, 3, 200, 70, 3, 3, 1), (1, 6, 333, 96, 3, 3, 1), (1, 1800, 300, 512, 3, 3, 1),
         (3, 5, 97, 129, 3, 1, 1), (1, 20, 150, 70, 3, 1, 2), (1, 180, 256, 512, 1, 1, 1)]
for n, t, ci, co, k, stride, dil in CASES:
    x = rng.standard_normal((n, 1, t, ci)).astype(np.float32)
    w = (rng.standard_normal((k * ci, co)) / np.sqrt(k * ci)).astype(np.float32)
    b = rng.standard_normal(co).astype(np.float32)
    ref, scale = conv_reference64(x, w, b, k, stride, dil)
    ref = np.maximum(ref, 0)
    to = ref.shape[1]
    for packed in (False, True):
        out = np.full((n, 1, to, co), np.nan, np.float32)
        _native.conv(x, w, b, k=k, stride=stride, dilation=dil, act="relu", out=out, threads=2,
                     algo="direct", small_panels=packed)
        e = float(np.abs(out[:, 0] - ref).max() / scale) if np.isfinite(out).all() else float("nan")
        errs[f"{n}x{t}x{ci}x{co}x{k}x{stride}x{dil} packed={packed}"] = e
    # an fp16 / bf16 engine's 16-bit panels: the fp32 kernel's bits on the widened weights
    for dt, wr in ((dt, round_to_16bit(w, dt)) for dt in ("bf16", "fp16")):
        outs = []
        for pdt in ("fp32", dt):
            o = np.full((n, 1, to, co), np.nan, np.float32)
            try:
                _native.conv(x, wr, b, k=k, stride=stride, dilation=dil, act="relu", out=o, threads=2,
                             algo="direct", small_panels=True, panel_dtype=pdt)
            except ValueError as e:   # the base variant keeps the row rule: many rows run on OpenBLAS there
                if _native.build_config()["cpu_isa"].endswith("avx2") or "on OpenBLAS here" not in str(e):
                    raise
                break
            outs.append(o)
        key = f"{n}x{t}x{ci}x{co}x{k}x{stride}x{dil} {dt} panels"
        if len(outs) < 2:
            same[key] = True
            continue
        same[key] = bool(np.isfinite(outs[1]).all() and np.array_equal(outs[0], outs[1]))
        ref16, scale16 = conv_reference64(x, wr, b, k, stride, dil)
        errs[key] = float(np.abs(outs[1][:, 0] - np.maximum(ref16, 0)).max() / scale16) \
            if np.isfinite(outs[1]).all() else float("nan")
# every finite fp16 / bf16 value through 16-bit panels (one-hot rows of x read weight rows back),
# on the few-row and several-pass paths of this variant's widening
for dt in ("fp16", "bf16"):
    wv = all_finite_16bit(dt, 64)
    for rows in (3, 30):
        ok = True
        for r0 in range(0, wv.shape[0], rows):
            xo, sel = one_hot_rows(wv.shape[0], r0, rows)
            yo = _native.conv(xo, wv, np.zeros(64, np.float32), k=1, stride=1, small_panels=True,
                              panel_dtype=dt, threads=2)
            ok &= bool(np.array_equal(yo[0, 0], wv[sel]))
        same[f"every {dt} value, {rows} rows"] = ok
# sequence mode's Winograd convs within their error of the exact conv: F(4,3) (its six products,
# packed or not by ISA level), and a bf16 engine's F(2,3) (this variant's transforms; the
# emulated bf16 kernel, which is the same on every variant)
for label, bf16_dot, cases in [("winograd", "none", [(2, 37, 131, 137, 3), (1, 100, 128, 256, 9)]),
                               ("bf16 winograd", "emulated", [(2, 37, 131, 137, 3), (1, 50, 128, 70, 9)])]:
    for n, t_out, ci, co, dil in cases:
        t = t_out + 2 * dil
        x = rng.standard_normal((n, 1, t, ci)).astype(np.float32)
        w = (rng.standard_normal((3 * ci, co)) / np.sqrt(3 * ci)).astype(np.float32)
        if bf16_dot != "none":
            w = round_to_16bit(w, "bf16")
        b = rng.standard_normal(co).astype(np.float32)
        ref, scale = conv_reference64(x, w, b, 3, 1, dil)
        out = np.full((n, 1, t_out, co), np.nan, np.float32)
        _native.conv(x, w, b, k=3, stride=1, dilation=dil, out=out, threads=2, algo="winograd", bf16_dot=bf16_dot)
        e = float(np.abs(out[:, 0] - ref).max() / scale) if np.isfinite(out).all() else float("nan")
        errs[f"{label} {n}x{t_out}x{ci}x{co} d{dil}"] = e
# GAST's fused attention block (its four GEMMs: packed or not by ISA level and rows)
from gastrt.backends import numpy_backend as nb
from gastrt.plan import Op
for j, c, n, t in [(17, 36, 1, 3), (17, 64, 3, 41), (15, 40, 2, 130)]:
    W = gast_weights(rng, j, c, 4)
    op = Op("gast_block", ["x"], ["y"], {"heads": 4, "head_channels": c // 4}, {})
    x = rng.standard_normal((n, j, t, c)).astype(np.float32)
    ref = nb.gast_block(op, x, W).astype(np.float64)
    out = np.full(ref.shape, np.nan, np.float32)
    _native.gast_block(x, W, heads=4, head_channels=c // 4, out=out, threads=2)
    e = float(np.abs(out - ref).max() / np.abs(ref).max()) if np.isfinite(out).all() else float("nan")
    errs[f"gast_block j{j} c{c} n{n} t{t}"] = e
print(json.dumps({"isa": _native.build_config()["cpu_isa"], "errs": errs, "same": same}))
'''


@functools.lru_cache(maxsize=None)
def _supported() -> tuple[str, ...]:
    """The variants this CPU can run (the dispatcher's own test, through the env cap)."""
    out = []
    for isa in ("base", "avx2", "avx512"):
        r = subprocess.run([sys.executable, "-c", "from gastrt import _native; "
                            "print(_native.build_config()['cpu_isa'])"],
                           env={**subprocess_env(), "GASTRT_ISA": isa}, capture_output=True, text=True, timeout=120)
        if r.returncode == 0 and r.stdout.strip().endswith(isa):
            out.append(isa)
    return tuple(out)


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
def test_kernel_variant_against_float64(isa):
    if isa not in _supported():
        pytest.skip(f"this CPU cannot run the {isa} variant (or this build has none)")
    seed = int(np.random.default_rng().integers(1 << 30))
    r = subprocess.run([sys.executable, "-c", CHILD, str(seed), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
                       env={**subprocess_env(), "GASTRT_ISA": isa},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["isa"].endswith(isa)
    # bf16 Winograd: bf16's rounding of both operands (~2^-8 of the scale at most); the rest fp32's
    tol = {k: 8 * 2.0 ** -9 if k.startswith("bf16") else 1e-5 for k in res["errs"]}
    bad = {k: v for k, v in res["errs"].items() if not v <= tol[k]}   # NaN fails too
    assert not bad, f"seed {seed}, {isa}: {bad}"
    assert len(res["same"]) == 2 * 12 + 4 and all(res["same"].values()), f"seed {seed}, {isa}: {res['same']}"


ENGINE_CHILD = r'''
import json, sys
import numpy as np
import gastrt
spec = json.loads(sys.argv[1])
out = {}
panels, loaded = {}, {}
for key, path in spec["engines"].items():
    e = loaded[key] = gastrt.load(path, backend="native")
    panels[key] = e.backend._engines["pos"].weight_panels
    x = np.load(spec["windows"])
    out[key + "/window"] = e.lift(x)
    if spec["sequence"]:
        out[key + "/sequence"] = e.lift_sequence(np.load(spec["sequence"]))
np.savez(spec["out"], **out)
from gastrt import _native
for key, path in spec["engines"].items():   # what the forwards above packed
    panels[key] = [panels[key], loaded[key].backend._engines["pos"].panel_bytes]
print(json.dumps(panels))
print(_native.build_config()["cpu_isa"])
'''

ENGINE_CONFIGS = SMALL_ENGINE_CONFIGS


@pytest.mark.parametrize("isa", ["base", "avx2", "avx512"])
@pytest.mark.parametrize("family", list(ENGINE_CONFIGS))
def test_engine_precisions_against_float64_on_each_variant(tmp_path, family, isa):
    """fp32 / fp16 / bf16 engines lifted by the native runtime under each CPU variant, against
    the eager reference model in float64, within the documented per-precision tolerance
    (engine_file.PRECISION_TOLERANCE). On CPUs without 16-bit arithmetic the 16-bit engines
    compute in fp32 on rounded weights: the kernels are the fp32 ones, their error is the
    rounding of the weights."""
    pytest.importorskip("torch")
    if isa not in _supported():
        pytest.skip(f"this CPU cannot run the {isa} variant (or this build has none)")
    import gastrt
    from gastrt.engine_file import PRECISION_TOLERANCE
    from gastrt_testutil import eager_reference64, rel_err, save_checkpoint

    config = ENGINE_CONFIGS[family]
    ck = save_checkpoint(tmp_path / "ck.bin", family, config, seed=11)
    engines = {p: gastrt.build(ck, str(tmp_path / f"{p}.gastrt"), precision=p) for p in ("fp32", "fp16", "bf16")}
    rf = int(np.prod(config["filter_widths"]))
    rng = np.random.default_rng(sum(map(ord, family + isa)))
    x = (rng.standard_normal((3, rf, 17, 2)) * 0.5).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    seq = None
    if family != "rie":
        seq = (rng.standard_normal((rf + 40, 17, 2)) * 0.5).astype(np.float32)
        np.save(tmp_path / "s.npy", seq)
    spec = {"engines": engines, "windows": str(tmp_path / "x.npy"),
            "sequence": str(tmp_path / "s.npy") if seq is not None else None, "out": str(tmp_path / "y.npz")}
    r = subprocess.run([sys.executable, "-c", ENGINE_CHILD, json.dumps(spec)],
                       env={**subprocess_env(), "GASTRT_ISA": isa}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith(isa)
    # 16-bit panels in use: said, and packed by the forwards (every variant runs VideoPose3D's and
    # RIE's few-row convs on the small-M kernel; GAST's rows are few enough only on AVX2, where
    # every conv runs there)
    panels = json.loads(r.stdout.strip().splitlines()[-2])
    assert {p: v[0] for p, v in panels.items()} == {p: p for p in engines}
    if family != "gast" or isa == "avx2":
        assert all(panels[p][1]["16bit"] > 0 and panels[p][1]["fp32"] == 0 for p in ("fp16", "bf16")), panels
        assert panels["fp32"][1]["fp32"] > 0 and panels["fp32"][1]["16bit"] == 0, panels
    got = np.load(tmp_path / "y.npz")
    # The 16-bit engines' convs stream 16-bit panels; with GASTRT_PANELS_16BIT=0 they read fp32
    # panels of the same (widened) weights: the same bits either way.
    spec32 = dict(spec, engines={p: engines[p] for p in ("fp16", "bf16")}, out=str(tmp_path / "y32.npz"))
    r = subprocess.run([sys.executable, "-c", ENGINE_CHILD, json.dumps(spec32)],
                       env={**subprocess_env(), "GASTRT_ISA": isa, "GASTRT_PANELS_16BIT": "0"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    panels32 = json.loads(r.stdout.strip().splitlines()[-2])
    assert {p: v[0] for p, v in panels32.items()} == {"fp16": "fp32", "bf16": "fp32"}
    assert all(v[1]["16bit"] == 0 for v in panels32.values()), panels32
    got32 = np.load(tmp_path / "y32.npz")
    assert sorted(got32.files) == sorted(k for k in got.files if not k.startswith("fp32/"))
    for key in got32.files:
        assert np.isfinite(got[key]).all() and np.array_equal(got[key], got32[key]), key

    ref_w, ref_s = eager_reference64(ck, family, config, x, seq)
    for p in engines:
        w = got[p + "/window"]
        w = w[:, 0] if w.ndim == 4 else w
        assert rel_err(w, ref_w) <= PRECISION_TOLERANCE[p], (p, "window")
        if ref_s is not None:
            assert rel_err(got[p + "/sequence"], ref_s) <= PRECISION_TOLERANCE[p], (p, "sequence")
