"""Plans -> CUDA programs (records of csrc/cuda/program_records.h, encoded by name: records.py).

A *program* is one plan lowered for one (mode, batch bucket, T): a flat int64 array of op
records whose buffers are byte offsets in one device arena the engine shares between its
programs. Lowering happens here, in Python, because the plan's shape inference lives here
(plan.infer_shapes); the executor validates every record against the arena and weight sizes
before anything runs, so a lowering bug is an exception, not a stray write.

Scheduling: ops are ordered by dependency level and the convs of one level (RIE's five branches
and its global path) are emitted as one grouped GEMM launch. Buffers are assigned by the
executors' first-fit arena allocator over their live ranges (a step's outputs never alias its
inputs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import GastrtError
from ...plan import Plan, conv_geometry, gast_projection, infer_shapes
from ..base import native_module
from .records import program_layout

DTYPE_CODE = {"fp32": 0, "fp16": 1, "bf16": 2}
ACT_CODE = {"none": 0, "relu": 1, "lrelu": 2}
MAX_GEMM_GROUP = 8   # convs per grouped record: one kernel launch (kernels.h kMaxGemmGroup)
ALIGN = 256          # arena buffers (the executor needs 16 B)


def dtype_bytes(dtype_code: int) -> int:
    """Bytes per activation / GEMM-operand element of an engine dtype (0 fp32, 1 fp16, 2 bf16)."""
    return 4 if dtype_code == 0 else 2


def next_pow2(n: int) -> int:
    """The batch bucket of n rows: the next power of two (>= 1)."""
    b = 1
    while b < n:
        b *= 2
    return b


def align(v: int) -> int:
    return (int(v) + ALIGN - 1) // ALIGN * ALIGN


def prod(s) -> int:
    return int(math.prod(int(v) for v in s))


# ---- weights --------------------------------------------------------------------------------------
# GEMM operands live in the engine precision, everything added elementwise (biases, graph tables)
# in fp32. The GAST block's three projections of x are one GEMM: plan.gast_projection.
GAST_F32 = ("loc_diag", "loc_off", "loc_b", "loc_cat_b", "glb_ck", "glb_cat_b", "cat_b")
GAST_GEMM = ("loc_cat_w", "glb_cat_w", "cat_w")


def upload_gast_weights(add, W: dict) -> dict:
    """A gast_block's weights by role -> {role: weight id} (w1 / b1: the packed projection);
    ``add(array, engine_dtype) -> id``."""
    w1, b1 = gast_projection(W)
    ids = {"w1": add(w1, True), "b1": add(b1, False)}
    ids.update({r: add(W[r], False) for r in GAST_F32})
    ids.update({r: add(W[r], True) for r in GAST_GEMM})
    return ids


def upload_weights(eng, plans: dict[str, Plan], weights) -> tuple[dict, int]:
    """Adds the plans' weights to executor ``eng`` -> ({(plan name, op index): {role: weight id}}
    for the ops that have weights, the bytes of the engine's device copy of them)."""
    ids: dict = {}
    esize = dtype_bytes(int(eng.dtype()))
    staged = 0

    def add(a, engine_dtype: bool) -> int:
        nonlocal staged
        a = np.ascontiguousarray(a, dtype=np.float32).ravel()
        staged = align(staged) + a.size * (esize if engine_dtype else 4)   # engine.cu add_weight's packing
        return int(eng.add_weight(a, bool(engine_dtype)))

    for pname, plan in plans.items():
        for i, op in enumerate(plan.ops):
            W = {role: weights[name] for role, name in op.weights.items()}
            if op.kind == "conv":
                ids[(pname, i)] = {"w": add(W["w"], True), "b": add(W["b"], False)}
            elif op.kind == "gast_block":
                ids[(pname, i)] = upload_gast_weights(add, W)
    return ids, max(staged, ALIGN)


# ---- lowering -------------------------------------------------------------------------------------
def new_arena():
    """An empty plan of the device arena in bytes: the executors' first-fit allocator
    (csrc/common/arena.h, ``_native.ArenaAllocator``) at ALIGN-byte granularity; ``alloc(size)``
    -> offset, ``release(offset, size)``, ``top`` (the high-water mark)."""
    mod = native_module()
    if mod is None:
        raise GastrtError("CUDA lowering needs the compiled extension gastrt._native, which this install lacks")
    return mod.ArenaAllocator(ALIGN)


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


def gast_fields(x: int, y: int, scratch: int, scratch_bytes: int, n: int, j: int, t: int, c: int, op,
                w: dict) -> dict:
    """The gast_block record of ``op`` (weight ids ``w`` from upload_gast_weights)."""
    return dict(x=x, y=y, scratch=scratch, scratch_bytes=scratch_bytes, n=n, j=j, t=t, c=c,
                heads=int(op.attrs["heads"]), gc=int(op.attrs["head_channels"]), **w)


def lower(plan: Plan, mode: str, n: int, t: int, wids: dict, wshape, dtype_code: int,
          gast_scratch=None, plan_name: str | None = None) -> Lowered:
    """Lower ``plan`` for input [n, t, J, F]. ``wids[(plan_name, op index)]`` -> {role: weight id};
    ``wshape(name)`` -> weight shape; ``gast_scratch(n, j, t, c, heads, gc)`` -> scratch bytes
    (default: the fused path, 0)."""
    L = program_layout()
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

    alloc = new_arena()
    offs: dict[str, int] = {}
    buffers: dict = {}   # live arena buffers
    placed: dict = {}    # every arena buffer: name -> (offset, shape)

    def ref(name: str) -> int:
        if name == "input":
            return L.ref_input
        if name == final:
            return L.ref_output
        return offs[name]

    code: list[int] = []
    for si, st in enumerate(steps):
        temps: list[tuple[int, int]] = []
        for i in st:  # every output of the step first: they must not alias the step's inputs
            for name in plan.ops[i].outputs:
                if name == final:
                    continue
                nbytes = prod(shapes[name]) * esize
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
                code += L.encode("layout", src=ref(op.inputs[0]), dst=ref(out), n=nn, a=tt, b=j, f=f,
                                 swap=int(k == "input_joint_major"), src_dtype=0, dst_dtype=dtype_code)
            elif k == "conv":
                geo = conv_geometry(op, mode)
                nn, g, t_in, ci = ins[0]
                _, _, t_out, co = shapes[out]
                w = wids[(pname, i)]
                if len(op.inputs) > 1:
                    rs = ins[1]
                    if rs[:2] != (nn, g) or rs[3] != co:
                        raise GastrtError(f"{out}: residual {rs} does not match the conv output {shapes[out]}")
                    res = dict(res=ref(op.inputs[1]), t_res=rs[2], res_offset=geo.res_offset,
                               res_stride=geo.res_stride)
                else:
                    res = dict(res=L.ref_none, t_res=0, res_offset=0, res_stride=1)
                convs.append(dict(x=ref(op.inputs[0]), w=w["w"], b=w["b"], y=ref(out), n_seq=nn * g, t_in=t_in,
                                  t_out=t_out, t_ypitch=t_out, ci=ci, co=co, k=int(op.attrs["k"]),
                                  stride=geo.stride, dilation=geo.dilation, ldy=co,
                                  act=ACT_CODE[op.attrs.get("act", "none")], **res))
            elif k == "gast_block":
                nn, j, tt, c = ins[0]
                h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
                sb = int(gast_scratch(nn, j, tt, c, h, gc)) if gast_scratch is not None else 0
                if sb > 0:
                    so = alloc.alloc(sb)
                    temps.append((so, sb))
                else:
                    so = L.ref_none
                code += L.encode("gast_block", **gast_fields(ref(op.inputs[0]), ref(out), so, sb, nn, j, tt, c, op,
                                                             wids[(pname, i)]))
            elif k == "rie_encode":
                if mode != "window":
                    raise GastrtError("RIE plans run in window mode only")
                nn, tt, j, f = ins[0]
                groups = [list(map(int, g)) for g in op.attrs["groups"]]
                code += rie_record(L, groups, ref(op.inputs[0]), [ref(o) for o in op.outputs[:len(groups)]],
                                   ref(op.outputs[len(groups)]), nn, tt, j * f)
            elif k == "concat":
                nn, g, tt, ctot = shapes[out]
                off = 0
                for name, s in zip(op.inputs, ins):
                    code += L.encode("concat", src=ref(name), dst=ref(out), rows=nn * g * tt, cols=s[3],
                                     src_ld=s[3], dst_ld=ctot, dst_off=off)
                    off += s[3]
            elif k == "output_joint_major":
                nn, j, tt, c = ins[0]
                code += L.encode("layout", src=ref(op.inputs[0]), dst=ref(out), n=nn, a=j, b=tt, f=c, swap=1,
                                 src_dtype=dtype_code, dst_dtype=0)
            elif k == "output_flat":
                nn, _, tt, c = ins[0]
                code += L.encode("layout", src=ref(op.inputs[0]), dst=ref(out), n=nn, a=tt, b=1, f=c, swap=0,
                                 src_dtype=dtype_code, dst_dtype=0)
            elif k == "output_assemble":
                code += _assemble_record(L, op, ins, ref(out), [ref(x) for x in op.inputs])
            else:
                raise GastrtError(f"the CUDA backend has no kernel for op kind {k!r}")
        if convs:
            code += L.encode_group("conv", convs)
        for o, s in temps:
            alloc.release(o, s)
        for i in st:  # free what this step read last (and outputs nobody reads)
            for name in list(plan.ops[i].inputs) + list(plan.ops[i].outputs):
                if name in offs and uses.get(name, si) <= si and name in buffers:
                    alloc.release(offs[name], prod(shapes[name]) * esize)
                    del buffers[name]

    out_shape = shapes[final]
    return Lowered(np.asarray(code, dtype=np.int64), max(alloc.top, ALIGN), int(n),
                   prod(shapes["input"][1:]), prod(out_shape[1:]), tuple(out_shape[1:]), placed, steps)


def rie_record(L, groups: list[list[int]], x: int, outs: list[int], current: int, n: int, t: int,
               cin: int) -> list[int]:
    """rie_encode: x [n, t, cin] fp32 -> the branch inputs ``outs`` (one per group) and the
    current frame; unused branches kRefNone, each group's channel indices in its own words."""
    max_groups = L.count("rie_encode", "out")
    max_idx = L.count("rie_encode", "idx") // max_groups
    if len(groups) > max_groups or any(len(g) > max_idx for g in groups):
        raise GastrtError(f"rie_encode: at most {max_groups} groups of {max_idx} channels on CUDA")
    idx = [v for g in groups for v in list(g) + [0] * (max_idx - len(g))]
    return L.encode("rie_encode", x=x, out=list(outs) + [L.ref_none] * (max_groups - len(groups)), current=current,
                    n=n, t=t, cin=cin, groups=len(groups), len=[len(g) for g in groups], idx=idx)


def _assemble_record(L, op, ins: list, out: int, srcs: list[int]) -> list[int]:
    """output_assemble: joint q of the output is joint jj of source src_of (unused sources kRefNone)."""
    nn, _, tt, _ = ins[0]
    joints = op.attrs["sources"]
    max_src = L.count("output_assemble", "src")
    if len(ins) > max_src or len(joints) > L.count("output_assemble", "jj"):
        raise GastrtError("output_assemble: too many sources / joints for the CUDA kernel")
    return L.encode("output_assemble", out=out, n=nn, t=tt, k=len(joints), nsrc=len(ins),
                    src=srcs + [L.ref_none] * (max_src - len(ins)), ch=[s[3] for s in ins],
                    src_of=[int(s) for s, _ in joints], jj=[int(q) for _, q in joints])


# ---- streaming ------------------------------------------------------------------------------------
def ring_nbytes(b, nv: int, esize: int) -> int:
    """Bytes of buffer ``b``'s ring (the stream column geometry's buffer: g, hist, c) over ``nv``
    virtual slots."""
    return nv * b.g * b.hist * b.c * esize


def lower_stream(plan: Plan, geo, nb: int, nv: int, wids: dict, dtype_code: int, gast_scratch=None,
                 plan_name: str = "pos") -> Lowered:
    """Lower one streaming push (the stream's column geometry ``geo``) for ``nb`` rows over rings
    of ``nv`` virtual slots. Input rows: the frame's J*F fp32 values + stream_table_cols int32
    words (virtual slot or -1, column counter low / high, fresh) stored bit for bit; output rows:
    the new output column, J_out*3 fp32. The rings come first in the arena, in geometry order,
    so every bucket's program finds them at the same offsets; they persist between pushes."""
    L = program_layout()
    tcols = L.stream_table_cols
    max_taps = L.count("ring_gather", "lag")
    esize = dtype_bytes(dtype_code)
    index = {id(op): i for i, op in enumerate(plan.ops)}
    alloc = new_arena()
    rings = {b.name: alloc.alloc(ring_nbytes(b, nv, esize)) for b in geo.bufs if b.hist > 1}
    table = alloc.alloc(nb * tcols * 4)
    cols = {b.name: alloc.alloc(nb * b.g * b.c * esize) for b in geo.bufs}
    placed = {"table": (table, (nb, tcols))}
    placed.update({f"ring:{b.name}": (rings[b.name], (nv, b.g, b.hist, b.c)) for b in geo.bufs if b.hist > 1})
    placed.update({b.name: (cols[b.name], (nb, b.g, b.c)) for b in geo.bufs})
    code: list[int] = []

    def write(b) -> None:
        if b.hist > 1:
            code.extend(L.encode("ring_write", col=cols[b.name], ring=rings[b.name], table=table, n=nb, nv=nv,
                                 g=b.g, c=b.c, h=b.hist))

    def gather(b, lags, temps: list) -> int:
        """The columns ``lags`` back of every row's slot into a temporary [nb, g, k, c] (released
        by the caller through ``temps`` after the op that reads it)."""
        lags = [int(v) for v in lags]
        if len(lags) > max_taps:
            raise GastrtError(f"a conv of {len(lags)} taps: the CUDA stream gathers at most {max_taps}")
        size = nb * b.g * len(lags) * b.c * esize
        off = alloc.alloc(size)
        temps.append((off, size))
        code.extend(L.encode("ring_gather", ring=rings[b.name], dst=off, table=table, n=nb, nv=nv, g=b.g, c=b.c,
                             h=b.hist, k=len(lags), lag=lags))
        return off

    inp = geo.input
    jf = inp.g * inp.c
    code += L.encode("stream_in", src=L.ref_input, col=cols[inp.name], table=table, n=nb, jf=jf)
    write(inp)
    for st in geo.steps:
        if st[0] == "conv":
            _, op, x, out, kk, lags, act, res, rlag = st
            temps: list = []
            xo = cols[x.name] if kk == 1 else gather(x, lags, temps)
            if res is None:
                ro, t_res = L.ref_none, 0
            else:
                ro, t_res = (cols[res.name] if rlag == 0 else gather(res, [rlag], temps)), 1
            w = wids[(plan_name, index[id(op)])]
            code += L.encode_group("conv", [dict(
                x=xo, w=w["w"], b=w["b"], res=ro, y=cols[out.name], n_seq=nb * x.g, t_in=1, t_out=1, t_res=t_res,
                t_ypitch=1, ci=kk * x.c, co=out.c, k=1, stride=1, dilation=1, res_offset=0, res_stride=1,
                ldy=out.c, act=ACT_CODE[act])])
            for o, sz in temps:
                alloc.release(o, sz)
        else:
            _, op, x, out = st
            h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
            sb = int(gast_scratch(nb, x.g, 1, x.c, h, gc)) if gast_scratch is not None else 0
            so = alloc.alloc(sb) if sb > 0 else L.ref_none
            code += L.encode("gast_block", **gast_fields(cols[x.name], cols[out.name], so, sb, nb, x.g, 1, x.c, op,
                                                         wids[(plan_name, index[id(op)])]))
            if sb > 0:
                alloc.release(so, sb)
        write(out)
    o = geo.output
    code += L.encode("layout", src=cols[o.name], dst=L.ref_output, n=nb, a=1, b=1, f=o.g * o.c, swap=0,
                     src_dtype=dtype_code, dst_dtype=0)
    return Lowered(np.asarray(code, dtype=np.int64), max(alloc.top, ALIGN), int(nb), jf + tcols,
                   o.g * o.c, (geo.out_joints, 3), placed, [])
