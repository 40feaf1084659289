"""Export an engine's plan to ONNX (``gastrt export``), built op by op FROM THE PLAN, not by tracing.

What the graph is made of:

* BatchNorm is already folded into the plan's weights, GAST-Net's adjacency is precomputed
  (per-channel J x J mixing tables), every projection is a MatMul against a constant
  ``[K, Co]`` matrix on a channels-last activation.
* No NonZero / ScatterND / EyeLike / Loop / If and no data-dependent shapes: every shape is a
  constant or comes from the input's batch / frame dimensions through Reshape's ``0`` / ``-1``.
* Window form: ``keypoints [B, RF, J, 2] -> poses [B, J_out, 3]``. A strided temporal conv is the
  "no im2col" GEMM: the k-frame windows of a row are contiguous, so a Reshape to
  ``[.., To, k*Ci]`` and one MatMul do it (GAST-Net keeps its frame-major ``[N, T, J, C]`` layout:
  Reshape / Transpose / Reshape, still no copies of the input beyond one transpose).
* Sequence form: ``keypoints [B, T+RF-1, J, 2] -> poses [B, T, J_out, 3]`` with T symbolic
  (no Shape op anywhere: residual Slices have constant starts and constant negative ends). A
  dilated conv is an ONNX Conv (kernel 1 x k, dilation 1 x d) over a ``[N, C, G, T]`` layout, and
  the 1x1 convs between two of them stay there: measured with onnxruntime (2 CPU threads, T=1000)
  it beats k shifted Slice + MatMul sums (VideoPose3D-243 1024 ch: 188 vs 240 ms; GAST-Net-27:
  4.3 vs 4.9 s), and it is TensorRT's native convolution layer. The k-Slice + MatMul form is kept
  for bf16 below opset 22 (ONNX Conv takes bfloat16 from opset 22 on). RIE has no sequence form.
* ``precision='fp16'`` / ``'bf16'``: weights and activations in that type with explicit Casts at
  the input and the output; GAST-Net's attention softmax runs in fp32 (Cast in and out). The
  types are explicit, which is what TensorRT's strongly typed networks (TRT 10 STRONGLY_TYPED,
  always on in TRT 11) need.

Needs the ``onnx`` extra (``pip install 'gastrt[onnx]'``); onnxruntime only for ``--verify``.
"""
from __future__ import annotations

import collections
import json
import os

import numpy as np

from .backends.numpy_backend import NumpyBackend
from .engine_file import PRECISIONS, atomic_write, check_precision, read_model, to_bf16_bits  # noqa: F401 (onnx_export.PRECISIONS)
from .errors import GastrtError
from .families.detect import FAMILY_NAMES
from .plan import LRELU_SLOPE, Plan, conv_geometry, gast_projection, infer_shapes

MODES = ("window", "sequence")
MIN_OPSET = 13
DEFAULT_OPSET = 17
INPUT_NAME = "keypoints"
OUTPUT_NAME = "poses"
FORBIDDEN_OPS = frozenset({"NonZero", "ScatterND", "ScatterElements", "EyeLike", "Loop", "If", "Scan",
                           "Where", "Range", "TopK", "Unique", "Compress"})
_INT64_MAX = np.iinfo(np.int64).max

# Physical layouts of a logical [N, G, T, C] activation: the order its axes are stored in.
ID = (0, 1, 2, 3)       # [N, G, T, C]
FRAME = (0, 2, 1, 3)    # [N, T, G, C]: one frame's joints together (GAST-Net's graph blocks)
NCHW = (0, 3, 1, 2)     # [N, C, G, T]: what an ONNX Conv reads (sequence form)


def require_onnx():
    try:
        import onnx  # noqa: F401
        from onnx import TensorProto, helper, numpy_helper  # noqa: F401
    except ImportError:
        raise GastrtError("ONNX export needs the onnx extra: pip install 'gastrt[onnx]'") from None
    return onnx


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise GastrtError("running ONNX models needs the onnx extra: pip install 'gastrt[onnx]'") from None
    return onnxruntime


class _Graph:
    """Accumulates nodes and initializers; names are unique; int64 constants are shared."""

    def __init__(self, precision: str):
        onnx = require_onnx()
        self.onnx = onnx
        self.h = onnx.helper
        self.TP = onnx.TensorProto
        self.precision = precision
        self.dtype = {"fp32": self.TP.FLOAT, "fp16": self.TP.FLOAT16, "bf16": self.TP.BFLOAT16}[precision]
        self.nodes = []
        self.inits = []
        self._names: set[str] = set()
        self._consts: dict = {}
        self._n = 0

    def name(self, hint: str) -> str:
        base = hint.replace(".", "_")
        n = base
        while n in self._names:
            self._n += 1
            n = f"{base}_{self._n}"
        self._names.add(n)
        return n

    # -- constants ------------------------------------------------------------------------------
    def weight(self, hint: str, a, *, fp32: bool = False) -> str:
        """A float constant in the graph precision (or fp32 when ``fp32``)."""
        a = np.asarray(a, dtype=np.float32)
        name = self.name(hint)
        if fp32 or self.precision == "fp32":
            t = self.onnx.numpy_helper.from_array(np.ascontiguousarray(a), name)
        elif self.precision == "fp16":
            t = self.onnx.numpy_helper.from_array(np.ascontiguousarray(a.astype(np.float16)), name)
        else:  # bf16: raw little-endian bit patterns
            t = self.TP()
            t.name = name
            t.data_type = self.TP.BFLOAT16
            t.dims.extend(a.shape)
            t.raw_data = np.ascontiguousarray(to_bf16_bits(a)).astype("<u2").tobytes()
        self.inits.append(t)
        return name

    def ints(self, values, hint: str = "c") -> str:
        """A shared int64 1-D constant (shapes, axes, starts, indices)."""
        vals = tuple(int(v) for v in np.asarray(values).ravel())
        key = ("i64", vals)
        if key not in self._consts:
            name = self.name(f"{hint}_i64")
            self.inits.append(self.onnx.numpy_helper.from_array(np.array(vals, dtype=np.int64), name))
            self._consts[key] = name
        return self._consts[key]

    # -- nodes ----------------------------------------------------------------------------------
    def node(self, op: str, inputs, hint: str, n_out: int = 1, **attrs):
        outs = [self.name(f"{hint}_{op}" + (f"_{i}" if n_out > 1 else "")) for i in range(n_out)]
        self.nodes.append(self.h.make_node(op, list(inputs), outs, name=self.name(f"{hint}/{op}"), **attrs))
        return outs if n_out > 1 else outs[0]

    def act(self, x: str, act: str, hint: str) -> str:
        if act == "relu":
            return self.node("Relu", [x], hint)
        if act == "lrelu":
            return self.node("LeakyRelu", [x], hint, alpha=float(LRELU_SLOPE))
        if act != "none":
            raise GastrtError(f"unknown activation {act!r}")
        return x

    def slice(self, x: str, axis: int, start: int, end: int, hint: str, step: int = 1) -> str:
        ins = [x, self.ints([start]), self.ints([end]), self.ints([axis])]
        if step != 1:
            ins.append(self.ints([step]))
        return self.node("Slice", ins, hint)

    def transpose(self, x: str, perm, hint: str) -> str:
        return self.node("Transpose", [x], hint, perm=[int(p) for p in perm])

    def reshape(self, x: str, shape, hint: str) -> str:
        return self.node("Reshape", [x, self.ints(shape)], hint)


class _Buf:
    """A plan buffer: logical [N, G, T, C], stored in one or more physical layouts (perm -> tensor);
    a layout is materialized (one Transpose) the first time an op asks for it."""

    def __init__(self, layouts: dict):
        self.layouts = layouts


def _convert(perm_from, perm_to):
    return [perm_from.index(a) for a in perm_to]


class _Exporter:
    def __init__(self, plan: Plan, weights: dict, mode: str, precision: str, seq_conv: str = "conv"):
        self.plan = plan
        self.W = weights
        self.mode = mode
        self.g = _Graph(precision)
        self.seq_conv = seq_conv
        self.bufs: dict[str, _Buf] = {}
        if mode == "window":
            t_in = plan.receptive_field
        else:
            t_in = plan.receptive_field + 64  # any length: sequence mode only uses frame deficits
        self.t_in = t_in
        self.shapes = infer_shapes(plan, (1, t_in, plan.in_joints, plan.in_features),
                                   lambda n: weights[n].shape, mode)

    # -- buffers ----------------------------------------------------------------------------------
    def frames_of(self, name: str) -> int:
        """Window mode: T of the buffer; sequence mode: its frame deficit T_input - T (constant)."""
        t = self.shapes[name][2]
        return t if self.mode == "window" else self.t_in - t

    def get(self, name: str, perm) -> str:
        buf = self.bufs[name]
        perm = tuple(perm)
        if perm not in buf.layouts:
            src_perm, src = next(iter(buf.layouts.items()))
            buf.layouts[perm] = self.g.transpose(src, _convert(src_perm, perm), f"{name}_to_{''.join(map(str, perm))}")
        return buf.layouts[perm]

    def get_clast(self, name: str):
        """Any stored layout with channels last (for MatMul); prefer what exists."""
        buf = self.bufs[name]
        for perm, t in buf.layouts.items():
            if perm[3] == 3:
                return perm, t
        return ID, self.get(name, ID)

    def put(self, name: str, perm, tensor: str) -> None:
        self.bufs[name] = _Buf({tuple(perm): tensor})

    def t_slice(self, x: str, axis: int, start: int, n_out_def: int, n_in_def: int, hint: str,
                count: int | None = None, step: int = 1) -> str:
        """Frames [start, start + T_out) (step ``step``) of x along ``axis``.
        Window mode: static ``count`` frames. Sequence mode: T_out = T_x - (n_out_def - n_in_def),
        with the end written relative to T_x (a negative constant), so T stays symbolic."""
        if self.mode == "window":
            end = start + (count - 1) * step + 1
            return self.g.slice(x, axis, start, end, hint, step)
        rel = start - (n_out_def - n_in_def)
        if rel > 0:
            raise GastrtError(f"internal error: slice past the end in {hint}")
        return self.g.slice(x, axis, start, rel if rel < 0 else _INT64_MAX, hint)

    # -- ops --------------------------------------------------------------------------------------
    def run(self):
        g = self.g
        plan = self.plan
        x_in = INPUT_NAME
        if g.precision != "fp32":
            x_in = g.node("Cast", [x_in], "input", to=g.dtype)
        self.input_tensor = x_in
        for i, op in enumerate(plan.ops):
            hint = f"{i}_{op.kind}"
            getattr(self, "op_" + op.kind)(op, hint)
        out = self.final
        # [N, T, J, 3] -> window: [N, J, 3]
        if self.mode == "window":
            out = g.node("Squeeze", [out, g.ints([1])], "output")
        if g.precision != "fp32":
            out = g.node("Cast", [out], "output", to=g.TP.FLOAT)
        if g.nodes and g.nodes[-1].output[0] == out:   # the graph output is the last node's output
            g.nodes[-1].output[0] = OUTPUT_NAME
        else:
            g.nodes.append(g.h.make_node("Identity", [out], [OUTPUT_NAME], name=g.name("output/Identity")))
        return g

    def op_input_joint_major(self, op, hint):
        # x [N, T, J, F] is the logical [N, J, T, F] stored frame-major: no copy
        self.put(op.outputs[0], FRAME, self.input_tensor)

    def op_input_flat(self, op, hint):
        j, f = self.plan.in_joints, self.plan.in_features
        self.put(op.outputs[0], ID, self.g.reshape(self.input_tensor, [0, 1, -1, j * f], hint))

    def op_conv(self, op, hint):
        g = self.g
        w = np.asarray(self.W[op.weights["w"]], np.float32)
        b = np.asarray(self.W[op.weights["b"]], np.float32)
        k = int(op.attrs["k"])
        ci, co = w.shape[0] // k, w.shape[1]
        geo = conv_geometry(op, self.mode)
        x_name, out_name = op.inputs[0], op.outputs[0]
        to = self.shapes[out_name][2]
        buf = self.bufs[x_name]
        has_bias = False
        if k == 1 and NCHW in buf.layouts and not any(p[3] == 3 for p in buf.layouts):
            # a 1x1 conv between two Conv nodes stays in their [N, C, G, T] layout
            perm, y = self._conv_node(x_name, w, b, 1, ci, co, 1, hint)
            has_bias = True
        elif k == 1:
            perm, x = self.get_clast(x_name)
            y = g.node("MatMul", [x, g.weight(f"{hint}.w", w)], hint)
        elif self.mode == "window":
            perm, y = self._window_conv(x_name, w, k, ci, to, hint)
        elif self.seq_conv == "conv":
            perm, y = self._conv_node(x_name, w, b, k, ci, co, geo.dilation, hint)
            has_bias = True
        else:
            perm, y = self._seq_conv_gemm(x_name, w, k, ci, geo.dilation, hint, out_name)
        if not has_bias:
            y = g.node("Add", [y, g.weight(f"{hint}.b", b)], hint)
        y = g.act(y, op.attrs.get("act", "none"), hint)
        if len(op.inputs) > 1:
            res_name = op.inputs[1]
            r = self.get(res_name, perm)
            axis = perm.index(2)
            if self.mode == "window":
                r = self.t_slice(r, axis, geo.res_offset, 0, 0, hint + "_res", count=to, step=geo.res_stride)
            else:
                r = self.t_slice(r, axis, geo.res_offset, self.frames_of(out_name), self.frames_of(res_name),
                                 hint + "_res")
            y = g.node("Add", [y, r], hint + "_res")
        self.put(out_name, perm, y)

    def _window_conv(self, x_name, w, k, ci, to, hint):
        """Strided conv (stride = k): the k-frame windows are contiguous: reshape, one MatMul."""
        g = self.g
        buf = self.bufs[x_name]
        n, gg, t, _ = self.shapes[x_name]
        if ID not in buf.layouts and FRAME in buf.layouts and gg > 1:
            # frame-major [N, T, G, C]: [N, To, k, G, C] -> [N, To, G, k, C] -> [N, To, G, k*C]
            x = buf.layouts[FRAME]
            if t != to * k:
                x = g.slice(x, 1, 0, to * k, hint)
            x = g.reshape(x, [0, to, k, gg, ci], hint)
            x = g.transpose(x, [0, 1, 3, 2, 4], hint)
            x = g.reshape(x, [0, to, gg, k * ci], hint)
            perm = FRAME
        else:
            x = self.get(x_name, ID)
            if t != to * k:
                x = g.slice(x, 2, 0, to * k, hint)
            x = g.reshape(x, [0, gg, to, k * ci], hint)
            perm = ID
        return perm, g.node("MatMul", [x, g.weight(f"{hint}.w", w)], hint)

    def _seq_conv_gemm(self, x_name, w, k, ci, d, hint, out_name):
        """Dilated conv over a symbolic T: k shifted Slices, each times its [Ci, Co] block, summed."""
        g = self.g
        perm, x = self.get_clast(x_name)
        axis = perm.index(2)
        d_in, d_out = self.frames_of(x_name), self.frames_of(out_name)
        acc = None
        for tau in range(k):
            xs = self.t_slice(x, axis, tau * d, d_out, d_in, f"{hint}_tap{tau}")
            m = g.node("MatMul", [xs, g.weight(f"{hint}.w{tau}", w[tau * ci:(tau + 1) * ci])], f"{hint}_tap{tau}")
            acc = m if acc is None else g.node("Add", [acc, m], f"{hint}_tap{tau}")
        return perm, acc

    def _conv_node(self, x_name, w, b, k, ci, co, d, hint):
        """A (dilated) conv as an ONNX Conv over [N, C, G, T] (kernel 1 x k, dilation 1 x d)."""
        g = self.g
        nchw = NCHW
        x = self.get(x_name, nchw)
        wc = w.reshape(k, ci, co).transpose(2, 1, 0)[:, :, None, :]
        y = g.node("Conv", [x, g.weight(f"{hint}.w", wc), g.weight(f"{hint}.b", b)], hint,
                   kernel_shape=[1, k], dilations=[1, d])
        return nchw, y

    def op_gast_block(self, op, hint):
        g = self.g
        W = {role: np.asarray(self.W[name], np.float32) for role, name in op.weights.items()}
        hh, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        n_, j, t, c = self.shapes[op.inputs[0]]
        x = self.get(op.inputs[0], FRAME)                 # [N, T, J, C]
        # one GEMM for everything that reads x: the shared projection (plan.GAST_PROJECTION) with
        # its local columns regrouped once here, [h0_sym | h0_con | h1_sym | h1_con], so the graph
        # splits h0 = [sym | con] and h1 directly, + the x-part of the block projection
        w1, b1 = gast_projection(W)
        regroup = np.r_[0:c, 2 * c:3 * c, c:2 * c, 3 * c:w1.shape[1]]
        w1 = np.concatenate([w1[:, regroup], W["cat_w"][:c]], axis=1)
        b1 = np.concatenate([b1[regroup], W["cat_b"]])
        p = g.node("MatMul", [x, g.weight(f"{hint}.w1", w1)], hint)
        p = g.node("Add", [p, g.weight(f"{hint}.b1", b1)], hint)
        sizes = [2 * c, 2 * c, 2 * hh, hh * gc, 2 * c]
        h0, h1, ab, gv, px = g.node("Split", [p, g.ints(sizes)], hint, n_out=5, axis=-1)

        # local: [sym | con] = relu(diag * h0 + mix(off, h1) + loc_b)
        diag = np.concatenate([W["loc_diag"][0], W["loc_diag"][1]], axis=1)      # [J, 2C]
        off = np.concatenate([W["loc_off"][0], W["loc_off"][1]], axis=2)          # [J(i), J(j), 2C]
        offt = np.ascontiguousarray(off.transpose(2, 0, 1))                       # [2C, i, j]
        mix = self._joint_mix(h1, offt, j, t, 2 * c, hint)
        lo = g.node("Mul", [h0, g.weight(f"{hint}.diag", diag)], hint)
        lo = g.node("Add", [g.node("Add", [lo, mix], hint), g.weight(f"{hint}.loc_b", W["loc_b"])], hint)
        lo = g.node("Relu", [lo], hint)
        lo = g.node("MatMul", [lo, g.weight(f"{hint}.loc_cat_w", W["loc_cat_w"])], hint)
        lo = g.node("Relu", [g.node("Add", [lo, g.weight(f"{hint}.loc_cat_b", W["loc_cat_b"])], hint)], hint)

        # global: att[h, i, j] = softmax_j(lrelu(a[i, h] + b[j, h])) + C_k[h]; y = att @ g
        a, bb = g.node("Split", [ab, g.ints([hh, hh])], hint + "_ab", n_out=2, axis=-1)
        a = g.node("Unsqueeze", [g.transpose(a, [0, 1, 3, 2], hint + "_a"), g.ints([4])], hint + "_a")
        bb = g.node("Unsqueeze", [g.transpose(bb, [0, 1, 3, 2], hint + "_b"), g.ints([3])], hint + "_b")
        logits = g.node("Add", [a, bb], hint + "_att")                              # [N, T, H, J, J]
        if g.precision != "fp32":  # the softmax runs in fp32
            logits = g.node("Cast", [logits], hint + "_att", to=g.TP.FLOAT)
        logits = g.node("LeakyRelu", [logits], hint + "_att", alpha=float(LRELU_SLOPE))
        att = g.node("Softmax", [logits], hint + "_att", axis=-1)
        att = g.node("Add", [att, g.weight(f"{hint}.glb_ck", W["glb_ck"], fp32=True)], hint + "_att")
        if g.precision != "fp32":
            att = g.node("Cast", [att], hint + "_att", to=g.dtype)
        gv = g.reshape(gv, [0, 0, j, hh, gc], hint + "_g")
        gv = g.transpose(gv, [0, 1, 3, 2, 4], hint + "_g")                           # [N, T, H, J, gc]
        y = g.node("MatMul", [att, gv], hint + "_agg")                                # [N, T, H, J, gc]
        y = g.transpose(y, [0, 1, 3, 2, 4], hint + "_agg")
        y = g.reshape(y, [0, 0, j, hh * gc], hint + "_agg")
        y = g.node("MatMul", [y, g.weight(f"{hint}.glb_cat_w", W["glb_cat_w"])], hint + "_glb")
        glb = g.node("Relu", [g.node("Add", [y, g.weight(f"{hint}.glb_cat_b", W["glb_cat_b"])],
                                     hint + "_glb")], hint + "_glb")

        # out = relu(x @ cat_w[:C] + cat_b + [loc | glb] @ cat_w[C:])
        lg = g.node("Concat", [lo, glb], hint + "_cat", axis=-1)
        out = g.node("MatMul", [lg, g.weight(f"{hint}.cat_w", W["cat_w"][c:])], hint + "_cat")
        out = g.node("Relu", [g.node("Add", [out, px], hint + "_cat")], hint + "_cat")
        self.put(op.outputs[0], FRAME, out)

    def _joint_mix(self, h1: str, offt: np.ndarray, j: int, t: int, c2: int, hint: str) -> str:
        """y[n, t, i, c] = sum_j offt[c, i, j] h1[n, t, j, c] as a batched GEMM over channels."""
        g = self.g
        w = g.weight(f"{hint}.off", offt)
        if self.mode == "sequence":
            # [N, T, J, 2C] -> [N, 2C, J, T]: per (n, c) a [J, J] @ [J, T] GEMM
            h = g.transpose(h1, [0, 3, 2, 1], hint + "_mix")
            y = g.node("MatMul", [w, h], hint + "_mix")
            return g.transpose(y, [0, 3, 2, 1], hint + "_mix")
        # window mode, T small and static: [2C, J, N*T]: per channel a [J, J] @ [J, N*T] GEMM
        h = g.transpose(h1, [3, 2, 0, 1], hint + "_mix")                               # [2C, J, N, T]
        h = g.reshape(h, [c2, j, -1], hint + "_mix")
        y = g.node("MatMul", [w, h], hint + "_mix")
        y = g.reshape(y, [c2, j, -1, t], hint + "_mix")
        return g.transpose(y, [2, 3, 1, 0], hint + "_mix")                            # [N, T, J, 2C]

    def op_rie_encode(self, op, hint):
        if self.mode != "window":
            raise GastrtError("RIE has no sequence form (it encodes relative to each window's centre frame): "
                              "export with mode='window'")
        g = self.g
        _, t, j, f = self.shapes["input"]
        flat = g.reshape(self.input_tensor, [0, 0, j * f], hint)                       # [N, T, 34]
        centre = g.slice(flat, 1, t // 2, t // 2 + 1, hint + "_centre")                # [N, 1, 34]
        for k, grp in enumerate(op.attrs["groups"]):
            gi = np.asarray(grp, dtype=np.int64)
            hk = f"{hint}_g{k}"
            xs = g.node("Gather", [flat, g.ints(gi)], hk, axis=2)
            par = g.node("Gather", [flat, g.ints(gi % 2)], hk, axis=2)
            cen = g.node("Gather", [centre, g.ints(gi)], hk, axis=2)
            enc = g.node("Concat", [xs, g.node("Sub", [xs, par], hk), g.node("Sub", [xs, cen], hk)], hk, axis=-1)
            self.put(op.outputs[k], ID, g.node("Unsqueeze", [enc, g.ints([1])], hk))
        self.put(op.outputs[-1], ID, g.node("Unsqueeze", [centre, g.ints([1])], hint + "_current"))

    def op_concat(self, op, hint):
        perm, first = self.get_clast(op.inputs[0])
        xs = [first] + [self.get(n, perm) for n in op.inputs[1:]]
        self.put(op.outputs[0], perm, self.g.node("Concat", xs, hint, axis=perm.index(3)))

    def op_output_joint_major(self, op, hint):
        self.final = self.get(op.inputs[0], FRAME)                                     # [N, T, J, 3]

    def op_output_flat(self, op, hint):
        y = self.get(op.inputs[0], ID)                                                 # [N, 1, T, J*3]
        self.final = self.g.reshape(y, [0, -1, self.plan.out_joints, 3], hint)

    def op_output_assemble(self, op, hint):
        g = self.g
        ys = [self.get(n, ID) for n in op.inputs]
        offsets = np.cumsum([0] + [self.shapes[n][3] for n in op.inputs])
        idx = [int(offsets[s]) + 3 * jj + q for s, jj in op.attrs["sources"] for q in range(3)]
        cat = g.node("Concat", ys, hint, axis=-1)
        y = g.node("Gather", [cat, g.ints(idx)], hint, axis=3)
        self.final = g.reshape(y, [0, -1, len(op.attrs["sources"]), 3], hint)


# ---- public API -----------------------------------------------------------------------------------
def as_model(engine_or_path):
    """An engine path -> its EngineModel (metadata, plans, float32 weights; no backend); a
    gastrt.Engine or an EngineModel is taken as it is (both have those attributes)."""
    if isinstance(engine_or_path, (str, os.PathLike)):
        return read_model(os.fspath(engine_or_path))
    if all(hasattr(engine_or_path, a) for a in ("metadata", "plans", "weights")):
        return engine_or_path
    raise GastrtError(f"expected an engine path or a gastrt.Engine, got {type(engine_or_path).__name__}")


def _check_args(mode, opset, precision, seq_len, batch_size):
    if mode not in MODES:
        raise GastrtError(f"unknown mode {mode!r}: expected 'window' or 'sequence'")
    onnx = require_onnx()
    max_opset = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= max_opset:
        raise GastrtError(f"unsupported opset {opset!r}: expected {MIN_OPSET}..{max_opset} "
                          f"(this exporter uses the opset-13 forms of Split / Squeeze / Unsqueeze / Softmax)")
    if precision is not None:
        check_precision(precision)
    if precision == "bf16" and opset < 16:
        raise GastrtError(f"bf16 graphs need opset >= 16 (LeakyRelu takes bfloat16 from opset 16), got {opset}")
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 1):
        raise GastrtError(f"seq_len must be a positive integer, got {seq_len!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GastrtError(f"batch_size must be a positive integer, got {batch_size!r}")


def build_model(engine_or_path, *, mode: str = "window", opset: int = DEFAULT_OPSET, dynamic_batch: bool = True,
                precision: str | None = None, seq_len: int | None = None, plan: str = "pos",
                batch_size: int = 1, _seq_conv: str = "conv"):
    """-> (onnx.ModelProto, info) without writing anything. See :func:`export_onnx`."""
    _check_args(mode, opset, precision, seq_len, batch_size)
    onnx = require_onnx()
    h = onnx.helper
    eng = as_model(engine_or_path)
    if plan not in eng.plans:
        raise GastrtError(f"this engine has no {plan!r} network (it has {', '.join(sorted(eng.plans))})")
    p = eng.plans[plan]
    if mode not in p.modes:
        if p.modes == ("window",):
            raise GastrtError(f"{FAMILY_NAMES.get(eng.family, eng.family)} has no sequence form "
                              "(it encodes relative to each window's centre frame): export with --mode window")
        raise GastrtError(f"this network has no {mode!r} form (it supports {', '.join(p.modes)})")
    precision = precision or eng.precision
    weights = eng.weights

    if precision == "bf16" and opset < 22:
        _seq_conv = "gemm"   # ONNX Conv takes bfloat16 from opset 22 on; MatMul does from 13
    ex = _Exporter(p, weights, mode, precision, _seq_conv)
    g = ex.run()

    batch = "batch" if dynamic_batch else batch_size
    j, f, rf = p.in_joints, p.in_features, p.receptive_field
    if mode == "window":
        in_shape, out_shape = [batch, rf, j, f], [batch, p.out_joints, 3]
    elif seq_len is not None:
        in_shape, out_shape = [batch, seq_len + rf - 1, j, f], [batch, seq_len, p.out_joints, 3]
    else:
        in_shape, out_shape = [batch, "frames", j, f], [batch, "frames_out", p.out_joints, 3]
    graph = h.make_graph(g.nodes, f"gastrt_{eng.family}_{plan}_{mode}",
                         [h.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, in_shape)],
                         [h.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, out_shape)],
                         initializer=g.inits)
    opsets = [h.make_opsetid("", opset)]
    model = h.make_model(graph, opset_imports=opsets, producer_name="gastrt",
                         producer_version=str(eng.metadata.get("gastrt_version", "")))
    model.ir_version = h.find_min_ir_version_for(opsets)
    meta = {k: v for k, v in eng.metadata.items() if k not in ("plans",)}
    meta.update(onnx_mode=mode, onnx_precision=precision, onnx_plan=plan)
    h.set_model_props(model, {"gastrt": json.dumps(meta, sort_keys=True),
                              "receptive_field": str(rf), "family": str(eng.family)})
    hist = collections.Counter(n.op_type for n in model.graph.node)
    info = {"node_count": len(model.graph.node), "op_types": dict(sorted(hist.items())), "path": None,
            "mode": mode, "precision": precision, "opset": opset, "plan": plan,
            "input": (INPUT_NAME, in_shape), "output": (OUTPUT_NAME, out_shape),
            "initializers": len(model.graph.initializer),
            "parameters": int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))}
    return model, info


def check_model(model) -> None:
    """onnx.checker with full_check (strict shape inference) and the forbidden-op rule."""
    onnx = require_onnx()
    onnx.checker.check_model(model, full_check=True)
    bad = sorted({n.op_type for n in model.graph.node} & FORBIDDEN_OPS)
    if bad:
        raise GastrtError(f"internal error: forbidden ops in the exported graph: {', '.join(bad)}")


def export_onnx(engine_or_path, output, *, mode: str = "window", opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, precision: str | None = None, seq_len: int | None = None,
                plan: str = "pos", batch_size: int = 1, check: bool = True) -> dict:
    """Write the engine's network (``plan``: 'pos', or VideoPose3D's 'traj') as an ONNX model.

    mode 'window': keypoints [B, RF, J, 2] -> poses [B, J_out, 3]; 'sequence' (not RIE):
    [B, T+RF-1, J, 2] -> [B, T, J_out, 3], T symbolic unless ``seq_len`` fixes it. The input is the
    already edge-padded sequence (gastrt.Engine.lift_sequence pads; causal engines pad
    ``pad + causal_shift`` in front). ``dynamic_batch``: B symbolic, else ``batch_size``.
    ``precision``: fp32 / fp16 / bf16 (default: the engine's). The file is written atomically.
    Returns info: node_count, op_types (histogram), path, mode, precision, opset, input, output.
    """
    model, info = build_model(engine_or_path, mode=mode, opset=opset, dynamic_batch=dynamic_batch,
                              precision=precision, seq_len=seq_len, plan=plan, batch_size=batch_size)
    if check:
        check_model(model)
    data = model.SerializeToString()
    output = os.fspath(output)
    atomic_write(output, lambda f: f.write(data))
    info["path"] = output
    info["bytes"] = len(data)
    return info


def run_onnxruntime(model_or_path, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Run an exported model on the CPU with onnxruntime (validation helper)."""
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    src = model_or_path if isinstance(model_or_path, (str, bytes, os.PathLike)) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(os.fspath(src) if isinstance(src, os.PathLike) else src, so,
                                providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]


def verify(path: str, engine_or_path, *, mode: str = "window", plan: str = "pos", batch: int = 3,
           frames: int = 16, seed: int = 0) -> float:
    """Max |onnx - engine| / max |engine| on random input (onnxruntime vs the NumPy oracle)."""
    eng = as_model(engine_or_path)
    p = eng.plans[plan]
    rng = np.random.default_rng(seed)
    t = p.receptive_field if mode == "window" else frames + p.receptive_field - 1
    x = rng.standard_normal((batch, t, p.in_joints, p.in_features)).astype(np.float32) * 0.5
    ref = NumpyBackend(eng.plans, eng.weights).run(plan, x, mode)
    if mode == "window":
        ref = ref[:, 0]
    got = run_onnxruntime(path, x)
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


# ---- CLI ------------------------------------------------------------------------------------------
def _cmd_export(args) -> int:
    output = args.output or os.path.splitext(args.engine)[0] + ".onnx"
    require_onnx()
    eng = as_model(args.engine)
    info = export_onnx(eng, output, mode=args.mode, opset=args.opset, dynamic_batch=args.dynamic_batch,
                       precision=args.precision, seq_len=args.seq_len, plan=args.plan, batch_size=args.batch)
    print(f"wrote      {info['path']} ({info['bytes']:,} bytes)")
    print(f"form       {info['mode']}: {info['input'][0]} {_fmt_shape(info['input'][1])} -> "
          f"{info['output'][0]} {_fmt_shape(info['output'][1])}")
    print(f"precision  {info['precision']}, opset {info['opset']}, {info['parameters']:,} parameters")
    print(f"nodes      {info['node_count']}")
    w = max(len(k) for k in info["op_types"])
    for op, n in sorted(info["op_types"].items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {op:<{w}}  {n}")
    if args.verify:
        if info["precision"] == "bf16":
            raise GastrtError("--verify runs onnxruntime on the CPU, which has no bf16 kernels")
        err = verify(info["path"], eng, mode=args.mode, plan=args.plan)
        print(f"verify     onnxruntime vs gastrt: max relative error {err:.2e}")
    return 0


def _fmt_shape(s) -> str:
    return "(" + ", ".join(str(v) for v in s) + ")"


def add_parsers(subparsers) -> None:
    e = subparsers.add_parser("export", help="engine -> ONNX model",
                              description="Export an engine's network as an ONNX model built from its plan "
                                          "(folded BatchNorm, precomputed adjacency, GEMM layout). Needs "
                                          "pip install 'gastrt[onnx]'.")
    e.add_argument("engine", help="engine file (.gastrt)")
    e.add_argument("-o", "--output", help="ONNX path (default: ENGINE with .onnx)")
    e.add_argument("--mode", choices=MODES, default="window",
                   help="window: (B, RF, J, 2) -> (B, J, 3); sequence: (B, T+RF-1, J, 2) -> (B, T, J, 3), "
                        "not RIE (default: window)")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= {MIN_OPSET} "
                   f"(default {DEFAULT_OPSET})")
    e.add_argument("--dynamic-batch", dest="dynamic_batch", action="store_true", default=True,
                   help="symbolic batch dimension (default)")
    e.add_argument("--static-batch", dest="dynamic_batch", action="store_false",
                   help="fixed batch dimension (--batch)")
    e.add_argument("--batch", type=int, default=1, help="batch size of --static-batch (default 1)")
    e.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="graph precision (default: the engine's)")
    e.add_argument("--seq-len", type=int, default=None, dest="seq_len",
                   help="sequence form: fixed number of output frames (default: symbolic)")
    e.add_argument("--plan", default="pos", choices=("pos", "traj"),
                   help="which network: pos (default) or VideoPose3D's trajectory model")
    e.add_argument("--verify", action="store_true",
                   help="run the model with onnxruntime and compare with the engine")
    e.set_defaults(func=_cmd_export)
