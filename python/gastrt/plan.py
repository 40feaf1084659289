"""The plan: a small IR of fused ops that every backend consumes.

A plan is what lowering produces from a checkpoint (BatchNorm folded, adjacency precomputed,
weights packed channels-last) and what the NumPy executor, the native CPU runtime, the CUDA
executor, the ONNX exporter and the streaming runtime all read. Nothing in here depends on torch.

Activations are 4-D, channels-last: ``[N, G, T, C]`` —
N = batch (windows, sequences or people), G = rows that share the temporal weights
(GAST-Net: the J joints, each joint has its own temporal signal; VideoPose3D / RIE: 1, the
joints live in C), T = frames, C = channels. In this layout a k-frame window of one (n, g) is
contiguous (k*C floats), so a strided temporal conv is a plain GEMM with lda = k*C and a
dilated one is k shifted GEMMs; no im2col anywhere.

Op kinds (``Op.kind``), inputs -> outputs, and their exact semantics:

``input_joint_major``   x [N, T, J, F] -> [N, J, T, F]                (GAST-Net)
``input_flat``          x [N, T, J, F] -> [N, 1, T, J*F]  (c = j*F + f) (VideoPose3D)
``conv``                x [N, G, T, Ci] (, res [N, G, Tr, Co]) -> y [N, G, To, Co]
    y[n,g,t,:] = act( sum_tau x[n,g,t*s + tau*d,:] @ W[tau*Ci:(tau+1)*Ci, :] + b ) (+ res[n,g,ro + t*rs,:])
    weights w [k*Ci, Co], b [Co]; attrs k, dilation (sequence-mode dilation), act in
    {none, relu, lrelu} (LeakyReLU slope 0.2), and for a residual: res_win_offset,
    res_win_stride, res_seq_offset. The mode decides the geometry (``conv_geometry``):
    window mode s = k, d = 1, ro = res_win_offset, rs = res_win_stride;
    sequence mode s = 1, d = dilation, ro = res_seq_offset, rs = 1.
    A 1x1 conv or a Linear layer is a conv with k = 1.
``gast_block``          x [N, J, T, C] -> [N, J, T, 2C]   GAST-Net GraphAttentionBlock, per frame:
    local:  H = x @ loc_w  [.., 4C] = [h0_sym | h1_sym | h0_con | h1_con]
            sym[i,c] = relu( loc_diag[0,i,c]*h0_sym[i,c] + sum_j loc_off[0,i,j,c]*h1_sym[j,c] + loc_b[c] )
            con[i,c] = relu( loc_diag[1,i,c]*h0_con[i,c] + sum_j loc_off[1,i,j,c]*h1_con[j,c] + loc_b[C+c] )
            loc = relu([sym | con] @ loc_cat_w + loc_cat_b)
    global: ab = x @ glb_u + glb_c  [.., 2H]  (theta / phi folded with concat_project)
            att[h,i,j] = softmax_j( lrelu(ab[i,h] + ab[j,H+h]) ) + glb_ck[h,i,j]
            g = x @ glb_g_w + glb_g_b [.., H*gc];  y[i, h*gc:(h+1)*gc] = sum_j att[h,i,j] g[j, h*gc:(h+1)*gc]
            glb = relu(y @ glb_cat_w + glb_cat_b)
    out = relu([x | loc | glb] @ cat_w + cat_b)
    attrs heads H, head_channels gc.
``rie_encode``          x [N, T, 17, 2] -> 5 branch inputs [N, 1, T, 3*len(g)] + current [N, 1, 1, 34]
    with x flattened to c = 2j + f: for each group g of channels (attr ``groups``):
    [x[:, :, g] | x[:, :, g] - x[:, :, g % 2] | x[:, :, g] - x[:, T//2, g]];  current = x[:, T//2].
    Window mode only: RIE encodes relative to the window's centre frame.
``concat``              xs [N, G, T, Ci]... -> [N, G, T, sum Ci] along channels
``output_joint_major``  y [N, J, T, 3] -> [N, T, J, 3]
``output_flat``         y [N, 1, T, J*3] -> [N, T, J, 3]
``output_assemble``     ys [N, 1, T, 3*n_i]... -> [N, T, J, 3]; output joint k = ys[src][.., 3*jj:3*jj+3]
    for (src, jj) = attrs ``sources[k]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

PLAN_VERSION = 1
MODES = ("window", "sequence")
ACTS = ("none", "relu", "lrelu")
LRELU_SLOPE = 0.2


@dataclass
class Op:
    kind: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)  # role -> tensor name in the engine

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Op":
        return Op(d["kind"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {})),
                  dict(d.get("weights", {})))


@dataclass
class Plan:
    """One network (VideoPose3D's trajectory model is a second plan of the same engine)."""
    name: str
    ops: list[Op]
    receptive_field: int
    in_joints: int
    out_joints: int
    modes: tuple[str, ...] = MODES
    in_features: int = 2

    @property
    def pad(self) -> int:
        return (self.receptive_field - 1) // 2

    def to_json(self) -> dict:
        return {"name": self.name, "ops": [o.to_json() for o in self.ops],
                "receptive_field": self.receptive_field, "in_joints": self.in_joints,
                "out_joints": self.out_joints, "modes": list(self.modes),
                "in_features": self.in_features}

    @staticmethod
    def from_json(d: dict) -> "Plan":
        return Plan(d["name"], [Op.from_json(o) for o in d["ops"]], int(d["receptive_field"]),
                    int(d["in_joints"]), int(d["out_joints"]), tuple(d["modes"]),
                    int(d.get("in_features", 2)))

    def weight_names(self) -> list[str]:
        return [n for op in self.ops for n in op.weights.values()]


@dataclass(frozen=True)
class ConvGeometry:
    stride: int
    dilation: int
    res_offset: int
    res_stride: int


def conv_geometry(op: Op, mode: str) -> ConvGeometry:
    a = op.attrs
    if mode == "window":
        return ConvGeometry(a["k"], 1, a.get("res_win_offset", 0), a.get("res_win_stride", 1))
    if mode == "sequence":
        return ConvGeometry(1, a.get("dilation", 1), a.get("res_seq_offset", 0), 1)
    raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")


def conv_out_frames(op: Op, t_in: int, mode: str) -> int:
    g = conv_geometry(op, mode)
    k = op.attrs["k"]
    span = (k - 1) * g.dilation + 1
    if t_in < span:
        raise ValueError(f"{op.outputs[0]}: {t_in} frames in, the conv needs at least {span}")
    return (t_in - span) // g.stride + 1


def infer_shapes(plan: Plan, input_shape: tuple[int, ...], weights_shape, mode: str) -> dict:
    """Shape of every buffer for an input [N, T, J, F]. ``weights_shape(name) -> tuple``."""
    if mode not in plan.modes:
        raise ValueError(f"plan {plan.name!r} has no {mode!r} mode (it supports {plan.modes})")
    shapes = {"input": tuple(input_shape)}
    for op in plan.ops:
        ins = [shapes[i] for i in op.inputs]
        k = op.kind
        if k == "input_joint_major":
            n, t, j, f = ins[0]
            outs = [(n, j, t, f)]
        elif k == "input_flat":
            n, t, j, f = ins[0]
            outs = [(n, 1, t, j * f)]
        elif k == "conv":
            n, g, t, _ = ins[0]
            co = weights_shape(op.weights["w"])[1]
            outs = [(n, g, conv_out_frames(op, t, mode), co)]
        elif k == "gast_block":
            n, j, t, c = ins[0]
            outs = [(n, j, t, 2 * c)]
        elif k == "rie_encode":
            n, t, j, f = ins[0]
            outs = [(n, 1, t, 3 * len(g)) for g in op.attrs["groups"]] + [(n, 1, 1, j * f)]
        elif k == "concat":
            n, g, t, _ = ins[0]
            outs = [(n, g, t, sum(s[3] for s in ins))]
        elif k == "output_joint_major":
            n, j, t, c = ins[0]
            outs = [(n, t, j, c)]
        elif k == "output_flat":
            n, _, t, c = ins[0]
            outs = [(n, t, c // 3, 3)]
        elif k == "output_assemble":
            n, _, t, _ = ins[0]
            outs = [(n, t, len(op.attrs["sources"]), 3)]
        else:
            raise ValueError(f"unknown op kind {k!r}")
        for name, s in zip(op.outputs, outs):
            shapes[name] = s
    return shapes


def op_flops(op: Op, shapes: dict, weights_shape) -> int:
    """Multiply-adds x 2 of one op (the arithmetic that matters; elementwise work is ignored
    except the attention, which is counted)."""
    if op.kind == "conv":
        n, g, t, co = shapes[op.outputs[0]]
        kci = weights_shape(op.weights["w"])[0]
        return 2 * n * g * t * kci * co
    if op.kind == "gast_block":
        n, j, t, c = shapes[op.inputs[0]]
        h, gc = op.attrs["heads"], op.attrs["head_channels"]
        rows = n * j * t
        f = 2 * rows * c * 4 * c            # local projections
        f += 2 * 2 * rows * j * c           # per-channel J x J mixing (sym + con)
        f += 2 * rows * 2 * c * c           # local concat projection
        f += 2 * rows * c * (2 * h)         # folded theta / phi logits
        f += 2 * rows * c * h * gc          # g projection
        f += 2 * rows * j * h * gc          # attention aggregation
        f += 2 * rows * h * gc * c          # global concat projection
        f += 2 * rows * 3 * c * 2 * c       # block concat projection
        return f
    return 0


def plan_flops(plan: Plan, input_shape, weights_shape, mode: str) -> int:
    shapes = infer_shapes(plan, input_shape, weights_shape, mode)
    return sum(op_flops(op, shapes, weights_shape) for op in plan.ops)


def flops_per_frame(plan: Plan, weights_shape, mode: str, seq_len: int = 1000) -> float:
    """FLOPs per output frame: one window (window mode) or a long sequence (sequence mode)."""
    j, f = plan.in_joints, plan.in_features
    if mode == "window" or "sequence" not in plan.modes:
        return float(plan_flops(plan, (1, plan.receptive_field, j, f), weights_shape, "window"))
    t_in = seq_len + plan.receptive_field - 1
    return plan_flops(plan, (1, t_in, j, f), weights_shape, "sequence") / seq_len



# -- GAST block projection packing (one layout for every backend) -----------------------------
# The three row-wise projections of a gast_block's input x share one GEMM:
#   x [.., c] @ w1 [c, 4c + 2h + h*gc] + b1  ->  [ loc (4c) | att (2h) | g (h*gc) ]
#   loc = x @ loc_w            [h0_sym | h1_sym | h0_con | h1_con], no bias (BN shift is loc_b)
#   att = x @ glb_u + glb_c    attention logit halves a (h) | b (h)
#   g   = x @ glb_g_w + glb_g_b
# The native CPU kernel (csrc/cpu/gast_block.cpp), the CUDA lowering, the streaming columns and
# the ONNX exporter all use this order; change it here and nowhere else.
GAST_PROJECTION = ("loc_w", "glb_u", "glb_g_w")


def gast_projection_columns(c: int, heads: int, head_channels: int) -> dict[str, slice]:
    """Column ranges of the packed projection: {'loc', 'att', 'g'} -> slice of w1's columns."""
    a0, g0 = 4 * c, 4 * c + 2 * heads
    return {"loc": slice(0, a0), "att": slice(a0, g0), "g": slice(g0, g0 + heads * head_channels)}


def gast_projection(W: dict) -> tuple[np.ndarray, np.ndarray]:
    """A gast_block's weights by role -> (w1 [c, 4c+2h+h*gc], b1 [4c+2h+h*gc]) float32."""
    c = W["loc_w"].shape[0]
    w1 = np.concatenate([np.asarray(W[k], np.float32) for k in GAST_PROJECTION], axis=1)
    b1 = np.concatenate([np.zeros(4 * c, np.float32), np.asarray(W["glb_c"], np.float32),
                         np.asarray(W["glb_g_b"], np.float32)])
    return np.ascontiguousarray(w1), b1
