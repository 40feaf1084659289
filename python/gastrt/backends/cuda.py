"""CUDA backend: lowers plans to programs for the GPU executor (csrc/cuda/executor.cu).

A *program* is one plan lowered for one (mode, batch bucket, T): a flat int64 array of op
records (format: csrc/cuda/cuda_ops.h, mirrored by the OP_* constants below) whose buffers are
byte offsets in one device arena the engine shares between its programs. Lowering happens here,
in Python, because the plan's shape inference lives here (plan.infer_shapes); the C++ side
validates every record against the arena and weight sizes before anything runs, so a lowering
bug is an exception, not a stray write.

Scheduling: ops are ordered by dependency level and the convs of one level (RIE's five branches
and its global path) are emitted as one grouped GEMM launch. Buffers are assigned by a first-fit
allocator over their live ranges (a step's outputs never alias its inputs).

Batches: window mode rounds the batch up to a power of two (one program and one CUDA graph per
bucket; the prologue / epilogue touch only the real rows), batches past ``max_batch`` run in
chunks; sequence mode uses the exact (batch, T). Programs are cached (LRU).

Device arrays (torch, CuPy, anything with ``__cuda_array_interface__`` or ``__dlpack__``) go
through :meth:`CudaBackend.run_device` with no host round trip, ``out=`` included.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..errors import GastrtError
from ..plan import Plan, conv_geometry, infer_shapes

DTYPE_CODE = {"fp32": 0, "fp16": 1, "bf16": 2}
ACT_CODE = {"none": 0, "relu": 1, "lrelu": 2}

# ---- bytecode: keep in sync with csrc/cuda/cuda_ops.h ------------------------------------------
REF_NONE, REF_IN, REF_OUT = -1, -2, -3
OP_LAYOUT, OP_CONV, OP_GAST, OP_RIE, OP_COPY, OP_ASSEMBLE = 1, 2, 3, 4, 5, 6
OP_STREAM_IN, OP_RING_WRITE, OP_RING_GATHER = 7, 8, 9
LAYOUT_FIELDS, CONV_FIELDS, GAST_FIELDS, RIE_FIELDS, COPY_FIELDS, ASSEMBLE_FIELDS = 9, 19, 22, 96, 7, 85
RING_MAX_TAPS, STREAM_TABLE_COLS = 16, 4
STREAM_IN_FIELDS, RING_WRITE_FIELDS, RING_GATHER_FIELDS = 5, 8, 9 + RING_MAX_TAPS
RIE_MAX_GROUPS, RIE_MAX_IDX = 5, 16
ASM_MAX_SRC, ASM_MAX_JOINTS = 8, 32
MAX_GEMM_GROUP = 8
ALIGN = 256

DEFAULT_MAX_BATCH = 8192
PROGRAM_CACHE = 16


def dtype_bytes(dtype_code: int) -> int:
    """Bytes per activation / GEMM-operand element of an engine dtype (0 fp32, 1 fp16, 2 bf16)."""
    return 4 if dtype_code == 0 else 2


def next_pow2(n: int) -> int:
    """The batch bucket of n rows: the next power of two (>= 1)."""
    b = 1
    while b < n:
        b *= 2
    return b


def _align(v: int) -> int:
    return (int(v) + ALIGN - 1) // ALIGN * ALIGN


def _prod(s) -> int:
    return int(math.prod(int(v) for v in s))


# ---- weights --------------------------------------------------------------------------------------
# GEMM operands live in the engine precision, everything added elementwise (biases, graph tables)
# in fp32. The GAST block's three projections of x become one GEMM: w1 = [loc_w | glb_u | glb_g_w].
GAST_F32 = ("loc_diag", "loc_off", "loc_b", "loc_cat_b", "glb_ck", "glb_cat_b", "cat_b")
GAST_GEMM = ("loc_cat_w", "glb_cat_w", "cat_w")


def gast_w1(W: dict) -> tuple[np.ndarray, np.ndarray]:
    c = W["loc_w"].shape[0]
    w1 = np.concatenate([W["loc_w"], W["glb_u"], W["glb_g_w"]], axis=1)
    b1 = np.concatenate([np.zeros(4 * c, np.float32), W["glb_c"], W["glb_g_b"]]).astype(np.float32)
    return np.ascontiguousarray(w1, dtype=np.float32), b1


def upload_weights(eng, plans: dict[str, Plan], weights: dict[str, np.ndarray]) -> dict:
    """-> {(plan name, op index): {role: weight id}} for the ops that have weights."""
    ids: dict = {}

    def add(a, engine_dtype: bool) -> int:
        return int(eng.add_weight(np.ascontiguousarray(a, dtype=np.float32).ravel(), bool(engine_dtype)))

    for pname, plan in plans.items():
        for i, op in enumerate(plan.ops):
            W = {role: weights[name] for role, name in op.weights.items()}
            if op.kind == "conv":
                ids[(pname, i)] = {"w": add(W["w"], True), "b": add(W["b"], False)}
            elif op.kind == "gast_block":
                w1, b1 = gast_w1(W)
                d = {"w1": add(w1, True), "b1": add(b1, False)}
                d.update({r: add(W[r], False) for r in GAST_F32})
                d.update({r: add(W[r], True) for r in GAST_GEMM})
                ids[(pname, i)] = d
    return ids


# ---- lowering -------------------------------------------------------------------------------------
class ArenaAllocator:
    """First-fit over free blocks with coalescing; ``top`` is the high-water mark."""

    def __init__(self):
        self.free: list[tuple[int, int]] = []  # (offset, size), sorted by offset
        self.top = 0

    def alloc(self, size: int) -> int:
        size = _align(max(int(size), 1))
        for i, (o, s) in enumerate(self.free):
            if s >= size:
                if s == size:
                    del self.free[i]
                else:
                    self.free[i] = (o + size, s - size)
                return o
        if self.free and self.free[-1][0] + self.free[-1][1] == self.top:  # extend the last hole
            o, s = self.free.pop()
            self.top = o + size
            return o
        o = self.top
        self.top += size
        return o

    def release(self, off: int, size: int) -> None:
        size = _align(max(int(size), 1))
        self.free.append((off, size))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for o, s in self.free:
            if merged and merged[-1][0] + merged[-1][1] == o:
                merged[-1] = (merged[-1][0], merged[-1][1] + s)
            else:
                merged.append((o, s))
        self.free = merged


@dataclass
class Lowered:
    code: np.ndarray
    arena_bytes: int
    max_n: int
    in_per_n: int
    out_per_n: int
    out_tail: tuple
    buffers: dict = field(default_factory=dict)  # name -> (offset, shape) (debugging / tests)
    steps: list = field(default_factory=list)    # [[op index, ...], ...] in emission order


def schedule(plan: Plan) -> list[list[int]]:
    """Ops in dependency-level order; the convs of a level grouped (<= MAX_GEMM_GROUP)."""
    producer = {}
    level = []
    for i, op in enumerate(plan.ops):
        lv = 0
        for name in op.inputs:
            if name in producer:
                lv = max(lv, level[producer[name]] + 1)
        level.append(lv)
        for name in op.outputs:
            producer[name] = i
    order = sorted(range(len(plan.ops)), key=lambda i: (level[i], i))
    steps: list[list[int]] = []
    for i in order:
        prev = steps[-1] if steps else None
        if (prev is not None and plan.ops[i].kind == "conv" and plan.ops[prev[0]].kind == "conv"
                and level[prev[0]] == level[i] and len(prev) < MAX_GEMM_GROUP):
            prev.append(i)
        else:
            steps.append([i])
    return steps


def lower(plan: Plan, mode: str, n: int, t: int, wids: dict, wshape, dtype_code: int,
          gast_scratch=None, plan_name: str | None = None) -> Lowered:
    """Lower ``plan`` for input [n, t, J, F]. ``wids[(plan_name, op index)]`` -> {role: weight id};
    ``wshape(name)`` -> weight shape; ``gast_scratch(n, j, t, c, heads, gc)`` -> scratch bytes
    (default: the fused path, 0)."""
    pname = plan_name or plan.name
    esize = dtype_bytes(dtype_code)
    shapes = infer_shapes(plan, (n, t, plan.in_joints, plan.in_features), wshape, mode)
    final = plan.ops[-1].outputs[0]
    steps = schedule(plan)
    uses: dict[str, int] = {}
    for si, st in enumerate(steps):
        for i in st:
            for name in plan.ops[i].inputs:
                uses[name] = si

    alloc = ArenaAllocator()
    offs: dict[str, int] = {}
    buffers: dict = {}   # live arena buffers
    placed: dict = {}    # every arena buffer: name -> (offset, shape)

    def ref(name: str) -> int:
        if name == "input":
            return REF_IN
        if name == final:
            return REF_OUT
        return offs[name]

    code: list[int] = []

    def emit(opcode: int, fields: list[int]) -> None:
        code.extend([opcode, len(fields)])
        code.extend(int(v) for v in fields)

    for si, st in enumerate(steps):
        temps: list[tuple[int, int]] = []
        for i in st:  # every output of the step first: they must not alias the step's inputs
            for name in plan.ops[i].outputs:
                if name == final:
                    continue
                nbytes = _prod(shapes[name]) * esize
                offs[name] = alloc.alloc(nbytes)
                buffers[name] = placed[name] = (offs[name], shapes[name])
        convs = []
        for i in st:
            op = plan.ops[i]
            k = op.kind
            ins = [shapes[x] for x in op.inputs]
            out = op.outputs[0]
            if k in ("input_joint_major", "input_flat"):
                nn, tt, j, f = ins[0]
                emit(OP_LAYOUT, [ref(op.inputs[0]), ref(out), nn, tt, j, f,
                                 1 if k == "input_joint_major" else 0, 0, dtype_code])
            elif k == "conv":
                geo = conv_geometry(op, mode)
                nn, g, t_in, ci = ins[0]
                _, _, t_out, co = shapes[out]
                kk = int(op.attrs["k"])
                w = wids[(pname, i)]
                if len(op.inputs) > 1:
                    rs = ins[1]
                    if rs[:2] != (nn, g) or rs[3] != co:
                        raise GastrtError(f"{out}: residual {rs} does not match the conv output {shapes[out]}")
                    res, t_res, ro, rst = ref(op.inputs[1]), rs[2], geo.res_offset, geo.res_stride
                else:
                    res, t_res, ro, rst = REF_NONE, 0, 0, 1
                convs.append([ref(op.inputs[0]), w["w"], w["b"], res, ref(out), nn * g, t_in, t_out, t_res,
                              t_out, ci, co, kk, geo.stride, geo.dilation, ro, rst, co,
                              ACT_CODE[op.attrs.get("act", "none")]])
            elif k == "gast_block":
                nn, j, tt, c = ins[0]
                h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
                sb = int(gast_scratch(nn, j, tt, c, h, gc)) if gast_scratch is not None else 0
                if sb > 0:
                    so = alloc.alloc(sb)
                    temps.append((so, sb))
                else:
                    so = REF_NONE
                w = wids[(pname, i)]
                emit(OP_GAST, [ref(op.inputs[0]), ref(out), so, sb, nn, j, tt, c, h, gc, w["w1"], w["b1"],
                               w["loc_diag"], w["loc_off"], w["loc_b"], w["loc_cat_w"], w["loc_cat_b"],
                               w["glb_ck"], w["glb_cat_w"], w["glb_cat_b"], w["cat_w"], w["cat_b"]])
            elif k == "rie_encode":
                if mode != "window":
                    raise GastrtError("RIE plans run in window mode only")
                nn, tt, j, f = ins[0]
                groups = [list(map(int, g)) for g in op.attrs["groups"]]
                if len(groups) > RIE_MAX_GROUPS or any(len(g) > RIE_MAX_IDX for g in groups):
                    raise GastrtError(f"rie_encode: at most {RIE_MAX_GROUPS} groups of {RIE_MAX_IDX} channels on CUDA")
                outs = [ref(o) for o in op.outputs[:len(groups)]]
                outs += [REF_NONE] * (RIE_MAX_GROUPS - len(groups))
                lens = [len(g) for g in groups] + [0] * (RIE_MAX_GROUPS - len(groups))
                idx: list[int] = []
                for gi in range(RIE_MAX_GROUPS):
                    g = groups[gi] if gi < len(groups) else []
                    idx += g + [0] * (RIE_MAX_IDX - len(g))
                emit(OP_RIE, [ref(op.inputs[0])] + outs + [ref(op.outputs[len(groups)]), nn, tt, j * f,
                                                           len(groups)] + lens + idx)
            elif k == "concat":
                nn, g, tt, _ = shapes[out]
                ctot = shapes[out][3]
                off = 0
                for name, s in zip(op.inputs, ins):
                    emit(OP_COPY, [ref(name), ref(out), nn * g * tt, s[3], s[3], ctot, off])
                    off += s[3]
            elif k == "output_joint_major":
                nn, j, tt, c = ins[0]
                emit(OP_LAYOUT, [ref(op.inputs[0]), ref(out), nn, j, tt, c, 1, dtype_code, 0])
            elif k == "output_flat":
                nn, _, tt, c = ins[0]
                emit(OP_LAYOUT, [ref(op.inputs[0]), ref(out), nn, tt, 1, c, 0, dtype_code, 0])
            elif k == "output_assemble":
                nn, _, tt, _ = ins[0]
                srcs = op.attrs["sources"]
                if len(ins) > ASM_MAX_SRC or len(srcs) > ASM_MAX_JOINTS:
                    raise GastrtError("output_assemble: too many sources / joints for the CUDA kernel")
                src = [ref(x) for x in op.inputs] + [REF_NONE] * (ASM_MAX_SRC - len(ins))
                ch = [s[3] for s in ins] + [0] * (ASM_MAX_SRC - len(ins))
                src_of = [int(s) for s, _ in srcs] + [0] * (ASM_MAX_JOINTS - len(srcs))
                jj = [int(q) for _, q in srcs] + [0] * (ASM_MAX_JOINTS - len(srcs))
                emit(OP_ASSEMBLE, [ref(out), nn, tt, len(srcs), len(ins)] + src + ch + src_of + jj)
            else:
                raise GastrtError(f"the CUDA backend has no kernel for op kind {k!r}")
        if convs:
            emit(OP_CONV, [len(convs)] + [v for c_ in convs for v in c_])
        for o, s in temps:
            alloc.release(o, s)
        for i in st:  # free what this step read last (and outputs nobody reads)
            for name in list(plan.ops[i].inputs) + list(plan.ops[i].outputs):
                if name in offs and uses.get(name, si) <= si and name in buffers:
                    alloc.release(offs[name], _prod(shapes[name]) * esize)
                    del buffers[name]

    out_shape = shapes[final]
    return Lowered(np.asarray(code, dtype=np.int64), max(alloc.top, ALIGN), int(n),
                   _prod(shapes["input"][1:]), _prod(out_shape[1:]), tuple(out_shape[1:]),
                   placed, steps)


# ---- streaming ------------------------------------------------------------------------------------
def lower_stream(plan: Plan, geo, nb: int, nv: int, wids: dict, dtype_code: int, gast_scratch=None,
                 plan_name: str = "pos") -> Lowered:
    """Lower one streaming push (stream.py's column geometry ``geo``) for ``nb`` rows over rings
    of ``nv`` virtual slots. Input rows: the frame's J*F fp32 values + STREAM_TABLE_COLS int32
    words (virtual slot or -1, column counter low / high, fresh) stored bit for bit; output rows:
    the new output column, J_out*3 fp32. The rings come first in the arena, in geometry order,
    so every bucket's program finds them at the same offsets; they persist between pushes."""
    esize = dtype_bytes(dtype_code)
    index = {id(op): i for i, op in enumerate(plan.ops)}
    alloc = ArenaAllocator()
    rings = {b.name: alloc.alloc(ring_nbytes(b, nv, esize)) for b in geo.bufs if b.hist > 1}
    table = alloc.alloc(nb * STREAM_TABLE_COLS * 4)
    cols = {b.name: alloc.alloc(nb * b.g * b.c * esize) for b in geo.bufs}
    placed = {"table": (table, (nb, STREAM_TABLE_COLS))}
    placed.update({f"ring:{b.name}": (rings[b.name], (nv, b.g, b.hist, b.c)) for b in geo.bufs if b.hist > 1})
    placed.update({b.name: (cols[b.name], (nb, b.g, b.c)) for b in geo.bufs})
    code: list[int] = []

    def emit(opcode: int, fields: list[int]) -> None:
        code.extend([opcode, len(fields)])
        code.extend(int(v) for v in fields)

    def write(b) -> None:
        if b.hist > 1:
            emit(OP_RING_WRITE, [cols[b.name], rings[b.name], table, nb, nv, b.g, b.c, b.hist])

    def gather(b, lags, temps: list) -> int:
        """The columns ``lags`` back of every row's slot into a temporary [nb, g, k, c] (released
        by the caller through ``temps`` after the op that reads it)."""
        lags = [int(v) for v in lags]
        if len(lags) > RING_MAX_TAPS:
            raise GastrtError(f"a conv of {len(lags)} taps: the CUDA stream gathers at most {RING_MAX_TAPS}")
        size = nb * b.g * len(lags) * b.c * esize
        off = alloc.alloc(size)
        temps.append((off, size))
        emit(OP_RING_GATHER, [rings[b.name], off, table, nb, nv, b.g, b.c, b.hist, len(lags)] + lags
             + [0] * (RING_MAX_TAPS - len(lags)))
        return off

    inp = geo.input
    jf = inp.g * inp.c
    emit(OP_STREAM_IN, [REF_IN, cols[inp.name], table, nb, jf])
    write(inp)
    for st in geo.steps:
        if st[0] == "conv":
            _, op, x, out, kk, lags, act, res, rlag = st
            temps: list = []
            xo = cols[x.name] if kk == 1 else gather(x, lags, temps)
            if res is None:
                ro, t_res = REF_NONE, 0
            else:
                ro, t_res = (cols[res.name] if rlag == 0 else gather(res, [rlag], temps)), 1
            w = wids[(plan_name, index[id(op)])]
            emit(OP_CONV, [1, xo, w["w"], w["b"], ro, cols[out.name], nb * x.g, 1, 1, t_res, 1, kk * x.c, out.c,
                           1, 1, 1, 0, 1, out.c, ACT_CODE[act]])
            for o, sz in temps:
                alloc.release(o, sz)
        else:
            _, op, x, out = st
            h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
            sb = int(gast_scratch(nb, x.g, 1, x.c, h, gc)) if gast_scratch is not None else 0
            so = alloc.alloc(sb) if sb > 0 else REF_NONE
            w = wids[(plan_name, index[id(op)])]
            emit(OP_GAST, [cols[x.name], cols[out.name], so, sb, nb, x.g, 1, x.c, h, gc, w["w1"], w["b1"],
                           w["loc_diag"], w["loc_off"], w["loc_b"], w["loc_cat_w"], w["loc_cat_b"], w["glb_ck"],
                           w["glb_cat_w"], w["glb_cat_b"], w["cat_w"], w["cat_b"]])
            if sb > 0:
                alloc.release(so, sb)
        write(out)
    o = geo.output
    emit(OP_LAYOUT, [cols[o.name], REF_OUT, nb, 1, 1, o.g * o.c, 0, dtype_code, 0])
    return Lowered(np.asarray(code, dtype=np.int64), max(alloc.top, ALIGN), int(nb), jf + STREAM_TABLE_COLS,
                   o.g * o.c, (geo.out_joints, 3), placed, [])


def ring_nbytes(b, nv: int, esize: int) -> int:
    """Bytes of buffer ``b``'s ring (stream.py _Buf: g, hist, c) over ``nv`` virtual slots."""
    return nv * b.g * b.hist * b.c * esize


class CudaStreamColumns:
    """The column steps of a Stream on the GPU (stream.py's ``run(act, cnt, x, fresh)``): per-slot
    rings of past columns live in a device arena of their own (a separate executor engine, so no
    other program reuses that memory), and a push is one program run: the input rows (frames +
    slot table) copied in, one CUDA graph replay (gathers, GEMMs with fused epilogues, attention
    blocks, ring writes), the new output column copied out. Active rows are padded to a power-of-
    two bucket (padding rows carry slot -1: they touch no ring)."""

    def __init__(self, backend: "CudaBackend", plan: Plan, weights: dict, geo, nv: int):
        self.plan, self.geo, self.nv = plan, geo, int(nv)
        self._dtype = backend._dtype
        self._eng = backend._new_engine()
        for opt in ("gast_fused", "gast_scratch_budget"):  # the engine's choices (set_option) hold here too
            self._eng.set_option(opt, int(backend._eng.get_option(opt)))
        self._wids = upload_weights(self._eng, {"pos": plan}, weights)
        self.ring_bytes = sum(ring_nbytes(b, self.nv, dtype_bytes(self._dtype)) for b in geo.bufs if b.hist > 1)
        self.jf = geo.input.g * geo.input.c
        self.out_joints = geo.out_joints
        self._in = np.zeros((self.nv, self.jf + STREAM_TABLE_COLS), np.float32)
        self._y = np.zeros((self.nv, geo.output.g * geo.output.c), np.float32)
        self._progs: dict[int, int] = {}
        self.use_graphs = True
        # The largest program first: it sizes the arena once. Then the arena may not grow: growth
        # keeps the contents, but its out-of-memory retry frees the old arena (and the rings).
        self._program(self.nv)
        self._eng.set_option("arena_limit", int(self._eng.arena_bytes()))

    @property
    def device_bytes(self) -> int:
        """GPU memory of this stream's own executor: its arena (rings + workspace)."""
        return int(self._eng.arena_bytes())

    def bucket(self, a: int) -> int:
        return min(next_pow2(a), self.nv)

    def _program(self, nb: int) -> int:
        pid = self._progs.get(nb)
        if pid is None:
            low = lower_stream(self.plan, self.geo, nb, self.nv, self._wids, self._dtype,
                               self._eng.gast_scratch_bytes)
            try:
                pid = int(self._eng.create_program(low.code, low.arena_bytes, low.max_n, low.in_per_n,
                                                   low.out_per_n))
            except RuntimeError as e:
                if "out of memory" in str(e):
                    raise GastrtError(f"CUDA out of memory creating a stream of {self.nv} (virtual) slots: {e}. "
                                      "Use fewer slots.") from None
                raise
            self._progs[nb] = pid
        return pid

    def run(self, act: np.ndarray, cnt: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        a = int(act.shape[0])
        nb = self.bucket(a)
        pid = self._program(nb)
        jf = self.jf
        xin = self._in[:nb]
        xin[:a, :jf] = x.reshape(a, jf)
        xin[a:, :jf] = 0.0
        tab = xin.view(np.int32)[:, jf:]                 # the table words, bit for bit
        cnt = np.asarray(cnt, np.int64)
        tab[:a, 0] = act
        tab[:a, 1] = (cnt & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        tab[:a, 2] = (cnt >> 32).astype(np.int32)
        tab[:a, 3] = 0 if fresh is None else np.asarray(fresh, bool)
        tab[a:] = 0
        tab[a:, 0] = -1
        y = self._y[:nb]
        self._eng.run_host(pid, xin, y, nb, self.use_graphs)
        return y[:a].reshape(a, self.out_joints, 3)

    def close(self) -> None:
        for pid in self._progs.values():
            self._eng.destroy_program(pid)
        self._progs.clear()


# ---- device arrays --------------------------------------------------------------------------------
def is_device_array(x) -> bool:
    """A CUDA array this backend takes without a host copy (torch / CuPy / CAI / DLPack on GPU)."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return int(dev()[0]) in (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged
        except Exception:
            return False
    return False


class CudaArray:
    """A minimal owning fp32 C-contiguous device array (what run_device returns when neither
    torch nor CuPy is installed). Exposes ``__cuda_array_interface__``; ``get()`` copies to host."""

    def __init__(self, shape, device: int, mod):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.device = int(device)
        self._mod = mod
        self.nbytes = _prod(self.shape) * 4
        self.ptr = int(mod.cuda_malloc(self.device, self.nbytes))

    @classmethod
    def from_numpy(cls, a: np.ndarray, device: int, mod) -> "CudaArray":
        a = np.ascontiguousarray(a, dtype=np.float32)
        d = cls(a.shape, device, mod)
        mod.cuda_memcpy_htod(device, d.ptr, a.reshape(-1).view(np.uint8))
        return d

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3,
                "strides": None, "stream": None}

    def get(self) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        self._mod.cuda_memcpy_dtoh(self.device, out.reshape(-1).view(np.uint8), self.ptr)
        return out

    def __del__(self):
        ptr, self.ptr = getattr(self, "ptr", 0), 0
        if ptr:
            try:
                self._mod.cuda_free(self.device, ptr)
            except Exception:
                pass


@dataclass
class _Dev:
    ptr: int
    shape: tuple
    device: int
    stream: int | None    # the producer's / consumer's stream handle to order with
    kind: str             # "torch", "cupy", "cai"
    obj: object           # keeps a converted copy alive during the call


def _resolve(x, what: str, writable: bool = False) -> _Dev:
    """Pointer, shape, device and stream of a float32 C-contiguous device array."""
    mod_name = type(x).__module__.split(".")[0]
    if mod_name == "torch":
        import torch
        if not x.is_cuda:
            raise GastrtError(f"{what}: a CPU torch tensor; pass a NumPy array or a CUDA tensor")
        if x.dtype != torch.float32 or not x.is_contiguous():
            if writable:
                raise GastrtError(f"{what}: expected a contiguous float32 CUDA tensor, got {x.dtype}")
            x = x.to(torch.float32).contiguous()
        dev = x.device.index if x.device.index is not None else torch.cuda.current_device()
        return _Dev(int(x.data_ptr()), tuple(x.shape), int(dev), int(torch.cuda.current_stream(dev).cuda_stream),
                    "torch", x)
    if mod_name == "cupy":
        import cupy
        if x.dtype != cupy.float32 or not x.flags.c_contiguous:
            if writable:
                raise GastrtError(f"{what}: expected a C-contiguous float32 CuPy array, got {x.dtype}")
            with x.device:
                x = cupy.ascontiguousarray(x, dtype=cupy.float32)
        with x.device:   # the current stream is per device: x's, not the current device's
            stream = int(cupy.cuda.get_current_stream().ptr)
        return _Dev(int(x.data.ptr), tuple(x.shape), int(x.device.id), stream, "cupy", x)
    if hasattr(x, "__cuda_array_interface__"):
        cai = x.__cuda_array_interface__
        shape = tuple(int(s) for s in cai["shape"])
        if cai.get("typestr") not in ("<f4", "=f4", "f4"):
            raise GastrtError(f"{what}: expected float32 (typestr <f4), got {cai.get('typestr')}")
        strides = cai.get("strides")
        if strides is not None:
            want, acc = [], 4
            for s in reversed(shape):
                want.append(acc)
                acc *= s
            if tuple(strides) != tuple(reversed(want)) and _prod(shape) > 1:
                raise GastrtError(f"{what}: expected a C-contiguous array")
        ptr = int(cai["data"][0])
        if writable and cai["data"][1]:
            raise GastrtError(f"{what}: the array is read-only")
        dev = getattr(x, "device", None)
        dev = dev if isinstance(dev, int) else None
        return _Dev(ptr, shape, -1 if dev is None else dev, cai.get("stream"), "cai", x)
    if hasattr(x, "__dlpack__"):  # DLPack-only producers (JAX, ...): view through torch / CuPy, no copy
        try:
            import torch
            return _resolve(torch.from_dlpack(x), what, writable)
        except ImportError:
            pass
        try:
            import cupy
            return _resolve(cupy.from_dlpack(x), what, writable)
        except ImportError:
            raise GastrtError(f"{what}: DLPack input needs torch or CuPy installed") from None
    raise GastrtError(f"{what}: not a CUDA array (expected torch / CuPy / __cuda_array_interface__ / DLPack)")


def stream_context(x, stream):
    """While active, ``stream`` (a CUDA stream handle, or None: no-op) is the current stream of
    ``x``'s array library, so a float32 / contiguous conversion of ``x`` and a newly allocated
    output are made on (and belong to the memory pool of) the stream the work is ordered on."""
    import contextlib

    if stream is None:
        return contextlib.nullcontext()
    mod_name = type(x).__module__.split(".")[0]
    if mod_name == "torch" and getattr(x, "is_cuda", False):
        import torch
        return torch.cuda.stream(torch.cuda.ExternalStream(int(stream), device=x.device))
    if mod_name == "cupy":
        import cupy
        return cupy.cuda.ExternalStream(int(stream), x.device.id)
    return contextlib.nullcontext()


def _empty_like_kind(d: _Dev, shape, device: int, mod):
    if d.kind == "torch":
        import torch
        return torch.empty(shape, dtype=torch.float32, device=f"cuda:{device}")
    if d.kind == "cupy":
        import cupy
        with cupy.cuda.Device(device):
            return cupy.empty(shape, dtype=cupy.float32)
    return CudaArray(shape, device, mod)


# ---- the backend ----------------------------------------------------------------------------------
def _oom(e: Exception, n: int, mode: str, t: int) -> GastrtError:
    what = f"batch size {n}" + (f" x {t} frames" if mode == "sequence" else "")
    return GastrtError(f"CUDA out of memory running a {what}: {e}. The engine is still usable: use a smaller "
                       "batch (or shorter sequences).")


class _Program:
    def __init__(self, pid: int, low: Lowered):
        self.id = pid
        self.low = low


class CudaBackend:
    """Executes plans on one GPU. ``run`` takes / returns NumPy arrays (pinned staging, async
    copies on the engine's stream); ``run_device`` takes / returns device arrays with no copy."""
    name = "cuda"

    def __init__(self, plans: dict[str, Plan], weights: dict[str, np.ndarray], index: int = 0,
                 precision: str = "fp32", *, max_batch: int = DEFAULT_MAX_BATCH, _engine=None):
        if precision not in DTYPE_CODE:
            raise GastrtError(f"unknown precision {precision!r}: expected fp32, fp16 or bf16")
        from . import native_module
        self._mod = native_module()
        self.device_index = int(index)
        self.precision = precision
        self.plans = plans
        self.max_batch = int(max_batch)
        self.use_graphs = True
        self._dtype = DTYPE_CODE[precision]
        if _engine is not None:  # tests: a simulator with the same interface
            self._eng = _engine
        else:
            self._eng = self._new_engine(self._mod.CudaEngine)
        self._wshape = {k: tuple(v.shape) for k, v in weights.items()}
        self._wids = upload_weights(self._eng, plans, weights)
        self._progs: OrderedDict = OrderedDict()
        self._lock = threading.RLock()

    def _new_engine(self, kind=None):
        """A fresh executor engine on this device (streams keep their rings in one of their own);
        the same kind as this backend's (the simulator in tests)."""
        kind = kind if kind is not None else type(self._eng)
        try:
            return kind(self.device_index, self._dtype)
        except RuntimeError as e:
            raise GastrtError(str(e).replace("gastrt: ", "", 1)) from None

    # -- configuration -------------------------------------------------------------------------
    @property
    def device_name(self) -> str:
        return self._eng.device_name()

    def set_option(self, name: str, value: int) -> None:
        """Executor options (see cuda_ops.h): gast_fused (-1 auto / 0 / 1), gast_scratch_budget,
        arena_limit. Drops the cached programs (their scratch sizes may change)."""
        with self._lock:
            self._eng.set_option(name, int(value))
            self.clear_programs()

    def clear_programs(self) -> None:
        with self._lock:
            while self._progs:
                _, p = self._progs.popitem(last=False)
                self._eng.destroy_program(p.id)

    # -- programs ------------------------------------------------------------------------------
    def bucket(self, n: int, mode: str) -> int:
        if mode == "sequence":
            return n
        return min(next_pow2(n), max(self.max_batch, n))

    def lowered(self, plan_name: str, mode: str, n: int, t: int) -> Lowered:
        return lower(self.plans[plan_name], mode, n, t, self._wids, lambda w: self._wshape[w], self._dtype,
                     self._eng.gast_scratch_bytes, plan_name)

    def program(self, plan_name: str, mode: str, nb: int, t: int) -> _Program:
        key = (plan_name, mode, nb, t)
        with self._lock:
            p = self._progs.get(key)
            if p is not None:
                self._progs.move_to_end(key)
                return p
            low = self.lowered(plan_name, mode, nb, t)
            try:
                pid = self._eng.create_program(low.code, low.arena_bytes, low.max_n, low.in_per_n, low.out_per_n)
            except RuntimeError as e:
                if "out of memory" in str(e):
                    raise _oom(e, nb, mode, t) from None
                raise
            p = _Program(int(pid), low)
            self._progs[key] = p
            while len(self._progs) > PROGRAM_CACHE:
                _, old = self._progs.popitem(last=False)
                self._eng.destroy_program(old.id)
            return p

    def _check_input(self, plan: Plan, shape, mode: str) -> None:
        if mode not in plan.modes:
            raise GastrtError(f"plan {plan.name!r} has no {mode!r} mode (it supports {plan.modes})")
        if len(shape) != 4 or tuple(shape[2:]) != (plan.in_joints, plan.in_features) or shape[0] < 1:
            raise GastrtError(f"expected input (N, T, {plan.in_joints}, {plan.in_features}), got {tuple(shape)}")

    def _chunks(self, n: int, mode: str):
        step = n if mode == "sequence" and n <= self.max_batch else self.max_batch
        for s in range(0, n, step):
            yield s, min(n, s + step)

    # -- execution -----------------------------------------------------------------------------
    def run(self, plan_name: str, x, mode: str) -> np.ndarray:
        """x [N, T, J, F] float32 (NumPy) -> [N, T_out, J_out, 3] float32 (NumPy)."""
        if is_device_array(x):
            y = self.run_device(plan_name, x, mode)
            return y.get() if isinstance(y, CudaArray) else np.asarray(y.cpu() if hasattr(y, "cpu") else y.get())
        x = np.ascontiguousarray(x, dtype=np.float32)
        plan = self.plans[plan_name]
        self._check_input(plan, x.shape, mode)
        n, t = x.shape[:2]
        y = None
        with self._lock:
            for s, e in self._chunks(n, mode):
                cnt = e - s
                p = self.program(plan_name, mode, self.bucket(cnt, mode), t)
                if y is None:
                    y = np.empty((n,) + p.low.out_tail, np.float32)
                try:
                    self._eng.run_host(p.id, x[s:e], y[s:e], cnt, self.use_graphs)
                except RuntimeError as err:
                    if "out of memory" in str(err):
                        raise _oom(err, cnt, mode, t) from None
                    raise
        return y

    def run_device(self, plan_name: str, x, mode: str, out=None, stream: int | None = None):
        """x: a float32 CUDA array [N, T, J, F] (torch / CuPy / CAI / DLPack) -> a device array
        [N, T_out, J_out, 3] of the same kind (or ``out``, written in place). Ordered on the
        caller's stream (torch / CuPy current stream, the CAI stream, or ``stream``): no host
        sync for torch / CuPy; CAI-only arrays are synchronized before returning."""
        with stream_context(x, stream):
            return self._run_device(plan_name, x, mode, out, stream)

    def _run_device(self, plan_name: str, x, mode: str, out, stream):
        plan = self.plans[plan_name]
        d = _resolve(x, "x")
        self._check_input(plan, d.shape, mode)
        dev = d.device if d.device >= 0 else self.device_index
        if dev != self.device_index:
            raise GastrtError(f"x is on cuda:{dev} but the engine is on cuda:{self.device_index}")
        n, t = d.shape[:2]
        ext = stream if stream is not None else d.stream
        with self._lock:
            chunks = list(self._chunks(n, mode))
            progs = [self.program(plan_name, mode, self.bucket(e - s, mode), t) for s, e in chunks]
            shape = (n,) + progs[0].low.out_tail
            if out is None:
                out = _empty_like_kind(d, shape, self.device_index, self._mod)
            o = _resolve(out, "out", writable=True)
            if o.shape != shape:
                raise GastrtError(f"out: expected shape {shape}, got {o.shape}")
            if o.device >= 0 and o.device != self.device_index:
                raise GastrtError(f"out is on cuda:{o.device} but the engine is on cuda:{self.device_index}")
            if ext is None and o.stream is not None and o.kind != "cai":
                ext = o.stream
            in_row, out_row = _prod(d.shape[1:]) * 4, _prod(shape[1:]) * 4
            for (s, e), p in zip(chunks, progs):
                try:
                    self._eng.run_device(p.id, d.ptr + s * in_row, o.ptr + s * out_row, e - s,
                                         int(ext or 0), ext is not None, self.use_graphs)
                except RuntimeError as err:
                    if "out of memory" in str(err):
                        raise _oom(err, e - s, mode, t) from None
                    raise
            if d.kind == "cai" or o.kind == "cai":
                self._eng.synchronize()
        return out

    # -- introspection -------------------------------------------------------------------------
    def describe(self, plan_name: str = "pos", mode: str = "window", n: int = 1, t: int | None = None) -> str:
        plan = self.plans[plan_name]
        t = plan.receptive_field if t is None else t
        with self._lock:  # the binding releases the GIL: one engine call at a time
            p = self.program(plan_name, mode, self.bucket(n, mode), t)
            return self._eng.describe_program(p.id)

    def time(self, plan_name: str, mode: str, n: int, t: int, iters: int = 50, warmup: int = 5,
             use_graph: bool = True) -> list[float]:
        """Device milliseconds per forward (CUDA events; warm-up excluded) at batch n."""
        with self._lock:
            p = self.program(plan_name, mode, self.bucket(n, mode), t)
            return list(self._eng.time_program(p.id, iters, warmup, use_graph))


# ---- single-op harness (tests, benchmarks) --------------------------------------------------------
def _to_bytes(a: np.ndarray, dtype_code: int) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype_code == 1:
        a = a.astype(np.float16)
    elif dtype_code == 2:
        from ..engine_file import to_bf16_bits
        a = to_bf16_bits(a)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _from_bytes(b: np.ndarray, shape, dtype_code: int) -> np.ndarray:
    if dtype_code == 0:
        return b.view(np.float32).reshape(shape).copy()
    if dtype_code == 1:
        return b.view(np.float16).astype(np.float32).reshape(shape)
    from ..engine_file import from_bf16_bits
    return from_bf16_bits(b.view(np.uint16)).reshape(shape)


class OpHarness:
    """Runs one plan op on the GPU on arena buffers: inputs written, outputs poisoned (0xFF bytes:
    NaN in every dtype) before the call, read back after. Mirrors numpy_backend's op functions."""

    def __init__(self, precision: str = "fp32", device: int = 0, _engine=None):
        from . import native_module
        self.mod = native_module()
        self.dtype = DTYPE_CODE[precision]
        self.esize = dtype_bytes(self.dtype)
        self.eng = _engine if _engine is not None else self.mod.CudaEngine(int(device), self.dtype)
        self.use_graph = False

    def _w(self, a, engine_dtype: bool) -> int:
        return int(self.eng.add_weight(np.ascontiguousarray(a, dtype=np.float32).ravel(), engine_dtype))

    def _run(self, code: list[int], arena: int, writes: dict, reads: dict, f32: set = frozenset()):
        """writes: offset -> array (engine dtype unless offset in f32); reads: name -> (offset, shape)."""
        code = np.asarray(code, dtype=np.int64)
        self.eng.reserve_arena(arena)
        for name, (o, shape) in reads.items():
            self.eng.arena_fill(o, _prod(shape) * self.esize, 0xFF)
        for o, a in writes.items():
            self.eng.arena_write(o, _to_bytes(a, 0 if o in f32 else self.dtype))
        pid = self.eng.create_program(code, arena, 1, 0, 0)
        try:
            self.eng.run_arena(pid, self.use_graph)
            out = {}
            for name, (o, shape) in reads.items():
                buf = np.empty(_prod(shape) * self.esize, np.uint8)
                self.eng.arena_read(o, buf)
                out[name] = _from_bytes(buf, shape, self.dtype)
            return out
        finally:
            self.eng.destroy_program(pid)

    def time_program(self, code: list[int], arena: int, iters: int = 50, warmup: int = 5,
                     use_graph: bool = True, random_data: bool = False) -> list[float]:
        """Device milliseconds per run of a single-op program on arena contents. random_data:
        fill the arena with N(0, 0.5) values in the engine dtype first (all-zero operands draw
        less power, so big GPUs clock higher on them: compare with cuBLAS on equal terms)."""
        self.eng.reserve_arena(arena)
        if random_data:
            block = _to_bytes(np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32) * 0.5,
                              self.dtype)
            for off in range(0, arena, block.size):
                self.eng.arena_write(off, block[:min(block.size, arena - off)])
        pid = self.eng.create_program(np.asarray(code, dtype=np.int64), arena, 1, 0, 0)
        try:
            return list(self.eng.time_program(pid, iters, warmup, use_graph))
        finally:
            self.eng.destroy_program(pid)

    def conv_code(self, op, x_shape, co: int, mode: str, res_t: int | None = None) -> tuple[list[int], int]:
        """(program, arena bytes) of one conv (random weights, zero bias) x [N,G,T,Ci] -> [N,G,To,co]."""
        n, g, t, ci = x_shape
        geo = conv_geometry(op, mode)
        k = int(op.attrs["k"])
        to = (t - ((k - 1) * geo.dilation + 1)) // geo.stride + 1
        alloc = ArenaAllocator()
        xo = alloc.alloc(n * g * t * ci * self.esize)
        rf = [REF_NONE, 0, 0, 1]
        if res_t is not None:
            rf = [alloc.alloc(n * g * res_t * co * self.esize), res_t, geo.res_offset, geo.res_stride]
        yo = alloc.alloc(n * g * to * co * self.esize)
        rng = np.random.default_rng(0)   # random weights: see time_program's random_data
        w = self._w((rng.standard_normal((k * ci, co)) * 0.05).astype(np.float32), True)
        b = self._w(np.zeros(co, np.float32), False)
        f = [xo, w, b, rf[0], yo, n * g, t, to, rf[1], to, ci, co, k, geo.stride, geo.dilation, rf[2], rf[3], co,
             ACT_CODE[op.attrs.get("act", "none")]]
        return [OP_CONV, CONV_FIELDS + 1, 1] + f, alloc.top

    def gast_code(self, op, x_shape) -> tuple[list[int], int]:
        """(program, arena bytes) of one GAST block on zero data and small random weights."""
        n, j, t, c = x_shape
        h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        rng = np.random.default_rng(0)
        shapes = {"loc_w": (c, 4 * c), "glb_u": (c, 2 * h), "glb_g_w": (c, h * gc), "glb_c": (2 * h,),
                  "glb_g_b": (h * gc,), "loc_diag": (2, j, c), "loc_off": (2, j, j, c), "loc_b": (2 * c,),
                  "loc_cat_w": (2 * c, c), "loc_cat_b": (c,), "glb_ck": (h, j, j), "glb_cat_w": (h * gc, c),
                  "glb_cat_b": (c,), "cat_w": (3 * c, 2 * c), "cat_b": (2 * c,)}
        W = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}
        w1, b1 = gast_w1(W)
        ids = {"w1": self._w(w1, True), "b1": self._w(b1, False)}
        ids.update({r: self._w(W[r], False) for r in GAST_F32})
        ids.update({r: self._w(W[r], True) for r in GAST_GEMM})
        alloc = ArenaAllocator()
        xo = alloc.alloc(n * j * t * c * self.esize)
        yo = alloc.alloc(n * j * t * 2 * c * self.esize)
        sb = int(self.eng.gast_scratch_bytes(n, j, t, c, h, gc))
        so = alloc.alloc(sb) if sb > 0 else REF_NONE
        code = [OP_GAST, GAST_FIELDS, xo, yo, so, sb, n, j, t, c, h, gc, ids["w1"], ids["b1"], ids["loc_diag"],
                ids["loc_off"], ids["loc_b"], ids["loc_cat_w"], ids["loc_cat_b"], ids["glb_ck"], ids["glb_cat_w"],
                ids["glb_cat_b"], ids["cat_w"], ids["cat_b"]]
        return code, alloc.top

    def conv_group(self, problems: list[dict], mode: str) -> list[np.ndarray]:
        """problems: dicts with op, x [N,G,T,Ci], w [k*Ci,Co], b [Co], res (or None): one grouped launch."""
        alloc = ArenaAllocator()
        writes, reads, fields = {}, {}, []
        for q, pr in enumerate(problems):
            op, x, w, b, res = pr["op"], pr["x"], pr["w"], pr["b"], pr.get("res")
            geo = conv_geometry(op, mode)
            n, g, t, ci = x.shape
            k = int(op.attrs["k"])
            span = (k - 1) * geo.dilation + 1
            to = (t - span) // geo.stride + 1
            co = w.shape[1]
            xo = alloc.alloc(x.size * self.esize)
            writes[xo] = x
            if res is not None:
                ro = alloc.alloc(res.size * self.esize)
                writes[ro] = res
                rf = [ro, res.shape[2], geo.res_offset, geo.res_stride]
            else:
                rf = [REF_NONE, 0, 0, 1]
            yo = alloc.alloc(n * g * to * co * self.esize)
            reads[q] = (yo, (n, g, to, co))
            fields.append([xo, self._w(w, True), self._w(b, False), rf[0], yo, n * g, t, to, rf[1], to, ci, co, k,
                           geo.stride, geo.dilation, rf[2], rf[3], co, ACT_CODE[op.attrs.get("act", "none")]])
        code = [OP_CONV, 1 + CONV_FIELDS * len(fields), len(fields)] + [v for f in fields for v in f]
        out = self._run(code, alloc.top, writes, reads)
        return [out[q] for q in range(len(problems))]

    def conv(self, op, x, w, b, res, mode: str) -> np.ndarray:
        return self.conv_group([{"op": op, "x": x, "w": w, "b": b, "res": res}], mode)[0]

    def gast_block(self, op, x: np.ndarray, W: dict, fused: int = -1) -> np.ndarray:
        self.eng.set_option("gast_fused", int(fused))
        n, j, t, c = x.shape
        h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        w1, b1 = gast_w1(W)
        ids = {"w1": self._w(w1, True), "b1": self._w(b1, False)}
        ids.update({r: self._w(W[r], False) for r in GAST_F32})
        ids.update({r: self._w(W[r], True) for r in GAST_GEMM})
        alloc = ArenaAllocator()
        xo = alloc.alloc(x.size * self.esize)
        yo = alloc.alloc(x.size * 2 * self.esize)
        sb = int(self.eng.gast_scratch_bytes(n, j, t, c, h, gc))
        so = alloc.alloc(sb) if sb > 0 else REF_NONE
        code = [OP_GAST, GAST_FIELDS, xo, yo, so, sb, n, j, t, c, h, gc, ids["w1"], ids["b1"], ids["loc_diag"],
                ids["loc_off"], ids["loc_b"], ids["loc_cat_w"], ids["loc_cat_b"], ids["glb_ck"], ids["glb_cat_w"],
                ids["glb_cat_b"], ids["cat_w"], ids["cat_b"]]
        return self._run(code, alloc.top, {xo: x}, {"y": (yo, (n, j, t, 2 * c))})["y"]

    def rie_encode(self, op, x: np.ndarray) -> list[np.ndarray]:
        """x [N, T, 17, 2] (fp32, as the user's input) -> branch inputs + current, engine dtype."""
        n, t, j, f = x.shape
        groups = [list(map(int, g)) for g in op.attrs["groups"]]
        alloc = ArenaAllocator()
        xo = alloc.alloc(x.size * 4)
        outs = [alloc.alloc(n * t * 3 * len(g) * self.esize) for g in groups]
        cur = alloc.alloc(n * j * f * self.esize)
        lens = [len(g) for g in groups] + [0] * (RIE_MAX_GROUPS - len(groups))
        idx = [v for gi in range(RIE_MAX_GROUPS)
               for v in (groups[gi] if gi < len(groups) else []) + [0] * (RIE_MAX_IDX - (len(groups[gi]) if gi < len(groups) else 0))]
        code = ([OP_RIE, RIE_FIELDS, xo] + outs + [REF_NONE] * (RIE_MAX_GROUPS - len(groups)) + [cur, n, t, j * f,
                len(groups)] + lens + idx)
        reads = {q: (o, (n, 1, t, 3 * len(g))) for q, (o, g) in enumerate(zip(outs, groups))}
        reads["cur"] = (cur, (n, 1, 1, j * f))
        r = self._run(code, alloc.top, {xo: x}, reads, f32={xo})
        return [r[q] for q in range(len(groups))] + [r["cur"]]

    def gast_fused(self, op, x_shape) -> bool:
        n, j, t, c = x_shape
        return bool(self.eng.gast_fused(j, c, int(op.attrs["heads"]), int(op.attrs["head_channels"])))
