"""Missing-detection filling: per person, per joint, linear interpolation over time with the
first/last detected value held at the ends."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def present_mask(kp: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """Which joints were really detected. kp: (..., J, 2) pixels, scores: (..., J) or None.

    A joint is missing when a coordinate is NaN/inf, both coordinates are exactly 0 (the
    zero-padding GAST-Net and OpenPose use), or its score is <= 0 or NaN. -> bool (..., J)
    """
    kp = np.asarray(kp)
    ok = np.all(np.isfinite(kp), axis=-1) & np.any(kp != 0, axis=-1)
    if scores is not None:
        s = np.asarray(scores)
        ok &= np.isfinite(s) & (s > 0)
    return ok


@dataclass
class FillResult:
    """keypoints (P, T, J, 2) with no gap left; frame_present (P, T): the person had at least
    one detected joint; filled_joints (P, T, J): entries that were filled; never_seen (P, J):
    joints never detected for a person that exists (filled from that frame's other joints)."""
    keypoints: np.ndarray
    frame_present: np.ndarray
    filled_joints: np.ndarray
    never_seen: np.ndarray


def fill_missing(kp: np.ndarray, present: np.ndarray) -> FillResult:
    """Fill gaps. kp: (P, T, J, 2), present: (P, T, J) bool (see present_mask).

    Each (person, joint) track is linearly interpolated between its detected frames and held
    constant before the first / after the last one. A joint a person never shows is set, per
    frame, to the mean of that frame's (filled) other joints. People with no detection at all
    stay NaN; the caller drops them.
    """
    kp = np.array(kp, dtype=np.float32, copy=True)
    present = np.asarray(present, dtype=bool)
    if kp.ndim != 4 or kp.shape[-1] != 2 or present.shape != kp.shape[:-1]:
        raise ValueError(f"fill_missing needs kp (P, T, J, 2) and present (P, T, J), "
                         f"got {kp.shape} and {present.shape}")
    P, T, J, _ = kp.shape
    t = np.arange(T, dtype=np.float64)
    kp[~present] = np.nan
    never = ~present.any(axis=1)  # (P, J)
    for p in range(P):
        for j in range(J):
            m = present[p, :, j]
            if m.all() or not m.any():
                continue
            for c in range(2):
                kp[p, :, j, c] = np.interp(t, t[m], kp[p, m, j, c].astype(np.float64))
        bad = never[p]
        if bad.any() and not bad.all():
            centre = np.mean(kp[p][:, ~bad], axis=1)  # (T, 2)
            kp[p][:, bad] = centre[:, None, :]
    return FillResult(kp, present.any(axis=2), ~present, never)
