"""The native CPU backend: each plan compiled once into a C++ engine (gastrt._native.Engine).

A forward runs entirely in C++ with the GIL released: fused fp32 kernels over OpenBLAS GEMMs
(from the scipy-openblas32 wheel), gastrt's own thread pool, activation buffers planned once
per input shape and reused. Thread-safe: several Python threads may call ``run`` at once (each
call gets its own workspace; see csrc/include/gastrt/executor.h).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import GastrtError
from ..plan import Plan
from .base import Backend, Capabilities, native_module


def default_threads() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class NativeBackend(Backend):
    """plans: name -> Plan; weights: name -> float32 array (copied into the engines, so the
    dict may be dropped afterwards); threads: CPU threads per call (default: available cores);
    precision: the engine file's ("fp16" / "bf16": the weights are widened 16-bit values, and
    the convs stream them as 16-bit panels, half the bytes, same results)."""

    name = "native"

    def __init__(self, plans: dict[str, Plan], weights: dict[str, np.ndarray], threads: int | None = None,
                 precision: str = "fp32"):
        native = native_module()
        if native is None:
            raise GastrtError("this gastrt install has no native CPU runtime (gastrt._native); "
                              "use backend='numpy'")
        self.threads = int(threads) if threads else default_threads()
        self._engines = {name: native.Engine(plan.to_json(), weights, self.threads, precision)
                         for name, plan in plans.items()}

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(modes=frozenset({"window", "sequence"}), device_arrays=False, stream="native",
                            device="cpu", threads=self.threads)

    def run(self, plan_name: str, x: np.ndarray, mode: str) -> np.ndarray:
        """x [N, T, J, F] float32 -> [N, T_out, J_out, 3] float32."""
        return self._engines[plan_name].run(x, mode)

    def budget_bytes(self, plan_name: str, n: int, t: int, mode: str) -> int:
        """workspace_bytes for one thread: the thread-invariant figure chunk sizes come from."""
        return self._engines[plan_name].budget_bytes(n, t, mode)

    def workspace_bytes(self, plan_name: str, n: int, t: int, mode: str) -> int:
        """Peak workspace of one call for an input [n, t, J, F] (activation arena + scratch)."""
        return self._engines[plan_name].workspace_bytes(n, t, mode)

    def output_shape(self, plan_name: str, n: int, t: int, mode: str) -> tuple[int, ...]:
        return tuple(self._engines[plan_name].output_shape(n, t, mode))

    def clear_cache(self) -> None:
        """Free the cached per-shape workspaces (they are rebuilt on the next call)."""
        for e in self._engines.values():
            e.clear_cache()
