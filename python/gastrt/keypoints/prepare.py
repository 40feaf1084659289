"""Detector keypoints -> engine input: pick the joints a layout conversion needs, fill missing
detections, convert to the engine's joint order and normalise to screen coordinates, with the
checks that catch a wrong frame size or long stretches without detections. ``gastrt lift``,
the Ray layers and ``gastrt.prepare_keypoints`` all go through ``prepare_keypoints``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GastrtError as UserError
from .convert import (FORMATS, PIXEL_LIMIT, check_size_fits, engine_input_layout, guess_format,
                      nonzero_frames, normalize_screen, parse_size, plan_layout)
from .fill import MAX_GAP_RECEPTIVE_FIELDS, check_gaps, fill_missing, present_mask
from .formats import RawKeypoints, array_keypoints

# Names a caller may give a source layout (the HTTP API's "layout" field, the helper's layout=)
# -> the layout FORMATS name.
LAYOUT_ALIASES = {"auto": "auto", "coco17": "coco", "coco": "coco", "wholebody": "wholebody",
                  "coco-wholebody": "wholebody", "wholebody133": "wholebody", "h36m": "h36m",
                  "h36m17": "h36m", "mpii": "mpii", "mpii16": "mpii", "openpose": "openpose",
                  "body25": "openpose", "openpose25": "openpose", "openpose18": "openpose"}


class KeypointWarning(UserWarning):
    """Something in the input was skipped or guessed (the CLI prints these as one line each)."""


def _warn(msg: str, sink: list[str]) -> None:
    sink.append(msg)
    warnings.warn(msg, KeypointWarning, stacklevel=3)


@dataclass
class PreparedKeypoints:
    """Engine-ready 2D input. keypoints_2d (P, T, J, 2) normalised; valid (P, T); people: the
    file's person slots kept; fmt/layout: the source layout; size (w, h)."""
    keypoints_2d: np.ndarray
    valid: np.ndarray
    people: list[int]
    fmt: str
    layout: str
    size: tuple[int, int]
    warnings: list[str] = field(default_factory=list)


def resolve_max_gap(engine: Any, max_gap: Any = None) -> int:
    """The longest run of frames without any detection that lifting fills: ``max_gap`` frames
    (0: no limit), or by default (None) MAX_GAP_RECEPTIVE_FIELDS x the engine's receptive field
    (no engine: no limit)."""
    if max_gap is None:
        return 0 if engine is None else MAX_GAP_RECEPTIVE_FIELDS * int(engine.receptive_field)
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise UserError(f"max_gap (--max-gap) must be a whole number of frames >= 0 (0: no limit), got {max_gap!r}")
    return int(max_gap)


def prepare_keypoints(keypoints: Any, *, size: Any = None, layout: str | None = None,
                      engine: Any = None, num_joints: int | None = None, fmt: str = "auto",
                      scores: Any = None, people: int | None = None,
                      engine_input: str | None = None, check_size: bool = True,
                      max_gap: int | None = None) -> PreparedKeypoints:
    """Detector keypoints -> engine-ready normalised (P, T, J, 2) plus the valid mask: the one
    conversion `gastrt lift`, the Ray layers and API users share.

        prep = gastrt.prepare_keypoints(kpts, size=(1920, 1080), layout="coco17", engine=eng)
        poses = eng.lift_sequence(prep.keypoints_2d)          # (P, T, J, 3)

    keypoints: a RawKeypoints (a file as read), or pixels (T, K, 2|3) / (P, T, K, 2|3) with
    scores (T, K) / (P, T, K) or a third channel (score <= 0 or (0, 0): not detected).
    layout: the source layout, a LAYOUT_ALIASES name (coco17, wholebody133, h36m, mpii,
    openpose25, ...; fmt takes the FORMATS names). engine: sets num_joints and the engine's
    input layout (otherwise num_joints (default 17) and engine_input (default h36m)).
    fmt 'auto' takes the layout the file states, else guesses from the joint count. size
    (w, h) overrides the file's; one of them is required. people: keep at most N people
    (in file order, after dropping people never detected). check_size: detected keypoints
    far outside the w x h frame are an error that says which size would fit (a wrong size
    would silently give wrong poses). max_gap: a run of more frames than this between two
    detections in which nobody is detected is an error naming them (0: no limit; None: the
    engine's default, see resolve_max_gap, or no limit without an engine).
    """
    if layout is not None:
        if not isinstance(layout, str) or layout.lower() not in LAYOUT_ALIASES:
            raise UserError(f"unknown layout {layout!r}: choose one of {', '.join(sorted(LAYOUT_ALIASES))}")
        fmt = LAYOUT_ALIASES[layout.lower()]
    elif fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    if engine is not None:
        num_joints = int(engine.num_joints) if num_joints is None else num_joints
        engine_input = engine_input_layout(engine) if engine_input is None else engine_input
    num_joints = 17 if num_joints is None else int(num_joints)
    engine_input = engine_input or "h36m"
    raw = keypoints if isinstance(keypoints, RawKeypoints) else \
        array_keypoints(keypoints, scores=scores, size=parse_size(size))
    src = raw.source
    notes: list[str] = []
    if fmt == "auto":
        fmt = raw.fmt_hint or guess_format(raw.num_joints, raw.container, src)
    plan = plan_layout(fmt, raw.num_joints, num_joints, engine_input=engine_input, source=src)
    wh = parse_size(size)
    if wh is None and raw.size is not None:
        try:
            wh = parse_size(raw.size)
        except UserError as e:
            raise UserError(f"{src}: the image size recorded in the file is not usable ({e}); "
                            f"pass --size WIDTHxHEIGHT") from None
    if wh is None:
        raise UserError(f"{src}: the file does not record the image size ({raw.container}); "
                        f"pass --size WIDTHxHEIGHT (the video's resolution in pixels)")
    if people is not None and (not isinstance(people, (int, np.integer)) or people < 1):
        raise UserError(f"--people must be a positive integer, got {people!r}")

    kp = raw.keypoints[:, :, plan.select]
    sc = None if raw.scores is None else raw.scores[:, :, plan.select]
    present = present_mask(kp, sc)
    seen = present.any(axis=(1, 2))
    if not seen.any():
        raise UserError(f"{src}: every frame is missing (no detected joint in "
                        f"{raw.num_frames} frames): nothing to lift")
    keep = [p for p in range(raw.num_people) if seen[p]]
    for p in range(raw.num_people):
        if not seen[p]:
            _warn(f"{src}: person {p} is never detected; skipped", notes)
    if people is not None:
        keep = keep[:people]
    kp, present = kp[keep], present[keep]
    if check_size:
        check_size_fits(kp, present, *wh, src)
    limit = resolve_max_gap(engine, max_gap)
    check_gaps(present, limit, src, frame_offset=int(raw.extra.get("frame_start") or 0))

    filled = fill_missing(kp, present)
    for i, p in enumerate(keep):
        missing = np.flatnonzero(filled.never_seen[i])
        if missing.size:
            _warn(f"{src}: person {p}: joints {missing.tolist()} of the {plan.layout} layout "
                  f"are never detected; placed at the mean of the other joints", notes)
    # GAST-Net's valid-frame rule, on the raw (zero-for-missing) converted pose
    raw_zeroed = np.where(present[..., None], np.nan_to_num(kp), 0).astype(np.float32)
    valid = nonzero_frames(plan.convert(raw_zeroed))
    converted = plan.convert(filled.keypoints)
    norm = normalize_screen(converted, *wh)
    reach = max(float(norm.max()), -float(norm.min()))   # max |norm| without an |norm| copy (NaN stays NaN)
    if reach > PIXEL_LIMIT:   # what the engine would refuse as pixels: say it is the size
        raise UserError(f"{src}: with a {wh[0]}x{wh[1]} frame the keypoints reach {reach:.3g} frame half-widths "
                        f"from its centre: the size is far too small for them (pass the video's resolution, "
                        f"--size WIDTHxHEIGHT)")
    return PreparedKeypoints(np.ascontiguousarray(norm, dtype=np.float32), valid, keep, fmt,
                             plan.layout, wh, notes)
