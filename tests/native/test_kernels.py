"""The native CPU runtime (gastrt._native) against the NumPy executor, kernel by kernel and
whole plans. Odd sizes (primes, 1), fresh random data, outputs poisoned with NaN before each
call (a kernel that skips an element fails), several thread counts. fp32 tolerance: max abs
error / max abs reference <= 1e-5."""
from __future__ import annotations


import numpy as np
import pytest

_native = pytest.importorskip("gastrt._native")

from gastrt.backends import numpy_backend as nb  # noqa: E402
from gastrt_testutil import all_finite_16bit, gast_weights, one_hot_rows, run_in_threads  # noqa: E402
from gastrt.families.common import PlanBuilder  # noqa: E402
from gastrt.families.rie import GROUPS, SOURCES  # noqa: E402
from gastrt.plan import Op, Plan, conv_geometry  # noqa: E402

TOL = 1e-5
THREADS = [1, 2, 3]


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "non-finite values in the result (an element was not written?)"
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


@pytest.fixture
def rng(request):
    # a fresh stream per test (and per parametrisation)
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2 ** 32))


# ---- conv --------------------------------------------------------------------------------------

CONV_CASES = [
    # n, g, t, ci, co, k, dilation, act, res
    (1, 1, 3, 1, 1, 3, 1, "none", False),
    (1, 1, 27, 2, 128, 3, 1, "relu", False),
    (2, 17, 27, 3, 13, 3, 3, "relu", True),
    (3, 5, 31, 13, 7, 3, 9, "lrelu", True),
    (1, 1, 243, 34, 37, 3, 1, "lrelu", False),
    (5, 1, 81, 37, 41, 3, 27, "relu", True),
    (2, 3, 11, 29, 31, 1, 1, "none", True),
    (7, 1, 1, 23, 19, 1, 1, "lrelu", True),
    (1, 1, 25, 64, 96, 5, 5, "relu", True),
    (67, 1, 9, 16, 33, 3, 3, "relu", True),      # many rows: row tiles
]


def _conv_op(k, dilation, act, res, t, mode):
    attrs = {"k": k, "dilation": dilation, "act": act}
    if res:
        span_seq = (k - 1) * dilation + 1
        attrs.update(res_win_offset=k // 2, res_win_stride=k, res_seq_offset=(span_seq - 1) // 2)
    return Op("conv", ["x"] + (["r"] if res else []), ["y"], attrs, {})


@pytest.mark.parametrize("mode", ["window", "sequence"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("threads", THREADS)
def test_conv(rng, mode, case, threads):
    n, g, t, ci, co, k, dil, act, res = case
    if mode == "sequence":
        t = t + (k - 1) * dil   # enough frames for the dilated form
    op = _conv_op(k, dil, act, res, t, mode)
    geo = conv_geometry(op, mode)
    x = f32(rng.standard_normal((n, g, t, ci)))
    w = f32(rng.standard_normal((k * ci, co)) / np.sqrt(k * ci))
    b = f32(rng.standard_normal(co))
    r = f32(rng.standard_normal((n, g, t, co))) if res else None
    ref = nb.conv(op, x, w, b, r, mode)
    out = np.full(ref.shape, np.nan, np.float32)
    y = _native.conv(x, w, b, r, k=k, stride=geo.stride, dilation=geo.dilation,
                     res_offset=geo.res_offset, res_stride=geo.res_stride, act=act, out=out,
                     threads=threads)
    assert y is out
    # relative to the size of the summed terms (the same conv on |x|, |w|, |b|, |r|), not of the
    # result: a 1-channel, 3-tap case may cancel to ~1% of its terms, where the summation order
    # alone moves it by > 1e-5 relative
    scale = nb.conv(op, np.abs(x), np.abs(w), np.abs(b), None if r is None else np.abs(r), mode)
    assert np.isfinite(out).all() and float(np.abs(out - ref).max()) <= TOL * float(scale.max())


# Winograd F(4,3) (sequence mode, k = 3): tiles of 4 outputs per dilation phase, blocks of 4*d
# frames, the frames past the last whole block by the direct kernel. Cases cover exactly one
# block, one frame more / less than whole blocks, several sequences (per-sequence tails),
# residual offsets, every activation, small-M and OpenBLAS GEMMs, primes everywhere.
WINO_CASES = [
    # n, g, t_out, ci, co, dilation, act, res
    (1, 1, 4, 1, 1, 1, "none", False),          # exactly one tile
    (1, 1, 5, 3, 2, 1, "relu", True),           # one tile + a 1-frame tail
    (2, 3, 12, 5, 7, 3, "lrelu", True),         # one block of d tiles per sequence
    (3, 1, 35, 13, 11, 3, "relu", True),        # 2 blocks + 11-frame tails, 3 sequences
    (1, 17, 53, 17, 19, 1, "relu", False),      # GAST-like: joints fold into sequences
    (1, 1, 331, 131, 137, 9, "lrelu", True),    # 9 blocks of 36, tail 7
    (2, 1, 331, 257, 263, 27, "relu", True),    # tail of 7 per sequence; K >= 256
    (1, 1, 1000, 64, 97, 81, "relu", True),     # d = 81 (VideoPose3D-243's last layer)
    (1, 1, 40, 128, 256, 1, "relu", True),      # whole 32- and 16-column panels (AVX2 packs U)
    (2, 1, 75, 160, 128, 9, "lrelu", False),
]


@pytest.mark.parametrize("case", WINO_CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("threads", THREADS)
def test_conv_winograd(rng, case, threads):
    n, g, to, ci, co, dil, act, res = case
    t = to + 2 * dil
    op = _conv_op(3, dil, act, res, t, "sequence")
    geo = conv_geometry(op, "sequence")
    x = f32(rng.standard_normal((n, g, t, ci)))
    w = f32(rng.standard_normal((3 * ci, co)) / np.sqrt(3 * ci))
    b = f32(rng.standard_normal(co))
    r = f32(rng.standard_normal((n, g, t, co))) if res else None
    ref = nb.conv(op, x, w, b, r, "sequence")
    out = np.full(ref.shape, np.nan, np.float32)
    _native.conv(x, w, b, r, k=3, stride=1, dilation=dil, res_offset=geo.res_offset, act=act,
                 out=out, threads=threads, algo="winograd")
    assert rel_err(out, ref) <= TOL
    direct = _native.conv(x, w, b, r, k=3, stride=1, dilation=dil, res_offset=geo.res_offset,
                          act=act, threads=threads, algo="direct")
    assert rel_err(out, direct) <= TOL


def test_conv_winograd_propagates_nan(rng):
    """A NaN never disappears: every output whose window reads a NaN frame is NaN, as in the
    direct form. The transforms mix a tile's 6 frames, so the NaN also reaches the other
    outputs of that tile (4 outputs, one dilation phase) and nothing else. Engines reject NaN
    input before it gets here (lift / lift_sequence)."""
    x = f32(rng.standard_normal((1, 1, 30, 8)))
    w = f32(rng.standard_normal((24, 5)))
    b = f32(np.zeros(5))
    x[0, 0, 13] = np.nan
    direct = _native.conv(x, w, b, k=3, stride=1, dilation=2, algo="direct")
    wino = _native.conv(x, w, b, k=3, stride=1, dilation=2, algo="winograd")
    assert set(np.flatnonzero(np.isnan(direct[0, 0]).any(axis=1))) == {9, 11, 13}
    # d = 2: blocks of 8 outputs, frame 13 is read by the tile of outputs 9, 11, 13, 15 only
    assert set(np.flatnonzero(np.isnan(wino[0, 0]).any(axis=1))) == {9, 11, 13, 15}
    ok = ~np.isnan(wino[0, 0]).any(axis=1)
    assert rel_err(wino[0, 0][ok], direct[0, 0][ok]) <= TOL


def test_conv_winograd_rejects_other_shapes(rng):
    x = f32(rng.standard_normal((1, 1, 10, 4)))
    b = f32(np.zeros(3))
    with pytest.raises(ValueError, match="winograd"):   # k = 5
        _native.conv(x, f32(rng.standard_normal((20, 3))), b, k=5, stride=1, algo="winograd")
    with pytest.raises(ValueError, match="winograd"):   # 2 output frames < 4 * dilation
        _native.conv(x, f32(rng.standard_normal((12, 3))), b, k=3, stride=1, dilation=4,
                     algo="winograd")
    with pytest.raises(ValueError, match="algo"):
        _native.conv(x, f32(rng.standard_normal((12, 3))), b, k=3, stride=1, algo="fft")


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 11, 13, 17, 40, 41, 67])
@pytest.mark.parametrize("n", [1, 5, 16, 17, 63, 64, 65, 129, 200])
def test_linear_shapes(rng, m, n):
    """A Linear (k = 1) over m rows: every register-tile / column-tail combination of the
    small-M GEMM (m <= 40) and the OpenBLAS path (m > 40), one and three threads."""
    k = 37
    x = f32(rng.standard_normal((1, 1, m, k)))
    w = f32(rng.standard_normal((k, n)))
    b = f32(rng.standard_normal(n))
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    ref = x64 @ w64 + b64
    # relative to the size of the terms, not of the result: with m = n = 1 one dot product may
    # cancel to ~0.01 of its terms, where fp32 summation order alone moves it by > 1e-5 relative
    scale = float((np.abs(x64) @ np.abs(w64) + np.abs(b64)).max())
    for threads in (1, 3):
        out = np.full(ref.shape, np.nan, np.float32)
        _native.conv(x, w, b, k=1, stride=1, out=out, threads=threads)
        assert np.isfinite(out).all() and float(np.abs(out - ref).max()) <= TOL * scale


def test_conv_allocates_output_and_takes_noncontiguous(rng):
    x = rng.standard_normal((2, 3, 40, 5)).astype(np.float64)[:, :, ::2]   # float64, strided
    w = rng.standard_normal((15, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    op = _conv_op(3, 1, "relu", False, 20, "window")
    ref = nb.conv(op, f32(x), w, b, None, "window")
    y = _native.conv(x, w, b, k=3, stride=3, act="relu")
    assert y.dtype == np.float32 and y.flags.c_contiguous
    assert rel_err(y, ref) <= TOL


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 64, 2000])
def test_16bit_panels_widen_every_value_exactly(precision, rows):
    """A 16-bit engine's conv panels hold its weights' bits and widen them in the kernel: one-hot
    rows of x read weight rows back, so every finite fp16 / bf16 value (subnormals, +-0, the
    largest) must come back exactly, on the few-row (widened as loaded), several-pass (widened
    once into a buffer) and many-row (K blocks widened once) paths alike. This CPU's variant;
    tests/native/test_isa_variants.py runs the few-row paths of every variant."""
    w = all_finite_16bit(precision, 96)   # [K, 96]
    K = w.shape[0]
    b = np.zeros(96, np.float32)
    for r0 in range(0, K, rows):   # every weight row (2000 rows: 256-row tiles, the K-block path)
        x, sel = one_hot_rows(K, r0, rows)
        try:
            y = _native.conv(x, w, b, k=1, stride=1, small_panels=True, panel_dtype=precision, threads=2)
        except ValueError as e:   # the base variant keeps the row rule: many rows run on OpenBLAS there
            if rows <= 40 or _native.build_config()["cpu_isa"].endswith("avx2") or "on OpenBLAS here" not in str(e):
                raise
            pytest.skip("this conv runs on OpenBLAS on this CPU (no panels)")
        np.testing.assert_array_equal(y[0, 0], w[sel])


def test_conv_rejects_bad_geometry(rng):
    x = f32(rng.standard_normal((1, 1, 5, 4)))
    w = f32(rng.standard_normal((12, 3)))
    b = f32(np.zeros(3))
    with pytest.raises(ValueError):
        _native.conv(x, w, b, k=3, stride=1, dilation=3)          # needs 7 frames
    with pytest.raises(ValueError):
        _native.conv(x, f32(np.zeros((8, 3))), b, k=3, stride=3)  # w is not [k*ci, co]
    with pytest.raises(ValueError):
        _native.conv(x, w, b, k=3, stride=3, act="gelu")
    with pytest.raises(ValueError):                              # wrong out shape
        _native.conv(x, w, b, k=3, stride=3, out=np.zeros((1, 1, 2, 3), np.float32))
    with pytest.raises(RuntimeError):                            # residual window too short
        _native.conv(x, w, b, f32(np.zeros((1, 1, 1, 3))), k=3, stride=1, res_offset=1)


# ---- gast_block --------------------------------------------------------------------------------

@pytest.mark.parametrize("j", [15, 17, 19])
@pytest.mark.parametrize("c", [8, 36])
@pytest.mark.parametrize("nt", [(1, 1), (1, 3), (2, 7), (3, 13), (5, 1)], ids=lambda v: f"n{v[0]}t{v[1]}")
@pytest.mark.parametrize("threads", THREADS)
def test_gast_block(rng, j, c, nt, threads):
    n, t = nt
    heads = 4
    W = gast_weights(rng, j, c, heads)
    op = Op("gast_block", ["x"], ["y"], {"heads": heads, "head_channels": c // heads}, {})
    x = f32(rng.standard_normal((n, j, t, c)))
    ref = nb.gast_block(op, x, W)
    out = np.full(ref.shape, np.nan, np.float32)
    y = _native.gast_block(x, W, heads=heads, head_channels=c // heads, out=out, threads=threads)
    assert y is out
    assert rel_err(out, ref) <= TOL


@pytest.mark.parametrize("threads", [1, 2])
def test_gast_block_dense_tables_and_many_frames(rng, threads):
    # dense (non-GAST) mixing tables; enough frames for several chunks per thread
    j, c, heads = 17, 16, 4
    W = gast_weights(rng, j, c, heads, sparse=False)
    op = Op("gast_block", ["x"], ["y"], {"heads": heads, "head_channels": c // heads}, {})
    x = f32(rng.standard_normal((3, j, 101, c)))
    ref = nb.gast_block(op, x, W)
    y = _native.gast_block(x, W, heads=heads, head_channels=c // heads, threads=threads)
    assert rel_err(y, ref) <= TOL


@pytest.mark.parametrize("threads", [1, 2])
def test_gast_block_kernel_reused(rng, threads):
    """GastBlockKernel (weights prepared once, scratch kept): repeated calls with growing and
    shrinking shapes (the streaming pattern: one frame per slot) equal the NumPy block, and
    the weights given at construction are copied (changing the caller's arrays changes nothing)."""
    j, c, heads = 17, 24, 4
    W = gast_weights(rng, j, c, heads)
    op = Op("gast_block", ["x"], ["y"], {"heads": heads, "head_channels": c // heads}, {})
    k = _native.GastBlockKernel(W, heads=heads, head_channels=c // heads)
    W_copy = {r: a.copy() for r, a in W.items()}
    W["cat_w"][...] = 0.0
    for n, t in [(1, 1), (3, 1), (1, 1), (7, 5), (2, 1)]:
        x = f32(rng.standard_normal((n, j, t, c)))
        ref = nb.gast_block(op, x, W_copy)
        out = np.full(ref.shape, np.nan, np.float32)
        assert k(x, out=out, threads=threads) is out
        assert rel_err(out, ref) <= TOL
    with pytest.raises(ValueError, match="expected"):
        k(f32(rng.standard_normal((1, j + 1, 1, c))))


def test_gast_block_rejects_bad_weights(rng):
    W = gast_weights(rng, 17, 8)
    x = f32(rng.standard_normal((1, 17, 3, 8)))
    bad = dict(W)
    bad["cat_w"] = bad["cat_w"][:-1]
    with pytest.raises(ValueError, match="cat_w"):
        _native.gast_block(x, bad, heads=4, head_channels=2)
    missing = dict(W)
    del missing["glb_ck"]
    with pytest.raises(ValueError, match="glb_ck"):
        _native.gast_block(x, missing, heads=4, head_channels=2)
    with pytest.raises(ValueError):
        _native.gast_block(f32(rng.standard_normal((1, 15, 3, 8))), W, heads=4, head_channels=2)


# ---- rie_encode --------------------------------------------------------------------------------

@pytest.mark.parametrize("n,t", [(1, 1), (1, 3), (5, 27), (2, 243)])
@pytest.mark.parametrize("threads", [1, 2])
def test_rie_encode(rng, n, t, threads):
    op = Op("rie_encode", ["input"], [f"o{i}" for i in range(6)], {"groups": [list(g) for g in GROUPS]})
    x = f32(rng.standard_normal((n, t, 17, 2)))
    refs = nb.rie_encode(op, x)
    outs = [np.full(r.shape, np.nan, np.float32) for r in refs]
    got = _native.rie_encode(x, [list(g) for g in GROUPS], outs=outs, threads=threads)
    assert len(got) == len(refs)
    for g, o, r in zip(got, outs, refs):
        assert g is o
        assert rel_err(g, r) <= TOL


# ---- whole plans (torch-free: built with the lowering's PlanBuilder and random weights) ---------

def _rand_conv(B, rng, name, x, ci, co, k, dil, act, res=None, **geo):
    w = rng.standard_normal((k * ci, co)) / np.sqrt(k * ci)
    b = rng.standard_normal(co) * 0.1
    return B.conv(name, x, w, b, k=k, dilation=dil, act=act, res=res, **geo)


def synth_gast_plan(rng, j=17, ch=8, widths=(3, 3, 3)):
    B = PlanBuilder("pos")
    x = B.op("input_joint_major", ["input"], ["x"])[0]
    x = _rand_conv(B, rng, "expand", x, 2, ch, widths[0], 1, "relu")
    c = ch

    def block(x, c, i):
        W = gast_weights(rng, j, c)
        out = B.fresh("t")
        B.op("gast_block", [x], [out], {"heads": 4, "head_channels": c // 4},
             {role: B.weight(f"block{i}.{role}", a) for role, a in W.items()})
        return out

    x = block(x, c, 0)
    c *= 2
    dil = widths[0]
    for i, fw in enumerate(widths[1:]):
        pad = (fw - 1) * dil // 2
        y = _rand_conv(B, rng, f"l{i}.conv", x, c, c, fw, dil, "relu")
        y = _rand_conv(B, rng, f"l{i}.pw", y, c, c, 1, 1, "relu", res=x, res_win_offset=fw // 2,
                       res_win_stride=fw, res_seq_offset=pad)
        x = block(y, c, i + 1)
        c *= 2
        dil *= fw
    y = _rand_conv(B, rng, "shrink", x, c, 3, 1, 1, "none")
    B.op("output_joint_major", [y], ["output"])
    rf = int(np.prod(widths))
    return Plan("pos", B.ops, rf, j, j, ("window", "sequence"), 2), {k: f32(v) for k, v in B.weights.items()}


def synth_vp3d_plan(rng, j=17, ch=32, widths=(3, 3, 3), act="relu", out_joints=None):
    B = PlanBuilder("pos")
    x = B.op("input_flat", ["input"], ["x"])[0]
    x = _rand_conv(B, rng, "expand", x, 2 * j, ch, widths[0], 1, act)
    dil = widths[0]
    for i, fw in enumerate(widths[1:]):
        pad = (fw - 1) * dil // 2
        y = _rand_conv(B, rng, f"l{i}.conv", x, ch, ch, fw, dil, act)
        x = _rand_conv(B, rng, f"l{i}.pw", y, ch, ch, 1, 1, act, res=x, res_win_offset=fw // 2,
                       res_win_stride=fw, res_seq_offset=pad)
        dil *= fw
    jo = out_joints or j
    y = _rand_conv(B, rng, "shrink", x, ch, 3 * jo, 1, 1, "none")
    B.op("output_flat", [y], ["output"])
    return Plan("pos", B.ops, int(np.prod(widths)), j, jo, ("window", "sequence"), 2), \
        {k: f32(v) for k, v in B.weights.items()}


def synth_rie_plan(rng, ch=16, latent=12, widths=(3, 3)):
    B = PlanBuilder("pos")
    enc = [B.fresh("t") for _ in range(6)]
    B.op("rie_encode", ["input"], enc, {"groups": [list(g) for g in GROUPS]})
    feats = []
    for i, g in enumerate(GROUPS):
        x = _rand_conv(B, rng, f"b{i}.expand", enc[i], 3 * len(g), ch, widths[0], 1, "lrelu")
        dil = widths[0]
        for li, fw in enumerate(widths[1:]):
            y = _rand_conv(B, rng, f"b{i}.l{li}.conv", x, ch, ch, fw, dil, "lrelu")
            x = _rand_conv(B, rng, f"b{i}.l{li}.pw", y, ch, ch, 1, 1, "lrelu", res=x,
                           res_win_offset=fw // 2, res_win_stride=fw)
            dil *= fw
        feats.append(_rand_conv(B, rng, f"b{i}.shrink", x, ch, latent, 1, 1, "none"))
    glob = _rand_conv(B, rng, "glob", enc[5], 34, latent, 1, 1, "lrelu")
    outs = []
    n_out = [5, 3, 3, 3, 3]
    for i in range(5):
        cat = B.fresh("t")
        B.op("concat", [feats[i], feats[(i + 1) % 5], glob], [cat])
        h = _rand_conv(B, rng, f"d{i}.fc1", cat, 3 * latent, 24, 1, 1, "lrelu")
        h = _rand_conv(B, rng, f"d{i}.fc2", h, 24, 24, 1, 1, "lrelu", res=h)
        outs.append(_rand_conv(B, rng, f"d{i}.out", h, 24, 3 * n_out[i], 1, 1, "none"))
    B.op("output_assemble", outs, ["output"], {"sources": [list(s) for s in SOURCES]})
    return Plan("pos", B.ops, int(np.prod(widths)), 17, 17, ("window",), 2), \
        {k: f32(v) for k, v in B.weights.items()}


def _check_plan(plan, weights, x, mode, threads):
    ref = nb.run_plan(plan, weights, x, mode)
    eng = _native.Engine(plan.to_json(), weights, threads)
    out = np.full(ref.shape, np.nan, np.float32)
    y = eng.run(x, mode, out=out)
    assert y is out
    assert rel_err(y, ref) <= TOL
    y2 = eng.run(x, mode)               # second call: cached schedule + reused workspace
    assert np.array_equal(y2, y)
    return eng


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("n", [1, 2, 7])
def test_plan_gast_window(rng, threads, n):
    plan, W = synth_gast_plan(rng)
    _check_plan(plan, W, f32(rng.standard_normal((n, 27, 17, 2))), "window", threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nt", [(1, 27), (1, 61), (2, 40)], ids=str)
def test_plan_gast_sequence(rng, threads, nt):
    plan, W = synth_gast_plan(rng, j=15)
    n, t = nt
    _check_plan(plan, W, f32(rng.standard_normal((n, t, 15, 2))), "sequence", threads)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("mode,n,t", [("window", 1, 27), ("window", 11, 27), ("sequence", 1, 27),
                                      ("sequence", 3, 53)])
def test_plan_vp3d(rng, threads, mode, n, t):
    plan, W = synth_vp3d_plan(rng, out_joints=15)
    _check_plan(plan, W, f32(rng.standard_normal((n, t, 17, 2))), mode, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 13])
def test_plan_rie(rng, threads, n):
    plan, W = synth_rie_plan(rng)
    _check_plan(plan, W, f32(rng.standard_normal((n, 9, 17, 2))), "window", threads)


def test_engine_errors(rng):
    plan, W = synth_rie_plan(rng)
    eng = _native.Engine(plan.to_json(), W, 1)
    with pytest.raises(ValueError):
        eng.run(f32(np.zeros((1, 9, 16, 2))), "window")      # wrong joints
    with pytest.raises(ValueError):
        eng.run(f32(np.zeros((1, 9, 17, 2))), "diagonal")    # unknown mode
    with pytest.raises(RuntimeError, match="window mode only|no sequence mode"):
        eng.run(f32(np.zeros((1, 9, 17, 2))), "sequence")
    with pytest.raises(RuntimeError, match="frames"):
        eng.run(f32(np.zeros((1, 2, 17, 2))), "window")      # shorter than the receptive field
    bad = dict(W)
    bad.pop(next(iter(bad)))
    with pytest.raises(ValueError, match="missing"):
        _native.Engine(plan.to_json(), bad, 1)


def test_engine_noncontiguous_and_float64_input(rng):
    plan, W = synth_vp3d_plan(rng)
    x = rng.standard_normal((3, 27, 17, 4))[..., ::2]          # float64, non-contiguous
    ref = nb.run_plan(plan, W, f32(x), "window")
    eng = _native.Engine(plan.to_json(), W, 2)
    assert rel_err(eng.run(x, "window"), ref) <= TOL
    xt = np.ascontiguousarray(f32(x).transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)  # F-ish strides
    assert rel_err(eng.run(xt, "window"), ref) <= TOL


def test_engine_workspace_and_cache(rng):
    plan, W = synth_gast_plan(rng)
    eng = _native.Engine(plan.to_json(), W, 2)
    b1 = eng.workspace_bytes(1, 27, "window")
    b64 = eng.workspace_bytes(64, 27, "window")
    assert 0 < b1 < b64
    assert eng.output_shape(5, 27, "window") == [5, 1, 17, 3]
    assert eng.output_shape(1, 127, "sequence") == [1, 101, 17, 3]
    eng.clear_cache()
    x = f32(rng.standard_normal((4, 27, 17, 2)))
    for _ in range(3):
        eng.run(x, "window")
    shapes, idle = eng.cache_stats()
    assert shapes == 1 and idle == 1   # one workspace, reused by every call
    for t in range(27, 27 + 12):        # more shapes than the cache keeps
        eng.run(f32(rng.standard_normal((1, t, 17, 2))), "sequence")
    assert eng.cache_stats()[0] <= 8


def test_engine_thread_safety(rng):
    """Several Python threads hammer one engine with different inputs at once; every result
    must equal the same input's single-threaded result."""
    plan, W = synth_gast_plan(rng)
    eng = _native.Engine(plan.to_json(), W, 2)
    serial = _native.Engine(plan.to_json(), W, 1)
    inputs = [f32(rng.standard_normal((n, 27, 17, 2))) for n in (1, 3, 8, 2, 5, 1)]
    want = [serial.run(x, "window") for x in inputs]
    errors = []

    def worker(i):
        for _ in range(15):
            y = eng.run(inputs[i], "window")
            if rel_err(y, want[i]) > TOL:
                errors.append((i, rel_err(y, want[i])))

    errors += run_in_threads(worker, len(inputs))
    assert not errors, errors


def _fork_child(q, x, w, b):
    q.put(_native.conv(x, w, b, k=1, stride=1, threads=2))


def test_fork_after_use(rng):
    """A process forked after the pool has started (multiprocessing 'fork') must not wait for
    worker threads that do not exist in the child."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    x = f32(rng.standard_normal((64, 1, 200, 64)))
    w = f32(rng.standard_normal((64, 64)))
    b = f32(rng.standard_normal(64))
    ref = _native.conv(x, w, b, k=1, stride=1, threads=2)   # starts the workers
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(q, x, w, b))
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert np.array_equal(got, ref)


def test_build_config():
    cfg = _native.build_config()
    assert cfg["native"] is True
    assert isinstance(cfg["cuda"], bool) and cfg["cuda"] == _native.has_cuda()
    assert isinstance(cfg["cuda_archs"], list)
    assert "OpenBLAS" in cfg["blas"]
    assert cfg["default_threads"] >= 1
    assert _native.cuda_device_count() >= 0     # never raises


# ---- real families (needs torch for the random original-layout weights) --------------------------

def _lowered(family, config, seed=0):
    torch = pytest.importorskip("torch")  # noqa: F841
    from gastrt.families import detect_and_lower
    from gastrt.reference.factory import random_state_dict

    sd = {k: v.numpy() for k, v in random_state_dict(family, config, seed=seed).items()}
    low = detect_and_lower(sd, None, False)
    return low.plans["pos"], {k: f32(v) for k, v in low.weights.items()}


@pytest.mark.parametrize("family,config,modes", [
    ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16}, ("window", "sequence")),
    ("gast", {"num_joints": 19, "filter_widths": [3, 3], "channels": 12}, ("window", "sequence")),
    ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                     "filter_widths": [3, 3, 3], "channels": 64, "trajectory": False}, ("window", "sequence")),
    ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 32, "latent": 16, "stage": 3}, ("window",)),
], ids=["gast17", "gast19", "vp3d", "rie"])
def test_real_family_plans(rng, family, config, modes):
    plan, W = _lowered(family, config)
    for mode in modes:
        t = plan.receptive_field if mode == "window" else plan.receptive_field + 20
        n = 3 if mode == "window" else 2
        x = f32(rng.standard_normal((n, t, plan.in_joints, 2)) * 0.5)
        _check_plan(plan, W, x, mode, 2)
