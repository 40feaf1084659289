"""Missing-detection filling: per person, per joint, linear interpolation over time with the
first/last detected value held at the ends."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GastrtError

# Default --max-gap, in receptive fields: interpolating across longer stretches without any
# detection invents motion the model never saw, and in a file it usually means corrupt numbering.
MAX_GAP_RECEPTIVE_FIELDS = 10


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


def longest_gap(present: np.ndarray) -> tuple[int, int]:
    """The longest run of frames between two detections in which nobody has a detected joint
    (runs before the first / after the last detection are held, not interpolated, and do not
    count). present: (P, T, J) bool. -> (first frame, length); (0, 0) when there is none."""
    any_frame = np.asarray(present, dtype=bool).reshape(present.shape[0], present.shape[1], -1)
    seen = any_frame.any(axis=(0, 2))                                 # (T,)
    idx = np.flatnonzero(seen)
    empty = ~seen
    if idx.size:
        empty[:idx[0]] = False
        empty[idx[-1] + 1:] = False
    else:
        empty[:] = False
    if not empty.any():
        return 0, 0
    edges = np.diff(np.concatenate(([0], empty.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])


def check_gaps(present: np.ndarray, max_gap: int, source: str, *, frame_offset: int = 0) -> None:
    """Refuse a run of more than ``max_gap`` frames without any detection (0: no limit), naming
    the frames (0-based, + ``frame_offset``) and the flag that lifts the limit."""
    if not max_gap:
        return
    start, n = longest_gap(present)
    if n > max_gap:
        a, b = start + frame_offset, start + n - 1 + frame_offset
        raise GastrtError(f"{source}: video frames {a}..{b} (counted from 0; {n} frames) have no detection; at most {max_gap} "
                          f"are filled by interpolation (--max-gap; 0 lifts the limit): a gap this long "
                          f"gives invented poses, or the file's frame numbers are corrupt")
