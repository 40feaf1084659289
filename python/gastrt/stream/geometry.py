"""A sequence-mode plan as per-column steps over ring buffers: what the CPU columns
(``stream/cpu.py``) and the CUDA columns (``backends/cuda``: ``lower_stream``) both execute.

GAST-Net and VideoPose3D run their dilated full-sequence form one column (one frame) at a time.
Every buffer that a later op reads with a delay keeps a per-slot ring of its last columns: a conv
with k taps at dilation d reads columns 0, d, ..., (k-1)d back, a residual reads its own lag.
A push computes exactly one new column per op. GAST-Net's graph attention reads the newest
column only.

The sizes of every buffer (rows G, channels C, frames) come from ``plan.infer_shapes`` and the
conv geometry from ``plan.conv_geometry``. What is added here is streaming-only: each buffer's
delay (input frames before its first column), its ring height and each conv's tap lags.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ..errors import GastrtError
from ..plan import Op, Plan, conv_geometry, infer_shapes, op_flops


@dataclass(eq=False)
class ColumnBuffer:
    """One activation of the sequence-mode plan, per slot: ``g`` rows x ``c`` channels a column.
    ``delay``: input frames consumed before its first column (its column at input frame f is
    output frame f - delay). ``hist``: columns some consumer reads back, i.e. its ring height
    (1: only the newest column is read, no ring)."""
    name: str
    g: int
    c: int
    delay: int
    hist: int = 1


class ConvStep(NamedTuple):
    """``out = act(x's columns lags back, as k taps, @ W + b) (+ res's column rlag back)``.
    lags [k]: columns back of tap tau (tap 0 is the oldest)."""
    kind: str                  # "conv"
    op: Op
    x: ColumnBuffer
    out: ColumnBuffer
    k: int
    lags: np.ndarray
    act: str
    res: ColumnBuffer | None
    rlag: int


class GastStep(NamedTuple):
    """GAST-Net's graph attention block on x's newest column -> out (2C channels)."""
    kind: str                  # "gast"
    op: Op
    x: ColumnBuffer
    out: ColumnBuffer


class ColumnGeometry:
    """A sequence-mode plan as per-column steps.

    input / output: the first / last buffer; steps: ``ConvStep`` | ``GastStep`` in plan order;
    bufs: every buffer in plan order (the CUDA arena places the rings in this order);
    out_joints: joints of the output column (J_out, 3 values each); col_flops: FLOPs of one
    column of every op. ``weights_shape(name) -> shape`` of an engine weight."""

    def __init__(self, plan: Plan, weights_shape: Callable[[str], tuple]):
        if "sequence" not in plan.modes:
            raise GastrtError(f"plan {plan.name!r} has no sequence form: it cannot stream column by column")
        for op in plan.ops:
            if op.kind not in ("input_joint_major", "input_flat", "conv", "gast_block",
                               "output_joint_major", "output_flat"):
                raise GastrtError(f"plan {plan.name!r}: cannot stream op {op.kind!r} column by column")
        if plan.ops[0].kind not in ("input_joint_major", "input_flat"):
            raise GastrtError(f"plan {plan.name!r}: cannot stream op {plan.ops[0].kind!r} column by column")
        rf = plan.receptive_field
        # one window of input: every buffer then has rf - delay frames
        shapes = infer_shapes(plan, (1, rf, plan.in_joints, plan.in_features), weights_shape, "sequence")
        bufs: dict[str, ColumnBuffer] = {}

        def buffer(name: str) -> ColumnBuffer:
            _, g, t, c = shapes[name]
            b = bufs[name] = ColumnBuffer(name, int(g), int(c), rf - int(t))
            return b

        self.input = buffer(plan.ops[0].outputs[0])
        self.steps: list[ConvStep | GastStep] = []
        for op in plan.ops[1:]:
            if op.kind == "conv":
                self.steps.append(self._conv(plan, op, bufs, buffer(op.outputs[0])))
            elif op.kind == "gast_block":
                self.steps.append(GastStep("gast", op, bufs[op.inputs[0]], buffer(op.outputs[0])))
            else:                                    # output_joint_major / output_flat: [1, T, J_out, 3]
                self.output = bufs[op.inputs[0]]
                self.out_joints = int(shapes[op.outputs[0]][2])
        self.bufs = list(bufs.values())
        column = {b.name: (1, b.g, 1, b.c) for b in self.bufs}
        self.col_flops = sum(op_flops(s.op, column, weights_shape) for s in self.steps)

    @staticmethod
    def _conv(plan: Plan, op: Op, bufs: dict, out: ColumnBuffer) -> ConvStep:
        x = bufs[op.inputs[0]]
        k = int(op.attrs["k"])
        geo = conv_geometry(op, "sequence")
        d = int(geo.dilation)
        lags = np.array([(k - 1 - tau) * d for tau in range(k)], np.int64)
        x.hist = max(x.hist, (k - 1) * d + 1)
        res, rlag = None, 0
        if len(op.inputs) > 1:
            res = bufs[op.inputs[1]]
            rlag = out.delay - res.delay - int(geo.res_offset)
            if rlag < 0 or res.g != out.g or res.c != out.c:
                raise GastrtError(f"plan {plan.name!r}: residual of {op.outputs[0]} does not fit "
                                  "the sequence geometry")
            res.hist = max(res.hist, rlag + 1)
        return ConvStep("conv", op, x, out, k, lags, op.attrs.get("act", "none"), res, rlag)
