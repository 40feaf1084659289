"""A NumPy simulator of the native CUDA engine (``_native.CudaEngine``), same Python interface.

It interprets program bytecode (records of csrc/cuda/program_records.h, decoded by field name
from the executor's layout) on a bytes arena with the C++ executor's rules: records validated
against the arena / weights like program.cu's checks, IO steps (the ones reading the user's input
or writing the user's output) run with the real batch n and the body with the program's max_n,
activations stored in the engine dtype, GEMM operands rounded to it. Each op is computed from the
record's fields (not from the plan), so the test that runs CudaBackend on this simulator checks
the whole Python half of the CUDA backend (lowering, scheduling, arena allocation, buckets,
chunking, program cache) against the NumPy executor without a GPU. The kernels themselves are
checked only by tests/cuda/test_cuda_kernels.py on a GPU.
"""
from __future__ import annotations

import ctypes

import numpy as np

from gastrt.backends.base import native_module
from gastrt.backends.cuda.lowering import MAX_GEMM_GROUP
from gastrt.backends.cuda.records import program_layout
from gastrt.backends.numpy_backend import gast_block as np_gast_block
from gastrt.engine_file import from_bf16_bits, to_bf16_bits
from gastrt.errors import OutOfMemoryError
from gastrt.plan import LRELU_SLOPE, Op, gast_projection_columns

L = program_layout()
REF_NONE, REF_IN, REF_OUT, TABLE_COLS = L.ref_none, L.ref_input, L.ref_output, L.stream_table_cols

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
        self.opts = {"gast_fused": -1, "gast_scratch_budget": 256 << 20, "arena_limit": -1, "gemm_tactic": 1}
        self.tactic_log: list[dict] = []   # gemm_tactics()
        self._tactics: dict = {}           # decision per conv problem (engine.cu tactic_key)
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
                raise OutOfMemoryError(f"gastrt: CUDA out of memory on cuda:0: the workspace needs {nbytes} bytes")
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
        if name == "gemm_tactic" and int(value) not in (0, 1, 2):
            raise ValueError("gemm_tactic: expected 0 (custom), 1 (auto) or 2 (cublaslt)")
        self.opts[name] = int(value)

    # -- GEMM tactics (engine.cu assign_tactics; the cuBLASLt calls of csrc/cuda/gemm_tactic.h) --
    def gemm_tactics(self):
        return [dict(d) for d in self.tactic_log]

    def _tactic(self, g):
        """The cuBLASLt calls of conv problem g, or None (our kernel). Mode 2 takes cuBLASLt
        wherever gemm_tactic.h maps the problem (the C++ engine also requires its check against
        the float64 reference to pass); mode 1 (auto) keeps our kernel: nothing to time here."""
        mode = self.opts["gemm_tactic"]
        if mode == 0:
            return None
        key = (mode,) + tuple(sorted((k, (v if v < 0 else v % 256) if k in ("x", "y") else v)
                                     for k, v in g.items() if k not in ("res",))) + ((g["res"] != REF_NONE),)
        if key not in self._tactics:
            calls, why = native_module().cuda_lt_conv_calls(g, self._dt)
            if why is None and (g["x"] < 0 or g["y"] < 0):
                calls, why = [], "reads or writes the caller's arrays (prologue / epilogue)"
            if why is None and mode == 1:
                calls, why = [], "simulator: nothing to time, custom kept"
            self.tactic_log.append({"shape": f"M={g['n_seq'] * g['t_out']} K={g['k'] * g['ci']} N={g['co']}",
                                    "chosen": "cublaslt" if calls else "custom", "note": why or "",
                                    "custom_us": -1.0, "cublaslt_us": -1.0, "custom_err": -1.0,
                                    "cublaslt_err": -1.0})
            self._tactics[key] = calls or None
        return self._tactics[key]

    def _lt_conv(self, g, calls, io):
        """Runs conv problem g as its cuBLASLt calls (column-major, gemm_tactic.h's element
        offsets), each bounded by the record's own buffers as cuBLASLt would read them."""
        dt = self._dt
        nseq, t_in, ci, co = g["n_seq"], g["t_in"], g["ci"], g["co"]
        x_len = nseq * t_in * ci
        y_len = ((nseq - 1) * g["t_ypitch"] + g["t_out"] - 1) * g["ldy"] + co
        w_len = g["k"] * ci * co
        x = self._view(g["x"], x_len, dt, io)
        w = self._w(g["w"])[:w_len]
        bias = _round(self._w(g["b"])[:co], dt)  # cuBLASLt's bias is in the output type
        y = self._view(g["y"], y_len, dt, io)
        for c in calls:
            m, n, k = c["m"], c["n"], c["k"]
            ai = c["a_offset"] + np.arange(k)[None, :] * c["lda"] + np.arange(m)[:, None]          # [m, k]
            assert c["lda"] >= m and c["ldb"] >= k and c["ldd"] >= m, c                          # cuBLASLt's ld rules
            assert ai.max() < w_len and ai.min() >= 0, ("A outside w", c)
            A = w[ai]
            for b in range(c["batch"]):
                bi = c["b_offset"] + b * c["b_batch_stride"] + np.arange(n)[None, :] * c["ldb"] \
                    + np.arange(k)[:, None]                                                        # [k, n]
                di = b * c["d_batch_stride"] + np.arange(n)[None, :] * c["ldd"] + np.arange(m)[:, None]
                assert bi.min() >= 0 and bi.max() < x_len, ("B outside x", c)
                assert di.min() >= 0 and di.max() < y_len, ("D outside y", c)
                acc = A.astype(np.float64) @ x[bi].astype(np.float64)
                if c["accumulate"]:
                    acc += y[di]
                if c["epilogue"] >= 1:
                    acc += bias[:, None]
                if c["epilogue"] == 2:
                    acc = np.maximum(acc, 0)
                y[di] = _round(acc.astype(np.float32), dt)  # D is stored in the engine dtype
        self._store(g["y"], np.arange(y_len), y, dt, io)

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
        self._rows = (max_n, in_per_n)       # the stream ops' record must cover every row
        steps = []
        for name, structs in L.decode_program(code):
            r = structs if name == "conv" else structs[0]
            steps.append({"op": name, "r": r, "io": self._check(name, r, arena_bytes, max_n * in_per_n * 4,
                                                                 max_n * out_per_n * 4)})
            if name == "conv":
                lt = [self._tactic(g) for g in r]
                steps[-1]["lt"] = lt if any(c is not None for c in lt) else None
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

    def _check(self, op, r, arena, in_cap, out_cap):
        """executor program.cu's checks of record ``op`` (fields ``r`` by name; conv: a list)."""
        es = self.esize
        io = [False]

        def buf(ref, nbytes, what, allow_none=False):
            if ref == REF_NONE:
                assert allow_none, what + " missing"
                return
            if ref in (REF_IN, REF_OUT):
                io[0] = True
                assert nbytes <= (in_cap if ref == REF_IN else out_cap), f"{what}: past the user's array"
                return
            assert ref >= 0 and ref % 16 == 0, f"{what}: bad offset {ref}"
            assert ref + nbytes <= arena, f"{what}: [{ref}, {ref + nbytes}) past the arena {arena}"

        def w(wid, count, dt, what):
            assert 0 <= wid < len(self.weights), f"{what}: bad weight id"
            a, d = self.weights[wid]
            assert a.size >= count and d == dt, f"{what}: weight size / dtype"

        if op == "layout":
            cnt = r["n"] * r["a"] * r["b"] * r["f"]
            buf(r["src"], cnt * (4 if r["src_dtype"] == 0 else 2), "layout src")
            buf(r["dst"], cnt * (4 if r["dst_dtype"] == 0 else 2), "layout dst")
            if r["src"] in (REF_IN, REF_OUT):
                assert r["src_dtype"] == 0
            if r["dst"] in (REF_IN, REF_OUT):
                assert r["dst_dtype"] == 0
        elif op == "conv":
            assert 1 <= len(r) <= MAX_GEMM_GROUP
            for g in r:
                nseq, t_out, st, dil, k, ci, co = (g[q] for q in ("n_seq", "t_out", "stride", "dilation", "k", "ci",
                                                                   "co"))
                assert g["t_in"] >= (t_out - 1) * st + (k - 1) * dil + 1, "conv span"
                buf(g["x"], nseq * g["t_in"] * ci * es, "conv x")
                w(g["w"], k * ci * co, self._dt, "conv w")
                w(g["b"], co, 0, "conv b")
                buf(g["res"], nseq * g["t_res"] * co * es, "conv res", True)
                if g["res"] != REF_NONE:
                    assert g["res_offset"] + (t_out - 1) * g["res_stride"] < g["t_res"], "conv residual rows"
                buf(g["y"], (((nseq - 1) * g["t_ypitch"] + t_out - 1) * g["ldy"] + co) * es, "conv y")
            assert not io[0]
        elif op == "gast_block":
            n, j, t, c, h, gc = (r[k] for k in ("n", "j", "t", "c", "heads", "gc"))
            rows, ld1 = n * j * t, 4 * c + 2 * h + h * gc
            buf(r["x"], rows * c * es, "gast x")
            buf(r["y"], rows * 2 * c * es, "gast y")
            buf(r["scratch"], r["scratch_bytes"], "gast scratch", r["scratch_bytes"] == 0)
            assert r["scratch_bytes"] == self.gast_scratch_bytes(n, j, t, c, h, gc), "gast scratch size"
            for role, cnt, dt in (("w1", c * ld1, self._dt), ("b1", ld1, 0), ("loc_diag", 2 * j * c, 0),
                                  ("loc_off", 2 * j * j * c, 0), ("loc_b", 2 * c, 0),
                                  ("loc_cat_w", 2 * c * c, self._dt), ("loc_cat_b", c, 0), ("glb_ck", h * j * j, 0),
                                  ("glb_cat_w", h * gc * c, self._dt), ("glb_cat_b", c, 0),
                                  ("cat_w", 6 * c * c, self._dt), ("cat_b", 2 * c, 0)):
                w(r[role], cnt, dt, "gast " + role)
            assert not io[0]
        elif op == "rie_encode":
            n, t, cin = r["n"], r["t"], r["cin"]
            buf(r["x"], n * t * cin * 4, "rie x")
            for g in range(r["groups"]):
                assert r["out"][g] >= 0
                buf(r["out"][g], n * t * 3 * r["len"][g] * es, "rie out")
            assert r["current"] >= 0
            buf(r["current"], n * cin * es, "rie current")
        elif op == "concat":
            rows, cols = r["rows"], r["cols"]
            buf(r["src"], ((rows - 1) * r["src_ld"] + cols) * es, "copy src")
            buf(r["dst"], ((rows - 1) * r["dst_ld"] + r["dst_off"] + cols) * es, "copy dst")
            assert not io[0]
        elif op == "output_assemble":
            n, t = r["n"], r["t"]
            buf(r["out"], n * t * r["k"] * 12, "assemble out")
            for s in range(r["nsrc"]):
                assert r["src"][s] >= 0
                buf(r["src"][s], n * t * r["ch"][s] * es, "assemble src")
        elif op == "stream_in":
            assert r["src"] == REF_IN, "stream_in reads the user's input"
            n, jf = r["n"], r["jf"]
            assert (n, jf + TABLE_COLS) == self._rows, "stream_in covers all max_n rows"
            buf(r["src"], n * (jf + TABLE_COLS) * 4, "stream_in src")
            assert r["col"] >= 0 and r["table"] >= 0, "stream_in outputs live in the arena"
            buf(r["col"], n * jf * es, "stream_in col")
            buf(r["table"], n * TABLE_COLS * 4, "stream_in table")
        elif op == "ring_write":
            n, nv, g, c, h = (r[k] for k in ("n", "nv", "g", "c", "h"))
            assert n == self._rows[0], "ring_write covers all max_n rows"
            buf(r["col"], n * g * c * es, "ring_write col")
            buf(r["ring"], nv * g * h * c * es, "ring_write ring")
            buf(r["table"], n * TABLE_COLS * 4, "ring_write table")
            assert not io[0]
        elif op == "ring_gather":
            n, nv, g, c, h, k = (r[q] for q in ("n", "nv", "g", "c", "h", "k"))
            assert n == self._rows[0], "ring_gather covers all max_n rows"
            assert 1 <= k <= len(r["lag"]) and all(0 <= v < h for v in r["lag"][:k]), "ring_gather lags"
            buf(r["ring"], nv * g * h * c * es, "ring_gather ring")
            buf(r["dst"], n * g * k * c * es, "ring_gather dst")
            buf(r["table"], n * TABLE_COLS * 4, "ring_gather table")
            assert not io[0]
        else:
            raise AssertionError(f"unknown record {op}")
        return io[0]

    # -- execution -----------------------------------------------------------------------------
    def _view(self, ref, count, dt, io):
        """fp32 copy of `count` elements at ref."""
        if ref == REF_IN:
            return io["in"][:count].astype(np.float32)
        if ref == REF_OUT:
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
        if ref == REF_OUT:
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
        op, r, dt = s["op"], s["r"], self._dt
        if op == "layout":
            n = n_io if s["io"] else r["n"]
            a, b, ff = r["a"], r["b"], r["f"]
            src = self._view(r["src"], n * a * b * ff, r["src_dtype"], io).reshape(n, a, b, ff)
            if r["swap"]:
                src = src.transpose(0, 2, 1, 3)
            self._store(r["dst"], np.arange(src.size), src.reshape(-1), r["dst_dtype"], io)
        elif op == "conv":
            for gi, g in enumerate(r):
                if s.get("lt") and s["lt"][gi] is not None:
                    self._lt_conv(g, s["lt"][gi], io)
                    continue
                nseq, t_in, t_out, ci, co, k = g["n_seq"], g["t_in"], g["t_out"], g["ci"], g["co"], g["k"]
                st, dil = g["stride"], g["dilation"]
                x = self._view(g["x"], nseq * t_in * ci, dt, io).reshape(nseq, t_in, ci)
                w = self._w(g["w"])[:k * ci * co].reshape(k * ci, co)
                y = np.broadcast_to(self._w(g["b"])[:co], (nseq, t_out, co)).astype(np.float32)
                last = (t_out - 1) * st + 1
                for tau in range(k):
                    y = y + x[:, tau * dil:tau * dil + last:st, :] @ w[tau * ci:(tau + 1) * ci]
                y = _act(y, g["act"])
                if g["res"] != REF_NONE:
                    res = self._view(g["res"], nseq * g["t_res"] * co, dt, io).reshape(nseq, g["t_res"], co)
                    ro, rs = g["res_offset"], g["res_stride"]
                    y = y + res[:, ro:ro + (t_out - 1) * rs + 1:rs, :]
                si, ti, ni = np.meshgrid(np.arange(nseq), np.arange(t_out), np.arange(co), indexing="ij")
                self._store(g["y"], ((si * g["t_ypitch"] + ti) * g["ldy"] + ni).reshape(-1), y.reshape(-1), dt, io)
        elif op == "gast_block":
            n, j, t, c, h, gc = (r[k] for k in ("n", "j", "t", "c", "heads", "gc"))
            w1, b1 = self._w(r["w1"]), self._w(r["b1"])
            cols = gast_projection_columns(c, h, gc)
            w1 = w1[:c * cols["g"].stop].reshape(c, cols["g"].stop)
            W = {"loc_w": w1[:, cols["loc"]], "glb_u": w1[:, cols["att"]], "glb_g_w": w1[:, cols["g"]],
                 "glb_c": b1[cols["att"]], "glb_g_b": b1[cols["g"]],
                 "loc_diag": self._w(r["loc_diag"]).reshape(2, j, c),
                 "loc_off": self._w(r["loc_off"]).reshape(2, j, j, c),
                 "loc_b": self._w(r["loc_b"]), "loc_cat_w": self._w(r["loc_cat_w"]).reshape(2 * c, c),
                 "loc_cat_b": self._w(r["loc_cat_b"]), "glb_ck": self._w(r["glb_ck"]).reshape(h, j, j),
                 "glb_cat_w": self._w(r["glb_cat_w"]).reshape(h * gc, c), "glb_cat_b": self._w(r["glb_cat_b"]),
                 "cat_w": self._w(r["cat_w"]).reshape(3 * c, 2 * c), "cat_b": self._w(r["cat_b"])}
            x = self._view(r["x"], n * j * t * c, dt, io).reshape(n, j, t, c)
            y = np_gast_block(Op("gast_block", [], [], {"heads": h, "head_channels": gc}), x, W)
            self._store(r["y"], np.arange(y.size), y.reshape(-1), dt, io)
        elif op == "rie_encode":
            n = n_io if s["io"] else r["n"]
            t, cin = r["t"], r["cin"]
            x = self._view(r["x"], n * t * cin, 0, io).reshape(n, t, cin)
            centre = x[:, t // 2]
            max_idx = len(r["idx"]) // len(r["out"])
            for g in range(r["groups"]):
                idx = np.asarray(r["idx"][g * max_idx:g * max_idx + r["len"][g]])
                xs = x[:, :, idx]
                o = np.concatenate([xs, xs - x[:, :, idx % 2], xs - centre[:, None, idx]], axis=-1)
                self._store(r["out"][g], np.arange(o.size), o.reshape(-1), dt, io)
            self._store(r["current"], np.arange(centre.size), centre.reshape(-1), dt, io)
        elif op == "concat":
            rows, cols = r["rows"], r["cols"]
            src = self._view(r["src"], (rows - 1) * r["src_ld"] + cols, dt, io)
            ri, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
            self._store(r["dst"], (ri * r["dst_ld"] + r["dst_off"] + cc).reshape(-1),
                        src[(ri * r["src_ld"] + cc).reshape(-1)], dt, io)
        elif op == "output_assemble":
            n = n_io if s["io"] else r["n"]
            t, k, nsrc = r["t"], r["k"], r["nsrc"]
            srcs = [self._view(r["src"][q], n * t * r["ch"][q], dt, io).reshape(n, t, r["ch"][q]) for q in range(nsrc)]
            o = np.stack([srcs[r["src_of"][q]][:, :, 3 * r["jj"][q]:3 * r["jj"][q] + 3] for q in range(k)], axis=2)
            self._store(r["out"], np.arange(o.size), o.reshape(-1), 0, io)
        elif op == "stream_in":  # the table words move as bits (int32 stored in the fp32 input)
            n = n_io if s["io"] else r["n"]
            jf, tc = r["jf"], TABLE_COLS
            src = io["in"][:n * (jf + tc)].reshape(n, jf + tc)
            self._store(r["col"], np.arange(n * jf), src[:, :jf].reshape(-1), dt, io)
            tab = r["table"]
            self.arena[tab:tab + n * tc * 4].view(np.int32)[:] = src[:, jf:].copy().view(np.int32).reshape(-1)
        elif op in ("ring_write", "ring_gather"):  # raw element moves, like the kernels
            n, nv, g, c, h = (r[q] for q in ("n", "nv", "g", "c", "h"))
            es = self.esize
            tab = self.arena[r["table"]:r["table"] + n * TABLE_COLS * 4].view(np.int32).reshape(n, -1)
            slot = tab[:, 0].astype(np.int64)
            cnt = (tab[:, 2].astype(np.int64) << 32) | tab[:, 1].view(np.uint32).astype(np.int64)
            ring = self.arena[r["ring"]:r["ring"] + nv * g * h * c * es].reshape(nv, g, h, c * es)
            ok = (slot >= 0) & (slot < nv)
            if op == "ring_write":
                col = self.arena[r["col"]:r["col"] + n * g * c * es].reshape(n, g, c * es)
                for q in np.flatnonzero(ok):
                    if tab[q, 3]:
                        ring[slot[q]] = col[q][:, None, :]
                    else:
                        ring[slot[q], :, cnt[q] % h] = col[q]
            else:
                k = r["k"]
                lags = np.asarray(r["lag"][:k], np.int64)
                dst = self.arena[r["dst"]:r["dst"] + n * g * k * c * es].reshape(n, g, k, c * es)
                dst[:] = 0
                for q in np.flatnonzero(ok):
                    dst[q] = ring[slot[q]][:, (cnt[q] - lags) % h]
        else:
            raise AssertionError(op)

    def _run(self, pid, io, n, use_graph):
        p = self.progs[pid]
        assert 1 <= n <= p["max_n"], (n, p["max_n"])
        if any(s["op"] == "stream_in" for s in p["steps"]):
            assert n == p["max_n"], "a stream program runs on all of its rows"  # engine.cu exact_n
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
        over NumPy). Reads n rows at x, writes n rows at y, as engine.cu's run_device."""
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
