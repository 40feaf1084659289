"""The Backend protocol every executor implements (NumPy oracle, native CPU, CUDA, TensorRT).

In the spirit of ggml's ``ggml-backend-impl.h`` and onnxruntime's ``IExecutionProvider``: a
backend says what it can do once (:class:`Capabilities`), and Engine / Stream / bench ask that
instead of probing attributes. Modules under ``backends/`` import this file and their siblings,
never the package ``__init__`` (which re-exports them) and never ``gastrt.engine``.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import GastrtError


def native_module():
    """The compiled extension ``gastrt._native``, or None when this install has none."""
    try:
        from .. import _native
    except ImportError:
        return None
    return _native


@dataclass(frozen=True)
class Capabilities:
    """What a backend runs.

    modes: plan modes ``run`` accepts ("window", "sequence").
    device_arrays: ``run_device`` takes torch / CuPy / ``__cuda_array_interface__`` arrays.
    stream: what ``Engine.stream(kernels="auto")`` runs its columns on for this backend:
        "cuda" (rings on the GPU), "native" (the C++ few-row kernels), "numpy" (NumPy columns)
        or "engine" (whole windows through ``run``: backends without column kernels).
    device: "cpu" or "cuda:N".
    threads: CPU threads per call (None: not a CPU backend).
    """
    modes: frozenset = frozenset({"window", "sequence"})
    device_arrays: bool = False
    stream: str = "numpy"
    device: str = "cpu"
    threads: int | None = None
    extra: dict = field(default_factory=dict)


class Backend(abc.ABC):
    """Executes plans. ``run(plan_name, x, mode)``: x [N, T, J, F] float32 (host) ->
    [N, T_out, J_out, 3] float32 (window mode: T_out = 1)."""

    name: str = "?"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        ...

    @abc.abstractmethod
    def run(self, plan_name: str, x: np.ndarray, mode: str) -> np.ndarray:
        ...

    def is_device_array(self, x: Any) -> bool:
        """True when ``x`` should go through :meth:`run_device` (never for host backends)."""
        return False

    def run_device(self, plan_name: str, x: Any, mode: str, out: Any = None, stream: int | None = None):
        """Device arrays in and out (capabilities.device_arrays backends only)."""
        raise GastrtError(f"the {self.name} backend takes host (NumPy) arrays only; device arrays "
                          "go to a CUDA engine")

    def workspace_bytes(self, plan_name: str, n: int, t: int, mode: str) -> int | None:
        """Peak workspace of one call for an input [n, t, J, F], or None when not known."""
        return None

    def budget_bytes(self, plan_name: str, n: int, t: int, mode: str) -> int | None:
        """What ``Engine`` plans chunk sizes from: ``workspace_bytes`` without the per-thread
        share of a CPU team (so chunk boundaries, and results, do not depend on the thread
        count). Default: ``workspace_bytes``."""
        return self.workspace_bytes(plan_name, n, t, mode)

    def device_bytes(self) -> int | None:
        """Device memory the backend holds (weights, arena), or None on a CPU backend."""
        return None

    def clear_cache(self) -> None:
        """Drop cached per-shape workspaces / programs (rebuilt on the next call)."""

    def describe(self) -> dict:
        """A JSON-able description: name and capabilities."""
        c = self.capabilities
        return {"name": self.name, "device": c.device, "threads": c.threads,
                "modes": sorted(c.modes), "device_arrays": c.device_arrays, "stream": c.stream}

    def close(self) -> None:
        """Release device resources now (also done when the backend is collected)."""


# ---- model-file loaders -------------------------------------------------------------------------
@dataclass
class OpenedModel:
    """What a loader hands to ``gastrt.load``: the engine metadata, plans, weights (float32
    arrays; shape-only stand-ins where the file keeps none) and a ready backend."""
    meta: dict
    plans: dict
    weights: dict
    backend: Backend
    device: str


@dataclass(frozen=True)
class ModelLoader:
    """A file format ``gastrt.load`` opens besides ``.gastrt`` (TensorRT ``.plan`` files).
    sniff(path) -> bool reads a few bytes; open(path, device, verify) -> OpenedModel."""
    name: str
    sniff: Callable[[str], bool]
    open: Callable[[str, Any, bool], OpenedModel]
