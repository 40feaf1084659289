"""A NumPy simulator of the native CUDA engine (``_native.CudaEngine``), same Python interface.

It interprets program bytecode (csrc/cuda/cuda_ops.h) on a bytes arena with the C++ executor's
rules: records validated against the arena / weights like executor.cu's Checker, IO steps (the
ones reading the user's input or writing the user's output) run with the real batch n and the
body with the program's max_n, activations stored in the engine dtype, GEMM operands rounded to
it. Each op is computed from the record's fields (not from the plan), so the test that runs
CudaBackend on this simulator checks the whole Python half of the CUDA backend (lowering,
scheduling, arena allocation, buckets, chunking, program cache) against the NumPy executor
without a GPU. The kernels themselves are checked only by tests/cuda/test_cuda_kernels.py on a GPU.
"""
from __future__ import annotations

import ctypes

import numpy as np

from gastrt.backends import cuda as C
from gastrt.backends.numpy_backend import gast_block as np_gast_block
from gastrt.engine_file import from_bf16_bits, to_bf16_bits
from gastrt.plan import LRELU_SLOPE, Op

_NP = {0: np.float32, 1: np.float16, 2: np.uint16}


def _round(a: np.ndarray, dt: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if dt == 1:
        return a.astype(np.float16).astype(np.float32)
    if dt == 2:
        return from_bf16_bits(to_bf16_bits(a))
    return a


def _act(y, act):
    if act == 1:
        return np.maximum(y, 0)
    if act == 2:
        return np.where(y >= 0, y, y * np.float32(LRELU_SLOPE)).astype(np.float32)
    return y


class SimEngine:
    # the fused / multi-kernel choice of gast_block.cu for an sm_90 GPU (227 KB shared memory)
    SMEM_OPTIN = 227 * 1024

    def __init__(self, device: int = 0, dtype: int = 0):
        self._dev, self._dt = device, dtype
        self.weights: list[tuple[np.ndarray, int]] = []
        self.arena = np.zeros(0, np.uint8)
        self.progs: dict[int, dict] = {}
        self.next_id = 1
        self.opts = {"gast_fused": -1, "gast_scratch_budget": 256 << 20, "arena_limit": -1}
        self.runs = []  # (program id, n, use_graph) of every run (tests inspect it)
        self.device_runs = []  # (program id, n, x ptr, y ptr, stream, has_ext) of every run_device
        self.syncs = 0

    # -- identity ------------------------------------------------------------------------------
    def device(self):
        return self._dev

    def dtype(self):
        return self._dt

    def device_name(self):
        return "simulator"

    def synchronize(self):
        self.syncs += 1

    @property
    def esize(self):
        return 4 if self._dt == 0 else 2

    # -- weights / arena -----------------------------------------------------------------------
    def add_weight(self, a, engine_dtype):
        a = np.asarray(a)
        assert a.dtype == np.float32 and a.ndim == 1, (a.dtype, a.shape)
        dt = self._dt if engine_dtype else 0
        self.weights.append((_round(a, dt), dt))
        return len(self.weights) - 1

    def weight_count(self):
        return len(self.weights)

    def reserve_arena(self, nbytes):
        if nbytes > self.arena.size:
            lim = self.opts["arena_limit"]
            if lim >= 0 and nbytes > lim:
                raise RuntimeError(f"gastrt: CUDA out of memory on cuda:0: the workspace needs {nbytes} bytes")
            self.arena = np.zeros(nbytes, np.uint8)  # like the executor: a fresh, zeroed arena

    def arena_bytes(self):
        return self.arena.size

    def arena_write(self, off, data):
        data = np.asarray(data)
        assert data.dtype == np.uint8
        self.arena[off:off + data.size] = data

    def arena_read(self, off, out):
        out[...] = self.arena[off:off + out.size]

    def arena_fill(self, off, nbytes, value):
        self.arena[off:off + nbytes] = value

    # -- options -------------------------------------------------------------------------------
    def set_option(self, name, value):
        if name not in self.opts:
            raise RuntimeError(f"gastrt: unknown option {name}")
        self.opts[name] = int(value)

    def get_option(self, name):
        return self.opts[name]

    def _fused_ok(self, j, c, h, gc):
        mode = self.opts["gast_fused"]
        if mode == 0 or self._dt == 0:
            return False
        hgc = h * gc
        if j < 1 or j > 64 or c % 16 or hgc % 16 or 2 * h > 64:
            return False
        a128 = lambda v: (v + 127) // 128 * 128  # noqa: E731  (gast_block.cu FusedLayout)
        es, f = self.esize, 64 // j
        total = (a128(64 * (c + 8) * es) + a128(64 * (max(2 * c, hgc) + 8) * es) + a128(64 * (2 * c + 8) * es)
                 + a128(64 * 68 * 4) + a128(2 * 32 * 72 * es) + a128(f * h * j * j * 4) + a128(64 * 8))
        if total > self.SMEM_OPTIN:
            return False
        return mode == 1 or c <= 128

    def gast_fused(self, j, c, h, gc):
        return self._fused_ok(j, c, h, gc)

    def gast_scratch_bytes(self, n, j, t, c, h, gc):
        if self._fused_ok(j, c, h, gc):
            return 0
        per_row = (4 * c + 2 * h + h * gc) + 2 * c + h * gc + 3 * c
        per_t = n * j * per_row * self.esize
        tc = max(1, min(self.opts["gast_scratch_budget"] // max(per_t, 1), t))
        return tc * per_t + 1024

    # -- programs ------------------------------------------------------------------------------
    def create_program(self, code, arena_bytes, max_n, in_per_n, out_per_n):
        code = np.asarray(code)
        assert code.dtype == np.int64
        steps, i = [], 0
        self._rows = (max_n, in_per_n)       # the stream ops' record must cover every row
        while i < code.size:
            op, nf = int(code[i]), int(code[i + 1])
            assert i + 2 + nf <= code.size, "truncated record"
            f = [int(v) for v in code[i + 2:i + 2 + nf]]
            steps.append({"op": op, "f": f, "io": self._check(op, f, arena_bytes, max_n * in_per_n * 4,
                                                               max_n * out_per_n * 4)})
            i += 2 + nf
        b = 0
        while b < len(steps) and steps[b]["io"]:
            b += 1
        e = len(steps)
        while e > b and steps[e - 1]["io"]:
            e -= 1
        self.reserve_arena(arena_bytes)
        pid = self.next_id
        self.next_id += 1
        self.progs[pid] = {"steps": steps, "body": (b, e), "arena": arena_bytes, "max_n": max_n,
                           "in_per_n": in_per_n, "out_per_n": out_per_n}
        return pid

    def destroy_program(self, pid):
        self.progs.pop(pid, None)

    def describe_program(self, pid):
        return repr(self.progs[pid]["steps"])

    def _check(self, op, f, arena, in_cap, out_cap):
        es = self.esize
        io = [False]

        def buf(ref, nbytes, what, allow_none=False):
            if ref == C.REF_NONE:
                assert allow_none, what + " missing"
                return
            if ref in (C.REF_IN, C.REF_OUT):
                io[0] = True
                assert nbytes <= (in_cap if ref == C.REF_IN else out_cap), f"{what}: past the user's array"
                return
            assert ref >= 0 and ref % 16 == 0, f"{what}: bad offset {ref}"
            assert ref + nbytes <= arena, f"{what}: [{ref}, {ref + nbytes}) past the arena {arena}"

        def w(wid, count, dt, what):
            assert 0 <= wid < len(self.weights), f"{what}: bad weight id"
            a, d = self.weights[wid]
            assert a.size >= count and d == dt, f"{what}: weight size / dtype"

        if op == C.OP_LAYOUT:
            assert len(f) == C.LAYOUT_FIELDS
            cnt = f[2] * f[3] * f[4] * f[5]
            buf(f[0], cnt * (4 if f[7] == 0 else 2), "layout src")
            buf(f[1], cnt * (4 if f[8] == 0 else 2), "layout dst")
            if f[0] in (C.REF_IN, C.REF_OUT):
                assert f[7] == 0
            if f[1] in (C.REF_IN, C.REF_OUT):
                assert f[8] == 0
        elif op == C.OP_CONV:
            assert len(f) == 1 + f[0] * C.CONV_FIELDS and 1 <= f[0] <= C.MAX_GEMM_GROUP
            for q in range(f[0]):
                g = f[1 + q * C.CONV_FIELDS:1 + (q + 1) * C.CONV_FIELDS]
                nseq, t_in, t_out, t_res, typ, ci, co, k, st, dil, ro, rs, ldy = g[5:18]
                assert t_in >= (t_out - 1) * st + (k - 1) * dil + 1, "conv span"
                buf(g[0], nseq * t_in * ci * es, "conv x")
                w(g[1], k * ci * co, self._dt, "conv w")
                w(g[2], co, 0, "conv b")
                buf(g[3], nseq * t_res * co * es, "conv res", True)
                if g[3] != C.REF_NONE:
                    assert ro + (t_out - 1) * rs < t_res, "conv residual rows"
                buf(g[4], (((nseq - 1) * typ + t_out - 1) * ldy + co) * es, "conv y")
            assert not io[0]
        elif op == C.OP_GAST:
            assert len(f) == C.GAST_FIELDS
            n, j, t, c, h, gc = f[4:10]
            rows, ld1 = n * j * t, 4 * c + 2 * h + h * gc
            buf(f[0], rows * c * es, "gast x")
            buf(f[1], rows * 2 * c * es, "gast y")
            buf(f[2], f[3], "gast scratch", f[3] == 0)
            assert f[3] == self.gast_scratch_bytes(n, j, t, c, h, gc), "gast scratch size"
            for wid, cnt, dt in ((f[10], c * ld1, self._dt), (f[11], ld1, 0), (f[12], 2 * j * c, 0),
                                 (f[13], 2 * j * j * c, 0), (f[14], 2 * c, 0), (f[15], 2 * c * c, self._dt),
                                 (f[16], c, 0), (f[17], h * j * j, 0), (f[18], h * gc * c, self._dt),
                                 (f[19], c, 0), (f[20], 6 * c * c, self._dt), (f[21], 2 * c, 0)):
                w(wid, cnt, dt, "gast weight")
            assert not io[0]
        elif op == C.OP_RIE:
            assert len(f) == C.RIE_FIELDS
            n, t, cin, groups = f[7:11]
            buf(f[0], n * t * cin * 4, "rie x")
            for g in range(groups):
                assert f[1 + g] >= 0
                buf(f[1 + g], n * t * 3 * f[11 + g] * es, "rie out")
            assert f[6] >= 0
            buf(f[6], n * cin * es, "rie current")
        elif op == C.OP_COPY:
            assert len(f) == C.COPY_FIELDS
            rows, cols, sld, dld, doff = f[2:7]
            buf(f[0], ((rows - 1) * sld + cols) * es, "copy src")
            buf(f[1], ((rows - 1) * dld + doff + cols) * es, "copy dst")
            assert not io[0]
        elif op == C.OP_ASSEMBLE:
            assert len(f) == C.ASSEMBLE_FIELDS
            n, t, k, nsrc = f[1:5]
            buf(f[0], n * t * k * 12, "assemble out")
            for s in range(nsrc):
                assert f[5 + s] >= 0
                buf(f[5 + s], n * t * f[13 + s] * es, "assemble src")
        elif op == C.OP_STREAM_IN:
            assert len(f) == C.STREAM_IN_FIELDS and f[0] == C.REF_IN, "stream_in reads the user's input"
            n, jf = f[3:5]
            assert (n, jf + C.STREAM_TABLE_COLS) == self._rows, "stream_in covers all max_n rows"
            buf(f[0], n * (jf + C.STREAM_TABLE_COLS) * 4, "stream_in src")
            assert f[1] >= 0 and f[2] >= 0, "stream_in outputs live in the arena"
            buf(f[1], n * jf * es, "stream_in col")
            buf(f[2], n * C.STREAM_TABLE_COLS * 4, "stream_in table")
        elif op == C.OP_RING_WRITE:
            assert len(f) == C.RING_WRITE_FIELDS
            n, nv, g, c, h = f[3:8]
            assert n == self._rows[0], "ring_write covers all max_n rows"
            buf(f[0], n * g * c * es, "ring_write col")
            buf(f[1], nv * g * h * c * es, "ring_write ring")
            buf(f[2], n * C.STREAM_TABLE_COLS * 4, "ring_write table")
            assert not io[0]
        elif op == C.OP_RING_GATHER:
            assert len(f) == C.RING_GATHER_FIELDS
            n, nv, g, c, h, k = f[3:9]
            assert n == self._rows[0], "ring_gather covers all max_n rows"
            assert 1 <= k <= C.RING_MAX_TAPS and all(0 <= v < h for v in f[9:9 + k]), "ring_gather lags"
            buf(f[0], nv * g * h * c * es, "ring_gather ring")
            buf(f[1], n * g * k * c * es, "ring_gather dst")
            buf(f[2], n * C.STREAM_TABLE_COLS * 4, "ring_gather table")
            assert not io[0]
        else:
            raise AssertionError(f"unknown opcode {op}")
        return io[0]

    # -- execution -----------------------------------------------------------------------------
    def _view(self, ref, count, dt, io):
        """fp32 copy of `count` elements at ref."""
        if ref == C.REF_IN:
            return io["in"][:count].astype(np.float32)
        if ref == C.REF_OUT:
            return io["out"][:count].astype(np.float32)
        nb = 4 if dt == 0 else 2
        raw = self.arena[ref:ref + count * nb]
        if dt == 0:
            return raw.view(np.float32).copy()
        if dt == 1:
            return raw.view(np.float16).astype(np.float32)
        return from_bf16_bits(raw.view(np.uint16).copy())

    def _store(self, ref, flat_index, values, dt, io):
        values = np.asarray(values, np.float32)
        if ref == C.REF_OUT:
            io["out"][flat_index] = values
            return
        assert ref >= 0
        nb = 4 if dt == 0 else 2
        maxi = int(np.max(flat_index)) + 1
        raw = self.arena[ref:ref + maxi * nb]
        if dt == 0:
            raw.view(np.float32)[flat_index] = values
        elif dt == 1:
            raw.view(np.float16)[flat_index] = values.astype(np.float16)
        else:
            raw.view(np.uint16)[flat_index] = to_bf16_bits(values)

    def _w(self, wid):
        return self.weights[wid][0]

    def _exec(self, s, io, n_io):
        op, f, dt = s["op"], s["f"], self._dt
        if op == C.OP_LAYOUT:
            n = n_io if s["io"] else f[2]
            a, b, ff = f[3:6]
            src = self._view(f[0], n * a * b * ff, f[7], io).reshape(n, a, b, ff)
            if f[6]:
                src = src.transpose(0, 2, 1, 3)
            self._store(f[1], np.arange(src.size), src.reshape(-1), f[8], io)
        elif op == C.OP_CONV:
            for q in range(f[0]):
                g = f[1 + q * C.CONV_FIELDS:1 + (q + 1) * C.CONV_FIELDS]
                xr, wid, bid, rr, yr, nseq, t_in, t_out, t_res, typ, ci, co, k, st, dil, ro, rs, ldy, act = g
                x = self._view(xr, nseq * t_in * ci, dt, io).reshape(nseq, t_in, ci)
                w = self._w(wid)[:k * ci * co].reshape(k * ci, co)
                y = np.broadcast_to(self._w(bid)[:co], (nseq, t_out, co)).astype(np.float32)
                last = (t_out - 1) * st + 1
                for tau in range(k):
                    y = y + x[:, tau * dil:tau * dil + last:st, :] @ w[tau * ci:(tau + 1) * ci]
                y = _act(y, act)
                if rr != C.REF_NONE:
                    r = self._view(rr, nseq * t_res * co, dt, io).reshape(nseq, t_res, co)
                    y = y + r[:, ro:ro + (t_out - 1) * rs + 1:rs, :]
                si, ti, ni = np.meshgrid(np.arange(nseq), np.arange(t_out), np.arange(co), indexing="ij")
                self._store(yr, ((si * typ + ti) * ldy + ni).reshape(-1), y.reshape(-1), dt, io)
        elif op == C.OP_GAST:
            n, j, t, c, h, gc = f[4:10]
            w1, b1 = self._w(f[10]), self._w(f[11])
            ld1 = 4 * c + 2 * h + h * gc
            w1 = w1[:c * ld1].reshape(c, ld1)
            W = {"loc_w": w1[:, :4 * c], "glb_u": w1[:, 4 * c:4 * c + 2 * h], "glb_g_w": w1[:, 4 * c + 2 * h:],
                 "glb_c": b1[4 * c:4 * c + 2 * h], "glb_g_b": b1[4 * c + 2 * h:ld1],
                 "loc_diag": self._w(f[12]).reshape(2, j, c), "loc_off": self._w(f[13]).reshape(2, j, j, c),
                 "loc_b": self._w(f[14]), "loc_cat_w": self._w(f[15]).reshape(2 * c, c),
                 "loc_cat_b": self._w(f[16]), "glb_ck": self._w(f[17]).reshape(h, j, j),
                 "glb_cat_w": self._w(f[18]).reshape(h * gc, c), "glb_cat_b": self._w(f[19]),
                 "cat_w": self._w(f[20]).reshape(3 * c, 2 * c), "cat_b": self._w(f[21])}
            x = self._view(f[0], n * j * t * c, dt, io).reshape(n, j, t, c)
            y = np_gast_block(Op("gast_block", [], [], {"heads": h, "head_channels": gc}), x, W)
            self._store(f[1], np.arange(y.size), y.reshape(-1), dt, io)
        elif op == C.OP_RIE:
            n = n_io if s["io"] else f[7]
            t, cin, groups = f[8:11]
            x = self._view(f[0], n * t * cin, 0, io).reshape(n, t, cin)
            centre = x[:, t // 2]
            for g in range(groups):
                idx = np.asarray(f[16 + g * C.RIE_MAX_IDX:16 + g * C.RIE_MAX_IDX + f[11 + g]])
                xs = x[:, :, idx]
                o = np.concatenate([xs, xs - x[:, :, idx % 2], xs - centre[:, None, idx]], axis=-1)
                self._store(f[1 + g], np.arange(o.size), o.reshape(-1), dt, io)
            self._store(f[6], np.arange(centre.size), centre.reshape(-1), dt, io)
        elif op == C.OP_COPY:
            rows, cols, sld, dld, doff = f[2:7]
            src = self._view(f[0], (rows - 1) * sld + cols, dt, io)
            r, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            self._store(f[1], (r * dld + doff + cc).reshape(-1), src[(r * sld + cc).reshape(-1)], dt, io)
        elif op == C.OP_ASSEMBLE:
            n = n_io if s["io"] else f[1]
            t, k, nsrc = f[2], f[3], f[4]
            srcs = [self._view(f[5 + q], n * t * f[13 + q], dt, io).reshape(n, t, f[13 + q]) for q in range(nsrc)]
            o = np.stack([srcs[f[21 + q]][:, :, 3 * f[53 + q]:3 * f[53 + q] + 3] for q in range(k)], axis=2)
            self._store(f[0], np.arange(o.size), o.reshape(-1), 0, io)
        elif op == C.OP_STREAM_IN:  # the table words move as bits (int32 stored in the fp32 input)
            n = n_io if s["io"] else f[3]
            jf, tc = f[4], C.STREAM_TABLE_COLS
            src = io["in"][:n * (jf + tc)].reshape(n, jf + tc)
            self._store(f[1], np.arange(n * jf), src[:, :jf].reshape(-1), dt, io)
            self.arena[f[2]:f[2] + n * tc * 4].view(np.int32)[:] = src[:, jf:].copy().view(np.int32).reshape(-1)
        elif op in (C.OP_RING_WRITE, C.OP_RING_GATHER):  # raw element moves, like the kernels
            n, nv, g, c, h = f[3:8]
            es = self.esize
            tab = self.arena[f[2]:f[2] + n * C.STREAM_TABLE_COLS * 4].view(np.int32).reshape(n, -1)
            slot = tab[:, 0].astype(np.int64)
            cnt = (tab[:, 2].astype(np.int64) << 32) | tab[:, 1].view(np.uint32).astype(np.int64)
            ring_ref = f[1] if op == C.OP_RING_WRITE else f[0]
            ring = self.arena[ring_ref:ring_ref + nv * g * h * c * es].reshape(nv, g, h, c * es)
            ok = (slot >= 0) & (slot < nv)
            if op == C.OP_RING_WRITE:
                col = self.arena[f[0]:f[0] + n * g * c * es].reshape(n, g, c * es)
                for r in np.flatnonzero(ok):
                    if tab[r, 3]:
                        ring[slot[r]] = col[r][:, None, :]
                    else:
                        ring[slot[r], :, cnt[r] % h] = col[r]
            else:
                k = f[8]
                lags = np.asarray(f[9:9 + k], np.int64)
                dst = self.arena[f[1]:f[1] + n * g * k * c * es].reshape(n, g, k, c * es)
                dst[:] = 0
                for r in np.flatnonzero(ok):
                    dst[r] = ring[slot[r]][:, (cnt[r] - lags) % h]
        else:
            raise AssertionError(op)

    def _run(self, pid, io, n, use_graph):
        p = self.progs[pid]
        assert 1 <= n <= p["max_n"], (n, p["max_n"])
        if any(s["op"] == C.OP_STREAM_IN for s in p["steps"]):
            assert n == p["max_n"], "a stream program runs on all of its rows"  # executor.cu exact_n
        self.reserve_arena(p["arena"])
        self.runs.append((pid, n, use_graph))
        b, e = p["body"]
        for i, s in enumerate(p["steps"]):
            body = b <= i < e
            self._exec(s, io, p["max_n"] if body and not s["io"] else n)

    def run_host(self, pid, x, y, n, use_graph):
        p = self.progs[pid]
        assert x.dtype == np.float32 and y.dtype == np.float32 and y.flags.c_contiguous
        assert x.size == n * p["in_per_n"] and y.size == n * p["out_per_n"], "run: sizes"
        out = np.full(y.size, np.nan, np.float32)
        self._run(pid, {"in": np.ascontiguousarray(x).reshape(-1), "out": out}, n, use_graph)
        y.reshape(-1)[...] = out

    def run_device(self, pid, x, y, n, ext_stream, has_ext, use_graph):
        """Device pointers: host memory stands in for device memory (HostMemoryModule, CAI arrays
        over NumPy). Reads n rows at x, writes n rows at y, as executor.cu's run_device."""
        p = self.progs[pid]
        assert x and y and isinstance(ext_stream, int), "run: null device pointer / stream handle"
        nin, nout = n * p["in_per_n"], n * p["out_per_n"]
        xin = np.ctypeslib.as_array((ctypes.c_float * nin).from_address(x)).copy()
        out = np.full(nout, np.nan, np.float32)
        self._run(pid, {"in": xin, "out": out}, n, use_graph)
        ctypes.memmove(y, out.ctypes.data, out.nbytes)
        self.device_runs.append((pid, n, x, y, ext_stream, has_ext))

    def run_arena(self, pid, use_graph):
        self._run(pid, {}, self.progs[pid]["max_n"], use_graph)


class HostMemoryModule:
    """native_module()'s device-memory functions on host memory, for CudaArray (the array
    run_device returns for __cuda_array_interface__ inputs) in simulator tests."""

    def __init__(self):
        self.allocs: dict[int, np.ndarray] = {}

    def cuda_malloc(self, device, nbytes):
        buf = np.full(max(int(nbytes), 1), 0xCD, np.uint8)
        self.allocs[int(buf.ctypes.data)] = buf
        return int(buf.ctypes.data)

    def cuda_free(self, device, ptr):
        assert self.allocs.pop(int(ptr), None) is not None, "cuda_free of an unknown pointer"

    def cuda_memcpy_htod(self, device, dst, src):
        ctypes.memmove(int(dst), src.ctypes.data, src.nbytes)

    def cuda_memcpy_dtoh(self, device, dst, src):
        ctypes.memmove(dst.ctypes.data, int(src), dst.nbytes)


class HostCAI:
    """A NumPy array behind __cuda_array_interface__ (no ``device`` attribute: the engine's
    device is assumed), standing in for a CUDA array from a CAI-only library."""

    def __init__(self, a, stream=None):
        self.a = np.ascontiguousarray(a, dtype=np.float32)
        self.stream = stream

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.a.shape, "typestr": "<f4", "data": (int(self.a.ctypes.data), False), "version": 3,
                "strides": None, "stream": self.stream}
