"""Streaming inference: real-time, incremental, multi-stream lifting (``Engine.stream``) and the
``gastrt stream`` command (a pipe between a 2D detector and a consumer of 3D poses).

    stream = engine.stream(slots=4, flip=False)
    out = stream.push(frames)                 # frames (4, J, 2): one new frame per slot
    for slot, frame, pose, filled in out:     # the poses that became final on this push
        ...
    out = stream.flush(2)                     # slot 2's sequence ended: its remaining frames
    stream.reset(2)                           # slot 2 may now start a new sequence

Slots are independent sequences (one person, or one camera): each starts on its first push,
ends with ``flush`` and is reused after ``reset``. ``present`` says which slots get a frame on
a push; the others do not move.

Exactness. The concatenated output of a slot equals ``engine.lift_sequence`` of the same
sequence (edge padding at both ends included, ``flip`` included) up to fp32 rounding, for any
length (1 frame too), start time and causal setting. A push of frame ``f`` finalises frame
``f - lookahead`` (``lookahead`` = pad for a symmetric model, 0 for a causal one); ``flush``
feeds ``lookahead`` copies of the last frame (the right edge padding) and returns the rest.

How. GAST-Net and VideoPose3D run their dilated full-sequence form one column at a time: every
buffer a later op reads with a delay keeps a per-slot ring of its last columns (a conv with k
taps at dilation d reads columns 0, d, ..., (k-1)d back; a residual reads its own lag), and a
push computes exactly ONE new column per op for every active slot, batched over the slots (one
GEMM per conv: the taps of all active slots are gathered into one contiguous [slots*G, k*Ci]
operand). GAST-Net's graph attention runs on the new frame only. The left edge padding is not
fed frame by frame: the first frame of a sequence fills every ring with the constant column an
all-``frame 0`` history produces (exact: the padded prefix is copies of frame 0, and columns
before it are never read by an output frame >= 0). FLOPs per pushed frame are the sequence
form's per-frame FLOPs (``flops_per_push``), counted as they run (``flops``).

RIE encodes every window relative to its centre frame, so no column can be reused: it streams
through a per-slot ring of the last ``receptive_field`` frames and lifts one window per push
with the engine (``engine.lift`` arithmetic; FLOPs per push = one window).

Bad input: a wrong shape / joint count raises GastrtError. Non-finite keypoints (NaN/inf) of a
present slot are replaced by that joint's last valid value in that slot, and the frame is
reported with ``filled=True``; the first frame of a sequence has no earlier value, so a
non-finite keypoint there raises GastrtError (the stream is left unchanged). Pushing to a
flushed slot raises until ``reset``.

Kernels. A push is a few rows per conv against all of its weights, so its time is the time to
read the weights. With ``kernels="native"`` (the default, "auto", when the native runtime is
built) a conv column of up to ``LINEAR_ROWS`` (32) rows goes to ``gastrt._native.stream_linear``,
which reads the weights once, row by row, split over the engine's threads (BLAS kernels pack
them, a second pass; measured 1.8 -> 0.9-1.2 ms per VideoPose3D-243 push in fp32). An fp16 / bf16
engine's convs read its stored 16-bit weights (converted exactly to fp32, fp32 sums: the same
arithmetic as its fp32 CPU path, half the bytes: 0.4-0.6 ms per VideoPose3D-243 push). More
rows (many slots, GAST-Net's 17 joints per slot from 2 slots on) go to NumPy's BLAS GEMM, as
does everything with ``kernels="numpy"``. GAST-Net's graph attention runs the native fused
block (``GastBlockKernel``, weights prepared once per stream) on the new frames.

GPU. On an engine loaded with ``device="cuda"`` (``kernels="auto"`` or ``"cuda"``) the column
steps run on the GPU (``backends/cuda.py: CudaStreamColumns``): the rings live in a device arena
of the stream's own executor, the active slots are padded to a power-of-two bucket, and a push
is one program run: the frames and a per-row slot table copied in, one CUDA graph replay (ring
gathers, the conv GEMMs with fused epilogues, the attention blocks, ring writes), the new output
column copied out. Activations are kept in the engine precision, as in the CUDA engine's
lift_sequence. Written without a GPU: exact on the executor simulator, not yet run on a device.
RIE's windows go to the engine's device either way.

The BLAS GEMMs are small: on a busy CPU, NumPy's multi-threaded BLAS can
be far slower than one thread (OPENBLAS_NUM_THREADS=1). Only the pose model streams (not
VideoPose3D's trajectory model). A Stream is not thread-safe: use one per thread.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from .argtypes import positive_int
from .errors import GastrtError
from .plan import LRELU_SLOPE, Op, Plan, op_flops, plan_flops

__all__ = ["Stream", "StreamOutput", "StreamPose", "add_parsers", "stream_jsonl", "IDLE", "ACTIVE",
           "FLUSHED"]

# slot states
IDLE, ACTIVE, FLUSHED = "idle", "active", "flushed"
_STATE_NAMES = (IDLE, ACTIVE, FLUSHED)
_IDLE, _ACTIVE, _FLUSHED = 0, 1, 2


class StreamPose(NamedTuple):
    """One finalised frame of one slot."""
    slot: int
    frame: int            # index of the frame in its slot's sequence (0 = the first push after reset)
    pose: np.ndarray      # (J_out, 3) float32
    filled: bool          # some keypoint of that input frame was non-finite and held / filled


@dataclass
class StreamOutput:
    """The poses that became final on one ``push`` / ``flush``, as parallel arrays (K entries,
    ordered by slot, then frame): ``slots`` (K,) int64, ``frames`` (K,) int64 (frame index in
    the slot's sequence), ``poses`` (K, J_out, 3) float32, ``filled`` (K,) bool. Iterating
    yields ``StreamPose(slot, frame, pose, filled)``; ``len()`` is K."""
    slots: np.ndarray
    frames: np.ndarray
    poses: np.ndarray
    filled: np.ndarray

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def __iter__(self) -> Iterator[StreamPose]:
        for i in range(len(self)):
            yield StreamPose(int(self.slots[i]), int(self.frames[i]), self.poses[i], bool(self.filled[i]))

    def for_slot(self, slot: int) -> "StreamOutput":
        m = self.slots == slot
        return StreamOutput(self.slots[m], self.frames[m], self.poses[m], self.filled[m])

    @staticmethod
    def empty(joints: int) -> "StreamOutput":
        return StreamOutput(np.zeros(0, np.int64), np.zeros(0, np.int64),
                            np.zeros((0, joints, 3), np.float32), np.zeros(0, bool))

    @staticmethod
    def concat(parts: list["StreamOutput"], joints: int, sort: bool = True) -> "StreamOutput":
        parts = [p for p in parts if len(p)]
        if not parts:
            return StreamOutput.empty(joints)
        if len(parts) == 1:
            out = parts[0]
        else:
            out = StreamOutput(np.concatenate([p.slots for p in parts]), np.concatenate([p.frames for p in parts]),
                               np.concatenate([p.poses for p in parts]), np.concatenate([p.filled for p in parts]))
        if sort and len(out) > 1:
            o = np.lexsort((out.frames, out.slots))
            out = StreamOutput(out.slots[o], out.frames[o], out.poses[o], out.filled[o])
        return out


# --------------------------------------------------------------------------------------------
# per-column kernels
# --------------------------------------------------------------------------------------------

def _native_stream_kernels():
    """The native runtime's module when it has the streaming kernels (``stream_linear``: few-row
    linear that reads its weights once, sequentially, fp32 / fp16 / bf16 weights;
    ``GastBlockKernel``: the fused graph-attention block with weights prepared once), else None."""
    try:
        from .backends import native_module
        mod = native_module()
    except Exception:  # pragma: no cover - depends on the install
        return None
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
        from .engine_file import to_bf16_bits
        return np.ascontiguousarray(to_bf16_bits(w))
    return w


class _Buf:
    """One activation of the sequence-mode plan, per virtual slot: G rows x C channels per frame.
    ``hist`` = how many past columns a consumer reads (1: only the newest, no ring)."""

    def __init__(self, name: str, g: int, c: int, delay: int):
        self.name, self.g, self.c, self.delay = name, g, c, delay
        self.hist = 1
        self.col: np.ndarray | None = None      # [NV, G, C] the newest column of the active slots
        self.rows: np.ndarray | None = None     # ring [NV*G*H, C] (row (n*G+g)*H + h), H = hist
        self.base: np.ndarray | None = None     # [NV, G] row of (n, g, h=0)

    def alloc(self, nv: int) -> None:
        self.col = np.zeros((nv, self.g, self.c), np.float32)
        if self.hist > 1:
            self.rows = np.zeros((nv * self.g * self.hist, self.c), np.float32)
            self.base = ((np.arange(nv)[:, None] * self.g + np.arange(self.g)[None, :]) * self.hist).astype(np.int64)


class _ColumnGeometry:
    """A sequence-mode plan as per-column steps (shared by the CPU and CUDA column programs):
    ``input`` / ``output`` buffers, ``steps`` = ("conv", op, x, out, k, lags, act, res, rlag) |
    ("gast", op, x, out), every buffer's ring depth ``hist`` (columns a consumer reads back),
    ``col_flops`` (one column of every op)."""

    def __init__(self, plan: Plan, wshape):
        ops = plan.ops
        first = ops[0]
        j, f = plan.in_joints, plan.in_features
        if first.kind == "input_joint_major":
            inp = _Buf(first.outputs[0], j, f, 0)
        elif first.kind == "input_flat":
            inp = _Buf(first.outputs[0], 1, j * f, 0)
        else:
            raise GastrtError(f"plan {plan.name!r}: cannot stream op {first.kind!r} column by column")
        self.input = inp
        bufs = {inp.name: inp}
        self.steps: list[tuple] = []
        self.col_flops = 0
        for op in ops[1:]:
            k = op.kind
            if k == "conv":
                x = bufs[op.inputs[0]]
                kk, d = int(op.attrs["k"]), int(op.attrs.get("dilation", 1))
                co = int(wshape(op.weights["w"])[1])
                span = (kk - 1) * d + 1
                out = _Buf(op.outputs[0], x.g, co, x.delay + span - 1)
                lags = np.array([(kk - 1 - tau) * d for tau in range(kk)], np.int64)
                x.hist = max(x.hist, span)
                res, rlag = None, 0
                if len(op.inputs) > 1:
                    res = bufs[op.inputs[1]]
                    rlag = out.delay - res.delay - int(op.attrs.get("res_seq_offset", 0))
                    if rlag < 0 or res.g != out.g or res.c != out.c:
                        raise GastrtError(f"plan {plan.name!r}: residual of {op.outputs[0]} does not fit "
                                          "the sequence geometry")
                    res.hist = max(res.hist, rlag + 1)
                bufs[out.name] = out
                self.steps.append(("conv", op, x, out, kk, lags, op.attrs.get("act", "none"), res, rlag))
                self.col_flops += op_flops(op, {out.name: (1, out.g, 1, out.c)}, wshape)
            elif k == "gast_block":
                x = bufs[op.inputs[0]]
                out = _Buf(op.outputs[0], x.g, 2 * x.c, x.delay)
                bufs[out.name] = out
                self.steps.append(("gast", op, x, out))
                self.col_flops += op_flops(op, {op.inputs[0]: (1, x.g, 1, x.c)}, wshape)
            elif k in ("output_joint_major", "output_flat"):
                x = bufs[op.inputs[0]]
                self.output = x
                self.out_joints = x.g if k == "output_joint_major" else x.c // 3
            else:
                raise GastrtError(f"plan {plan.name!r}: cannot stream op {k!r} column by column")
        self.bufs = list(bufs.values())


class _ColumnProgram:
    """A sequence-mode plan compiled to per-column steps over ring buffers (see module doc)."""

    # Rows up to which a conv column goes to the native few-row kernel (beyond: BLAS GEMM).
    LINEAR_ROWS = 32

    def __init__(self, plan: Plan, weights: dict, nv: int, native=None, precision: str = "fp32",
                 threads: int = 1):
        self.nv = nv
        self.linear = native.stream_linear if native is not None else None
        self.threads = threads
        geo = _ColumnGeometry(plan, lambda name: weights[name].shape)
        self.input, self.output, self.out_joints = geo.input, geo.output, geo.out_joints
        self.col_flops = geo.col_flops
        self.steps: list[tuple] = []
        for st in geo.steps:
            if st[0] == "conv":
                _, op, x, out, kk, lags, act_kind, res, rlag = st
                w = np.ascontiguousarray(weights[op.weights["w"]], dtype=np.float32)
                b = np.ascontiguousarray(weights[op.weights["b"]], dtype=np.float32)
                wl = _stored_weight(w, precision) if native is not None else None
                self.steps.append(("conv", x, out, w, b, kk, lags, act_kind, res, rlag, wl))
            else:
                _, op, x, out = st
                self.steps.append(("gast", x, out, _GastColumn(op, weights, x.g, x.c, native, threads)))
        self.bufs = geo.bufs
        self.rings = [b for b in self.bufs if b.hist > 1]
        self.mods = sorted({b.hist for b in self.rings})
        # scratch: gathered conv taps and residual columns
        gmax = max([s[1].g * s[5] * s[1].c for s in self.steps if s[0] == "conv"] + [1])
        rmax = max([s[2].g * s[2].c for s in self.steps if s[0] == "conv" and s[8] is not None] + [1])
        self.gbuf = np.zeros(nv * gmax, np.float32)
        self.rbuf = np.zeros(nv * rmax, np.float32)
        for b in self.bufs:
            b.alloc(nv)
        for s in self.steps:
            if s[0] == "gast":
                s[3].alloc(nv)
        self.ring_bytes = sum(b.rows.nbytes for b in self.rings)

    # -- ring access ----------------------------------------------------------------------------
    @staticmethod
    def _write(buf: _Buf, act, pos, a: int, fresh) -> None:
        col = buf.col[:a]
        if buf.rows is None:
            return
        rows = buf.rows
        widx = buf.base[act] + pos[buf.hist][:, None]
        rows[widx.reshape(-1)] = col.reshape(-1, buf.c)
        if fresh is not None:   # first frame of a sequence: the whole history is this column
            r4 = rows.reshape(-1, buf.g, buf.hist, buf.c)
            r4[act[fresh]] = col[fresh][:, :, None, :]

    def run(self, act: np.ndarray, cnt: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        """One column for the active virtual slots ``act`` (A,), whose column counters are ``cnt``
        (A,); x (A, J, F) their new frames; fresh: bool (A,) mask of slots starting a sequence
        (None: none). Returns the output column (A, J_out, 3), a view valid until the next run."""
        a = act.shape[0]
        pos = {h: cnt % h for h in self.mods}
        inp = self.input
        inp.col[:a] = x.reshape(a, inp.g, inp.c)
        self._write(inp, act, pos, a, fresh)
        gbuf, rbuf = self.gbuf, self.rbuf
        for s in self.steps:
            if s[0] == "conv":
                _, xb, ob, w, b, kk, lags, act_kind, res, rlag, wl = s
                g, ci, co = xb.g, xb.c, ob.c
                if kk == 1:
                    xm = xb.col[:a].reshape(a * g, ci)
                else:
                    h = xb.hist
                    tap = (cnt[:, None] - lags[None, :]) % h                       # (A, k)
                    idx = xb.base[act][:, :, None] + tap[:, None, :]               # (A, G, k)
                    xm = gbuf[:a * g * kk * ci].reshape(a * g * kk, ci)
                    np.take(xb.rows, idx.reshape(-1), axis=0, out=xm)
                    xm = xm.reshape(a * g, kk * ci)
                rm = None
                if res is not None:
                    if rlag == 0:
                        rm = res.col[:a].reshape(a * g, co)
                    else:
                        ridx = res.base[act] + ((cnt - rlag) % res.hist)[:, None]  # (A, G)
                        rm = rbuf[:a * g * co].reshape(a * g, co)
                        np.take(res.rows, ridx.reshape(-1), axis=0, out=rm)
                y = ob.col[:a].reshape(a * g, co)
                if wl is not None and a * g <= self.LINEAR_ROWS:
                    self.linear(xm, wl, b, rm, act=act_kind, out=y, threads=self.threads)
                else:
                    np.matmul(xm, w, out=y)
                    y += b
                    if act_kind == "relu":
                        np.maximum(y, 0, out=y)
                    elif act_kind == "lrelu":
                        np.maximum(y, y * np.float32(LRELU_SLOPE), out=y)
                    if rm is not None:
                        y += rm
                self._write(ob, act, pos, a, fresh)
            else:
                _, xb, ob, blk = s
                blk.run(xb.col[:a], ob.col[:a])
                self._write(ob, act, pos, a, fresh)
        o = self.output.col[:a]
        return o.reshape(a, self.out_joints, 3)


class _GastColumn:
    """GAST-Net's GraphAttentionBlock on one frame per slot (the formula in plan.py): the native
    fused kernel (weights prepared once) when given, else NumPy with the three projections of x
    fused into one GEMM and preallocated scratch."""

    def __init__(self, op: Op, weights: dict, j: int, c: int, native=None, threads: int = 1):
        W = {role: np.ascontiguousarray(weights[name], dtype=np.float32) for role, name in op.weights.items()}
        self.j, self.c = j, c
        self.h, self.gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        self.threads = threads
        self.kernel = native.GastBlockKernel(W, heads=self.h, head_channels=self.gc) if native is not None else None
        if self.kernel is not None:
            return          # the kernel holds its own prepared copy of the weights
        h, gc = self.h, self.gc
        self.wp = np.ascontiguousarray(np.concatenate([W["loc_w"], W["glb_u"], W["glb_g_w"]], axis=1))
        self.bp = np.concatenate([np.zeros(4 * c, np.float32), W["glb_c"], W["glb_g_b"]]).astype(np.float32)
        self.diag, self.off, self.lb = W["loc_diag"], W["loc_off"], W["loc_b"]
        self.loc_cat_w, self.loc_cat_b = W["loc_cat_w"], W["loc_cat_b"]
        self.ck = W["glb_ck"]
        self.glb_cat_w, self.glb_cat_b = W["glb_cat_w"], W["glb_cat_b"]
        self.cat_w, self.cat_b = W["cat_w"], W["cat_b"]
        self.np_ = 4 * c + 2 * h + h * gc

    def alloc(self, nv: int) -> None:
        if self.kernel is not None:
            return          # the kernel keeps its own scratch
        j, c = self.j, self.c
        self.p = np.zeros((nv, j, self.np_), np.float32)
        self.locin = np.zeros((nv, j, 2 * c), np.float32)
        self.catin = np.zeros((nv, j, 3 * c), np.float32)
        self.y = np.zeros((nv, j, self.h * self.gc), np.float32)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
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
        ab = p[..., 4 * c:4 * c + 2 * h]                                      # (A, J, 2H)
        att = ab[..., :h].transpose(0, 2, 1)[..., :, None] + ab[..., h:].transpose(0, 2, 1)[..., None, :]
        np.maximum(att, att * np.float32(LRELU_SLOPE), out=att)              # LeakyReLU (slope < 1)
        att -= att.max(axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)
        att += self.ck                                                        # (A, H, J, J)
        g = p[..., 4 * c + 2 * h:].reshape(a, j, h, gc).transpose(0, 2, 1, 3)  # (A, H, J, gc)
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


class _WindowProgram:
    """RIE (or any plan without a sequence form): a per-slot ring of the last RF frames (each frame
    written twice, so the newest RF frames are always one contiguous slice) and one window per
    push through the engine (flip included)."""

    def __init__(self, engine, n: int, flip: bool):
        plan = engine.plans["pos"]
        self.engine, self.flip = engine, flip
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
        win = win.reshape(a, rf, *ring.shape[1:])
        return self.engine._run("pos", win, "window", self.flip)[:, 0]


# --------------------------------------------------------------------------------------------
# the stream
# --------------------------------------------------------------------------------------------

class Stream:
    """Incremental lifting of ``slots`` independent sequences (see the module doc).

    ``Stream(engine, slots=1, flip=False, kernels="auto")``; usually ``engine.stream(slots, flip)``.
    kernels: "auto" (= "cuda" on an engine loaded on a GPU, else "native" when the native runtime
    is built, else "numpy"; see the module doc), "cuda" (the column steps on the engine's GPU),
    "numpy", or "native" (the native few-row linear kernel for conv columns of up to
    ``LINEAR_ROWS`` rows and the native graph-attention block; any engine backend).

    Attributes: ``slots``, ``flip``, ``lookahead`` (frames a pose lags behind its push: pad, or 0
    when causal), ``windowed`` (True for RIE: one window per push), ``flops`` (FLOPs executed so
    far, all slots, flush padding included), ``columns`` (slot-frames computed so far).
    """

    def __init__(self, engine, slots: int = 1, flip: bool = False, kernels: str = "auto"):
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise GastrtError(f"slots must be a positive integer, got {slots!r}")
        if kernels not in ("auto", "numpy", "native", "cuda"):
            raise GastrtError(f"kernels must be 'auto', 'numpy', 'native' or 'cuda', got {kernels!r}")
        on_cuda = getattr(engine.backend, "name", None) == "cuda"
        if kernels == "cuda" and not on_cuda:
            raise GastrtError("kernels='cuda' needs an engine on a GPU (gastrt.load(path, device='cuda'))")
        self.engine = engine
        self.slots = n = int(slots)
        self.flip = bool(flip)
        plan: Plan = engine.plans["pos"]
        self.plan = plan
        self.num_joints, self.in_features = plan.in_joints, plan.in_features
        self.num_joints_out = plan.out_joints
        self.receptive_field = plan.receptive_field
        self.pad = plan.pad
        self.causal = bool(engine.causal)
        self.causal_shift = self.pad if self.causal else 0
        self.lookahead = self.pad - self.causal_shift
        self.windowed = "sequence" not in plan.modes
        wshape = lambda name: engine._weights[name].shape  # noqa: E731
        self._window_flops = int(plan_flops(plan, (1, plan.receptive_field, plan.in_joints, plan.in_features),
                                            wshape, "window"))
        mult = 2 if self.flip else 1
        if self.flip:  # fail early when the engine has no left/right symmetry
            self._perm_in = engine._perm(plan.in_joints, engine.kps_left, engine.kps_right)
            self._perm_out = engine._perm(plan.out_joints, engine.joints_left, engine.joints_right)
        use_cuda = on_cuda and kernels in ("auto", "cuda") and not self.windowed
        native = _native_stream_kernels() if kernels in ("auto", "native") and not use_cuda else None
        if kernels == "native" and native is None:
            raise GastrtError("kernels='native' needs the native CPU runtime (gastrt.build_config()['native'] "
                              "is False in this install)")
        self.kernels = "native" if native is not None else "numpy"
        if self.windowed:
            self.kernels = f"engine ({getattr(engine.backend, 'name', '?')})"
            self._prog = _WindowProgram(engine, n, self.flip)
            self._push_flops = self._window_flops * mult
        elif use_cuda:
            from .backends.cuda import CudaStreamColumns
            geo = _ColumnGeometry(plan, wshape)
            self.kernels = "cuda"
            self._prog = CudaStreamColumns(engine.backend, plan, engine._weights, geo, n * mult)
            self._push_flops = int(geo.col_flops) * mult
        else:
            threads = getattr(engine.backend, "threads", None) or 1
            self._prog = _ColumnProgram(plan, engine._weights, n * mult, native,
                                        getattr(engine, "precision", "fp32"), int(threads))
            self._push_flops = int(self._prog.col_flops) * mult
        self.flops = 0
        self.columns = 0
        self._state = np.zeros(n, np.int8)
        self._nframes = np.zeros(n, np.int64)     # real frames pushed in the current sequence
        self._cnt = np.zeros(n, np.int64)         # columns computed (frames + flush padding)
        self._last = np.zeros((n, plan.in_joints, plan.in_features), np.float32)
        self._fring = np.zeros((n, self.lookahead + 1), bool)  # filled flags of the last frames
        self._all = np.arange(n, dtype=np.int64)

    def __repr__(self) -> str:
        n_act = int((self._state == _ACTIVE).sum())
        return (f"<gastrt.Stream {self.engine.family} slots={self.slots} active={n_act} flip={self.flip} "
                f"lookahead={self.lookahead} {'windowed' if self.windowed else 'columns'} ({self.kernels})>")

    # -- introspection ---------------------------------------------------------------------------
    def flops_per_push(self) -> int:
        """FLOPs one slot's push executes (the sequence form's FLOPs per frame; one window for
        RIE), doubled with flip."""
        return self._push_flops

    def window_flops(self) -> int:
        """FLOPs of lifting one frame from its own window (``engine.lift``), doubled with flip."""
        return self._window_flops * (2 if self.flip else 1)

    def state(self, slot: int) -> str:
        """'idle' (no sequence: the next push starts one), 'active' or 'flushed'."""
        return _STATE_NAMES[int(self._state[self._slot(slot)])]

    def frames_pushed(self, slot: int) -> int:
        """Frames pushed to the slot's current sequence."""
        return int(self._nframes[self._slot(slot)])

    def stats(self) -> dict:
        return {"slots": self.slots, "active": int((self._state == _ACTIVE).sum()), "flops": int(self.flops),
                "columns": int(self.columns), "flops_per_push": self.flops_per_push(),
                "window_flops": self.window_flops(), "lookahead": self.lookahead,
                "windowed": self.windowed, "kernels": self.kernels, "ring_bytes": int(self._prog.ring_bytes),
                "device_bytes": getattr(self._prog, "device_bytes", None)}

    # -- helpers -------------------------------------------------------------------------------------
    def _slot(self, slot) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)):
            raise GastrtError(f"slot must be an integer, got {slot!r}")
        if not 0 <= slot < self.slots:
            raise GastrtError(f"slot {slot} does not exist (this stream has {self.slots} slot"
                              f"{'s' if self.slots > 1 else ''}: 0..{self.slots - 1})")
        return int(slot)

    def _slot_list(self, slot) -> np.ndarray:
        if slot is None:
            return self._all
        if isinstance(slot, (int, np.integer)) and not isinstance(slot, bool):
            return np.array([self._slot(slot)], np.int64)
        return np.unique(np.array([self._slot(s) for s in slot], np.int64))

    def _compute(self, act: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        """One column / window for the active slots: (A, J_out, 3) float32."""
        cnt = self._cnt[act]
        a = act.shape[0]
        if self.flip and not self.windowed:
            xf = x[:, self._perm_in]
            xf[..., 0] *= -1
            va = np.concatenate([act, act + self.slots])
            vf = None if fresh is None else np.concatenate([fresh, fresh])
            y = self._prog.run(va, np.concatenate([cnt, cnt]), np.concatenate([x, xf]), vf)
            yf = y[a:][:, self._perm_out]
            yf[..., 0] *= -1
            out = (y[:a] + yf) * np.float32(0.5)
        else:
            out = np.array(self._prog.run(act, cnt, x, fresh), dtype=np.float32, copy=True)
        self._cnt[act] += 1
        self.flops += self._push_flops * a
        self.columns += a
        return out

    def _restore(self, act: np.ndarray, saved: tuple) -> None:
        self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act] = saved

    def _emit(self, act: np.ndarray, t: np.ndarray, y: np.ndarray) -> StreamOutput:
        m = t >= 0
        if m.all():
            s, tt, yy = act, t, y
        else:
            s, tt, yy = act[m], t[m], y[m]
        filled = self._fring[s, tt % (self.lookahead + 1)]
        return StreamOutput(s.copy(), tt.copy(), yy, filled)

    # -- public API ----------------------------------------------------------------------------------
    def push(self, frames, present=None, filled=None) -> StreamOutput:
        """Feed one frame to each present slot. frames (slots, J, 2) float (a single (J, 2) frame
        when slots == 1); present (slots,) bool, None = every slot (frames of absent slots are
        ignored and may be anything); filled (slots,) bool, optional: frames the caller filled
        itself (reported back as filled). A push to an idle slot starts its sequence.
        -> StreamOutput: the poses finalised by this push (frame f - lookahead of each present
        slot whose sequence is that far)."""
        n, j, f = self.slots, self.num_joints, self.in_features
        try:
            x = np.asarray(frames)
        except Exception:
            raise GastrtError("frames: expected a float32 array of shape (slots, J, 2)") from None
        if x.dtype.kind != "f":
            raise GastrtError(f"frames: expected a floating-point array (float32), got dtype {x.dtype}")
        if x.ndim == 2 and n == 1:
            x = x[None]
        if x.shape != (n, j, f):
            raise GastrtError(f"frames: expected shape ({n}, {j}, {f}) (slots, joints, xy), got {np.shape(frames)}")
        if present is None:
            act = self._all
        else:
            pm = np.asarray(present)
            if pm.shape != (n,) or pm.dtype != bool:
                raise GastrtError(f"present: expected a bool array of shape ({n},), got "
                                  f"{pm.dtype} {pm.shape}")
            act = np.flatnonzero(pm)
        if act.shape[0] == 0:
            return StreamOutput.empty(self.num_joints_out)
        fl = None
        if filled is not None:
            fm = np.asarray(filled)
            if fm.shape != (n,) or fm.dtype != bool:
                raise GastrtError(f"filled: expected a bool array of shape ({n},), got {fm.dtype} {fm.shape}")
            fl = fm[act]
        st = self._state[act]
        if (st == _FLUSHED).any():
            s = int(act[np.argmax(st == _FLUSHED)])
            raise GastrtError(f"slot {s} was flushed (its sequence ended); call reset({s}) before pushing "
                              "a new sequence to it")
        xa = np.array(x[act], dtype=np.float32)             # (A, J, F), our copy
        bad = ~np.isfinite(xa).all(axis=-1)                  # (A, J)
        is_fresh = st == _IDLE
        any_bad = bad.any(axis=1)
        if any_bad.any():
            first_bad = any_bad & is_fresh
            if first_bad.any():
                i = int(np.argmax(first_bad))
                raise GastrtError(f"slot {int(act[i])}: the first frame of a sequence has non-finite keypoints "
                                  f"(joints {np.flatnonzero(bad[i]).tolist()}): there is no earlier value to "
                                  "hold; fill them (e.g. from the other joints) or start the slot later")
            xa[bad] = self._last[act][bad]
            frame_filled = any_bad if fl is None else (any_bad | fl)
        else:
            frame_filled = np.zeros(act.shape[0], bool) if fl is None else fl.copy()
        # commit (undone if the compute fails: a slot must not look started with unfilled rings)
        saved = (self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act])
        fresh = is_fresh if is_fresh.any() else None
        try:
            if fresh is not None:
                fa = act[is_fresh]
                self._nframes[fa] = 0
                self._cnt[fa] = 0
                self._state[fa] = _ACTIVE
            self._last[act] = xa
            fi = self._nframes[act]
            self._fring[act, fi % (self.lookahead + 1)] = frame_filled
            y = self._compute(act, xa, fresh)
        except BaseException:
            self._restore(act, saved)
            raise
        self._nframes[act] += 1
        return self._emit(act, fi - self.lookahead, y)

    def flush(self, slot=None) -> StreamOutput:
        """End the sequence of ``slot`` (an int, a list of slots, or None = every active slot):
        feeds ``lookahead`` copies of its last frame (the right edge padding of lift_sequence),
        batched over the flushed slots, and returns the frames not yet finalised. The slot then
        is 'flushed' (pushing raises until reset). Idle / already flushed slots are skipped."""
        sl = self._slot_list(slot)
        act = sl[self._state[sl] == _ACTIVE]
        if act.shape[0] == 0:
            return StreamOutput.empty(self.num_joints_out)
        parts = []
        t_end = self._nframes[act]
        x = self._last[act]
        saved = (self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act])
        try:
            for i in range(self.lookahead):
                y = self._compute(act, x, None)
                t = t_end - self.lookahead + i
                parts.append(self._emit(act, t, y))
        except BaseException:   # the slots stay active, as before the call: flush may be retried
            self._restore(act, saved)
            raise
        self._state[act] = _FLUSHED
        return StreamOutput.concat(parts, self.num_joints_out)

    def reset(self, slot=None) -> None:
        """Forget the slot's sequence (an int, a list, or None = all): the next push to it starts a
        new sequence (frame index 0). Frames not yet finalised are dropped (flush first to keep them)."""
        sl = self._slot_list(slot)
        self._state[sl] = _IDLE
        self._nframes[sl] = 0
        self._cnt[sl] = 0


# --------------------------------------------------------------------------------------------
# `gastrt stream`: JSON lines in, JSON lines out
# --------------------------------------------------------------------------------------------

_CLI_DOC = """\
Read 2D keypoints as JSON lines on stdin, write 3D poses as JSON lines on stdout (a pipe between
a 2D detector and a consumer).

Input, one JSON object per line (blank lines are skipped):
  {"frame": 12, "size": [1920, 1080],
   "people": [{"id": 3, "keypoints": [[x, y], ...], "scores": [s, ...]}]}
  frame: optional label (default: the line's index); size: optional [width, height] in pixels
  (else --size); people: the detections of this frame (may be empty); id: a stable person id
  (default: the position in the list); keypoints: pixel [x, y] (or [x, y, score]) per joint of
  the --format layout; null, NaN, (0, 0) or a score <= 0 marks a missing joint.

Output, one JSON object per input line, in input order, as soon as every person in it is final
(lookahead frames later; at once for a causal engine):
  {"frame": 12, "people": [{"id": 3, "pose_3d": [[x, y, z], ...], "filled": false}]}
  pose_3d: camera space, the engine's output joints; filled: some joint of this person in this
  frame was missing and was held from the last frame (or, in a person's first frame, placed at
  the mean of the detected joints).

People map to slots: a new id takes a free slot; an id absent from a frame ends its sequence
(its remaining frames are flushed; if it comes back it starts a new sequence). An id that finds
no free slot is dropped (a warning on stderr, nothing in the output). A person with no detected
joint in a frame counts as absent. At end of input every sequence is flushed.
"""


class _Person:
    __slots__ = ("slot", "held")

    def __init__(self, slot: int):
        self.slot = slot
        self.held: np.ndarray | None = None   # last (filled) source-layout keypoints


def _parse_person(p: Any, i: int, where: str) -> tuple[Any, np.ndarray, np.ndarray | None]:
    if not isinstance(p, dict):
        raise GastrtError(f"{where}: people[{i}] must be an object with 'keypoints'")
    pid = p.get("id", i)
    if not isinstance(pid, (int, str)) or isinstance(pid, bool):
        raise GastrtError(f"{where}: people[{i}].id must be an integer or a string")
    kp = p.get("keypoints")
    if not isinstance(kp, list) or not kp:
        raise GastrtError(f"{where}: people[{i}].keypoints must be a non-empty list of [x, y]")
    pts = np.full((len(kp), 2), np.nan, np.float64)
    sc = np.full(len(kp), np.nan, np.float64)
    have_sc = False
    for k, v in enumerate(kp):
        if v is None:
            continue
        if not isinstance(v, (list, tuple)) or len(v) not in (2, 3):
            raise GastrtError(f"{where}: people[{i}].keypoints[{k}] must be [x, y] or [x, y, score]")
        try:
            pts[k] = [np.nan if c is None else float(c) for c in v[:2]]
            if len(v) == 3:
                sc[k] = np.nan if v[2] is None else float(v[2])
                have_sc = True
        except (TypeError, ValueError):
            raise GastrtError(f"{where}: people[{i}].keypoints[{k}] is not numeric") from None
    scores = p.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != len(kp):
            raise GastrtError(f"{where}: people[{i}].scores must be a list with one score per keypoint")
        try:
            sc = np.array([np.nan if s is None else float(s) for s in scores], np.float64)
        except (TypeError, ValueError):
            raise GastrtError(f"{where}: people[{i}].scores is not numeric") from None
        have_sc = True
    return pid, pts, (sc if have_sc else None)


def stream_jsonl(engine, lines: Iterable[str], write, *, fmt: str = "auto", size=None, slots: int = 8,
                 flip: bool = False, warn=None) -> dict:
    """The ``gastrt stream`` loop: ``lines`` (an iterable of JSON strings) in, ``write(str)`` called
    with one JSON line (newline included) per finished input frame. Returns counters
    {"frames", "poses", "dropped"}. See ``_CLI_DOC`` for the schema."""
    from .keypoints import (FORMATS, guess_format, normalize_screen, plan_layout, present_mask)
    try:
        from .keypoints import engine_input_layout, parse_size
    except ImportError:  # pragma: no cover
        raise GastrtError("gastrt stream needs gastrt.lifting") from None

    if fmt != "auto" and fmt not in FORMATS:
        raise GastrtError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    wh_default = parse_size(size)
    warn = warn or (lambda msg: print(f"gastrt: warning: {msg}", file=sys.stderr))
    stream = Stream(engine, slots=slots, flip=flip)
    j_eng = stream.num_joints
    engine_input = engine_input_layout(engine)
    layouts: dict[int, Any] = {}
    people: dict[Any, _Person] = {}            # id -> its slot, for the people being tracked
    free = list(range(slots))
    slot_owner: dict[int, Any] = {}            # slot -> id
    slot_lines: list[dict[int, int]] = [{} for _ in range(slots)]  # frame in the sequence -> input line
    dropped_ids: set = set()
    frames_buf = np.zeros((slots, j_eng, 2), np.float32)
    pending: dict[int, dict] = {}              # input line -> {"frame", "ids", "done": {id: person}}
    order: list[int] = []
    counters = {"frames": 0, "poses": 0, "dropped": 0}

    def take(out: StreamOutput) -> None:
        for s, fidx, pose, was_filled in out:
            pid = slot_owner[s]
            ent = pending[slot_lines[s].pop(fidx)]
            ent["done"][pid] = {"id": pid, "pose_3d": np.round(pose.astype(np.float64), 6).tolist(),
                                "filled": bool(was_filled)}
            counters["poses"] += 1

    def drain() -> None:
        while order:
            ent = pending[order[0]]
            if len(ent["done"]) < len(ent["ids"]):
                break
            del pending[order.pop(0)]
            ppl = [ent["done"][pid] for pid in ent["ids"]]
            write(json.dumps({"frame": ent["frame"], "people": ppl}, allow_nan=False) + "\n")
            counters["frames"] += 1

    def end_people(ids: list) -> None:
        """Flush the sequences of ``ids`` (one batched flush) and free their slots."""
        if not ids:
            return
        sl = [people.pop(pid).slot for pid in ids]
        take(stream.flush(sl))
        for s in sl:
            stream.reset(s)
            slot_owner.pop(s)
            slot_lines[s].clear()
            free.append(s)
        free.sort()

    line_no = 0
    for raw in lines:
        raw = raw.strip()
        if not raw:
            continue
        where = f"stdin line {line_no + 1}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise GastrtError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("people", None), list):
            raise GastrtError(f"{where}: expected an object with a 'people' list")
        wh = wh_default
        if obj.get("size") is not None:
            wh = parse_size(obj["size"])
        if wh is None:
            raise GastrtError(f"{where}: no image size: pass --size WIDTHxHEIGHT or put \"size\": [w, h] "
                              "in the lines")
        label = obj.get("frame", line_no)
        dets: dict[Any, tuple[np.ndarray, bool, np.ndarray]] = {}
        for i, p in enumerate(obj["people"]):
            pid, pts, sc = _parse_person(p, i, where)
            if pid in dets:
                raise GastrtError(f"{where}: person id {pid!r} appears twice")
            nj = pts.shape[0]
            lp = layouts.get(nj)
            if lp is None:
                f_ = fmt if fmt != "auto" else guess_format(nj, "json", "stdin")
                lp = layouts[nj] = plan_layout(f_, nj, j_eng, engine_input=engine_input, source="stdin")
            sel = pts[lp.select]
            pres = present_mask(sel, None if sc is None else sc[lp.select])
            if not pres.any():
                continue                          # not detected in this frame: absent
            per = people.get(pid)
            missing = ~pres
            if missing.any():
                if per is not None and per.held is not None:
                    sel[missing] = per.held[missing]
                else:                             # first frame: the mean of the detected joints
                    sel[missing] = sel[pres].mean(axis=0)
            conv = lp.convert(sel.astype(np.float32)[None])[0]
            dets[pid] = (normalize_screen(conv, *wh), bool(missing.any()), sel)
        # people gone from this frame end their sequence (their slots become free)
        end_people([pid for pid in people if pid not in dets])
        # new people take free slots
        for pid in dets:
            if pid not in people:
                if not free:
                    if pid not in dropped_ids:
                        warn(f"{where}: no free slot for person {pid!r} ({slots} slots in use); dropped "
                             "(raise --slots)")
                        dropped_ids.add(pid)
                    counters["dropped"] += 1
                    continue
                s = free.pop(0)
                stream.reset(s)
                people[pid] = _Person(s)
                slot_owner[s] = pid
        present = np.zeros(slots, bool)
        filled = np.zeros(slots, bool)
        ids_here = []
        for pid, (kp, was_filled, sel) in dets.items():
            per = people.get(pid)
            if per is None:
                continue
            frames_buf[per.slot] = kp
            present[per.slot] = True
            filled[per.slot] = was_filled
            per.held = sel
            slot_lines[per.slot][stream.frames_pushed(per.slot)] = line_no
            ids_here.append(pid)
        pending[line_no] = {"frame": label, "ids": ids_here, "done": {}}
        order.append(line_no)
        if present.any():
            take(stream.push(frames_buf, present, filled))
        drain()
        line_no += 1
    end_people(list(people))
    drain()
    return counters


def _cmd_stream(args: argparse.Namespace) -> int:
    from .engine import load

    eng = load(args.engine, device=args.device, threads=args.threads)
    out = sys.stdout

    def write(s: str) -> None:
        out.write(s)
        out.flush()

    stream_jsonl(eng, sys.stdin, write, fmt=args.format, size=args.size, slots=args.slots, flip=args.flip)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``gastrt stream`` on an argparse subparsers object."""
    from .keypoints import FORMATS

    p = subparsers.add_parser("stream", help="lift JSON-lines 2D keypoints from stdin to 3D poses on stdout, "
                              "frame by frame", description=_CLI_DOC,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", help="engine file (.gastrt)")
    p.add_argument("--format", default="auto", choices=("auto",) + tuple(FORMATS),
                   help="2D joint layout of the keypoints (default: auto, from the joint count: 17 = COCO)")
    p.add_argument("--size", metavar="WxH", help="video resolution in pixels (or \"size\" in each line)")
    p.add_argument("--slots", type=positive_int, default=8,
                   help="people tracked at once (default 8); more are dropped with a warning")
    p.add_argument("--flip", action="store_true", help="test-time flip augmentation (2x the compute)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: where the per-frame columns are computed")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.set_defaults(func=_cmd_stream)
