"""CudaBackend: plans on one GPU through the native executor (csrc/cuda/cuda_ops.h).

Batches: window mode rounds the batch up to a power of two (one program and one CUDA graph per
bucket; the prologue / epilogue touch only the real rows), batches past ``max_batch`` run in
chunks; sequence mode uses the exact (batch, T). Programs are cached (LRU).

Device arrays (torch, CuPy, anything with ``__cuda_array_interface__`` or ``__dlpack__``) go
through :meth:`CudaBackend.run_device` with no host round trip, ``out=`` included.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ...engine_file import check_precision
from ...errors import DeviceOutOfMemory, GastrtError, NativeError, OutOfMemoryError
from ...plan import Plan
from ..base import Backend, Capabilities, native_module
from . import cublaslt
from .device_arrays import CudaArray, empty_device_array, is_device_array, resolve_device_array, stream_context
from .lowering import DTYPE_CODE, Lowered, lower, next_pow2, prod, upload_weights

DEFAULT_MAX_BATCH = 8192
PROGRAM_CACHE = 16


def _oom(e: Exception, n: int, mode: str, t: int) -> DeviceOutOfMemory:
    what = f"batch size {n}" + (f" x {t} frames" if mode == "sequence" else "")
    return DeviceOutOfMemory(f"CUDA out of memory running a {what}: {e}. The engine is still usable: use a smaller "
                       "batch (or shorter sequences).")


class _ClosedExecutor:
    def __getattr__(self, name):
        raise GastrtError("this CUDA backend is closed")


class Program:
    """A created executor program: its id and what lowering made of it."""

    def __init__(self, pid: int, low: Lowered):
        self.id = pid
        self.low = low


class CudaBackend(Backend):
    """Executes plans on one GPU. ``run`` takes / returns NumPy arrays (pinned staging, async
    copies on the engine's stream); ``run_device`` takes / returns device arrays with no copy.
    ``_engine``: tests pass a simulator of the native engine (same interface)."""
    name = "cuda"

    def __init__(self, plans: dict[str, Plan], weights, index: int = 0, precision: str = "fp32", *,
                 max_batch: int = DEFAULT_MAX_BATCH, gemm_tactic: str | None = None, _engine=None):
        check_precision(precision)
        self._mod = native_module()
        self.device_index = int(index)
        self.precision = precision
        self.dtype_code = DTYPE_CODE[precision]
        self.plans = plans
        self.max_batch = int(max_batch)
        self.use_graphs = True
        tactic = cublaslt.tactic_code(gemm_tactic)
        self.cublaslt_status = "simulator" if _engine is not None else (
            cublaslt.load(self._mod) if tactic else "not loaded (gemm_tactic=custom)")
        self._eng = _engine if _engine is not None else self._executor_of(self._mod.CudaEngine)
        self._eng.set_option("gemm_tactic", tactic)
        self._wshape = {k: tuple(v.shape) for k, v in weights.items()}
        self._wids, self._weight_bytes = upload_weights(self._eng, plans, weights)
        self._progs: OrderedDict = OrderedDict()
        self._lock = threading.RLock()

    def _executor_of(self, kind):
        try:
            return kind(self.device_index, self.dtype_code)
        except NativeError as e:
            raise GastrtError(str(e).replace("gastrt: ", "", 1)) from None

    def new_executor(self):
        """A fresh executor engine on this device, of this backend's kind (the simulator in tests):
        streams keep their rings in one of their own."""
        return self._executor_of(type(self._eng))

    # -- the Backend protocol ------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(modes=frozenset({"window", "sequence"}), device_arrays=True, stream="cuda",
                            device=f"cuda:{self.device_index}", threads=None)

    def is_device_array(self, x) -> bool:
        return is_device_array(x)

    def workspace_bytes(self, plan_name: str, n: int, t: int, mode: str) -> int:
        """Arena bytes of the program a call [n, t, J, F] runs (created now if not cached)."""
        return int(self.program(plan_name, mode, self.bucket(n, mode), t).low.arena_bytes)

    def device_bytes(self) -> int:
        """The executor's weights and arena (not its I/O staging)."""
        return self._weight_bytes + int(self._eng.arena_bytes())

    def clear_cache(self) -> None:
        """Destroys the cached programs (and their CUDA graphs)."""
        with self._lock:
            while self._progs:
                _, p = self._progs.popitem(last=False)
                self._eng.destroy_program(p.id)

    def describe(self) -> dict:
        d = super().describe()
        d.update(device_name=self.device_name, precision=self.precision,
                 gemm_tactic=cublaslt.tactic_name(self.get_option("gemm_tactic")), cublaslt=self.cublaslt_status)
        return d

    def close(self) -> None:
        """Destroys the programs and lets go of the executor (its weights and arena are freed
        once nothing else holds it); later calls raise."""
        with self._lock:
            self.clear_cache()
            self._eng = _ClosedExecutor()

    # -- configuration -------------------------------------------------------------------------
    @property
    def device_name(self) -> str:
        return self._eng.device_name()

    def set_option(self, name: str, value: int) -> None:
        """Executor options (see cuda_ops.h): gast_fused (-1 auto / 0 / 1), gast_scratch_budget,
        arena_limit, gemm_tactic (0 custom / 1 auto / 2 cublaslt). Drops the cached programs (their scratch sizes may change)."""
        with self._lock:
            if name == "gemm_tactic" and int(value) != 0 and self.cublaslt_status != "simulator":
                self.cublaslt_status = cublaslt.load(self._mod)  # a backend made with gemm_tactic=custom
            self._eng.set_option(name, int(value))
            self.clear_cache()

    def get_option(self, name: str) -> int:
        return int(self._eng.get_option(name))

    def gemm_tactics(self) -> list[dict]:
        """The executor's per-layer tactic decisions so far (one dict per distinct conv problem:
        shape, chosen, note, custom_us / cublaslt_us, custom_err / cublaslt_err; see
        csrc/cuda/cuda_ops.h GemmTacticReport)."""
        return list(self._eng.gemm_tactics())

    # -- programs ------------------------------------------------------------------------------
    def bucket(self, n: int, mode: str) -> int:
        if mode == "sequence":
            return n
        return min(next_pow2(n), max(self.max_batch, n))

    def lowered(self, plan_name: str, mode: str, n: int, t: int) -> Lowered:
        return lower(self.plans[plan_name], mode, n, t, self._wids, lambda w: self._wshape[w], self.dtype_code,
                     self._eng.gast_scratch_bytes, plan_name)

    def program(self, plan_name: str, mode: str, nb: int, t: int) -> Program:
        key = (plan_name, mode, nb, t)
        with self._lock:
            p = self._progs.get(key)
            if p is not None:
                self._progs.move_to_end(key)
                return p
            low = self.lowered(plan_name, mode, nb, t)
            try:
                pid = self._eng.create_program(low.code, low.arena_bytes, low.max_n, low.in_per_n, low.out_per_n)
            except OutOfMemoryError as e:
                raise _oom(e, nb, mode, t) from None
            p = Program(int(pid), low)
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
                except OutOfMemoryError as err:
                    raise _oom(err, cnt, mode, t) from None
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
        d = resolve_device_array(x, "x")
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
                out = empty_device_array(d, shape, self.device_index, self._mod)
            o = resolve_device_array(out, "out", writable=True)
            if o.shape != shape:
                raise GastrtError(f"out: expected shape {shape}, got {o.shape}")
            if o.device >= 0 and o.device != self.device_index:
                raise GastrtError(f"out is on cuda:{o.device} but the engine is on cuda:{self.device_index}")
            if ext is None and o.stream is not None and o.kind != "cai":
                ext = o.stream
            in_row, out_row = prod(d.shape[1:]) * 4, prod(shape[1:]) * 4
            for (s, e), p in zip(chunks, progs):
                try:
                    self._eng.run_device(p.id, d.ptr + s * in_row, o.ptr + s * out_row, e - s,
                                         int(ext or 0), ext is not None, self.use_graphs)
                except OutOfMemoryError as err:
                    raise _oom(err, e - s, mode, t) from None
            if d.kind == "cai" or o.kind == "cai":
                self._eng.synchronize()
        return out

    # -- introspection -------------------------------------------------------------------------
    def describe_program(self, plan_name: str = "pos", mode: str = "window", n: int = 1,
                         t: int | None = None) -> str:
        """The executor's description of the program a call [n, t, J, F] runs (its steps, GEMM
        shapes, GAST paths, graph body)."""
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
