"""Shared lowering tools: strict state-dict reader, BatchNorm folding, weight packing, plan builder."""
from __future__ import annotations

import numpy as np

from ..errors import CheckpointMismatch
from ..plan import Op

BN_EPS = 1e-5


class StateReader:
    """Reads a state dict for one family; the first missing key or wrong shape raises
    CheckpointMismatch naming the family. ``finish()`` rejects keys nobody read."""

    def __init__(self, sd: dict, family: str):
        self.sd = sd
        self.family = family
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str, shape: tuple | None = None, ndim: int | None = None) -> np.ndarray:
        if key not in self.sd:
            raise CheckpointMismatch(self.family, f"key {key!r} is missing")
        a = np.asarray(self.sd[key])
        if ndim is not None and a.ndim != ndim:
            raise CheckpointMismatch(self.family, f"{key!r} has shape {tuple(a.shape)}, expected {ndim} dimensions")
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise CheckpointMismatch(self.family, f"{key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}")
        self.used.add(key)
        return a.astype(np.float64)

    def bn(self, prefix: str, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode BatchNorm as y = s * x + t."""
        g = self.get(prefix + ".weight", (c,))
        b = self.get(prefix + ".bias", (c,))
        m = self.get(prefix + ".running_mean", (c,))
        v = self.get(prefix + ".running_var", (c,))
        if prefix + ".num_batches_tracked" in self.sd:
            self.used.add(prefix + ".num_batches_tracked")
        s = g / np.sqrt(v + BN_EPS)
        return s, b - m * s

    def finish(self) -> None:
        extra = sorted(set(self.sd) - self.used)
        if extra:
            raise CheckpointMismatch(self.family, f"unexpected key {extra[0]!r} ({len(extra)} unexpected in all)")


def pack_conv(w: np.ndarray) -> np.ndarray:
    """torch conv weight [Co, Ci, k(, 1)] -> channels-last GEMM operand [k*Ci, Co]
    (row tau*Ci + ci), so a contiguous k-frame window times it is the conv."""
    if w.ndim == 4:
        w = w[..., 0]
    co, ci, k = w.shape
    return np.ascontiguousarray(w.transpose(2, 1, 0).reshape(k * ci, co))


class PlanBuilder:
    """Accumulates ops and float64 weights; names are unique and stable."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.ops: list[Op] = []
        self.weights: dict[str, np.ndarray] = {}
        self._n = 0

    def weight(self, name: str, a: np.ndarray) -> str:
        full = f"{self.prefix}.{name}"
        assert full not in self.weights, full
        self.weights[full] = np.ascontiguousarray(a)
        return full

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}{self._n}"

    def op(self, kind, inputs, outputs, attrs=None, weights=None) -> list[str]:
        self.ops.append(Op(kind, list(inputs), list(outputs), dict(attrs or {}), dict(weights or {})))
        return outputs

    def conv(self, name: str, x: str, w: np.ndarray, b: np.ndarray, *, k: int, dilation: int = 1,
             act: str = "none", res: str | None = None, res_win_offset: int = 0,
             res_win_stride: int = 1, res_seq_offset: int = 0) -> str:
        """w packed [k*Ci, Co], b [Co]."""
        out = self.fresh("t")
        attrs = {"k": int(k), "dilation": int(dilation), "act": act}
        if res is not None:
            attrs.update(res_win_offset=int(res_win_offset), res_win_stride=int(res_win_stride),
                         res_seq_offset=int(res_seq_offset))
        self.op("conv", [x] + ([res] if res else []), [out], attrs,
                {"w": self.weight(name + ".w", w), "b": self.weight(name + ".b", b)})
        return out


def temporal_geometry(widths: list[int], causal: bool) -> list[dict]:
    """Per layer i >= 1 of a VideoPose3D-style stack: dilation, pad and the causal shifts of
    both forms (the originals' `pad`, `causal_shift` of the dilated and of the 1f model)."""
    out = []
    dil = widths[0]
    for fw in widths[1:]:
        out.append({"k": fw, "dilation": dil, "pad": (fw - 1) * dil // 2,
                    "shift_seq": (fw // 2) * dil if causal else 0,
                    "shift_win": fw // 2 if causal else 0})
        dil *= fw
    return out


def receptive_field(widths: list[int]) -> int:
    return int(np.prod(widths))
