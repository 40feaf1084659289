"""``Stream``: the slots, their states and frame counters, bad-input handling, flip, and the
choice of column kernels; the per-column arithmetic is in ``cpu.py`` (CPU) and
``backends/cuda`` (``CudaStreamColumns``, GPU).

Kernels. ``kernels="auto"`` follows the engine backend's ``capabilities.stream``: "cuda" (rings
on the GPU), "native" (the C++ few-row kernels), "numpy" (host columns: the C++ kernels when this
install has them, else NumPy / BLAS) or "engine" (one window per push through ``engine.lift``: a
backend without column kernels, e.g. TensorRT). A plan without
a sequence form (RIE) always streams windows.

GPU. On an engine loaded with ``device="cuda"`` (``kernels="auto"`` or ``"cuda"``) the column
steps run on the GPU (``CudaStreamColumns``): the rings live in a device arena of the stream's
own executor, the active slots are padded to a power-of-two bucket, and a push is one program
run: the frames and a per-row slot table copied in, one CUDA graph replay (ring gathers, the conv
GEMMs with fused epilogues, the attention blocks, ring writes), the new output column copied out.
Activations are kept in the engine precision, as in the CUDA engine's lift_sequence. Written
without a GPU: exact on the executor simulator, not yet run on a device. RIE's windows go to the
engine's device either way.

Only the public Engine API is used: plans, weights, precision, causal, backend, family, lift,
kps_left / kps_right, joints_left / joints_right.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from ..errors import GastrtError
from ..keypoints import refuse_pixels
from ..plan import Plan, plan_flops
from ..skeletons import flip_joints, merge_flipped
from .cpu import ColumnProgram, WindowProgram, native_stream_kernels
from .geometry import ColumnGeometry

# slot states
IDLE, ACTIVE, FLUSHED = "idle", "active", "flushed"
_STATE_NAMES = (IDLE, ACTIVE, FLUSHED)
_IDLE, _ACTIVE, _FLUSHED = 0, 1, 2

KERNELS = ("auto", "numpy", "native", "cuda")


MAX_SLOTS = 10_000_000   # a stream's slot count: beyond any live deployment, far below an OOM


class StreamPose(NamedTuple):
    """One finalised frame of one slot."""
    slot: int
    frame: int            # index of the frame in its slot's sequence (0 = the first push after reset)
    pose: np.ndarray      # (J_out, 3) float32
    filled: bool          # some keypoint of that input frame was non-finite and held / filled


@dataclass
class StreamOutput:
    """The poses that became final on one ``push`` / ``flush``, as parallel arrays (K entries,
    ordered by slot, then frame): ``slots`` (K,) int64, ``frames`` (K,) int64 (frame index in
    the slot's sequence), ``poses`` (K, J_out, 3) float32, ``filled`` (K,) bool. Iterating
    yields ``StreamPose(slot, frame, pose, filled)``; ``len()`` is K."""
    slots: np.ndarray
    frames: np.ndarray
    poses: np.ndarray
    filled: np.ndarray

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def __iter__(self) -> Iterator[StreamPose]:
        for i in range(len(self)):
            yield StreamPose(int(self.slots[i]), int(self.frames[i]), self.poses[i], bool(self.filled[i]))

    def for_slot(self, slot: int) -> "StreamOutput":
        m = self.slots == slot
        return StreamOutput(self.slots[m], self.frames[m], self.poses[m], self.filled[m])

    @staticmethod
    def empty(joints: int) -> "StreamOutput":
        return StreamOutput(np.zeros(0, np.int64), np.zeros(0, np.int64),
                            np.zeros((0, joints, 3), np.float32), np.zeros(0, bool))

    @staticmethod
    def concat(parts: list["StreamOutput"], joints: int, sort: bool = True) -> "StreamOutput":
        parts = [p for p in parts if len(p)]
        if not parts:
            return StreamOutput.empty(joints)
        if len(parts) == 1:
            out = parts[0]
        else:
            out = StreamOutput(np.concatenate([p.slots for p in parts]), np.concatenate([p.frames for p in parts]),
                               np.concatenate([p.poses for p in parts]), np.concatenate([p.filled for p in parts]))
        if sort and len(out) > 1:
            o = np.lexsort((out.frames, out.slots))
            out = StreamOutput(out.slots[o], out.frames[o], out.poses[o], out.filled[o])
        return out


class Stream:
    """Incremental lifting of ``slots`` independent sequences (see the package doc).

    ``Stream(engine, slots=1, flip=False, kernels="auto")``; usually ``engine.stream(slots, flip)``.
    kernels: "auto" (what the engine's backend offers: ``capabilities.stream``; see the module
    doc), "cuda" (the column steps on the engine's GPU), "numpy", or "native" (the native few-row
    linear kernel for conv columns of up to ``ColumnProgram.LINEAR_ROWS`` rows and the native
    graph-attention block; any engine backend).

    Attributes: ``slots``, ``flip``, ``lookahead`` (frames a pose lags behind its push: pad, or 0
    when causal), ``windowed`` (True when a push lifts one window: RIE, or a backend without
    column kernels), ``kernels`` (what runs the pushes), ``flops`` (FLOPs executed so far, all
    slots, flush padding included), ``columns`` (slot-frames computed so far).
    """

    def __init__(self, engine, slots: int = 1, flip: bool = False, kernels: str = "auto"):
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise GastrtError(f"slots must be a positive integer, got {slots!r}")
        if slots > MAX_SLOTS:
            raise GastrtError(f"slots={slots}: at most {MAX_SLOTS:,} slots per stream (each holds its "
                              "sequence's recent frames and layer columns); open several streams")
        try:
            self._init(engine, int(slots), flip, kernels)
        except MemoryError as e:
            raise GastrtError(f"stream(slots={slots}): not enough memory for the slots' state "
                              f"({str(e)[:120]}); use fewer slots") from None

    def _init(self, engine, slots: int, flip: bool, kernels: str) -> None:
        if kernels not in KERNELS:
            raise GastrtError(f"kernels must be 'auto', 'numpy', 'native' or 'cuda', got {kernels!r}")
        caps = engine.backend.capabilities
        if kernels == "cuda" and caps.stream != "cuda":
            raise GastrtError("kernels='cuda' needs an engine on a GPU (gastrt.load(path, device='cuda'))")
        self.engine = engine
        self.slots = n = int(slots)
        self.flip = bool(flip)
        plan: Plan = engine.plans["pos"]
        self.plan = plan
        self.num_joints, self.in_features = plan.in_joints, plan.in_features
        self.num_joints_out = plan.out_joints
        self.receptive_field = plan.receptive_field
        self.pad = plan.pad
        self.causal = bool(engine.causal)
        self.causal_shift = self.pad if self.causal else 0
        self.lookahead = self.pad - self.causal_shift
        weights = engine.weights
        wshape = lambda name: weights[name].shape  # noqa: E731
        self._window_flops = int(plan_flops(plan, (1, plan.receptive_field, plan.in_joints, plan.in_features),
                                            wshape, "window"))
        mult = 2 if self.flip else 1
        if self.flip:  # fail early when the engine has no left/right symmetry
            self._perm_in, self._perm_out = engine.flip_permutations("pos")
        choice = caps.stream if kernels == "auto" else kernels
        if kernels == "auto" and choice == "numpy" and native_stream_kernels() is not None:
            choice = "native"   # host columns run on the C++ kernels whenever this install has them
        self.windowed = "sequence" not in plan.modes or choice == "engine"
        if self.windowed:
            self.kernels = f"engine ({engine.backend.name})"
            self._prog = WindowProgram(plan, n, lambda win: engine.run_plan("pos", win, "window", self.flip)[:, 0])
            self._push_flops = self._window_flops * mult
        elif choice == "cuda":
            from ..backends.cuda import CudaStreamColumns
            geo = ColumnGeometry(plan, wshape)
            self.kernels = "cuda"
            self._prog = CudaStreamColumns(engine.backend, plan, weights, geo, n * mult)
            self._push_flops = int(geo.col_flops) * mult
        else:
            native = native_stream_kernels() if choice == "native" else None
            if kernels == "native" and native is None:
                raise GastrtError("kernels='native' needs the native CPU runtime (gastrt.build_config()['native'] "
                                  "is False in this install)")
            self.kernels = "native" if native is not None else "numpy"
            self._prog = ColumnProgram(plan, weights, n * mult, native, engine.precision, int(caps.threads or 1))
            self._push_flops = int(self._prog.col_flops) * mult
        self.flops = 0
        self.columns = 0
        self._state = np.zeros(n, np.int8)
        self._nframes = np.zeros(n, np.int64)     # real frames pushed in the current sequence
        self._cnt = np.zeros(n, np.int64)         # columns computed (frames + flush padding)
        self._last = np.zeros((n, plan.in_joints, plan.in_features), np.float32)
        self._fring = np.zeros((n, self.lookahead + 1), bool)  # filled flags of the last frames
        self._all = np.arange(n, dtype=np.int64)

    def __repr__(self) -> str:
        n_act = int((self._state == _ACTIVE).sum())
        return (f"<gastrt.Stream {self.engine.family} slots={self.slots} active={n_act} flip={self.flip} "
                f"lookahead={self.lookahead} {'windowed' if self.windowed else 'columns'} ({self.kernels})>")

    # -- introspection ---------------------------------------------------------------------------
    def flops_per_push(self) -> int:
        """FLOPs one slot's push executes (the sequence form's FLOPs per frame; one window for
        RIE), doubled with flip."""
        return self._push_flops

    def window_flops(self) -> int:
        """FLOPs of lifting one frame from its own window (``engine.lift``), doubled with flip."""
        return self._window_flops * (2 if self.flip else 1)

    def state(self, slot: int) -> str:
        """'idle' (no sequence: the next push starts one), 'active' or 'flushed'."""
        return _STATE_NAMES[int(self._state[self._slot(slot)])]

    def frames_pushed(self, slot: int) -> int:
        """Frames pushed to the slot's current sequence."""
        return int(self._nframes[self._slot(slot)])

    def stats(self) -> dict:
        return {"slots": self.slots, "active": int((self._state == _ACTIVE).sum()), "flops": int(self.flops),
                "columns": int(self.columns), "flops_per_push": self.flops_per_push(),
                "window_flops": self.window_flops(), "lookahead": self.lookahead,
                "windowed": self.windowed, "kernels": self.kernels, "ring_bytes": int(self._prog.ring_bytes),
                "device_bytes": getattr(self._prog, "device_bytes", None)}

    # -- helpers -------------------------------------------------------------------------------------
    def _slot(self, slot) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)):
            raise GastrtError(f"slot must be an integer, got {slot!r}")
        if not 0 <= slot < self.slots:
            raise GastrtError(f"slot {slot} does not exist (this stream has {self.slots} slot"
                              f"{'s' if self.slots > 1 else ''}: 0..{self.slots - 1})")
        return int(slot)

    def _slot_list(self, slot) -> np.ndarray:
        if slot is None:
            return self._all
        if isinstance(slot, (int, np.integer)) and not isinstance(slot, bool):
            return np.array([self._slot(slot)], np.int64)
        return np.unique(np.array([self._slot(s) for s in slot], np.int64))

    def _compute(self, act: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        """One column / window for the active slots: (A, J_out, 3) float32."""
        cnt = self._cnt[act]
        a = act.shape[0]
        if self.flip and not self.windowed:
            # the flipped copies run as virtual slots act + slots, in the same column
            va = np.concatenate([act, act + self.slots])
            vf = None if fresh is None else np.concatenate([fresh, fresh])
            xx = np.concatenate([x, flip_joints(x, self._perm_in)])
            y = self._prog.run(va, np.concatenate([cnt, cnt]), xx, vf)
            out = merge_flipped(y[:a], y[a:], self._perm_out)
        else:
            out = np.array(self._prog.run(act, cnt, x, fresh), dtype=np.float32, copy=True)
        self._cnt[act] += 1
        self.flops += self._push_flops * a
        self.columns += a
        return out

    def _restore(self, act: np.ndarray, saved: tuple) -> None:
        self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act] = saved

    def _emit(self, act: np.ndarray, t: np.ndarray, y: np.ndarray) -> StreamOutput:
        m = t >= 0
        if m.all():
            s, tt, yy = act, t, y
        else:
            s, tt, yy = act[m], t[m], y[m]
        filled = self._fring[s, tt % (self.lookahead + 1)]
        return StreamOutput(s.copy(), tt.copy(), yy, filled)

    # -- public API ----------------------------------------------------------------------------------
    def push(self, frames, present=None, filled=None) -> StreamOutput:
        """Feed one frame to each present slot. frames (slots, J, 2) float (a single (J, 2) frame
        when slots == 1); present (slots,) bool, None = every slot (frames of absent slots are
        ignored and may be anything); filled (slots,) bool, optional: frames the caller filled
        itself (reported back as filled). A push to an idle slot starts its sequence.
        -> StreamOutput: the poses finalised by this push (frame f - lookahead of each present
        slot whose sequence is that far)."""
        n, j, f = self.slots, self.num_joints, self.in_features
        try:
            x = np.asarray(frames)
        except Exception:
            raise GastrtError("frames: expected a float32 array of shape (slots, J, 2)") from None
        if x.dtype.kind != "f":
            raise GastrtError(f"frames: expected a floating-point array (float32), got dtype {x.dtype}")
        if x.ndim == 2 and n == 1:
            x = x[None]
        if x.shape != (n, j, f):
            raise GastrtError(f"frames: expected shape ({n}, {j}, {f}) (slots, joints, xy), got {np.shape(frames)}")
        if present is None:
            act = self._all
        else:
            pm = np.asarray(present)
            if pm.shape != (n,) or pm.dtype != bool:
                raise GastrtError(f"present: expected a bool array of shape ({n},), got "
                                  f"{pm.dtype} {pm.shape}")
            act = np.flatnonzero(pm)
        if act.shape[0] == 0:
            return StreamOutput.empty(self.num_joints_out)
        fl = None
        if filled is not None:
            fm = np.asarray(filled)
            if fm.shape != (n,) or fm.dtype != bool:
                raise GastrtError(f"filled: expected a bool array of shape ({n},), got {fm.dtype} {fm.shape}")
            fl = fm[act]
        st = self._state[act]
        if (st == _FLUSHED).any():
            s = int(act[np.argmax(st == _FLUSHED)])
            raise GastrtError(f"slot {s} was flushed (its sequence ended); call reset({s}) before pushing "
                              "a new sequence to it")
        xa = np.array(x[act], dtype=np.float32)             # (A, J, F), our copy
        fin = np.isfinite(xa)
        bad = ~fin.all(axis=-1)                              # (A, J)
        refuse_pixels(float(np.max(np.abs(xa), where=fin, initial=0.0)), "frames")
        is_fresh = st == _IDLE
        any_bad = bad.any(axis=1)
        if any_bad.any():
            first_bad = any_bad & is_fresh
            if first_bad.any():
                i = int(np.argmax(first_bad))
                raise GastrtError(f"slot {int(act[i])}: the first frame of a sequence has non-finite keypoints "
                                  f"(joints {np.flatnonzero(bad[i]).tolist()}): there is no earlier value to "
                                  "hold; fill them (e.g. from the other joints) or start the slot later")
            xa[bad] = self._last[act][bad]
            frame_filled = any_bad if fl is None else (any_bad | fl)
        else:
            frame_filled = np.zeros(act.shape[0], bool) if fl is None else fl.copy()
        # commit (undone if the compute fails: a slot must not look started with unfilled rings)
        saved = (self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act])
        fresh = is_fresh if is_fresh.any() else None
        try:
            if fresh is not None:
                fa = act[is_fresh]
                self._nframes[fa] = 0
                self._cnt[fa] = 0
                self._state[fa] = _ACTIVE
            self._last[act] = xa
            fi = self._nframes[act]
            self._fring[act, fi % (self.lookahead + 1)] = frame_filled
            y = self._compute(act, xa, fresh)
        except BaseException:
            self._restore(act, saved)
            raise
        self._nframes[act] += 1
        return self._emit(act, fi - self.lookahead, y)

    def flush(self, slot=None) -> StreamOutput:
        """End the sequence of ``slot`` (an int, a list of slots, or None = every active slot):
        feeds ``lookahead`` copies of its last frame (the right edge padding of lift_sequence),
        batched over the flushed slots, and returns the frames not yet finalised. The slot then
        is 'flushed' (pushing raises until reset). Idle / already flushed slots are skipped."""
        sl = self._slot_list(slot)
        act = sl[self._state[sl] == _ACTIVE]
        if act.shape[0] == 0:
            return StreamOutput.empty(self.num_joints_out)
        parts = []
        t_end = self._nframes[act]
        x = self._last[act]
        saved = (self._state[act], self._nframes[act], self._cnt[act], self._last[act], self._fring[act])
        try:
            for i in range(self.lookahead):
                y = self._compute(act, x, None)
                t = t_end - self.lookahead + i
                parts.append(self._emit(act, t, y))
        except BaseException:   # the slots stay active, as before the call: flush may be retried
            self._restore(act, saved)
            raise
        self._state[act] = _FLUSHED
        return StreamOutput.concat(parts, self.num_joints_out)

    def reset(self, slot=None) -> None:
        """Forget the slot's sequence (an int, a list, or None = all): the next push to it starts a
        new sequence (frame index 0). Frames not yet finalised are dropped (flush first to keep them)."""
        sl = self._slot_list(slot)
        self._state[sl] = _IDLE
        self._nframes[sl] = 0
        self._cnt[sl] = 0
