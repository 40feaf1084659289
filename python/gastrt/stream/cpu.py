"""The stream's column steps on the CPU, and the window ring for plans without a sequence form.

Both programs have one entry, ``run(act, cnt, x, fresh) -> [A, J_out, 3]``: one new column (or
window) for the active virtual slots ``act`` [A], whose column counters are ``cnt`` [A], from
their new frames x [A, J, F]; ``fresh`` [A] bool marks slots starting a sequence (None: none).

Kernels. A push is a few rows per conv against all of its weights, so its time is the time to
read the weights. With the native kernels a conv column of up to ``LINEAR_ROWS`` (32) rows goes
to ``gastrt._native.stream_linear``, which reads the weights once, row by row, split over the
engine's threads (BLAS kernels pack them, a second pass; measured 1.8 -> 0.9-1.2 ms per
VideoPose3D-243 push in fp32). An fp16 / bf16 engine's convs read its stored 16-bit weights
(converted exactly to fp32, fp32 sums: the same arithmetic as its fp32 CPU path, half the bytes:
0.4-0.6 ms per VideoPose3D-243 push). More rows (many slots, GAST-Net's 17 joints per slot from
2 slots on) go to NumPy's BLAS GEMM, as does everything with the NumPy kernels. GAST-Net's graph
attention runs the native fused block (``GastBlockKernel``, weights prepared once per stream) on
the new frames.

The left edge padding is not fed frame by frame: the first frame of a sequence fills every ring
with the constant column an all-``frame 0`` history produces (exact: the padded prefix is copies
of frame 0, and columns before it are never read by an output frame >= 0).

RIE encodes every window relative to its centre frame, so no column can be reused: it streams
through a per-slot ring of the last ``receptive_field`` frames and lifts one window per push
(``WindowProgram``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..backends.base import native_module
from ..engine_file import to_bf16_bits
from ..plan import LRELU_SLOPE, Op, Plan, gast_projection, gast_projection_columns
from .geometry import ColumnBuffer, ColumnGeometry, ConvStep


def native_stream_kernels():
    """The native runtime's module when it has the streaming kernels (``stream_linear``: few-row
    linear that reads its weights once, sequentially, fp32 / fp16 / bf16 weights;
    ``GastBlockKernel``: the fused graph-attention block with weights prepared once), else None."""
    mod = native_module()
    if mod is None or not callable(getattr(mod, "stream_linear", None)) or \
            getattr(mod, "GastBlockKernel", None) is None:
        return None
    return mod


def _stored_weight(w: np.ndarray, precision: str) -> np.ndarray:
    """An fp16 / bf16 engine's weight in its stored 16-bit form (exact: the fp32 array the engine
    holds is that form upcast); fp32 engines keep fp32."""
    if precision == "fp16":
        return np.ascontiguousarray(w.astype(np.float16))
    if precision == "bf16":
        return np.ascontiguousarray(to_bf16_bits(w))
    return w


class _Rings:
    """A buffer's newest column [NV, G, C] of the active slots and, when some consumer reads it
    back (hist > 1), its ring over the ``nv`` virtual slots: rows [NV*G*H, C], row (n*G + g)*H + h;
    ``base`` [NV, G] is the row of (n, g, h=0)."""

    def __init__(self, buf: ColumnBuffer, nv: int):
        self.g, self.c, self.hist = buf.g, buf.c, buf.hist
        self.col = np.zeros((nv, buf.g, buf.c), np.float32)
        self.rows = None
        self.base = None
        if buf.hist > 1:
            self.rows = np.zeros((nv * buf.g * buf.hist, buf.c), np.float32)
            self.base = ((np.arange(nv)[:, None] * buf.g + np.arange(buf.g)[None, :]) * buf.hist).astype(np.int64)

    def write(self, act: np.ndarray, pos: dict, a: int, fresh) -> None:
        """Store the newest column of the ``a`` active slots at ring position ``pos[hist]``."""
        if self.rows is None:
            return
        col = self.col[:a]
        widx = self.base[act] + pos[self.hist][:, None]
        self.rows[widx.reshape(-1)] = col.reshape(-1, self.c)
        if fresh is not None:   # first frame of a sequence: the whole history is this column
            r4 = self.rows.reshape(-1, self.g, self.hist, self.c)
            r4[act[fresh]] = col[fresh][:, :, None, :]


class _ConvColumn:
    """One conv column for the active slots: gathered taps [A*G, k*Ci] @ w [k*Ci, Co] + b, act,
    (+ residual column). ``stored_w``: the weight as the native kernel reads it (None: BLAS only)."""
    kind = "conv"

    def __init__(self, step: ConvStep, rings: dict, weights: dict, stored_precision: str | None):
        op = step.op
        self.x, self.out = rings[step.x.name], rings[step.out.name]
        self.res = rings[step.res.name] if step.res is not None else None
        self.k, self.lags, self.act, self.rlag = step.k, step.lags, step.act, step.rlag
        self.w = np.ascontiguousarray(weights[op.weights["w"]], dtype=np.float32)
        self.b = np.ascontiguousarray(weights[op.weights["b"]], dtype=np.float32)
        self.stored_w = _stored_weight(self.w, stored_precision) if stored_precision is not None else None

    @property
    def tap_floats(self) -> int:
        return self.x.g * self.k * self.x.c

    @property
    def res_floats(self) -> int:
        return self.out.g * self.out.c if self.res is not None else 0


class ColumnProgram:
    """A sequence-mode plan run one column at a time over ring buffers (see the module doc).
    ``native``: the module of ``native_stream_kernels()`` (None: NumPy / BLAS only)."""

    # Rows up to which a conv column goes to the native few-row kernel (beyond: BLAS GEMM).
    LINEAR_ROWS = 32

    def __init__(self, plan: Plan, weights: dict, nv: int, native=None, precision: str = "fp32",
                 threads: int = 1):
        self.nv = nv
        self.linear = native.stream_linear if native is not None else None
        self.threads = threads
        geo = ColumnGeometry(plan, lambda name: weights[name].shape)
        self.out_joints, self.col_flops = geo.out_joints, geo.col_flops
        rings = {b.name: _Rings(b, nv) for b in geo.bufs}
        self.input, self.output = rings[geo.input.name], rings[geo.output.name]
        self.steps: list[_ConvColumn | _GastColumn] = []
        for st in geo.steps:
            if st.kind == "conv":
                self.steps.append(_ConvColumn(st, rings, weights, precision if native is not None else None))
            else:
                self.steps.append(_GastColumn(st.op, weights, rings[st.x.name], rings[st.out.name], nv,
                                              native, threads))
        self.rings = [r for r in rings.values() if r.rows is not None]
        self.mods = sorted({r.hist for r in self.rings})
        convs = [s for s in self.steps if isinstance(s, _ConvColumn)]
        # scratch: gathered conv taps and residual columns
        self.gbuf = np.zeros(nv * max([s.tap_floats for s in convs] + [1]), np.float32)
        self.rbuf = np.zeros(nv * max([s.res_floats for s in convs] + [1]), np.float32)
        self.ring_bytes = sum(r.rows.nbytes for r in self.rings)

    def run(self, act: np.ndarray, cnt: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        """-> the output column [A, J_out, 3], a view valid until the next run."""
        a = act.shape[0]
        pos = {h: cnt % h for h in self.mods}
        inp = self.input
        inp.col[:a] = x.reshape(a, inp.g, inp.c)
        inp.write(act, pos, a, fresh)
        for s in self.steps:
            if isinstance(s, _ConvColumn):
                self._conv(s, act, cnt, a)
            else:
                s.run(s.x.col[:a], s.out.col[:a])
            s.out.write(act, pos, a, fresh)
        return self.output.col[:a].reshape(a, self.out_joints, 3)

    def _conv(self, s: _ConvColumn, act: np.ndarray, cnt: np.ndarray, a: int) -> None:
        xb, ob, res, kk = s.x, s.out, s.res, s.k
        g, ci, co = xb.g, xb.c, ob.c
        if kk == 1:
            xm = xb.col[:a].reshape(a * g, ci)
        else:
            tap = (cnt[:, None] - s.lags[None, :]) % xb.hist                 # (A, k)
            idx = xb.base[act][:, :, None] + tap[:, None, :]                 # (A, G, k)
            xm = self.gbuf[:a * g * kk * ci].reshape(a * g * kk, ci)
            np.take(xb.rows, idx.reshape(-1), axis=0, out=xm)
            xm = xm.reshape(a * g, kk * ci)
        rm = None
        if res is not None:
            if s.rlag == 0:
                rm = res.col[:a].reshape(a * g, co)
            else:
                ridx = res.base[act] + ((cnt - s.rlag) % res.hist)[:, None]  # (A, G)
                rm = self.rbuf[:a * g * co].reshape(a * g, co)
                np.take(res.rows, ridx.reshape(-1), axis=0, out=rm)
        y = ob.col[:a].reshape(a * g, co)
        if s.stored_w is not None and a * g <= self.LINEAR_ROWS:
            self.linear(xm, s.stored_w, s.b, rm, act=s.act, out=y, threads=self.threads)
            return
        np.matmul(xm, s.w, out=y)
        y += s.b
        if s.act == "relu":
            np.maximum(y, 0, out=y)
        elif s.act == "lrelu":
            np.maximum(y, y * np.float32(LRELU_SLOPE), out=y)
        if rm is not None:
            y += rm


class _GastColumn:
    """GAST-Net's GraphAttentionBlock on one frame per slot (the formula in plan.py): the native
    fused kernel (weights prepared once) when given, else NumPy with the three projections of x
    in one GEMM (``plan.gast_projection``) and scratch for ``nv`` slots. ``x`` / ``out``: the
    program's rings of its input / output buffer."""
    kind = "gast"

    def __init__(self, op: Op, weights: dict, x: _Rings, out: _Rings, nv: int, native=None, threads: int = 1):
        W = {role: np.ascontiguousarray(weights[name], dtype=np.float32) for role, name in op.weights.items()}
        self.x, self.out = x, out
        j, c = x.g, x.c
        self.h, self.gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        self.threads = threads
        self.kernel = native.GastBlockKernel(W, heads=self.h, head_channels=self.gc) if native is not None else None
        if self.kernel is not None:
            return          # the kernel holds its own prepared weights and scratch
        self.wp, self.bp = gast_projection(W)
        cols = gast_projection_columns(c, self.h, self.gc)
        self.att_cols, self.g_cols = cols["att"], cols["g"]
        self.np_ = cols["g"].stop                                 # projected columns: 4c + 2h + h*gc
        self.diag, self.off, self.lb = W["loc_diag"], W["loc_off"], W["loc_b"]
        self.loc_cat_w, self.loc_cat_b = W["loc_cat_w"], W["loc_cat_b"]
        self.ck = W["glb_ck"]
        self.glb_cat_w, self.glb_cat_b = W["glb_cat_w"], W["glb_cat_b"]
        self.cat_w, self.cat_b = W["cat_w"], W["cat_b"]
        self.p = np.zeros((nv, j, self.np_), np.float32)
        self.locin = np.zeros((nv, j, 2 * c), np.float32)
        self.catin = np.zeros((nv, j, 3 * c), np.float32)
        self.y = np.zeros((nv, j, self.h * self.gc), np.float32)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        """x [A, J, C] -> out [A, J, 2C]."""
        a, j, c = x.shape
        if self.kernel is not None:
            self.kernel(x.reshape(a, j, 1, c), out=out.reshape(a, j, 1, 2 * c), threads=self.threads)
            return
        h, gc = self.h, self.gc
        rows = a * j
        p = self.p[:a]
        p2 = p.reshape(rows, self.np_)
        np.matmul(x.reshape(rows, c), self.wp, out=p2)
        p2 += self.bp
        locin = self.locin[:a]
        for s in range(2):   # per-channel J x J mixing of the sym / con halves
            ys = locin[..., s * c:(s + 1) * c]
            np.einsum("ijc,ajc->aic", self.off[s], p[..., (2 * s + 1) * c:(2 * s + 2) * c], out=ys)
            ys += self.diag[s] * p[..., (2 * s) * c:(2 * s + 1) * c]
            ys += self.lb[s * c:(s + 1) * c]
        np.maximum(locin, 0, out=locin)
        cat2 = self.catin[:a].reshape(rows, 3 * c)
        cat2[:, :c] = x.reshape(rows, c)
        loc = cat2[:, c:2 * c]
        np.matmul(locin.reshape(rows, 2 * c), self.loc_cat_w, out=loc)
        loc += self.loc_cat_b
        np.maximum(loc, 0, out=loc)
        ab = p[..., self.att_cols]                                            # (A, J, 2H)
        att = ab[..., :h].transpose(0, 2, 1)[..., :, None] + ab[..., h:].transpose(0, 2, 1)[..., None, :]
        np.maximum(att, att * np.float32(LRELU_SLOPE), out=att)              # LeakyReLU (slope < 1)
        att -= att.max(axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        att += self.ck                                                        # (A, H, J, J)
        g = p[..., self.g_cols].reshape(a, j, h, gc).transpose(0, 2, 1, 3)   # (A, H, J, gc)
        y = self.y[:a]
        np.matmul(att, g, out=y.reshape(a, j, h, gc).transpose(0, 2, 1, 3))
        glb = cat2[:, 2 * c:]
        np.matmul(y.reshape(rows, h * gc), self.glb_cat_w, out=glb)
        glb += self.glb_cat_b
        np.maximum(glb, 0, out=glb)
        o2 = out.reshape(rows, 2 * c)
        np.matmul(cat2, self.cat_w, out=o2)
        o2 += self.cat_b
        np.maximum(o2, 0, out=o2)


class WindowProgram:
    """A plan without a sequence form (RIE): a per-slot ring of the last RF frames (each frame
    written twice, so the newest RF frames are always one contiguous slice) and one window per
    push through ``lift(windows [A, RF, J, F]) -> [A, J_out, 3]`` (the engine's, flip included)."""

    def __init__(self, plan: Plan, n: int, lift: Callable[[np.ndarray], np.ndarray]):
        self.lift = lift
        self.rf = plan.receptive_field
        j, f = plan.in_joints, plan.in_features
        self.ring = np.zeros((n * 2 * self.rf, j, f), np.float32)
        self.win = np.zeros((n * self.rf, j, f), np.float32)
        self.ar = np.arange(1, self.rf + 1, dtype=np.int64)
        self.out_joints = plan.out_joints
        self.ring_bytes = self.ring.nbytes

    def run(self, act: np.ndarray, cnt: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        a, rf = act.shape[0], self.rf
        ring = self.ring
        p = cnt % rf
        base = act * (2 * rf)
        ring[base + p] = x
        ring[base + p + rf] = x
        if fresh is not None:
            r3 = ring.reshape(-1, 2 * rf, *ring.shape[1:])
            r3[act[fresh]] = x[fresh][:, None]
        idx = (base + p)[:, None] + self.ar[None, :]                  # newest at p + rf
        win = self.win[:a * rf]
        np.take(ring, idx.reshape(-1), axis=0, out=win)
        return self.lift(win.reshape(a, rf, *ring.shape[1:]))
