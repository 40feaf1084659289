"""A Stream's column steps on the GPU: per-slot rings of past columns in a device arena, one
program run per push (lowering.lower_stream)."""
from __future__ import annotations

import numpy as np

from ...errors import DeviceOutOfMemory, OutOfMemoryError
from ...plan import Plan
from .lowering import dtype_bytes, lower_stream, next_pow2, ring_nbytes, upload_weights
from .records import program_layout


class CudaStreamColumns:
    """The column steps of a Stream on the GPU (the stream's ``run(act, cnt, x, fresh)``): per-slot
    rings of past columns live in a device arena of their own (a separate executor engine, so no
    other program reuses that memory), and a push is one program run: the input rows (frames +
    slot table) copied in, one CUDA graph replay (gathers, GEMMs with fused epilogues, attention
    blocks, ring writes), the new output column copied out. Active rows are padded to a power-of-
    two bucket (padding rows carry slot -1: they touch no ring)."""

    def __init__(self, backend, plan: Plan, weights, geo, nv: int):
        self.plan, self.geo, self.nv = plan, geo, int(nv)
        self._dtype = backend.dtype_code
        self._eng = backend.new_executor()
        for opt in ("gast_fused", "gast_scratch_budget", "gemm_tactic"):  # the engine's choices (set_option) hold here too
            self._eng.set_option(opt, backend.get_option(opt))
        self._wids, _ = upload_weights(self._eng, {"pos": plan}, weights)
        self.ring_bytes = sum(ring_nbytes(b, self.nv, dtype_bytes(self._dtype)) for b in geo.bufs if b.hist > 1)
        self.jf = geo.input.g * geo.input.c
        self.out_joints = geo.out_joints
        self._tcols = program_layout().stream_table_cols
        self._in = np.zeros((self.nv, self.jf + self._tcols), np.float32)
        self._y = np.zeros((self.nv, geo.output.g * geo.output.c), np.float32)
        self._progs: dict[int, int] = {}
        self.use_graphs = True
        # The largest program first: it sizes the arena once. Then the arena may not grow: growth
        # keeps the contents, but its out-of-memory retry frees the old arena (and the rings).
        self._program(self.nv)
        self._eng.set_option("arena_limit", int(self._eng.arena_bytes()))

    @property
    def device_bytes(self) -> int:
        """GPU memory of this stream's own executor: its arena (rings + workspace)."""
        return int(self._eng.arena_bytes())

    def bucket(self, a: int) -> int:
        return min(next_pow2(a), self.nv)

    def _program(self, nb: int) -> int:
        pid = self._progs.get(nb)
        if pid is None:
            low = lower_stream(self.plan, self.geo, nb, self.nv, self._wids, self._dtype,
                               self._eng.gast_scratch_bytes)
            try:
                pid = int(self._eng.create_program(low.code, low.arena_bytes, low.max_n, low.in_per_n,
                                                   low.out_per_n))
            except OutOfMemoryError as e:
                raise DeviceOutOfMemory(f"CUDA out of memory creating a stream of {self.nv} (virtual) slots: {e}. "
                                  "Use fewer slots.") from None
            self._progs[nb] = pid
        return pid

    def run(self, act: np.ndarray, cnt: np.ndarray, x: np.ndarray, fresh) -> np.ndarray:
        """act [A] virtual slots, cnt [A] their column counters, x [A, J, F], fresh [A] bool or
        None -> the new output column [A, J_out, 3] (a view of this object's buffer)."""
        a = int(act.shape[0])
        nb = self.bucket(a)
        pid = self._program(nb)
        jf = self.jf
        xin = self._in[:nb]
        xin[:a, :jf] = x.reshape(a, jf)
        xin[a:, :jf] = 0.0
        tab = xin.view(np.int32)[:, jf:]                 # the table words, bit for bit
        cnt = np.asarray(cnt, np.int64)
        tab[:a, 0] = act
        tab[:a, 1] = (cnt & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
        tab[:a, 2] = (cnt >> 32).astype(np.int32)
        tab[:a, 3] = 0 if fresh is None else np.asarray(fresh, bool)
        tab[a:] = 0
        tab[a:, 0] = -1
        y = self._y[:nb]
        self._eng.run_host(pid, xin, y, nb, self.use_graphs)
        return y[:a].reshape(a, self.out_joints, 3)

    def close(self) -> None:
        for pid in self._progs.values():
            self._eng.destroy_program(pid)
        self._progs.clear()
