"""A bf16 engine's sequence-mode width-3 convs by Winograd F(2,3) on the bf16 dot-product kernels
(csrc/cpu/conv_winograd_bf16.cpp): against a float64 model of the algorithm itself (transforms in
fp32, V and U rounded to bf16, products exact) with a per-element rounding bound, and against the
exact float64 conv within bf16's error; same bits for any thread count; NaN where the direct conv
has NaN; the engine's choice ('auto') takes it where it pays."""
from __future__ import annotations

import numpy as np
import pytest

from gastrt import _native
from gastrt_testutil import bf16_activations as bf16, conv_reference64

U = 2.0 ** -24  # fp32 unit roundoff
KERNELS = ["emulated", "emulated-amx", "avx512bf16", "amx"]

# (n, t_out, ci, co, dilation, act, residual): odd sizes; partial last blocks (t_out % 2d in
# (0, d] and (d, 2d)); t_out < d (only partial tiles); t_out == 1; channels past one 256-column
# task and one 64-tile task; a 1-channel input
CASES = [
    (2, 37, 130, 140, 3, "relu", True),
    (1, 100, 64, 300, 9, "lrelu", False),
    (3, 5, 33, 17, 7, "none", True),
    (1, 1, 40, 70, 2, "relu", False),
    (1, 150, 200, 257, 1, "none", True),
    (2, 61, 1, 65, 27, "relu", False),
    (1, 170, 96, 64, 81, "none", True),
]


def _skip_unless_runs(kernel):
    if kernel not in _native.bf16_dot_kernels():
        pytest.skip(f"this CPU / OS cannot run the {kernel} kernel")


def f23_model(x, w, dil, t_out):
    """float64 F(2,3) as the kernel computes it, before bias: -> (y [n, t_out, co], bound), bound
    per element on the kernel's fp32 rounding (its four K = ci sums and the output transform)."""
    n, _, t, ci = x.shape
    co = w.shape[1]
    w64 = w.astype(np.float64).reshape(3, ci, co)
    ut = [w64[0], (w64[0] + w64[1] + w64[2]) / 2, (w64[0] - w64[1] + w64[2]) / 2, w64[2]]
    ub = [bf16(u.astype(np.float32)).astype(np.float64) for u in ut]
    xs = x[:, 0]
    y = np.empty((n, t_out, co))
    bound = np.empty((n, t_out, co))
    for t0 in range(t_out):
        if (t0 // dil) % 2:
            continue                      # the second output of the tile at t0 - dil
        second = t0 + dil < t_out
        d = [xs[:, t0 + j * dil] for j in range(3)]
        d3 = xs[:, t0 + 3 * dil] if second else np.zeros_like(d[0])
        v = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d3]   # fp32, as the kernel
        vb = [bf16(vi).astype(np.float64) for vi in v]
        m = [vb[p] @ ub[p] for p in range(4)]
        mb = [(ci + 1) * U * (np.abs(vb[p]) @ np.abs(ub[p])) for p in range(4)]
        y[:, t0] = m[0] + m[1] + m[2]
        bound[:, t0] = mb[0] + mb[1] + mb[2] + 3 * U * (np.abs(m[0]) + np.abs(m[1]) + np.abs(m[2]))
        if second:
            y[:, t0 + dil] = m[1] - m[2] - m[3]
            bound[:, t0 + dil] = mb[1] + mb[2] + mb[3] + 3 * U * (np.abs(m[1]) + np.abs(m[2]) + np.abs(m[3]))
    return y, bound


def _epilogue(y, b, act, res):
    y = y + b
    y = np.maximum(y, 0) if act == "relu" else np.where(y > 0, y, 0.2 * y) if act == "lrelu" else y
    return y if res is None else y + res


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}t{}ci{}co{}d{}{}{}".format(*c[:6], "r" if c[6] else ""))
def test_winograd_bf16_against_float64(kernel, case):
    _skip_unless_runs(kernel)
    n, t_out, ci, co, dil, act, has_res = case
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    t = t_out + 2 * dil
    x = rng.standard_normal((n, 1, t, ci)).astype(np.float32)
    w = bf16((rng.standard_normal((3 * ci, co)) / np.sqrt(3 * ci)).astype(np.float32))
    b = (rng.standard_normal(co) * 0.3).astype(np.float32)
    res = rng.standard_normal((n, 1, t_out + 3, co)).astype(np.float32) if has_res else None
    kw = dict(k=3, stride=1, dilation=dil, act=act, res_offset=2 if has_res else 0, algo="winograd",
              bf16_dot=kernel)
    y1 = _native.conv(x, w, b, res, threads=1, **kw)
    y2 = _native.conv(x, w, b, res, threads=2, **kw)
    assert np.isfinite(y1).all(), f"seed {seed}"
    assert np.array_equal(y1, y2), f"seed {seed}: thread counts differ"
    r = None if res is None else res[:, 0, 2:2 + t_out].astype(np.float64)
    model, bound = f23_model(x, w, dil, t_out)
    want = _epilogue(model, b, act, r)
    extra = 4 * U * (np.abs(model) + np.abs(b) + (0 if r is None else np.abs(r)))   # bias, act, residual
    err = np.abs(y1[:, 0].astype(np.float64) - want)
    assert (err <= bound + extra).all(), f"seed {seed}: {float((err - bound - extra).max())}"
    # and the exact conv, within bf16's error: two roundings of 2^-9 on each operand of the four
    # products, whose sizes are at most twice |x| and 1.5 times |w|
    exact, scale = conv_reference64(x, w, b, 3, 1, dil)
    exact = _epilogue(exact - b, b, act, r)
    assert np.abs(y1[:, 0] - exact).max() <= 8 * 2.0 ** -9 * scale, f"seed {seed}"


@pytest.mark.parametrize("kernel", ["emulated", "avx512bf16"])
def test_one_sequence_alone_is_its_bits_in_the_batch(kernel):
    """The vdpbf16ps kernels' sums do not depend on a product's rows, so a sequence gives the same
    bits alone as inside a batch, whose tiles group its frames differently."""
    _skip_unless_runs(kernel)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 1, 90, 130)).astype(np.float32)
    w = bf16((rng.standard_normal((390, 129)) * 0.05).astype(np.float32))
    b = rng.standard_normal(129).astype(np.float32)
    kw = dict(k=3, stride=1, dilation=5, algo="winograd", bf16_dot=kernel)
    all3 = _native.conv(x, w, b, **kw)
    assert np.array_equal(_native.conv(x[2:3], w, b, **kw)[0], all3[2])


def test_winograd_bf16_propagates_nan():
    """A NaN input frame makes NaN exactly the outputs that read it, as in the direct conv: x[t0]
    reaches only y[t0] of its tile (through V0), x[t0 + 3d] only y[t0 + d] (through V3)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 60, 130)).astype(np.float32)
    w = bf16((rng.standard_normal((390, 128)) * 0.05).astype(np.float32))
    b = np.zeros(128, np.float32)
    for f in (0, 13, 30, 59):
        xn = x.copy()
        xn[0, 0, f, 5] = np.nan
        kw = dict(k=3, stride=1, dilation=4, bf16_dot="emulated")
        wino = _native.conv(xn, w, b, algo="winograd", **kw)
        direct = _native.conv(xn, w, b, algo="direct", **kw)
        assert np.isnan(direct).any()
        assert np.array_equal(np.isnan(wino), np.isnan(direct)), f


def test_auto_is_winograd_on_a_bf16_kernel():
    """algo='auto' is the engine's choice: with a bf16 dot-product kernel a width-3 sequence conv
    where Winograd pays (>= 128 channels) runs F(2,3), whose bits differ from the direct form's."""
    rng = np.random.default_rng(4)
    ci, co = 128, 136
    x = rng.standard_normal((1, 1, 70, ci)).astype(np.float32)
    w = bf16((rng.standard_normal((3 * ci, co)) * 0.05).astype(np.float32))
    b = rng.standard_normal(co).astype(np.float32)
    kw = dict(k=3, stride=1, dilation=2, bf16_dot="emulated")
    auto = _native.conv(x, w, b, **kw)
    wino = _native.conv(x, w, b, algo="winograd", **kw)
    direct = _native.conv(x, w, b, algo="direct", **kw)
    assert np.isfinite(auto).all()
    np.testing.assert_array_equal(auto, wino)
    assert not np.array_equal(auto, direct)
    # below 128 input channels it does not pay (conv_winograd_pays): direct
    xs, ws = np.ascontiguousarray(x[..., :64]), w.reshape(3, ci, co)[:, :64].reshape(192, co)
    np.testing.assert_array_equal(_native.conv(xs, ws, b, **kw), _native.conv(xs, ws, b, algo="direct", **kw))


def test_winograd_bf16_bad_input():
    x = np.ones((1, 1, 40, 4), np.float32)
    w = np.ones((12, 5), np.float32)
    b = np.zeros(5, np.float32)
    with pytest.raises(ValueError, match=r"F\(2,3\).*k=3 and stride=1"):
        _native.conv(x, w, b, k=3, stride=3, algo="winograd", bf16_dot="emulated")
    with pytest.raises(ValueError, match="bf16"):
        _native.conv(x, w + np.float32(1e-3), b, k=3, stride=1, algo="winograd", bf16_dot="emulated")
