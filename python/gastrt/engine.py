"""`gastrt.build` (checkpoint -> engine file) and `gastrt.load` -> Engine (lift, lift_sequence).

The runtime half of this module (load, Engine) never imports torch."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ._version import __version__
from .engine_file import cast_weight, read_engine, weights_as_float32, write_engine
from .errors import GastrtError
from .plan import Plan, flops_per_frame

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES_HELP = "expected 'cpu', 'cuda' or 'cuda:N'"


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _param_count(sd: dict) -> int:
    skip = (".running_mean", ".running_var", ".num_batches_tracked")
    return int(sum(np.asarray(v).size for k, v in sd.items() if not k.endswith(skip)))


def default_output_path(checkpoint: str) -> str:
    base, _ = os.path.splitext(checkpoint)
    return base + ".gastrt"


def lower_checkpoint(checkpoint: str, causal: bool = False):
    """-> (Lowered, load info, parameter count). Reads the checkpoint without executing pickle code."""
    from .checkpoint import load_state_dicts
    from .families import detect_and_lower

    pos, traj, info = load_state_dicts(checkpoint)
    lowered = detect_and_lower(pos, traj, causal)
    n = _param_count(pos) + (_param_count(traj) if traj is not None else 0)
    return lowered, info, n


def build(checkpoint, output=None, causal: bool = False, precision: str = "fp32") -> str:
    """Checkpoint (original training-script layout, bare or DataParallel state dict, zip or legacy
    torch format) -> `.gastrt` engine file. Returns the output path. Writes atomically."""
    checkpoint = os.fspath(checkpoint)
    if precision not in PRECISIONS:
        raise GastrtError(f"unknown precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    output = os.fspath(output) if output is not None else default_output_path(checkpoint)
    lowered, info, nparams = lower_checkpoint(checkpoint, causal)
    pos = lowered.plans["pos"]
    pad = pos.pad
    skel = lowered.skeleton
    meta = {
        "gastrt_version": __version__,
        "family": lowered.family,
        "hyper": lowered.hyper,
        "receptive_field": pos.receptive_field,
        "pad": pad,
        "causal": bool(causal),
        "causal_shift": pad if causal else 0,
        "num_joints": pos.in_joints,
        "num_joints_out": pos.out_joints,
        "skeleton": skel.name if skel else None,
        "joints_left": list(skel.joints_left) if skel else [],
        "joints_right": list(skel.joints_right) if skel else [],
        "kps_left": list(lowered.input_lr[0]) if lowered.input_lr else [],
        "kps_right": list(lowered.input_lr[1]) if lowered.input_lr else [],
        "precision": precision,
        "parameter_count": nparams,
        "source_name": os.path.basename(checkpoint),
        "source_sha256": _sha256_file(checkpoint),
        "source_format": info.get("format"),
        "plans": {name: p.to_json() for name, p in lowered.plans.items()},
    }
    tensors = {name: cast_weight(a, precision) for name, a in lowered.weights.items()}
    write_engine(output, meta, tensors)
    return output


def parse_device(device: str) -> tuple[str, int]:
    if not isinstance(device, str):
        raise GastrtError(f"device must be a string, {DEVICES_HELP}")
    d = device.strip().lower()
    if d == "cpu":
        return "cpu", 0
    if d == "cuda" or d.startswith("cuda:"):
        idx = d[5:] if d.startswith("cuda:") else "0"
        if not idx.isdigit():
            raise GastrtError(f"bad device {device!r}: {DEVICES_HELP}")
        return "cuda", int(idx)
    raise GastrtError(f"unknown device {device!r}: {DEVICES_HELP}")


def _make_backend(kind: str, device: str, index: int, plans, weights, threads, precision):
    from . import backends

    if device == "cuda":
        return backends.make_cuda_backend(plans, weights, index, precision)
    if kind in (None, "native"):
        native = backends.make_native_backend(plans, weights, threads)
        if native is not None:
            return native
        if kind == "native":
            raise GastrtError("the native CPU runtime is not built in this install (gastrt.build_config()['native'] "
                              "is False); reinstall with a C++ compiler, or use backend='numpy'")
    if kind in (None, "numpy"):
        from .backends.numpy_backend import NumpyBackend
        return NumpyBackend(plans, weights, threads)
    raise GastrtError(f"unknown backend {kind!r}: expected 'native' or 'numpy'")


def load(path, device: str | None = None, threads: int | None = None, backend: str | None = None,
         verify: bool = True) -> "Engine":
    """Open an engine on a device ("cpu", "cuda", "cuda:N"; default "cpu", and "cuda" for a
    TensorRT `.plan`). ``threads``: CPU threads (default: available cores). ``backend``: on the
    CPU "native" (C++) or "numpy" (reference), default native when built; "tensorrt" for plans."""
    path = os.fspath(path)
    from .backends.tensorrt_runner import is_tensorrt_plan
    if backend == "tensorrt" or is_tensorrt_plan(path):
        from .backends.tensorrt_runner import load_tensorrt
        return load_tensorrt(path, device or "cuda", verify=verify)
    dev, index = parse_device(device or "cpu")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise GastrtError(f"threads must be a positive integer, got {threads!r}")
    meta, tensors = read_engine(path, verify=verify)
    try:
        plans = {name: Plan.from_json(p) for name, p in meta["plans"].items()}
    except (KeyError, TypeError, ValueError) as e:
        raise GastrtError(f"{path}: corrupted engine metadata ({e})") from None
    missing = [n for p in plans.values() for n in p.weight_names() if n not in tensors]
    if missing:
        raise GastrtError(f"{path}: corrupted engine (weight {missing[0]!r} missing)")
    weights = weights_as_float32(tensors)
    be = _make_backend(backend, dev, index, plans, weights, threads, meta.get("precision", "fp32"))
    return Engine(path, meta, plans, weights, be, f"{dev}:{index}" if dev == "cuda" else "cpu")


def _as_input(x, name: str) -> np.ndarray:
    """Validate a keypoint array: floating dtype (float64/float16 are converted to float32),
    finite (NaN / inf are rejected: fill missing detections first, see gastrt.keypoints)."""
    try:
        a = np.asarray(x)
    except Exception:
        raise GastrtError(f"{name}: expected a NumPy float32 array (device arrays go to a CUDA engine)") from None
    if a.dtype.kind != "f":
        raise GastrtError(f"{name}: expected a floating-point array (float32), got dtype {a.dtype}")
    if a.size == 0:
        raise GastrtError(f"{name}: empty array of shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    bad = a.size - int(np.count_nonzero(np.isfinite(a)))
    if bad:
        raise GastrtError(f"{name}: {bad} non-finite values (NaN/inf); fill missing keypoints first "
                          "(gastrt lift does this for detector files)")
    return a


class Engine:
    """A loaded engine. Thread-safe: calls from several threads may run at once (each call has
    its own buffers; the native backend releases the GIL)."""

    def __init__(self, path, meta, plans, weights, backend, device):
        self.path = path
        self.metadata = meta
        self.plans = plans
        self._weights = weights
        self.backend = backend
        self.device = device
        self.family = meta["family"]
        self.receptive_field = int(meta["receptive_field"])
        self.num_joints = int(meta["num_joints"])
        self.num_joints_out = int(meta.get("num_joints_out", self.num_joints))
        self.causal = bool(meta["causal"])
        self.causal_shift = int(meta.get("causal_shift", 0))
        self.pad = int(meta["pad"])
        self.precision = meta.get("precision", "fp32")
        self.joints_left = list(meta.get("joints_left", []))
        self.joints_right = list(meta.get("joints_right", []))
        self.kps_left = list(meta.get("kps_left", self.joints_left))
        self.kps_right = list(meta.get("kps_right", self.joints_right))
        self.has_trajectory = "traj" in plans
        # output frames (summed over people) per backend call in lift_sequence; bounds memory
        self.max_sequence_frames = 16384

    def __repr__(self):
        return (f"<gastrt.Engine {self.family} rf={self.receptive_field} joints={self.num_joints} "
                f"causal={self.causal} {self.precision} on {self.device} ({self.backend.name})>")

    # -- flip test-time augmentation -------------------------------------------------------
    def _perm(self, n: int, left, right) -> np.ndarray:
        p = np.arange(n)
        if n > 1:
            if not left:
                raise GastrtError("flip=True needs the left/right joint symmetry, which this engine's "
                                  f"{n}-joint layout does not define")
            p[list(left)] = right
            p[list(right)] = left
        return p

    @staticmethod
    def _flip(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
        y = x[..., perm, :].copy()
        y[..., 0] *= -1
        return y

    def _run(self, plan: str, x: np.ndarray, mode: str, flip: bool) -> np.ndarray:
        """Flip TTA as the originals: negate x, swap left/right, run, undo, average — one batch."""
        if not flip:
            return self.backend.run(plan, x, mode)
        n = x.shape[0]
        p_in = self._perm(x.shape[-2], self.kps_left, self.kps_right)
        y = self.backend.run(plan, np.concatenate([x, self._flip(x, p_in)]), mode)
        p_out = self._perm(y.shape[-2], self.joints_left, self.joints_right)
        return (y[:n] + self._flip(y[n:], p_out)) * np.float32(0.5)

    # -- public API ------------------------------------------------------------------------
    def _check_windows(self, windows, plan: Plan) -> np.ndarray:
        x = _as_input(windows, "windows")
        want = (plan.receptive_field, plan.in_joints, plan.in_features)
        if x.ndim != 4 or x.shape[1:] != want:
            raise GastrtError(f"windows: expected shape (B, {want[0]}, {want[1]}, {want[2]}) "
                              f"(batch, receptive field, joints, xy), got {x.shape}")
        return x

    def _is_device_array(self, x) -> bool:
        if self.backend.name != "cuda" or isinstance(x, np.ndarray):
            return False
        from .backends.cuda import is_device_array
        return is_device_array(x)

    def _run_device(self, plan: str, x, mode: str, flip: bool, out=None):
        """Device arrays (torch / CuPy / __cuda_array_interface__ / DLPack) in and out, zero copy.
        Flip uses the array's own indexing, so it works for torch and CuPy alike. Non-finite
        values are not checked on this path (that would need a device reduction + sync)."""
        if not flip:
            return self.backend.run_device(plan, x, mode, out=out)
        p_in = self._perm(x.shape[-2], self.kps_left, self.kps_right)
        xf = x[..., p_in.tolist(), :]
        xf[..., 0] *= -1
        y = self.backend.run_device(plan, x, mode, out=out)
        yf = self.backend.run_device(plan, xf, mode)
        p_out = self._perm(yf.shape[-2], self.joints_left, self.joints_right)
        yf = yf[..., p_out.tolist(), :]
        yf[..., 0] *= -1
        y += yf
        y *= 0.5
        return y

    def lift(self, windows, flip: bool = False, out=None):
        """windows [B, RF, J, 2] float32 -> [B, J, 3]: the pose of each window's output frame
        (its centre, or its last frame for a causal engine). On a CUDA engine, torch / CuPy
        device arrays go in and come out without a host copy; ``out`` ([B, 1, J, 3] device
        array) receives the result in place."""
        if self._is_device_array(windows):
            return self._run_device("pos", windows, "window", flip, out)[:, 0]
        if out is not None:
            raise GastrtError("out= is for device arrays on a CUDA engine")
        plan = self.plans["pos"]
        x = self._check_windows(windows, plan)
        return self._run("pos", x, "window", flip)[:, 0]

    def lift_trajectory(self, windows, flip: bool = False) -> np.ndarray:
        """VideoPose3D's trajectory model: windows [B, RF, J, 2] -> root position [B, 3]."""
        if not self.has_trajectory:
            raise GastrtError("this engine has no trajectory model (the checkpoint had no 'model_traj')")
        x = self._check_windows(windows, self.plans["traj"])
        return self._run("traj", x, "window", flip)[:, 0, 0]

    def _pad_sequence(self, seq, plan: Plan) -> tuple[np.ndarray, bool]:
        x = _as_input(seq, "sequence")
        single = x.ndim == 3
        if single:
            x = x[None]
        want = (plan.in_joints, plan.in_features)
        if x.ndim != 4 or x.shape[2:] != want:
            raise GastrtError(f"sequence: expected shape (T, {want[0]}, {want[1]}) or (P, T, {want[0]}, "
                              f"{want[1]}), got {np.shape(seq)}")
        pad, shift = plan.pad, (plan.pad if self.causal else 0)
        x = np.pad(x, ((0, 0), (pad + shift, pad - shift), (0, 0), (0, 0)), mode="edge")
        return x, single

    def _sequence(self, plan_name: str, seq, flip: bool) -> np.ndarray:
        plan = self.plans[plan_name]
        x, single = self._pad_sequence(seq, plan)
        p, tp = x.shape[:2]
        t = tp - plan.receptive_field + 1
        if "sequence" in plan.modes:
            # long inputs run in pieces of `chunk` output frames (+ RF - 1 frames of context each):
            # exact, since every output frame depends on its own window only, and the workspace
            # stays bounded however long the video is
            chunk = max(1, self.max_sequence_frames // p)
            rf = plan.receptive_field
            y = np.concatenate([self._run(plan_name, np.ascontiguousarray(x[:, s:s + min(chunk, t - s) + rf - 1]),
                                          "sequence", flip) for s in range(0, t, chunk)], axis=1)
        else:  # RIE: one window per output frame
            win = np.lib.stride_tricks.sliding_window_view(x, plan.receptive_field, axis=1)
            win = win.transpose(0, 1, 4, 2, 3).reshape(p * t, plan.receptive_field, *x.shape[2:])
            chunk = max(1, 4096 // (2 if flip else 1))
            y = np.concatenate([self._run(plan_name, np.ascontiguousarray(win[i:i + chunk]), "window", flip)
                                for i in range(0, p * t, chunk)]).reshape(p, t, plan.out_joints, 3)
        return y[0] if single else y

    def lift_sequence(self, seq, flip: bool = False) -> np.ndarray:
        """seq [T, J, 2] -> [T, J, 3] (or [P, T, J, 2] -> [P, T, J, 3] in one batched call).
        Edge-padded like the originals' UnchunkedGenerator; the dilated full-sequence model
        where the family allows it (RIE: one window per frame)."""
        return self._sequence("pos", seq, flip)

    def trajectory_sequence(self, seq, flip: bool = False) -> np.ndarray:
        """VideoPose3D trajectory over a sequence: [T, J, 2] -> [T, 3]."""
        if not self.has_trajectory:
            raise GastrtError("this engine has no trajectory model (the checkpoint had no 'model_traj')")
        y = self._sequence("traj", seq, flip)
        return y[..., 0, :]

    # -- introspection ---------------------------------------------------------------------
    def flops_per_frame(self, mode: str = "window", seq_len: int = 1000) -> float:
        plan = self.plans["pos"]
        return flops_per_frame(plan, lambda n: self._weights[n].shape, mode, seq_len)

    def stream(self, slots: int = 1, flip: bool = False, kernels: str = "auto"):
        """Incremental lifting of ``slots`` sequences, one frame per push (gastrt.stream.Stream).
        kernels: "auto" (the GPU on a CUDA engine, else the native CPU kernels when built),
        "cuda", "native" or "numpy"."""
        from .stream import Stream
        return Stream(self, slots=slots, flip=flip, kernels=kernels)
