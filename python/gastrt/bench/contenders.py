"""The contenders of a bench cell, each as a :class:`~gastrt.bench.measure.Runner`: gastrt (the
engine on NumPy arrays, a stream's pushes, or the backend's device-array path on torch
tensors), eager PyTorch and torch.compile of it, and TensorRT built from the same engine.
The torch-side contenders share one flip + padding wrapper (:func:`torch_forward`)."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import GastrtError
from .measure import Runner
from .schema import LABELS, ONNX_PEERS

SEQ_CHUNK = 4096          # windows per call for RIE sequences (as Engine.lift_sequence)


@dataclass
class Geom:
    """What the torch-side wrapper needs to know of the engine and the mode."""
    mode: str
    rf: int
    pad: int
    shift: int
    windowed: bool               # RIE: sequence = one window per frame
    j_in: int
    j_out: int
    flip: bool
    perm_in: Any = None          # torch index tensors (flip)
    perm_out: Any = None
    extra: dict = field(default_factory=dict)   # flip's sign tensors: sign_in [2], sign_out [3]


def _torch_flip_run(torch, fwd, x, g: Geom):
    # device-resident index / sign tensors: no host round trip inside the timed call
    if not g.flip:
        return fwd(x)
    xf = x.index_select(-2, g.perm_in) * g.extra["sign_in"]
    y = fwd(torch.cat([x, xf]))
    n = x.shape[0]
    yf = y[n:].index_select(-2, g.perm_out) * g.extra["sign_out"]
    return (y[:n] + yf) * 0.5


def torch_forward(torch, fwd, x, g: Geom):
    """One call of a torch-side contender with flip and (sequence mode) edge padding.
    x: window mode [B, RF, J, 2]; sequence mode [B, T, J, 2] (unpadded)."""
    if g.mode != "sequence":
        return _torch_flip_run(torch, fwd, x, g)
    t = x.shape[1]
    idx = torch.arange(-(g.pad + g.shift), t + g.pad - g.shift, device=x.device).clamp_(0, t - 1)
    xp = x.index_select(1, idx)
    if not g.windowed:
        return _torch_flip_run(torch, fwd, xp, g)
    b = xp.shape[0]
    win = xp.unfold(1, g.rf, 1).permute(0, 1, 4, 2, 3).reshape(b * t, g.rf, g.j_in, xp.shape[-1])
    chunk = max(1, SEQ_CHUNK // (2 if g.flip else 1))
    # each chunk copied out at once: torch.compile's CUDA graphs (max-autotune) reuse the output
    # memory of one call for the next
    out = None
    for i in range(0, b * t, chunk):
        y = _torch_flip_run(torch, fwd, win[i:i + chunk].contiguous(), g)
        if out is None:
            out = y.new_empty((b * t,) + tuple(y.shape[1:]))
        out[i:i + y.shape[0]].copy_(y)
    return out.reshape(b, t, *out.shape[2:])


def _as_dtype(g: Geom, dtype, mode: str | None = None) -> Geom:
    """``g`` with its sign tensors in ``dtype`` (and another mode)."""
    return replace(g, mode=mode or g.mode, extra={k: v.to(dtype) for k, v in g.extra.items()})


def torch_dtype(torch, precision: str, on_cuda: bool):
    """The torch contenders' dtype: fp32 on CPU (as gastrt's CPU runtime), the engine's on CUDA."""
    if not on_cuda:
        return torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def build_eager(torch, tgt, mode: str, causal: bool, dev, dtype):
    """The eager reference model of ``tgt`` (a presets.Target): strided (optimized) in window /
    stream mode and for RIE, dilated in sequence mode."""
    from ..reference import factory
    optimized = mode != "sequence" or tgt.family == "rie"
    model = factory.build_model(tgt.family, tgt.config, optimized=optimized, causal=causal,
                                state_dict=tgt.state_dict)
    return model.to(device=dev, dtype=dtype).eval()


def compile_model(torch, model, on_cuda: bool):
    if on_cuda:
        return torch.compile(model, mode="max-autotune", dynamic=False)
    return torch.compile(model)


class DynamoLimits:
    """Lets torch.compile specialise on every batch size of the run (restored afterwards)."""

    def __init__(self, torch, n: int):
        self.cfg = torch._dynamo.config
        self.saved: dict = {}
        # the names changed across torch 2.x: set those this torch has
        for attr in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit"):
            if hasattr(self.cfg, attr):
                old = getattr(self.cfg, attr)
                self.saved[attr] = old
                try:
                    setattr(self.cfg, attr, max(int(old), 8 * n + 8))
                except Exception:
                    pass

    def restore(self) -> None:
        for attr, v in self.saved.items():
            try:
                setattr(self.cfg, attr, v)
            except Exception:
                pass


def call_mode(mode: str, g: Geom) -> str:
    """The engine form a device contender runs: RIE's sequences are one window per frame."""
    return "sequence" if mode == "sequence" and not g.windowed else "window"


def call_shape(g: Geom, mode: str, b: int, seq_len: int) -> tuple[int, int, str]:
    """(n, t, plan mode) of the backend call behind one gastrt call of batch ``b``."""
    n = b * (2 if g.flip else 1)
    if mode == "sequence" and not g.windowed:
        return n, seq_len + g.rf - 1, "sequence"
    if mode == "sequence":
        return min(n * seq_len, SEQ_CHUNK), g.rf, "window"
    return n, g.rf, "window"


def _first_known(*fns):
    """A byte-count function returning the first non-None of ``fns``' results (None: skipped)."""
    def first():
        for f in fns:
            v = f() if f is not None else None
            if v is not None:
                return v
        return None
    return first


def make_runner(name, eng, torch, models, g: Geom, sets, *, mode, b, frames, on_cuda, tdev, dtype, flip,
                fpf) -> Runner:
    """The runner of contender ``name`` at batch ``b`` on the NumPy input sets ``sets``
    (moved to torch tensors on ``tdev`` for the torch-side contenders)."""
    label = LABELS.get(name, name)
    be = eng.backend
    window_fpf = float(eng.flops_per_frame("window")) * (2 if flip else 1)
    if name == "tensorrt":
        trt_be, build_s = models["tensorrt"].backend_for(b)
        cm = call_mode(mode, g)
        fwd = (lambda x: trt_be.run_device("pos", x, cm))
        xs = [torch.from_numpy(a).to(tdev) for a in sets]     # TensorRT's I/O is fp32 (as gastrt's)
        gt = replace(g, mode="window") if mode == "stream" else g
        return Runner(name, label, lambda x: torch_forward(torch, fwd, x, gt), xs, frames,
                      window_fpf if mode == "stream" else fpf, device_bytes=trt_be.device_bytes, build_s=build_s)
    if name == "gastrt":
        # the backend's own report for one call's shape: on CUDA its arena, device memory outside
        # torch's allocator (added to the cell's memory, not reported as workspace_bytes)
        n, t, m = call_shape(g, mode, b, sets[0].shape[1] if mode == "sequence" else 0)
        workspace = (lambda: be.workspace_bytes("pos", n, t, m))
        if mode == "stream":
            stream = eng.stream(slots=b, flip=flip)
            dev = _first_known(lambda: stream.stats().get("device_bytes"), workspace) if on_cuda else None
            return Runner(name, label, stream.push, sets, frames, float(stream.flops_per_push()),
                          lambda: stream.stats().get("ring_bytes"), device_bytes=dev)
        if on_cuda:
            cm = call_mode(mode, g)
            fwd = (lambda x: be.run_device("pos", x, cm))
            xs = [torch.from_numpy(a).to(tdev) for a in sets]
            return Runner(name, label, lambda x: torch_forward(torch, fwd, x, g), xs, frames, fpf,
                          device_bytes=workspace)
        if mode == "window":
            return Runner(name, label, lambda x: eng.lift(x, flip=flip), sets, frames, fpf, workspace)
        return Runner(name, label, lambda x: eng.lift_sequence(x, flip=flip), sets, frames, fpf, workspace)
    if name in ONNX_PEERS:   # an Engine whose backend is ONNX Runtime / OpenVINO (onnx_peers)
        peer = models[name]
        if mode == "window":
            return Runner(name, label, lambda x: peer.lift(x, flip=flip), sets, frames, fpf)
        if mode == "sequence":
            return Runner(name, label, lambda x: peer.lift_sequence(x, flip=flip), sets, frames, fpf)
        return Runner(name, label, lambda x: peer.lift(x, flip=flip), sets, frames, window_fpf)
    model = models[name]
    xs = [torch.from_numpy(a).to(device=tdev, dtype=dtype) for a in sets]
    if mode == "stream":   # the window model on the newest window of each slot
        gw = _as_dtype(g, dtype, "window")
        return Runner(name, label, lambda x: torch_forward(torch, model, x, gw), xs, frames, window_fpf,
                      compiles=name == "compile")
    gd = _as_dtype(g, dtype)
    return Runner(name, label, lambda x: torch_forward(torch, model, x, gd), xs, frames, fpf,
                  compiles=name == "compile")


# ---- output agreement ------------------------------------------------------------------------------

def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))


def _eager_reference(torch, models, g: Geom, x: np.ndarray, tdev, dtype):
    """The eager model's output on the NumPy input ``x`` (flip / padding as in the timed calls)."""
    return torch_forward(torch, models["eager"], torch.from_numpy(x).to(device=tdev, dtype=dtype),
                         _as_dtype(g, dtype))


def prime(result, run: Runner, eng, torch, models, g: Geom, sets, shapes, mode, b, on_cuda, tdev, dtype):
    """One untimed call; the first time both gastrt and eager have run, compare their outputs
    (``result["agreement"]``; TensorRT's: ``result["agreement_tensorrt"]``)."""
    y = run.call(run.inputs[0])
    if run.name in ONNX_PEERS:
        result["agreement_peers"][run.name] = _peer_agreement(run, y, eng, mode, b, models[run.name], g.flip)
        return
    if run.name == "tensorrt" and mode != "stream":
        result["agreement_tensorrt"] = _tensorrt_agreement(run, y, eng, torch, models, g, sets, shapes, mode, b,
                                                           tdev, dtype)
        return
    if mode == "stream" or result["agreement"] is not None:
        return
    if run.name == "gastrt" and "eager" in models:
        x = sets[shapes["torch"]][0]
        ref = _eager_reference(torch, models, g, x, tdev, dtype)
        got = y.float().cpu().numpy() if hasattr(y, "cpu") else np.asarray(y)
        ref = ref.float().cpu().numpy()
        if mode == "window":
            ref = ref[:, 0]
            got = got[:, 0] if got.ndim == 4 else got
        result["agreement"] = {"batch": int(b), "max_rel_err": rel_err(got, ref)}


def _peer_agreement(run: Runner, y, eng, mode: str, b: int, peer, flip: bool) -> dict:
    """An ONNX peer's output on its first input vs gastrt's on the same input, and the precision
    the peer computed in."""
    x = run.inputs[0]
    if mode == "sequence":
        ref = eng.lift_sequence(x, flip=flip)
    else:
        ref = eng.lift(x, flip=flip)
    return {"batch": int(b), "reference": "gastrt", "max_rel_err": rel_err(y, ref),
            "precision": peer.backend.precision_used}


def _tensorrt_agreement(run: Runner, y, eng, torch, models, g: Geom, sets, shapes, mode, b, tdev, dtype):
    """TensorRT's output on its first input vs eager's (or, without eager, gastrt's)."""
    x = sets[shapes["torch" if "eager" in models else "gastrt"]][0]
    if "eager" in models:
        ref = _eager_reference(torch, models, g, x, tdev, dtype)
        who = "eager"
    else:
        be = eng.backend
        cm = call_mode(mode, g)
        ref = torch_forward(torch, lambda t: be.run_device("pos", t, cm), torch.from_numpy(x).to(tdev), g)
        who = "gastrt"
    got, ref = y.float().cpu().numpy(), ref.float().cpu().numpy()
    if mode == "window":
        got, ref = got.reshape(got.shape[0], *got.shape[-2:]), ref.reshape(ref.shape[0], *ref.shape[-2:])
    return {"batch": int(b), "reference": who, "max_rel_err": rel_err(got, ref)}


# ---- TensorRT ----------------------------------------------------------------------------------------

def tensorrt_unavailable(on_cuda: bool) -> str | None:
    """Why TensorRT cannot be a contender here, or None."""
    if not on_cuda:
        return "TensorRT runs on a GPU (--device cuda)"
    from ..backends.tensorrt_runner import require_cudart, require_tensorrt
    from ..onnx_export import require_onnx
    try:
        require_tensorrt()
        require_cudart()
        require_onnx()
    except GastrtError as e:
        return str(e)
    return None


class TensorRTContender:
    """TensorRT engines built on demand, one per batch size, each with its optimization profile
    fixed at exactly the shapes the bench feeds it (as a deployment at that batch would build)."""

    def __init__(self, engine_path: str, precision: str, device: int, mode: str, seq_len: int, rf: int,
                 windowed: bool, flip: bool):
        self.engine_path, self.precision, self.device = engine_path, precision, device
        self.mode, self.seq_len, self.rf, self.windowed = mode, seq_len, rf, windowed
        self.mult = 2 if flip else 1
        self.tmp = tempfile.TemporaryDirectory(prefix="gastrt-bench-trt-")
        self.current = None      # (batch, Engine)

    def build_args(self, b: int) -> dict:
        """build_tensorrt's profile arguments for batch ``b``."""
        n = b * self.mult
        if self.mode == "sequence" and not self.windowed:
            return dict(window=False, sequence=True, seq_max_batch=n, seq_opt_batch=n, max_frames=self.seq_len,
                        seq_opt_frames=self.seq_len)
        if self.mode == "sequence":   # RIE: chunks of windows, the last one shorter
            n = min(b * self.seq_len, max(1, SEQ_CHUNK // self.mult)) * self.mult
            return dict(sequence=False, min_batch=1, opt_batch=n, max_batch=n)
        return dict(sequence=False, min_batch=n, opt_batch=n, max_batch=n)

    def backend_for(self, b: int):
        """-> (TensorRTBackend for batch b, seconds its build took)."""
        from ..engine import load
        from ..tensorrt_builder import build_tensorrt

        self.close_engine()
        path = os.path.join(self.tmp.name, f"b{b}.plan")
        t0 = time.perf_counter()
        build_tensorrt(self.engine_path, path, precision=self.precision, device=self.device, networks=["pos"],
                       **self.build_args(b))
        build_s = time.perf_counter() - t0
        eng = load(path, device=f"cuda:{self.device}", backend="tensorrt")
        os.unlink(path)
        self.current = (b, eng)
        return eng.backend, build_s

    def close_engine(self) -> None:
        if self.current is not None:
            self.current[1].backend.close()
            self.current = None

    def close(self) -> None:
        self.close_engine()
        self.tmp.cleanup()
