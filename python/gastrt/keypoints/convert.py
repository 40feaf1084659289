"""Joint-layout conversion (detector layouts -> the engine's layout), screen normalisation and
the demo world transform, following GAST-Net's ``tools/mpii_coco_h36m.py``, ``reconstruction.py``
and ``common/camera.py`` (re-implemented, vectorised over any leading dims).

Layouts (``fmt`` names):

* ``coco``       COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
* ``wholebody``  COCO-WholeBody: the first 23 of 133 points (17 body + 6 feet) are used
* ``mpii``       MPII-16
* ``openpose``   OpenPose BODY_25 or COCO-18 (re-ordered to COCO-17 / WholeBody-23 first)
* ``h36m``       already in the engine's layout (H36M-17, H36M+toes-19 or HumanEva-15)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import GastrtError as UserError

FORMATS = ("coco", "wholebody", "h36m", "mpii", "openpose")

# --- COCO-17 -> H36M-17 (GAST-Net coco_h36m) ------------------------------------------------
# h36m index <- coco index, for the joints copied as they are
_H36M_FROM_COCO_DST = np.array([9, 11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3])
_H36M_FROM_COCO_SRC = np.array([0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])
# --- MPII-16 -> H36M-17 (GAST-Net mpii_h36m): h36m[_H36M_FROM_MPII[i]] = mpii[i] ------------
_H36M_FROM_MPII = np.array([3, 2, 1, 4, 5, 6, 0, 8, 9, 10, 16, 15, 14, 11, 12, 13])
# --- H36M-17 -> H36M+toes-19 (GAST-Net coco_h36m_toe_format) ---------------------------------
_TOES19_BODY = np.array([0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18])

# --- OpenPose -> COCO order (neck, mid-hip dropped) -----------------------------------------
# COCO-18 (OpenPose): nose, neck, r-sho, r-elb, r-wri, l-sho, l-elb, l-wri, r-hip, r-knee,
# r-ank, l-hip, l-knee, l-ank, r-eye, l-eye, r-ear, l-ear
OPENPOSE18_TO_COCO17 = np.array([0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10])
# BODY_25: as COCO-18 with mid-hip at 8 (hips/legs shifted by one), then l-big-toe,
# l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel at 19..24 (= WholeBody 17..22 order)
BODY25_TO_COCO17 = np.array([0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11])
BODY25_TO_WHOLEBODY23 = np.concatenate([BODY25_TO_COCO17, np.arange(19, 25)])


def _mean(x: np.ndarray, idx, axis: int = -2) -> np.ndarray:
    return np.mean(np.take(x, idx, axis=axis), axis=axis, dtype=np.float32)


def coco_to_h36m(kp: np.ndarray) -> np.ndarray:
    """COCO-17 -> H36M-17 exactly as GAST-Net's ``coco_h36m``. kp: (..., 17, 2) -> (..., 17, 2).

    pelvis = mean(hips); spine = mean(shoulders, hips); thorax = mean(shoulders) moved 1/3 of
    the way to the nose, then raised by 2/3 of (mean eye y - nose y); head x = mean(eyes, ears),
    head y = eye_l y + eye_r y - nose y; neck/nose (9) = nose moved 1/4 towards mean(shoulders);
    spine x pushed out by 2 * (spine x - mean(pelvis x, thorax x)).
    """
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape[-2:] != (17, 2):
        raise ValueError(f"coco_to_h36m needs (..., 17, 2), got {kp.shape}")
    out = np.zeros_like(kp)
    nose = kp[..., 0, :]
    shoulders = _mean(kp, [5, 6])
    head = np.empty_like(nose)
    head[..., 0] = _mean(kp[..., 0], [1, 2, 3, 4], axis=-1)
    head[..., 1] = kp[..., 1, 1] + kp[..., 2, 1] - kp[..., 0, 1]
    thorax = shoulders + (nose - shoulders) / 3
    out[..., 10, :] = head
    out[..., 8, :] = thorax
    out[..., 0, :] = _mean(kp, [11, 12])
    out[..., 7, :] = _mean(kp, [5, 6, 11, 12])
    out[..., _H36M_FROM_COCO_DST, :] = kp[..., _H36M_FROM_COCO_SRC, :]
    out[..., 9, :] -= (out[..., 9, :] - shoulders) / 4
    out[..., 7, 0] += 2 * (out[..., 7, 0] - _mean(out[..., 0], [0, 8], axis=-1))
    out[..., 8, 1] -= (_mean(kp[..., 1], [1, 2], axis=-1) - kp[..., 0, 1]) * 2 / 3
    return out


def mpii_to_h36m(kp: np.ndarray) -> np.ndarray:
    """MPII-16 -> H36M-17 as GAST-Net's ``mpii_h36m`` (spine = mean of hips and shoulders).
    kp: (..., 16, 2) -> (..., 17, 2)."""
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape[-2:] != (16, 2):
        raise ValueError(f"mpii_to_h36m needs (..., 16, 2), got {kp.shape}")
    out = np.zeros(kp.shape[:-2] + (17, 2), dtype=np.float32)
    out[..., _H36M_FROM_MPII, :] = kp
    out[..., 7, :] = _mean(kp, [2, 3, 12, 13])
    return out


def wholebody_to_h36m_toes(kp: np.ndarray) -> np.ndarray:
    """COCO-WholeBody (first 23 points: body + feet) -> H36M+toes-19 as GAST-Net's
    ``coco_h36m_toe_format``: body via coco_to_h36m, right toe (4) = mean(r-big-toe,
    r-small-toe), left toe (8) = mean(l-big-toe, l-small-toe). kp: (..., >=23, 2) -> (..., 19, 2)."""
    kp = np.asarray(kp, dtype=np.float32)
    if kp.shape[-1] != 2 or kp.shape[-2] < 23:
        raise ValueError(f"wholebody_to_h36m_toes needs (..., 23+, 2), got {kp.shape}")
    out = np.zeros(kp.shape[:-2] + (19, 2), dtype=np.float32)
    out[..., _TOES19_BODY, :] = coco_to_h36m(kp[..., :17, :])
    out[..., 4, :] = _mean(kp, [20, 21])
    out[..., 8, :] = _mean(kp, [17, 18])
    return out


def nonzero_frames(kp: np.ndarray) -> np.ndarray:
    """GAST-Net's valid-frame rule: a frame is valid when its converted joints do not sum to 0.
    kp: (..., T, J, 2) -> bool (..., T)."""
    return np.sum(kp, axis=(-1, -2)) != 0


# --- planning: which source joints to keep, and how to convert them ------------------------

@dataclass(frozen=True)
class LayoutPlan:
    """How a file's joints become the engine's: ``select`` (indices into the file's joints,
    applied before filling), ``layout`` (name of the selected layout) and ``convert``
    ((..., len(select), 2) -> (..., engine_joints, 2))."""
    fmt: str
    layout: str
    select: np.ndarray
    convert: Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def guess_format(num_joints: int, container: str, source: str = "input") -> str:
    """Layout for a joint count when ``--format auto``. 17 joints in a bare array is ambiguous
    (COCO or H36M order) and raises; keypoint JSON formats are COCO-ordered."""
    if num_joints in (23, 133):
        return "wholebody"
    if num_joints == 16:
        return "mpii"
    if num_joints in (18, 25):
        return "openpose"
    if num_joints in (15, 19):
        return "h36m"
    if num_joints == 17:
        if container == "array":
            raise UserError(
                f"{source}: 17 joints per frame could be COCO-17 or Human3.6M-17 order; "
                f"pass --format coco or --format h36m")
        return "coco"
    raise UserError(
        f"{source}: cannot tell the keypoint layout of {num_joints} joints per frame "
        f"(known: 17 COCO, 133/23 COCO-WholeBody, 16 MPII, 18/25 OpenPose, 15/17/19 engine "
        f"layout); pass --format")


def plan_layout(fmt: str, file_joints: int, engine_joints: int, *,
                engine_input: str = "h36m", source: str = "input") -> LayoutPlan:
    """Choose the conversion from a file layout to the engine's input layout.

    fmt: one of FORMATS; file_joints: joints per frame in the file; engine_joints: 15/17/19;
    engine_input: 'h36m' (GAST/RIE/VideoPose3D on H36M-ordered 2D) or 'coco' (a VideoPose3D
    model trained on COCO-ordered detections, whose 2D input stays COCO-17).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    want = {15: "HumanEva-15", 17: "Human3.6M-17", 19: "Human3.6M+toes-19"}.get(
        engine_joints, f"{engine_joints}-joint")

    def mismatch(why: str) -> UserError:
        return UserError(f"{source}: {file_joints} joints per frame as {fmt!r} cannot feed an "
                         f"engine with {engine_joints} joints ({want}): {why}")

    # 1) bring openpose to a COCO-ordered layout by selection only
    if fmt == "openpose":
        if file_joints == 18:
            sel, layout = OPENPOSE18_TO_COCO17, "coco"
        elif file_joints == 25:
            if engine_joints == 19 and engine_input != "coco":
                sel, layout = BODY25_TO_WHOLEBODY23, "wholebody"
            else:
                sel, layout = BODY25_TO_COCO17, "coco"
        else:
            raise mismatch("OpenPose files must have 18 (COCO-18) or 25 (BODY_25) joints")
    elif fmt == "coco":
        if file_joints not in (17, 23, 133):
            raise mismatch("COCO-17 needs 17 joints (or a WholeBody file, first 17 used)")
        sel, layout = np.arange(17), "coco"
    elif fmt == "wholebody":
        if file_joints not in (23, 133):
            raise mismatch("COCO-WholeBody needs 133 joints (or its first 23: body + feet)")
        sel, layout = np.arange(23), "wholebody"
    elif fmt == "mpii":
        if file_joints != 16:
            raise mismatch("MPII needs 16 joints")
        sel, layout = np.arange(16), "mpii"
    else:  # h36m: already the engine's layout
        if file_joints != engine_joints:
            raise mismatch(f"'h36m' means the engine's own layout, which has {engine_joints}")
        sel, layout = np.arange(file_joints), "h36m"

    # 2) the arithmetic conversion to the engine's input
    if layout == "h36m":
        conv = _identity
    elif engine_input == "coco":
        if engine_joints != 17 or layout not in ("coco", "wholebody"):
            raise mismatch("this engine takes COCO-17 ordered 2D input")
        sel, conv = sel[:17], _identity
    elif engine_joints == 17:
        if layout in ("coco", "wholebody"):
            sel, conv = sel[:17], coco_to_h36m
        else:
            conv = mpii_to_h36m
    elif engine_joints == 19:
        if layout != "wholebody":
            raise mismatch("the toe model needs foot keypoints: use a COCO-WholeBody-133 "
                           "or OpenPose BODY_25 file")
        conv = wholebody_to_h36m_toes
    else:
        raise mismatch("only keypoints already in the engine's layout (--format h36m) fit")
    return LayoutPlan(fmt, layout, np.asarray(sel, dtype=np.int64), conv)


# --- screen normalisation and world transform (common/camera.py) ----------------------------

def normalize_screen(x: np.ndarray, w: float, h: float) -> np.ndarray:
    """Pixels -> [-1, 1] for x in [0, w]; y in [0, h] -> [-h/w, h/w] (aspect kept). (..., 2)."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.float32(w) * 2 - np.array([1, h / w], dtype=np.float32)).astype(np.float32)


# Normalised screen coordinates of a point even several frame widths outside the image stay
# below this; detector pixels of any real frame go far above it.
PIXEL_LIMIT = 20.0


def refuse_pixels(max_abs: float, name: str) -> None:
    """An engine input whose largest |coordinate| is ``max_abs`` must not be pixel coordinates:
    one error with the conversion to use."""
    if max_abs > PIXEL_LIMIT:
        raise UserError(f"{name}: values up to {max_abs:.6g} look like pixel coordinates (or were normalised "
                        f"with a frame size far too small); engines take normalised screen coordinates "
                        f"(x / w * 2 - 1, y / w * 2 - h / w): convert detector output with "
                        f"gastrt.prepare_keypoints(kpts, size=(w, h), layout='coco17', engine=eng)")


def image_coordinates(x: np.ndarray, w: float, h: float) -> np.ndarray:
    """Inverse of normalize_screen. (..., 2) -> pixels."""
    x = np.asarray(x, dtype=np.float32)
    return ((x + np.array([1, h / w], dtype=np.float32)) * np.float32(w) / 2).astype(np.float32)


# camera -> world quaternion (w, x, y, z) the GAST-Net / VideoPose3D demos use
DEMO_ROTATION = np.array([0.14070565, -0.15007018, -0.7552408, 0.62232804], dtype=np.float32)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate v (..., 3) by unit quaternion q (4,) or (..., 4), q = (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float32)
    v = np.asarray(v, dtype=np.float32)
    q = np.broadcast_to(q, v.shape[:-1] + (4,))
    u = q[..., 1:]
    uv = np.cross(u, v)
    uuv = np.cross(u, uv)
    return (v + 2 * (q[..., :1] * uv + uuv)).astype(np.float32)


def camera_to_world(x: np.ndarray, q: np.ndarray = DEMO_ROTATION, t: float = 0.0) -> np.ndarray:
    """Camera-space (..., 3) -> world via quaternion q plus t (the demos use t = 0)."""
    return qrot(q, x) + np.float32(t)


def rebase_height(x: np.ndarray) -> np.ndarray:
    """Shift so the lowest z over the whole sequence is 0 (the demos' ground rebase).
    x: (T, J, 3) -> same shape."""
    x = np.array(x, dtype=np.float32, copy=True)
    x[..., 2] -= np.min(x[..., 2])
    return x


# -- sizes and the engine-side layout (shared by `gastrt lift` and `gastrt stream`) ------------
def parse_size(size: Any) -> tuple[int, int] | None:
    """'1920x1080' / (1920, 1080) / None -> (w, h)."""
    if size is None:
        return None
    if isinstance(size, str):
        parts = size.lower().replace("*", "x").split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise UserError(f"--size must look like WIDTHxHEIGHT (e.g. 1920x1080), "
                            f"got {size!r}") from None
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise UserError(f"size must be (width, height), got {size!r}") from None
    if w <= 0 or h <= 0:
        raise UserError(f"image size must be positive, got {w}x{h}")
    return w, h


# How far past the frame's edge detected keypoints may reach before the image size is called
# wrong: a person cut by the frame gets joints predicted a little outside it.
SIZE_MARGIN = 0.25
_COMMON_SIZES = ((640, 480), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160), (4096, 2160))


def check_size_fits(kp: np.ndarray, present: np.ndarray, w: int, h: int, source: str) -> None:
    """Pixel keypoints kp [..., K, 2] (present [..., K]) must lie within the w x h frame, up to
    SIZE_MARGIN of it on every side; else UserError naming the extent and a size that fits
    (the swapped one, a common resolution, or the extent itself)."""
    pts = np.asarray(kp, np.float64)[np.asarray(present, bool)]
    pts = pts[np.isfinite(pts).all(axis=-1)]
    if pts.size == 0:
        return
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    mx, my = SIZE_MARGIN * w, SIZE_MARGIN * h
    if x0 >= -mx and y0 >= -my and x1 <= w + mx and y1 <= h + my:
        return
    if x0 < -mx or y0 < -my:
        hint = ("negative pixel coordinates: are these keypoints already normalised, or relative to "
                "a crop? gastrt expects pixels of the whole frame")
    else:
        fits = [(cw, ch) for cw, ch in ((h, w),) + _COMMON_SIZES
                if x1 <= cw * (1 + SIZE_MARGIN) and y1 <= ch * (1 + SIZE_MARGIN)
                and x0 >= -SIZE_MARGIN * cw and y0 >= -SIZE_MARGIN * ch]
        cw, ch = fits[0] if fits else (max(1, int(np.ceil(x1))), max(1, int(np.ceil(y1))))
        hint = f"a size that fits: --size {cw}x{ch}"
    raise UserError(f"{source}: keypoints reach x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f}, outside the "
                    f"{w}x{h} frame they are said to come from ({hint}; --no-size-check, or "
                    f"\"size_check\": false in a gastrt serve request, skips this check)")


_COCO17_LEFT = (1, 3, 5, 7, 9, 11, 13, 15)


def engine_input_layout(engine: Any) -> str:
    """'coco' when the engine takes COCO-17 ordered 2D (metadata 'input_layout', or COCO's
    left/right input symmetry, as VideoPose3D's HumanEva model has), else 'h36m'."""
    md = getattr(engine, "metadata", None) or {}
    v = getattr(engine, "input_layout", None) or md.get("input_layout")
    if v:
        return "coco" if str(v).lower().startswith("coco") else "h36m"
    kps_left = getattr(engine, "kps_left", None) or md.get("kps_left") or ()
    if int(engine.num_joints) == 17 and tuple(kps_left) == _COCO17_LEFT:
        return "coco"
    return "h36m"
