"""NumPy executor: the plain, readable definition of every plan op (the oracle the native
and CUDA kernels are tested against). fp32 throughout; NaN/inf propagate like any float op."""
from __future__ import annotations

import numpy as np

from ..plan import LRELU_SLOPE, Op, Plan, conv_geometry, conv_out_frames
from .base import Backend, Capabilities


def _act(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0, out=y)
    if act == "lrelu":
        return np.where(y >= 0, y, y * np.float32(LRELU_SLOPE)).astype(np.float32, copy=False)
    return y


def conv(op: Op, x: np.ndarray, w: np.ndarray, b: np.ndarray, res: np.ndarray | None,
         mode: str) -> np.ndarray:
    """x [N, G, T, Ci], w [k*Ci, Co], b [Co] (, res [N, G, Tr, Co]) -> [N, G, To, Co]."""
    k = op.attrs["k"]
    geo = conv_geometry(op, mode)
    n, g, t, ci = x.shape
    to = conv_out_frames(op, t, mode)
    co = w.shape[1]
    if geo.stride == k and geo.dilation == 1 and t == to * k:
        # contiguous k-frame windows: one GEMM, lda = k*ci, no im2col
        y = (x.reshape(n * g * to, k * ci) @ w).reshape(n, g, to, co)
        y += b
    else:
        y = np.empty((n, g, to, co), dtype=np.float32)
        y[...] = b
        last = (to - 1) * geo.stride + 1
        for tau in range(k):
            start = tau * geo.dilation
            # 2-D contiguous operands keep numpy on its BLAS path
            xs = np.ascontiguousarray(x[:, :, start:start + last:geo.stride, :]).reshape(-1, ci)
            y += (xs @ w[tau * ci:(tau + 1) * ci]).reshape(n, g, to, co)
    y = _act(y, op.attrs.get("act", "none"))
    if res is not None:
        ro, rs = geo.res_offset, geo.res_stride
        y += res[:, :, ro:ro + (to - 1) * rs + 1:rs, :]
    return y


def _softmax_last(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def gast_block(op: Op, x: np.ndarray, W: dict) -> np.ndarray:
    """x [N, J, T, C] -> [N, J, T, 2C] (see plan.py for the formula)."""
    n, j, t, c = x.shape
    h, gc = op.attrs["heads"], op.attrs["head_channels"]
    xt = np.ascontiguousarray(x.transpose(0, 2, 1, 3))  # [N, T, J, C]: one frame's joints together
    hh = xt @ W["loc_w"]
    diag, off, lb = W["loc_diag"], W["loc_off"], W["loc_b"]
    parts = []
    for s in range(2):
        h0 = hh[..., (2 * s) * c:(2 * s + 1) * c]
        h1 = hh[..., (2 * s + 1) * c:(2 * s + 2) * c]
        y = diag[s] * h0 + np.einsum("ijc,ntjc->ntic", off[s], h1, optimize=True) + lb[s * c:(s + 1) * c]
        parts.append(np.maximum(y, 0))
    loc = np.maximum(np.concatenate(parts, axis=-1) @ W["loc_cat_w"] + W["loc_cat_b"], 0)

    ab = xt @ W["glb_u"] + W["glb_c"]                       # [N, T, J, 2H]
    logits = ab[..., :h].transpose(0, 1, 3, 2)[..., :, None] + ab[..., h:].transpose(0, 1, 3, 2)[..., None, :]
    logits = np.where(logits >= 0, logits, logits * np.float32(LRELU_SLOPE)).astype(np.float32)
    att = _softmax_last(logits) + W["glb_ck"]                # [N, T, H, J, J]
    g = (xt @ W["glb_g_w"] + W["glb_g_b"]).reshape(n, t, j, h, gc).transpose(0, 1, 3, 2, 4)
    y = (att @ g).transpose(0, 1, 3, 2, 4).reshape(n, t, j, h * gc)
    glb = np.maximum(y @ W["glb_cat_w"] + W["glb_cat_b"], 0)

    out = np.maximum(np.concatenate([xt, loc, glb], axis=-1) @ W["cat_w"] + W["cat_b"], 0)
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3), dtype=np.float32)


def rie_encode(op: Op, x: np.ndarray) -> list[np.ndarray]:
    """x [N, T, 17, 2] -> branch inputs [N, 1, T, 3*len(g)]... + current [N, 1, 1, 34]."""
    n, t, j, f = x.shape
    flat = x.reshape(n, t, j * f)
    centre = flat[:, t // 2:t // 2 + 1, :]
    outs = []
    for grp in op.attrs["groups"]:
        gi = np.asarray(grp)
        xs = flat[:, :, gi]
        outs.append(np.concatenate([xs, xs - flat[:, :, gi % 2], xs - centre[:, :, gi]], axis=-1)[:, None])
    outs.append(centre[:, None].copy())
    return [np.ascontiguousarray(o, dtype=np.float32) for o in outs]


def run_plan(plan: Plan, weights: dict, x: np.ndarray, mode: str) -> np.ndarray:
    """Execute ``plan`` on x [N, T, J, F] (float32) in ``mode``; returns [N, T_out, J_out, 3]."""
    bufs = {"input": x}
    for op in plan.ops:
        ins = [bufs[i] for i in op.inputs]
        W = {role: weights[name] for role, name in op.weights.items()}
        k = op.kind
        if k == "input_joint_major":
            outs = [np.ascontiguousarray(ins[0].transpose(0, 2, 1, 3))]
        elif k == "input_flat":
            n, t, j, f = ins[0].shape
            outs = [ins[0].reshape(n, 1, t, j * f)]
        elif k == "conv":
            outs = [conv(op, ins[0], W["w"], W["b"], ins[1] if len(ins) > 1 else None, mode)]
        elif k == "gast_block":
            outs = [gast_block(op, ins[0], W)]
        elif k == "rie_encode":
            if mode != "window":
                raise ValueError("RIE plans run in window mode only")
            outs = rie_encode(op, ins[0])
        elif k == "concat":
            outs = [np.concatenate(ins, axis=-1)]
        elif k == "output_joint_major":
            outs = [np.ascontiguousarray(ins[0].transpose(0, 2, 1, 3))]
        elif k == "output_flat":
            n, _, t, c = ins[0].shape
            outs = [ins[0].reshape(n, t, c // 3, 3)]
        elif k == "output_assemble":
            outs = [np.stack([ins[s][:, 0, :, 3 * jj:3 * jj + 3] for s, jj in op.attrs["sources"]], axis=2)]
        else:
            raise ValueError(f"unknown op kind {k!r}")
        for name, v in zip(op.outputs, outs):
            bufs[name] = v
    return np.ascontiguousarray(bufs[plan.ops[-1].outputs[0]], dtype=np.float32)


class NumpyBackend(Backend):
    """Executes plans with NumPy (the oracle every other backend is tested against); weights as
    float32 arrays. ``threads`` is taken for a constructor like the other backends' and not used:
    the oracle runs on one thread (plus whatever NumPy's BLAS does), and so do the column kernels
    a Stream runs for it."""
    name = "numpy"

    def __init__(self, plans: dict[str, Plan], weights: dict[str, np.ndarray], threads: int | None = None):
        self.plans = plans
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.threads = 1

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(modes=frozenset({"window", "sequence"}), device_arrays=False, stream="numpy",
                            device="cpu", threads=self.threads)

    def run(self, plan_name: str, x: np.ndarray, mode: str) -> np.ndarray:
        return run_plan(self.plans[plan_name], self.weights, x, mode)
