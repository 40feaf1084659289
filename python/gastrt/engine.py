"""`gastrt.load` -> Engine (lift, lift_sequence, trajectory, stream). The runtime never imports
torch. `gastrt.build` (checkpoint -> engine file) lives in `builder` and is re-exported here.

Engine holds the plans and weights of one engine file and a backend (see backends/base.py); it
validates inputs, pads sequences, chunks long inputs and applies flip test-time augmentation
(skeletons.flip_*), then hands [N, T, J, F] arrays to ``backend.run``."""
from __future__ import annotations

import os
import types

import numpy as np

from .argtypes import DEVICES_HELP, parse_device  # noqa: F401  (public: gastrt.engine.parse_device)
from .builder import build, default_output_path, lower_checkpoint  # noqa: F401  (public: gastrt.engine.build)
from .engine_file import PRECISIONS, read_model  # noqa: F401  (PRECISIONS: public here too)
from .errors import EngineFileError, GastrtError, NativeError
from .keypoints import refuse_pixels
from .plan import Plan, flops_per_frame, infer_shapes
from .backends import Backend, find_loader, make_cuda_backend, make_native_backend, make_numpy_backend
from .skeletons import flip_joints, flip_permutation, merge_flipped


def _make_backend(kind: str, device: str, index: int, plans, weights, threads, precision) -> Backend:
    if device == "cuda":
        return make_cuda_backend(plans, weights, index, precision)
    if kind in (None, "native"):
        native = make_native_backend(plans, weights, threads, precision)
        if native is not None:
            return native
        if kind == "native":
            raise GastrtError("the native CPU runtime is not built in this install (gastrt.build_config()['native'] "
                              "is False); reinstall with a C++ compiler, or use backend='numpy'")
    if kind in (None, "numpy"):
        return make_numpy_backend(plans, weights, threads)
    raise GastrtError(f"unknown backend {kind!r}: expected 'native' or 'numpy'")


DEFAULT_WORKSPACE_BUDGET = 1 << 30   # bytes of CPU workspace per lift_sequence call


def _budget_from_env() -> int:
    """``GASTRT_WORKSPACE_BUDGET`` (bytes, or with a K/M/G suffix), else 1 GiB."""
    v = os.environ.get("GASTRT_WORKSPACE_BUDGET", "").strip()
    if not v:
        return DEFAULT_WORKSPACE_BUDGET
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1:].upper(), 1)
    try:
        n = int(float(v[:-1] if mult > 1 else v) * mult)
    except (ValueError, OverflowError):  # "inf", "1e400"
        n = 0
    if n < 1 << 20:
        raise GastrtError(f"GASTRT_WORKSPACE_BUDGET={v!r}: expected bytes (at least 1M), e.g. 512M or 2G")
    return n


def load(path, device: str | None = None, threads: int | None = None, backend: str | None = None,
         verify: bool = True) -> "Engine":
    """Open an engine on a device ("cpu", "cuda", "cuda:N"; default "cpu", and "cuda" for a
    TensorRT `.plan`). ``threads``: CPU threads (default: available cores). ``backend``: on the
    CPU "native" (C++) or "numpy" (reference), default native when built; "tensorrt" for plans
    (other file formats are found by ``backends.find_loader``)."""
    path = os.fspath(path)
    loader = find_loader(path, backend)
    if loader is not None:
        m = loader.open(path, device, verify)
        return Engine(path, m.meta, m.plans, m.weights, m.backend, m.device)
    dev, index = parse_device(device or "cpu")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise GastrtError(f"threads must be a positive integer, got {threads!r}")
    model = read_model(path, verify=verify)
    meta, plans, weights = model.metadata, model.plans, model.weights
    try:
        be = _make_backend(backend, dev, index, plans, weights, threads, meta.get("precision", "fp32"))
    except (GastrtError, NativeError):  # a CUDA / runtime failure is not the file's fault
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, RuntimeError) as e:
        # a plan that passed the file checks (verify=False, or a crafted file with valid hashes)
        # but that a backend cannot take: still the file's fault, still one error type
        raise EngineFileError(f"{path}: the engine's plans cannot be set up ({type(e).__name__}: "
                              f"{str(e)[:160]})") from None
    return Engine(path, meta, plans, weights, be, f"{dev}:{index}" if dev == "cuda" else "cpu")


def _as_input(x, name: str) -> np.ndarray:
    """Validate a keypoint array: floating dtype (float64/float16 are converted to float32),
    finite (NaN / inf are rejected: fill missing detections first, see gastrt.keypoints), and
    not pixel coordinates (|value| above keypoints.PIXEL_LIMIT)."""
    try:
        a = np.asarray(x)
    except Exception:
        raise GastrtError(f"{name}: expected a NumPy float32 array (device arrays go to a CUDA engine)") from None
    if a.dtype.kind != "f":
        raise GastrtError(f"{name}: expected a floating-point array (float32), got dtype {a.dtype}")
    if a.size == 0:
        raise GastrtError(f"{name}: empty array of shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    hi, lo = float(a.max()), float(a.min())          # NaN propagates; no temporary array
    if not (np.isfinite(hi) and np.isfinite(lo)):
        bad = a.size - int(np.count_nonzero(np.isfinite(a)))
        raise GastrtError(f"{name}: {bad} non-finite values (NaN/inf); fill missing keypoints first "
                          "(gastrt lift does this for detector files)")
    refuse_pixels(max(hi, -lo), name)
    return a


class Engine:
    """A loaded engine. Thread-safe: calls from several threads may run at once (each call has
    its own buffers; the native backend releases the GIL).

    Input and output contract of ``lift`` / ``lift_sequence`` (the originals' own):
      * 2D keypoints in the engine's joint order (``metadata['input_layout']``: Human3.6M-17
        unless the model was trained on COCO order) and in *normalised screen coordinates*:
        x_n = x / w * 2 - 1, y_n = y / w * 2 - h / w for a w x h frame
        (``gastrt.keypoints.normalize_screen``). Pixel coordinates give meaningless poses;
        ``gastrt.lifting.prepare_keypoints`` / ``lift_file`` convert detector output.
      * 3D poses in the camera frame (x right, y down, z forward), metres, relative to the root
        joint (joint 0), in the engine's output joint order (``num_joints_out``).
    """

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
        # lift_sequence runs long inputs in chunks: at most this many output frames (summed over
        # people) per backend call, and on a CPU at most `workspace_budget` bytes of workspace
        # (GAST-27 with flip needs ~0.4 MiB per frame: a 16384-frame chunk was 6.4 GiB)
        self.max_sequence_frames = 16384
        self.workspace_budget = _budget_from_env()
        self._workspace_lines: dict = {}  # (plan, mode, rows) -> (a, b): see _workspace_line

    def __repr__(self):
        return (f"<gastrt.Engine {self.family} rf={self.receptive_field} joints={self.num_joints} "
                f"causal={self.causal} {self.precision} on {self.device} ({self.backend.name})>")

    @property
    def weights(self) -> types.MappingProxyType:
        """The engine's weights by name (float32 arrays; read-only view)."""
        return types.MappingProxyType(self._weights)

    # -- flip test-time augmentation (skeletons.flip_*: one definition for Engine and Stream) ---
    def flip_permutations(self, plan: str = "pos") -> tuple[np.ndarray, np.ndarray]:
        """(input, output) joint permutations of flip TTA for ``plan``: [J_in], [J_out]."""
        p = self.plans[plan]
        return (flip_permutation(p.in_joints, self.kps_left, self.kps_right),
                flip_permutation(p.out_joints, self.joints_left, self.joints_right))

    def run_plan(self, plan: str, x: np.ndarray, mode: str, flip: bool = False) -> np.ndarray:
        """One backend call on a validated host array x [N, T, J, F] float32 ->
        [N, T_out, J_out, 3]. Flip TTA as the originals: negate x, swap left/right, run, undo,
        average, in ONE batch of 2N."""
        if not flip:
            return self.backend.run(plan, x, mode)
        n = x.shape[0]
        p_in, p_out = self.flip_permutations(plan)
        y = self.backend.run(plan, np.concatenate([x, flip_joints(x, p_in)]), mode)
        return merge_flipped(y[:n], y[n:], p_out)

    # -- public API ------------------------------------------------------------------------
    def _check_windows(self, windows, plan: Plan) -> np.ndarray:
        x = _as_input(windows, "windows")
        want = (plan.receptive_field, plan.in_joints, plan.in_features)
        if x.ndim != 4 or x.shape[1:] != want:
            raise GastrtError(f"windows: expected shape (B, {want[0]}, {want[1]}, {want[2]}) "
                              f"(batch, receptive field, joints, xy), got {x.shape}")
        return x

    def _run_device(self, plan: str, x, mode: str, flip: bool, out=None):
        """Device arrays (torch / CuPy / __cuda_array_interface__ / DLPack) in and out, zero copy.
        Flip uses the array's own indexing, so it works for torch and CuPy alike. Non-finite
        values are not checked on this path (that would need a device reduction + sync)."""
        if not flip:
            return self.backend.run_device(plan, x, mode, out=out)
        p_in = flip_permutation(x.shape[-2], self.kps_left, self.kps_right)
        xf = flip_joints(x, p_in)
        y = self.backend.run_device(plan, x, mode, out=out)
        yf = self.backend.run_device(plan, xf, mode)
        p_out = flip_permutation(yf.shape[-2], self.joints_left, self.joints_right)
        return merge_flipped(y, yf, p_out)

    def lift(self, windows, flip: bool = False, out=None):
        """windows [B, RF, J, 2] float32 -> [B, J, 3]: the pose of each window's output frame
        (its centre, or its last frame for a causal engine). On a CUDA engine, torch / CuPy
        device arrays go in and come out without a host copy; ``out`` ([B, 1, J, 3] device
        array) receives the result in place."""
        if self.backend.is_device_array(windows):
            return self._run_device("pos", windows, "window", flip, out)[:, 0]
        if out is not None:
            raise GastrtError("out= is for device arrays on a CUDA engine")
        plan = self.plans["pos"]
        x = self._check_windows(windows, plan)
        return self.run_plan("pos", x, "window", flip)[:, 0]

    def lift_trajectory(self, windows, flip: bool = False) -> np.ndarray:
        """VideoPose3D's trajectory model: windows [B, RF, J, 2] -> root position [B, 3]."""
        if not self.has_trajectory:
            raise GastrtError("this engine has no trajectory model (the checkpoint had no 'model_traj')")
        x = self._check_windows(windows, self.plans["traj"])
        return self.run_plan("traj", x, "window", flip)[:, 0, 0]

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
            chunk = self.sequence_chunk(plan_name, p, flip)
            rf = plan.receptive_field
            y = np.concatenate([self.run_plan(plan_name, np.ascontiguousarray(x[:, s:s + min(chunk, t - s) + rf - 1]),
                                          "sequence", flip) for s in range(0, t, chunk)], axis=1)
        else:  # RIE: one window per output frame
            win = np.lib.stride_tricks.sliding_window_view(x, plan.receptive_field, axis=1)
            win = win.transpose(0, 1, 4, 2, 3).reshape(p * t, plan.receptive_field, *x.shape[2:])
            chunk = self.window_chunk(plan_name, flip)
            y = np.concatenate([self.run_plan(plan_name, np.ascontiguousarray(win[i:i + chunk]), "window", flip)
                                for i in range(0, p * t, chunk)]).reshape(p, t, plan.out_joints, 3)
        return y[0] if single else y

    def sequence_chunk(self, plan_name: str, people: int, flip: bool) -> int:
        """Output frames per sequence in one lift_sequence call of the backend: at most
        max_sequence_frames / people, and on a CPU as many as fit ``workspace_budget`` bytes of
        workspace (3% headroom; the RF - 1 frames of context and any fixed part counted). The
        workspace is one thread's (``Backend.budget_bytes``): each further thread adds its kernel
        scratch, and the chunks, hence the results, are the same for any thread count."""
        cap = max(1, self.max_sequence_frames // people)
        if self.backend.capabilities.device != "cpu":
            return cap  # a GPU's arena is sized against device memory by its own backend
        rf = self.plans[plan_name].receptive_field
        a, b = self._workspace_line(plan_name, "sequence", people * (2 if flip else 1))
        return max(1, min(cap, int((0.97 * self.workspace_budget - a) / b) - (rf - 1)))

    def window_chunk(self, plan_name: str, flip: bool) -> int:
        """Windows per backend call when a sequence runs as one window per frame (RIE): at most
        4096 (2048 with flip), and on a CPU as many as fit ``workspace_budget``."""
        cap = 4096 // (2 if flip else 1)
        if self.backend.capabilities.device != "cpu":
            return cap
        a, b = self._workspace_line(plan_name, "window", 2 if flip else 1)
        return max(1, min(cap, int((self.workspace_budget - a) / b)))

    def _workspace_line(self, plan_name: str, mode: str, rows: int) -> tuple[float, float]:
        """One backend call's workspace as a + b * k, fitted from two sizes. sequence: k input
        frames of ``rows`` sequences (measured at RF + 256 and RF + 2048 frames, where chunks are:
        the slope creeps up with k); window: k windows of ``rows`` copies each (flip). Fitted
        once per (plan, mode, rows): the backend builds and caches a schedule per probed shape,
        and probing on every call would evict the shapes in real use."""
        key = (plan_name, mode, rows)
        if key not in self._workspace_lines:
            plan = self.plans[plan_name]
            rf, j, f = plan.receptive_field, plan.in_joints, plan.in_features
            if mode == "sequence":
                k1, k2 = rf + 256, rf + 2048
                w1, w2 = (self._workspace(plan_name, (rows, k, j, f), mode) for k in (k1, k2))
            else:
                k1, k2 = 1, 65
                w1, w2 = (self._workspace(plan_name, (k * rows, rf, j, f), mode) for k in (k1, k2))
            b = max(1.0, (w2 - w1) / (k2 - k1))
            self._workspace_lines[key] = (max(0.0, w1 - b * k1), b)
        return self._workspace_lines[key]

    def _workspace(self, plan_name: str, shape: tuple, mode: str) -> float:
        """Bytes one backend call on ``shape`` needs: the backend's own count, else (the NumPy
        oracle, which keeps every intermediate) the sum of the plan's buffers."""
        try:
            # thread-invariant (budget_bytes): chunk boundaries change the rounding of results
            ws = self.backend.budget_bytes(plan_name, shape[0], shape[1], mode)
        except Exception:  # a size estimate must never fail the call
            ws = None
        if ws is None:
            shapes = infer_shapes(self.plans[plan_name], shape, lambda w: self._weights[w].shape, mode)
            ws = 4 * sum(int(np.prod(s)) for s in shapes.values())
        return float(ws)

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
        kernels: "auto" (the GPU on a CUDA engine, whole windows through ``lift`` on a TensorRT
        engine, else the native CPU kernels when built),
        "cuda", "native" or "numpy"."""
        from .stream import Stream
        return Stream(self, slots=slots, flip=flip, kernels=kernels)
