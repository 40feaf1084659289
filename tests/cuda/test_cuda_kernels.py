"""Each CUDA kernel against the NumPy executor's op functions, on odd sizes (primes, 1, large).

Single-op programs run through op_harness.OpHarness: inputs written to the arena, the
outputs poisoned with 0xFF bytes (NaN in fp32 / fp16 / bf16) before the call, so an element the
kernel forgets to write fails the test. fp16 / bf16 are compared with a same-precision
reference: the NumPy op on inputs and weights rounded to that precision, in fp32, so the error
measured is the kernel's (accumulation order, intermediate / output rounding), not the inputs'.
Relative error = max |gpu - ref| / max |ref|.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import gastrt
from gastrt.backends import numpy_backend as NB
from gastrt.engine_file import from_bf16_bits, to_bf16_bits
from gastrt.plan import Op, conv_geometry, conv_out_frames

pytestmark = pytest.mark.skipif(not gastrt.cuda_available(), reason="needs a CUDA build of gastrt and a GPU")

from _models import rel_err  # noqa: E402

TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}
PRECISIONS = ["fp32", "fp16", "bf16"]


def rnd(a: np.ndarray, precision: str) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if precision == "fp16":
        return a.astype(np.float16).astype(np.float32)
    if precision == "bf16":
        return from_bf16_bits(to_bf16_bits(a))
    return a


def harness(precision):
    from op_harness import OpHarness
    return OpHarness(precision)


def conv_op(k, dilation=1, act="none", res=False, rwo=0, rws=1, rso=0):
    attrs = {"k": k, "dilation": dilation, "act": act}
    if res:
        attrs.update(res_win_offset=rwo, res_win_stride=rws, res_seq_offset=rso)
    return Op("conv", ["x"] + (["r"] if res else []), ["y"], attrs, {"w": "w", "b": "b"})


# (n, g, t_in, ci, co, k, dilation, act, residual, mode)
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, "none", False, "window"),            # the smallest GEMM
    (2, 17, 27, 2, 128, 3, 1, "relu", False, "window"),        # GAST expand: ci = 2 (scalar loads)
    (3, 17, 29, 2, 32, 3, 1, "relu", False, "sequence"),
    (7, 1, 31, 37, 61, 3, 1, "lrelu", False, "window"),        # primes everywhere
    (5, 1, 81, 34, 67, 3, 1, "relu", False, "window"),         # VideoPose3D expand on 17 joints
    (1, 1, 97, 34, 67, 3, 1, "relu", False, "sequence"),
    (3, 17, 27, 64, 64, 3, 3, "relu", False, "sequence"),      # dilated, vectorised loads
    (2, 1, 243, 128, 128, 3, 9, "lrelu", False, "sequence"),
    (4, 17, 9, 256, 256, 1, 1, "relu", True, "window"),        # pointwise + strided residual
    (2, 1, 53, 64, 64, 1, 1, "lrelu", True, "sequence"),       # pointwise + cropped residual
    (1, 1, 1, 1024, 1024, 1, 1, "none", True, "window"),       # Linear with residual (RIE FC)
    (1, 1, 1, 1024, 3, 1, 1, "none", False, "window"),         # shrink to 3
    (64, 17, 3, 1024, 1024, 3, 1, "relu", False, "window"),    # large: M = 1088, K = 3072
    (1, 1, 10007, 64, 136, 3, 27, "relu", False, "sequence"),  # long sequence, prime length
]


def _conv_inputs(rng, case, precision):
    n, g, t, ci, co, k, dil, act, has_res, mode = case
    op = conv_op(k, dil, act, has_res, rwo=k // 2, rws=k, rso=(k - 1) * dil // 2)
    geo = conv_geometry(op, mode)
    to = conv_out_frames(op, t, mode)
    x = rnd(rng.standard_normal((n, g, t, ci)), precision)
    w = rnd(rng.standard_normal((k * ci, co)) / np.sqrt(k * ci), precision)
    b = rng.uniform(-0.5, 0.5, co).astype(np.float32)
    res = None
    if has_res:
        t_res = geo.res_offset + (to - 1) * geo.res_stride + 1 + 2
        res = rnd(rng.standard_normal((n, g, t_res, co)), precision)
    return op, x, w, b, res, mode


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-{c[7]}-{c[9]}" + ("-res" if c[8] else ""))
def test_conv(case, precision):
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    op, x, w, b, res, mode = _conv_inputs(rng, case, precision)
    y = harness(precision).conv(op, x, w, b, res, mode)
    ref = NB.conv(op, x, w, b, res, mode)
    assert rel_err(y, ref) <= TOL[precision]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_conv_grouped_launch(precision):
    """RIE's five branches as one launch: different shapes, one with a residual, in one grid."""
    rng = np.random.default_rng(7)
    cases = [(3, 1, 9, 30, 32, 3, 1, "lrelu", False, "window"), (3, 1, 9, 18, 32, 3, 1, "lrelu", False, "window"),
             (3, 1, 3, 32, 32, 1, 1, "lrelu", True, "window"), (3, 1, 1, 34, 1000, 1, 1, "lrelu", False, "window"),
             (3, 1, 9, 18, 129, 3, 1, "none", False, "window")]
    probs, refs = [], []
    for c in cases:
        op, x, w, b, res, mode = _conv_inputs(rng, c, precision)
        probs.append({"op": op, "x": x, "w": w, "b": b, "res": res})
        refs.append(NB.conv(op, x, w, b, res, mode))
    ys = harness(precision).conv_group(probs, "window")
    for y, ref in zip(ys, refs):
        assert rel_err(y, ref) <= TOL[precision]


def gast_weights(rng, j, c, heads, gc, precision):
    """Random weights with the lowered model's structure (per-channel adjacency rows sum to 1)."""
    def gemm(r, cols):
        return rnd(rng.standard_normal((r, cols)) / np.sqrt(r), precision)

    adj = rng.uniform(0.0, 1.0, (2, j, j, c)).astype(np.float32)
    adj /= adj.sum(axis=2, keepdims=True)
    eye = np.eye(j, dtype=bool)[None, :, :, None]
    return {
        "loc_w": gemm(c, 4 * c), "loc_diag": np.ascontiguousarray((adj * eye).sum(axis=2)),
        "loc_off": np.ascontiguousarray(np.where(eye, 0, adj)).astype(np.float32),
        "loc_b": rng.normal(0, 0.2, 2 * c).astype(np.float32), "loc_cat_w": gemm(2 * c, c),
        "loc_cat_b": rng.normal(0, 0.2, c).astype(np.float32), "glb_u": gemm(c, 2 * heads),
        "glb_c": rng.normal(0, 0.2, 2 * heads).astype(np.float32), "glb_g_w": gemm(c, heads * gc),
        "glb_g_b": rng.normal(0, 0.2, heads * gc).astype(np.float32), "glb_ck": rng.normal(0, 0.1, (heads, j, j)).astype(np.float32),
        "glb_cat_w": gemm(heads * gc, c), "glb_cat_b": rng.normal(0, 0.2, c).astype(np.float32),
        "cat_w": gemm(3 * c, 2 * c), "cat_b": rng.normal(0, 0.2, 2 * c).astype(np.float32),
    }


def gast_ref(op, x, W, precision, round_z):
    """NumPy gast_block (numpy_backend's formula) rounding the intermediates the CUDA kernels
    store in the engine precision: [sym | con], yv, loc, glb always; the projections of x
    (H, ab, g) only on the multi-kernel path, where they go through memory (round_z)."""
    r = lambda a: rnd(a, precision)  # noqa: E731
    rz = r if round_z else (lambda a: np.asarray(a, np.float32))  # noqa: E731
    n, j, t, c = x.shape
    h, gc = op.attrs["heads"], op.attrs["head_channels"]
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3))
    hh = rz(xt @ W["loc_w"])
    parts = []
    for s in range(2):
        h0 = hh[..., (2 * s) * c:(2 * s + 1) * c]
        h1 = hh[..., (2 * s + 1) * c:(2 * s + 2) * c]
        y = W["loc_diag"][s] * h0 + np.einsum("ijc,ntjc->ntic", W["loc_off"][s], h1) + W["loc_b"][s * c:(s + 1) * c]
        parts.append(r(np.maximum(y, 0)))
    loc = r(np.maximum(np.concatenate(parts, axis=-1) @ W["loc_cat_w"] + W["loc_cat_b"], 0))
    ab = rz(xt @ W["glb_u"] + W["glb_c"])
    logits = ab[..., :h].transpose(0, 1, 3, 2)[..., :, None] + ab[..., h:].transpose(0, 1, 3, 2)[..., None, :]
    logits = np.where(logits >= 0, logits, logits * np.float32(0.2)).astype(np.float32)
    att = NB._softmax_last(logits) + W["glb_ck"]
    g = rz(xt @ W["glb_g_w"] + W["glb_g_b"]).reshape(n, t, j, h, gc).transpose(0, 1, 3, 2, 4)
    yv = r((att @ g).transpose(0, 1, 3, 2, 4).reshape(n, t, j, h * gc))
    glb = r(np.maximum(yv @ W["glb_cat_w"] + W["glb_cat_b"], 0))
    out = np.maximum(np.concatenate([xt, loc, glb], axis=-1) @ W["cat_w"] + W["cat_b"], 0)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3), dtype=np.float32)


# (n, j, t, c): GAST's joints, channel widths 32..1024, odd frame counts
GAST_CASES = [(1, 17, 1, 32), (2, 15, 3, 64), (3, 19, 7, 32), (5, 17, 9, 128), (1, 17, 27, 256),
              (2, 17, 3, 512), (1, 17, 1, 1024), (37, 17, 1, 128)]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("fused", [0, 1])
@pytest.mark.parametrize("case", GAST_CASES, ids=lambda c: "x".join(map(str, c)))
def test_gast_block(case, precision, fused):
    n, j, t, c = case
    heads, gc = 4, c // 4
    h = harness(precision)
    op = Op("gast_block", ["x"], ["y"], {"heads": heads, "head_channels": gc})
    h.eng.set_option("gast_fused", fused)
    if fused and not h.gast_fused(op, (n, j, t, c)):
        pytest.skip("the fused tile does not fit this GPU / dtype")
    rng = np.random.default_rng(n * 1000 + j * 10 + c)
    W = gast_weights(rng, j, c, heads, gc, precision)
    x = rnd(np.maximum(rng.standard_normal((n, j, t, c)), 0), precision)  # post-ReLU activations
    y = h.gast_block(op, x, W, fused=fused)
    assert rel_err(y, gast_ref(op, x, W, precision, round_z=not fused)) <= TOL[precision]
    if precision == "fp32":
        assert rel_err(y, NB.gast_block(op, x, W)) <= TOL[precision]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gast_block_time_chunks(precision):
    """The multi-kernel path processing T in chunks (tiny scratch budget) == one chunk."""
    n, j, t, c = 2, 17, 13, 64
    op = Op("gast_block", ["x"], ["y"], {"heads": 4, "head_channels": c // 4})
    rng = np.random.default_rng(11)
    W = gast_weights(rng, j, c, 4, c // 4, precision)
    x = rnd(np.maximum(rng.standard_normal((n, j, t, c)), 0), precision)
    h = harness(precision)
    whole = h.gast_block(op, x, W, fused=0)
    h.eng.set_option("gast_scratch_budget", 1)  # one frame per chunk
    chunked = h.gast_block(op, x, W, fused=0)
    assert rel_err(chunked, whole) <= TOL[precision]
    assert rel_err(whole, gast_ref(op, x, W, precision, round_z=True)) <= TOL[precision]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("n,t", [(1, 1), (3, 27), (1, 243), (129, 9)])
def test_rie_encode(precision, n, t):
    from gastrt.families.rie import GROUPS
    op = Op("rie_encode", ["input"], [f"t{i}" for i in range(6)], {"groups": [list(g) for g in GROUPS]})
    x = np.random.default_rng(t).standard_normal((n, t, 17, 2)).astype(np.float32)
    got = harness(precision).rie_encode(op, x)
    ref = NB.rie_encode(op, x)
    for a, b in zip(got, ref):
        # one rounding of an fp32 difference
        assert rel_err(a, b) <= {"fp32": 0.0, "fp16": 1e-3, "bf16": 8e-3}[precision]
