"""The four errors of the originals' ``common/loss.py`` (VideoPose3D; GAST-Net and RIE carry
copies), in the units of the input (metres in, metres out). NumPy only, computed in float64.

Shapes: poses are (..., J, 3); ``p_mpjpe`` and ``mean_velocity_error`` take one sequence
(T, J, 3), as the originals' evaluate() hands them. Every function returns a Python float."""
from __future__ import annotations

import numpy as np

from ..errors import GastrtError


def _pair(predicted, target, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape or p.ndim < 2 or p.shape[-1] != 3:
        raise GastrtError(f"{name}: predicted {p.shape} and target {t.shape} must be the same (..., J, 3)")
    return p, t


def mpjpe(predicted, target) -> float:
    """Protocol #1: mean Euclidean distance over every joint of every frame."""
    p, t = _pair(predicted, target, "mpjpe")
    return float(np.mean(np.linalg.norm(p - t, axis=-1)))


def p_mpjpe(predicted, target) -> float:
    """Protocol #2: MPJPE after aligning each predicted frame to its target with the optimal
    similarity transform (Procrustes: rotation without reflection, scale, translation).
    predicted, target (N, J, 3)."""
    p, t = _pair(predicted, target, "p_mpjpe")
    if p.ndim != 3:
        raise GastrtError(f"p_mpjpe: expected (N, J, 3) arrays, got {p.shape}")
    mu_x = t.mean(axis=1, keepdims=True)
    mu_y = p.mean(axis=1, keepdims=True)
    x0, y0 = t - mu_x, p - mu_y
    norm_x = np.sqrt(np.sum(x0 ** 2, axis=(1, 2), keepdims=True))
    norm_y = np.sqrt(np.sum(y0 ** 2, axis=(1, 2), keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = (x0 / norm_x).transpose(0, 2, 1) @ (y0 / norm_y)
    if not np.isfinite(h).all():   # NaN input or a pose collapsed to a point: undefined, not 0
        return float("nan")
    u, s, vt = np.linalg.svd(h)
    v = vt.transpose(0, 2, 1)
    r = v @ u.transpose(0, 2, 1)
    # a reflection (det R = -1) is no rotation: flip the last singular direction instead, as
    # loss.py does (np.sign: a degenerate det 0 zeroes it)
    sign = np.sign(np.linalg.det(r))
    v[:, :, -1] *= sign[:, None]
    s[:, -1] *= sign
    r = v @ u.transpose(0, 2, 1)
    scale = s.sum(axis=1)[:, None, None] * norm_x / norm_y
    shift = mu_x - scale * (mu_y @ r)
    aligned = scale * (p @ r) + shift
    return float(np.mean(np.linalg.norm(aligned - t, axis=-1)))


def n_mpjpe(predicted, target) -> float:
    """Protocol #3 (N-MPJPE): MPJPE after scaling each predicted frame by the least-squares
    factor <target, predicted> / <predicted, predicted> over its joints."""
    p, t = _pair(predicted, target, "n_mpjpe")
    norm_p = np.mean(np.sum(p ** 2, axis=-1, keepdims=True), axis=-2, keepdims=True)
    norm_t = np.mean(np.sum(t * p, axis=-1, keepdims=True), axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):   # a zero prediction: NaN, reported upstream
        scale = norm_t / norm_p
    return mpjpe(scale * p, t)


def mean_velocity_error(predicted, target) -> float:
    """MPJVE: mean Euclidean distance of the first differences over time (axis 0): (T, J, 3),
    T >= 2."""
    p, t = _pair(predicted, target, "mean_velocity_error")
    if p.shape[0] < 2:
        raise GastrtError(f"mean_velocity_error: needs at least 2 frames, got {p.shape[0]}")
    return float(np.mean(np.linalg.norm(np.diff(p, axis=0) - np.diff(t, axis=0), axis=-1)))
