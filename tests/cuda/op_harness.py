"""OpHarness: one plan op as a single-op CUDA program on arena buffers, for the kernel tests
(test_cuda_kernels.py) and the per-layer GPU benchmark (benchmarks/bench_gpu.py). Records are
encoded by field name from the executor's layout (gastrt.backends.cuda.records)."""
from __future__ import annotations

import numpy as np

from gastrt.backends.base import native_module
from gastrt.backends.cuda.lowering import (ACT_CODE, DTYPE_CODE, dtype_bytes, gast_fields, prod,
                                           new_arena, rie_record, upload_gast_weights)
from gastrt.backends.cuda.records import program_layout
from gastrt.engine_file import from_bf16_bits, to_bf16_bits
from gastrt.plan import conv_geometry


def to_bytes(a: np.ndarray, dtype_code: int) -> np.ndarray:
    """a as the raw bytes of engine dtype ``dtype_code`` (0 fp32, 1 fp16, 2 bf16)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    if dtype_code == 1:
        a = a.astype(np.float16)
    elif dtype_code == 2:
        a = to_bf16_bits(a)
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def from_bytes(b: np.ndarray, shape, dtype_code: int) -> np.ndarray:
    if dtype_code == 0:
        return b.view(np.float32).reshape(shape).copy()
    if dtype_code == 1:
        return b.view(np.float16).astype(np.float32).reshape(shape)
    return from_bf16_bits(b.view(np.uint16)).reshape(shape)


def gast_weight_shapes(j: int, c: int, h: int, gc: int) -> dict:
    return {"loc_w": (c, 4 * c), "glb_u": (c, 2 * h), "glb_g_w": (c, h * gc), "glb_c": (2 * h,),
            "glb_g_b": (h * gc,), "loc_diag": (2, j, c), "loc_off": (2, j, j, c), "loc_b": (2 * c,),
            "loc_cat_w": (2 * c, c), "loc_cat_b": (c,), "glb_ck": (h, j, j), "glb_cat_w": (h * gc, c),
            "glb_cat_b": (c,), "cat_w": (3 * c, 2 * c), "cat_b": (2 * c,)}


class OpHarness:
    """Runs one plan op on the GPU on arena buffers: inputs written, outputs poisoned (0xFF bytes:
    NaN in every dtype) before the call, read back after. Mirrors numpy_backend's op functions."""

    def __init__(self, precision: str = "fp32", device: int = 0, engine=None):
        self.mod = native_module()
        self.layout = program_layout()
        self.dtype = DTYPE_CODE[precision]
        self.esize = dtype_bytes(self.dtype)
        self.eng = engine if engine is not None else self.mod.CudaEngine(int(device), self.dtype)
        self.use_graph = False

    def _w(self, a, engine_dtype: bool) -> int:
        return int(self.eng.add_weight(np.ascontiguousarray(a, dtype=np.float32).ravel(), engine_dtype))

    def _run(self, code: list[int], arena: int, writes: dict, reads: dict, f32: set = frozenset()):
        """writes: offset -> array (engine dtype unless offset in f32); reads: name -> (offset, shape)."""
        code = np.asarray(code, dtype=np.int64)
        self.eng.reserve_arena(arena)
        for name, (o, shape) in reads.items():
            self.eng.arena_fill(o, prod(shape) * self.esize, 0xFF)
        for o, a in writes.items():
            self.eng.arena_write(o, to_bytes(a, 0 if o in f32 else self.dtype))
        pid = self.eng.create_program(code, arena, 1, 0, 0)
        try:
            self.eng.run_arena(pid, self.use_graph)
            out = {}
            for name, (o, shape) in reads.items():
                buf = np.empty(prod(shape) * self.esize, np.uint8)
                self.eng.arena_read(o, buf)
                out[name] = from_bytes(buf, shape, self.dtype)
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
            block = to_bytes(np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32) * 0.5, self.dtype)
            for off in range(0, arena, block.size):
                self.eng.arena_write(off, block[:min(block.size, arena - off)])
        pid = self.eng.create_program(np.asarray(code, dtype=np.int64), arena, 1, 0, 0)
        try:
            return list(self.eng.time_program(pid, iters, warmup, use_graph))
        finally:
            self.eng.destroy_program(pid)

    def _conv_fields(self, op, alloc: x_shape, w: int, b: int, co: int, mode: str,
                     res_t: int | None) -> tuple[dict, int, int, int | None]:
        """(conv record fields, x offset, y offset, residual offset or None) of one conv."""
        n, g, t, ci = x_shape
        geo = conv_geometry(op, mode)
        k = int(op.attrs["k"])
        to = (t - ((k - 1) * geo.dilation + 1)) // geo.stride + 1
        xo = alloc.alloc(n * g * t * ci * self.esize)
        ro = None
        res = dict(res=self.layout.ref_none, t_res=0, res_offset=0, res_stride=1)
        if res_t is not None:
            ro = alloc.alloc(n * g * res_t * co * self.esize)
            res = dict(res=ro, t_res=res_t, res_offset=geo.res_offset, res_stride=geo.res_stride)
        yo = alloc.alloc(n * g * to * co * self.esize)
        f = dict(x=xo, w=w, b=b, y=yo, n_seq=n * g, t_in=t, t_out=to, t_ypitch=to, ci=ci, co=co, k=k,
                 stride=geo.stride, dilation=geo.dilation, ldy=co, act=ACT_CODE[op.attrs.get("act", "none")], **res)
        return f, xo, yo, ro

    def conv_code(self, op, x_shape, co: int, mode: str, res_t: int | None = None) -> tuple[list[int], int]:
        """(program, arena bytes) of one conv (random weights, zero bias) x [N,G,T,Ci] -> [N,G,To,co]."""
        k, ci = int(op.attrs["k"]), x_shape[3]
        rng = np.random.default_rng(0)   # random weights: see time_program's random_data
        w = self._w((rng.standard_normal((k * ci, co)) * 0.05).astype(np.float32), True)
        b = self._w(np.zeros(co, np.float32), False)
        alloc = new_arena()
        f, _, _, _ = self._conv_fields(op, alloc, x_shape, w, b, co, mode, res_t)
        return self.layout.encode_group("conv", [f]), alloc.top

    def _gast_code(self, op, x_shape, W: dict) -> tuple[list[int], int, int, int]:
        """(program, arena bytes, x offset, y offset) of one GAST block with weights W by role."""
        n, j, t, c = x_shape
        h, gc = int(op.attrs["heads"]), int(op.attrs["head_channels"])
        ids = upload_gast_weights(self._w, W)
        alloc = new_arena()
        xo = alloc.alloc(n * j * t * c * self.esize)
        yo = alloc.alloc(n * j * t * 2 * c * self.esize)
        sb = int(self.eng.gast_scratch_bytes(n, j, t, c, h, gc))
        so = alloc.alloc(sb) if sb > 0 else self.layout.ref_none
        code = self.layout.encode("gast_block", **gast_fields(xo, yo, so, sb, n, j, t, c, op, ids))
        return code, alloc.top, xo, yo

    def gast_code(self, op, x_shape) -> tuple[list[int], int]:
        """(program, arena bytes) of one GAST block on zero data and small random weights."""
        n, j, t, c = x_shape
        rng = np.random.default_rng(0)
        shapes = gast_weight_shapes(j, c, int(op.attrs["heads"]), int(op.attrs["head_channels"]))
        W = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}
        code, arena, _, _ = self._gast_code(op, x_shape, W)
        return code, arena

    def conv_group(self, problems: list[dict], mode: str) -> list[np.ndarray]:
        """problems: dicts with op, x [N,G,T,Ci], w [k*Ci,Co], b [Co], res (or None): one grouped launch."""
        alloc = new_arena()
        writes, reads, fields = {}, {}, []
        for q, pr in enumerate(problems):
            op, x, w, b, res = pr["op"], pr["x"], pr["w"], pr["b"], pr.get("res")
            co = w.shape[1]
            f, xo, yo, ro = self._conv_fields(op, alloc, x.shape, self._w(w, True), self._w(b, False), co, mode,
                                              None if res is None else res.shape[2])
            writes[xo] = x
            if ro is not None:
                writes[ro] = res
            reads[q] = (yo, (x.shape[0], x.shape[1], f["t_out"], co))
            fields.append(f)
        out = self._run(self.layout.encode_group("conv", fields), alloc.top, writes, reads)
        return [out[q] for q in range(len(problems))]

    def conv(self, op, x, w, b, res, mode: str) -> np.ndarray:
        return self.conv_group([{"op": op, "x": x, "w": w, "b": b, "res": res}], mode)[0]

    def gast_block(self, op, x: np.ndarray, W: dict, fused: int = -1) -> np.ndarray:
        self.eng.set_option("gast_fused", int(fused))
        n, j, t, c = x.shape
        code, arena, xo, yo = self._gast_code(op, x.shape, W)
        return self._run(code, arena, {xo: x}, {"y": (yo, (n, j, t, 2 * c))})["y"]

    def rie_encode(self, op, x: np.ndarray) -> list[np.ndarray]:
        """x [N, T, 17, 2] (fp32, as the user's input) -> branch inputs + current, engine dtype."""
        n, t, j, f = x.shape
        groups = [list(map(int, g)) for g in op.attrs["groups"]]
        alloc = new_arena()
        xo = alloc.alloc(x.size * 4)
        outs = [alloc.alloc(n * t * 3 * len(g) * self.esize) for g in groups]
        cur = alloc.alloc(n * j * f * self.esize)
        code = rie_record(self.layout, groups, xo, outs, cur, n, t, j * f)
        reads = {q: (o, (n, 1, t, 3 * len(g))) for q, (o, g) in enumerate(zip(outs, groups))}
        reads["cur"] = (cur, (n, 1, 1, j * f))
        r = self._run(code, alloc.top, {xo: x}, reads, f32={xo})
        return [r[q] for q in range(len(groups))] + [r["cur"]]

    def gast_fused(self, op, x_shape) -> bool:
        n, j, t, c = x_shape
        return bool(self.eng.gast_fused(j, c, int(op.attrs["heads"]), int(op.attrs["head_channels"])))
