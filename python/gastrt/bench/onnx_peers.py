"""The CPU runtimes a user would pick instead of gastrt, as bench contenders: ONNX Runtime and
OpenVINO, each running the ONNX graph that ``gastrt export`` writes for the same engine (the
"gx" graph: same weights, same folded BatchNorm, same operator order).

Each is a :class:`~gastrt.backends.base.Backend` behind an :class:`~gastrt.engine.Engine`, so the
peers get exactly gastrt's flip, edge padding and sequence chunking (one definition, in the
engine) and differ only in what runs the network. Both are optional extras
(``gastrt[onnx]``, ``gastrt[openvino]``).

Precision: ORT always runs the fp32 graph (its CPU provider has no bf16 / fp16 convolution
kernels worth timing). OpenVINO runs the fp32 graph with its inference precision set to the
engine's (``INFERENCE_PRECISION_HINT`` f32 / bf16 / f16): it computes in bf16 where the CPU has
AMX or AVX512-BF16, and says so (``precision_used``); elsewhere it computes in fp32.
"""
from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np

from ..backends.base import Backend, Capabilities
from ..engine import Engine
from ..errors import GastrtError
from ..onnx_export import build_model
from .schema import LABELS, ONNX_PEERS
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _keeping_affinity(fn):
    """``fn`` with the calling thread's CPU affinity put back after each call. OpenVINO may pin
    the thread that calls it (seen in ``gastrt bench`` on 2 cores: the main thread's mask went
    from {0, 1} to {0}), and the next contender would then run its thread team from a pinned
    thread. OpenVINO still pins as it likes inside its own calls."""
    if not hasattr(os, "sched_getaffinity"):
        return fn

    def call(*args, **kwargs):
        mask = os.sched_getaffinity(0)
        try:
            return fn(*args, **kwargs)
        finally:
            if os.sched_getaffinity(0) != mask:
                os.sched_setaffinity(0, mask)
    return call


def peer_unavailable(name: str) -> str | None:
    """Why contender ``name`` cannot run here, or None."""
    mod, extra = {"ort": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}[name]
    if importlib.util.find_spec("onnx") is None:
        return "onnx is not installed (pip install 'gastrt[onnx]')"
    if importlib.util.find_spec(mod) is None:
        return f"{mod} is not installed (pip install 'gastrt[{extra}]')"
    return None


class OnnxPeerBackend(Backend):
    """Runs an engine's plans as exported ONNX graphs on ONNX Runtime ('ort') or OpenVINO.
    One session per (plan, mode), dynamic batch (and frames); OpenVINO compiles one model per
    input shape (cached), as a deployment at a fixed batch would."""

    def __init__(self, kind: str, engine: Engine, threads: int, precision: str = "fp32"):
        if kind not in ONNX_PEERS:
            raise GastrtError(f"unknown ONNX peer {kind!r}: expected one of {', '.join(ONNX_PEERS)}")
        why = peer_unavailable(kind)
        if why:
            raise GastrtError(f"{LABELS[kind]}: {why}")
        self.name = kind
        self._engine = engine
        self._threads = int(threads)
        self._precision = precision
        self._models: dict = {}     # (plan, mode) -> serialized ONNX bytes
        self._sessions: dict = {}   # (plan, mode[, shape]) -> x -> y of the session / compiled model
        self._lock = threading.Lock()
        self.precision_used = "fp32" if kind == "ort" else None   # OpenVINO: read after compiling
        modes = set()
        for p in engine.plans.values():
            modes |= set(p.modes)
        self._caps = Capabilities(modes=frozenset(modes), stream="engine", device="cpu", threads=self._threads)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _model(self, plan: str, mode: str) -> bytes:
        key = (plan, mode)
        if key not in self._models:
            model, _ = build_model(self._engine, mode=mode, plan=plan, dynamic_batch=True, precision="fp32")
            self._models[key] = model.SerializeToString()
        return self._models[key]

    def _ort(self, plan: str, mode: str):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(self._model(plan, mode), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]

    def _openvino(self, plan: str, mode: str, shape: tuple):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(self._model(plan, mode), b"")
        model.reshape({0: list(shape)})
        cfg = {"INFERENCE_NUM_THREADS": self._threads, "PERFORMANCE_HINT": "LATENCY",
               "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": _OV_PRECISION[self._precision]}
        compiled = _keeping_affinity(core.compile_model)(model, "CPU", cfg)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        used = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.precision_used = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(used, used)
        out = compiled.output(0)
        # CompiledModel.__call__ keeps one infer request for all calls (none made per call)
        return _keeping_affinity(lambda x: compiled({0: x})[out])

    def _session(self, plan: str, mode: str, shape: tuple):
        key = (plan, mode) if self.name == "ort" else (plan, mode, shape)
        s = self._sessions.get(key)
        if s is None:
            with self._lock:
                s = self._sessions.get(key)
                if s is None:
                    s = self._ort(plan, mode) if self.name == "ort" else self._openvino(plan, mode, shape)
                    self._sessions[key] = s
        return s

    def run(self, plan_name: str, x: np.ndarray, mode: str) -> np.ndarray:
        """x [N, T, J, F] float32 -> [N, T_out, J_out, 3] (window: T_out = 1), as the exported
        graph's window form ([N, J_out, 3]) or sequence form gives it."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.asarray(self._session(plan_name, mode, tuple(x.shape))(x), np.float32)
        return y[:, None] if mode == "window" else y

    def clear_cache(self) -> None:
        with self._lock:
            self._sessions.clear()


def peer_engine(kind: str, engine: Engine, threads: int, precision: str | None = None) -> Engine:
    """An Engine over the same plans and weights whose network runs on ``kind`` (ORT /
    OpenVINO): lift / lift_sequence with gastrt's own flip, padding and chunking."""
    be = OnnxPeerBackend(kind, engine, threads, precision or engine.precision)
    return Engine(engine.path, dict(engine.metadata), engine.plans, dict(engine.weights), be, "cpu")
