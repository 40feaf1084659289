"""Real keypoint files in, 3D poses out: ``lift_file`` / ``save_result`` / ``load_result`` and the
``gastrt lift`` subcommand (``add_parsers``; ``gastrt render`` lives in ``render``).

Pipeline: read the file (``gastrt.keypoints.formats``) -> keep the joints the conversion needs
-> fill missing detections per person per joint -> convert to the engine's layout
(GAST-Net's coco_h36m & co.) -> normalise [0, w] -> [-1, 1] -> ONE batched
``engine.lift_sequence((P, T, J, 2), flip=...)`` -> optional world transform.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .argtypes import non_negative_int, positive_int
from .engine import load
from .engine_file import atomic_write, check_output_path
from .errors import GastrtError
from .skeletons import skeleton_for
from .keypoints import (FORMATS, MAX_GAP_RECEPTIVE_FIELDS, KeypointWarning, PreparedKeypoints, UserError,
                        camera_to_world, engine_input_layout, parse_size, prepare_keypoints,
                        read_keypoints, rebase_height, resolve_max_gap)

Progress = Callable[[str, int, int], None]

__all__ = ["LiftResult", "PreparedKeypoints", "lift_file", "lift_keypoints", "prepare_keypoints",
           "save_result", "load_result", "parse_size", "ProgressBar", "add_parsers",
           "LiftWarning", "resolve_max_gap"]


# What `gastrt lift` and lift_file warn with (skipped people, never-detected joints): the
# keypoint preparation's warning, under the name the lifting API has always used.
LiftWarning = KeypointWarning


@dataclass
class LiftResult:
    """poses_3d (P, T, J, 3) float32 camera space; valid (P, T) bool (False = the person was
    not detected in that frame and it was filled); keypoints_2d (P, T, J, 2) float32, the
    normalised 2D input the engine got; poses_world (P, T, J, 3) when world=True; metadata."""
    poses_3d: np.ndarray
    valid: np.ndarray
    keypoints_2d: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    poses_world: np.ndarray | None = None


def lift_keypoints(engine: Any, keypoints_2d: np.ndarray, *, flip: bool = True) -> np.ndarray:
    """All people in ONE engine call. keypoints_2d (P, T, J, 2) -> (P, T, J_out, 3) float32
    (J_out = engine.num_joints_out, e.g. 15 for VideoPose3D's 17 -> 15 HumanEva model)."""
    kp = np.ascontiguousarray(keypoints_2d, dtype=np.float32)
    out = np.asarray(engine.lift_sequence(kp, flip=flip), dtype=np.float32)
    j_out = int(getattr(engine, "num_joints_out", None) or kp.shape[-2])
    if out.shape != kp.shape[:-2] + (j_out, 3):
        raise RuntimeError(f"engine returned {out.shape} for input {kp.shape}")
    return out


def _load_engine(engine_or_path: Any, device: str | None = None) -> tuple[Any, str | None]:
    if not isinstance(engine_or_path, (str, os.PathLike)):
        return engine_or_path, None
    path = os.fspath(engine_or_path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: engine file not found")
    return load(path, device=device), path


# What an output file records about its poses (the model's training data: Human3.6M and
# HumanEva are in metres; poses are relative to the root joint, joint 0, which sits at 0).
UNITS = "m"
COORDINATE_FRAME = ("camera (x right, y down, z forward), root-relative as the model was trained "
                    "(joint 0 near the origin; not enforced)")
WORLD_FRAME = "world (demo camera->world rotation, z up), each person's lowest joint at z = 0"
_ENGINE_KEYS = ("family", "hyper", "receptive_field", "causal", "precision", "skeleton", "num_joints",
                "num_joints_out", "parameter_count", "source_name", "source_sha256", "gastrt_version")


def _joint_names(n: int) -> list[str] | None:
    try:
        return list(skeleton_for(n).names) or None
    except GastrtError:  # a joint count without a known skeleton
        return None


def lift_file(engine_or_path: Any, input_path: str | os.PathLike, *, fmt: str = "auto",
              size: Any = None, flip: bool = True, people: int | None = None,
              world: bool = False, progress: Progress | None = None,
              video: str | None = None, device: str | None = None,
              check_size: bool = True, max_gap: int | None = None) -> LiftResult:
    """Lift a 2D keypoint file (GAST-Net JSON, OpenPose JSON dir/file, MMPose JSON,
    VideoPose3D npz, .npy/.npz array) with an engine (object or ``.gastrt`` path).

    fmt: 'auto' or a layout in FORMATS; size: (w, h) or 'WxH' when the file has none;
    flip: test-time flip augmentation; people: at most N people; world: also return
    poses_world (demo camera->world rotation, lowest z of each person's sequence -> 0);
    progress(stage, done, total); video: which video of a multi-video VideoPose3D npz; device:
    where a path's engine runs ("cpu", "cuda", "cuda:N"); check_size: see prepare_keypoints;
    max_gap: see resolve_max_gap.
    The metadata records joint names,
    units, the coordinate frame and the engine's own metadata.
    Raises UserError (a ValueError) for bad input. -> LiftResult
    """
    input_path = os.fspath(input_path)
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown keypoint format {fmt!r}: choose auto, {', '.join(FORMATS)}")
    if not os.path.exists(input_path):
        raise UserError(f"{input_path}: no such file or directory")
    parse_size(size)
    engine, engine_path = _load_engine(engine_or_path, device)
    raw = read_keypoints(input_path, video=video, progress=progress)
    engine_input = engine_input_layout(engine)
    prep = prepare_keypoints(raw, engine=engine, fmt=fmt, size=size, people=people,
                             check_size=check_size, max_gap=max_gap)
    P, T = prep.valid.shape
    if progress:
        progress("lift", 0, T)
    poses = lift_keypoints(engine, prep.keypoints_2d, flip=flip)
    if progress:
        progress("lift", T, T)
    poses_world = None
    if world:
        poses_world = np.stack([rebase_height(camera_to_world(p)) for p in poses])
    meta = {
        "gastrt_lift": 1,
        "engine": engine_path,
        "family": getattr(engine, "family", None),
        "receptive_field": _plain(getattr(engine, "receptive_field", None)),
        "causal": _plain(getattr(engine, "causal", None)),
        "num_joints": int(engine.num_joints),
        "num_joints_out": int(poses.shape[2]),
        "engine_input": engine_input,
        "input": input_path,
        "container": raw.container,
        "format": prep.fmt,
        "layout": prep.layout,
        "size": list(prep.size),
        "flip": bool(flip),
        "world": bool(world),
        "people": prep.people,
        "frames": int(T),
        # video frame (0-based) of result frame 0: the readers lay frames out from the video's
        # first frame (GAST-Net frame_index 1 -> 0), gaps included; an OpenPose folder that
        # starts later says so in raw.extra (applied below)
        "frame_start": 0,
        "valid_frames": int(prep.valid.sum()),
        "warnings": prep.warnings,
        "joint_names": _joint_names(int(poses.shape[2])),
        "units": UNITS,
        "coordinate_frame": COORDINATE_FRAME,
        "world_frame": WORLD_FRAME if world else None,
        "engine_metadata": {k: _plain(engine.metadata.get(k)) for k in _ENGINE_KEYS}
        if isinstance(getattr(engine, "metadata", None), dict) else None,
    }
    meta.update({k: _plain(v) for k, v in raw.extra.items() if v is not None})
    return LiftResult(poses, prep.valid, prep.keypoints_2d, meta, poses_world)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


# --- saving / loading -----------------------------------------------------------------------

def _out_kind(out_path: str) -> str:
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in (".npz", ".json"):
        raise UserError(f"{out_path}: output must end in .npz or .json")
    return ext


def save_result(result: LiftResult, out_path: str | os.PathLike) -> str:
    """Write a LiftResult atomically (temp file in the same directory, then os.replace).
    ``.npz``: poses_3d, valid, keypoints_2d, [poses_world], metadata (JSON string).
    ``.json``: the same keys, arrays as nested lists. -> the path written."""
    out_path = os.fspath(out_path)
    ext = _out_kind(out_path)
    arrays = {"poses_3d": np.asarray(result.poses_3d, dtype=np.float32),
              "valid": np.asarray(result.valid, dtype=bool),
              "keypoints_2d": np.asarray(result.keypoints_2d, dtype=np.float32)}
    if result.poses_world is not None:
        arrays["poses_world"] = np.asarray(result.poses_world, dtype=np.float32)
    meta_json = json.dumps(result.metadata, sort_keys=True)
    if ext == ".npz":
        atomic_write(out_path, lambda f: np.savez_compressed(f, metadata=np.array(meta_json), **arrays))
    else:
        doc: dict[str, Any] = {"metadata": result.metadata}
        for k, a in arrays.items():
            doc[k] = a.tolist() if a.dtype == bool else np.round(a.astype(np.float64), 6).tolist()
        text = json.dumps(doc, allow_nan=False)
        atomic_write(out_path, lambda f: f.write(text.encode("utf-8")))
    return out_path


def load_result(path: str | os.PathLike) -> LiftResult:
    """Read a ``save_result`` file (.npz or .json) back. -> LiftResult"""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
            meta = json.loads(str(d.get("metadata", "{}")))
        elif ext == ".json":
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            meta = doc.get("metadata", {})
            d = {k: np.asarray(doc[k]) for k in ("poses_3d", "valid", "keypoints_2d",
                                                  "poses_world") if k in doc}
        else:
            raise UserError(f"{path}: expected a `gastrt lift` output (.npz or .json)")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: not a readable `gastrt lift` output ({e})") from None
    if "poses_3d" not in d:
        raise UserError(f"{path}: no poses_3d: not a `gastrt lift` output")
    poses = np.asarray(d["poses_3d"], dtype=np.float32)
    if poses.ndim != 4 or poses.shape[-1] != 3:
        raise UserError(f"{path}: poses_3d has shape {poses.shape}, expected (P, T, J, 3)")
    valid = np.asarray(d.get("valid", np.ones(poses.shape[:2])), dtype=bool)
    kp2d = np.asarray(d.get("keypoints_2d", np.zeros(poses.shape[:-1] + (2,))), dtype=np.float32)
    world = d.get("poses_world")
    return LiftResult(poses, valid, kp2d, meta,
                      None if world is None else np.asarray(world, dtype=np.float32))


# --- progress -----------------------------------------------------------------------------------

class ProgressBar:
    """A tiny stderr progress bar: ``bar(stage, done, total)``. Silent when the stream is not
    a TTY or total < min_total."""

    def __init__(self, stream: Any = None, *, min_total: int = 200, width: int = 30):
        self.stream = sys.stderr if stream is None else stream
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.min_total, self.width = min_total, width
        self._last: tuple[str, int] | None = None
        self._open = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or total < self.min_total:
            return
        filled = self.width * min(done, total) // max(total, 1)
        if self._last == (stage, filled) and done < total:
            return
        self._last = (stage, filled)
        self.stream.write(f"\r{stage:<5} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{done}/{total}")
        self._open = done < total
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


# --- CLI ------------------------------------------------------------------------------------------

def _default_output(input_path: str) -> str:
    base = os.path.basename(os.path.normpath(input_path))
    stem = os.path.splitext(base)[0] if os.path.isfile(input_path) else base
    return f"{stem or 'keypoints'}_3d.npz"


def _print_warnings(caught: list) -> None:
    for w in caught:
        print(f"gastrt: warning: {w.message}", file=sys.stderr)


def _cmd_lift(args: argparse.Namespace) -> int:
    out = args.output or _default_output(args.input)
    _out_kind(out)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UserError(f"{out}: output directory {out_dir} does not exist")
    if os.path.exists(args.input) and os.path.abspath(out) == os.path.abspath(args.input):
        raise UserError(f"{out}: output would overwrite the input")
    check_output_path(out, [args.input, args.engine])  # before the work: symlinks, devices, the engine
    bar = ProgressBar()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LiftWarning)
            result = lift_file(args.engine, args.input, fmt=args.format, size=args.size,
                               flip=args.flip, people=args.people, world=args.world,
                               progress=bar, video=args.npz_video, device=args.device,
                               check_size=args.size_check, max_gap=args.max_gap)
    finally:
        bar.close()
    _print_warnings(caught)
    save_result(result, out)
    P, T, J, _ = result.poses_3d.shape
    print(f"wrote {out}: {P} {'person' if P == 1 else 'people'} x {T} frames x {J} joints "
          f"({result.metadata.get('family')}, {result.metadata['format']}, "
          f"{int(result.valid.sum())}/{P * T} detected)")
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``lift`` on an argparse subparsers object (sets ``func(args) -> int``)."""
    p = subparsers.add_parser(
        "lift", help="lift a 2D keypoint file to 3D poses with an engine",
        description="Lift 2D keypoints (GAST-Net JSON, OpenPose JSON directory or file, MMPose "
                    "prediction JSON, VideoPose3D custom npz, .npy/.npz array) to 3D poses.")
    p.add_argument("engine", help="engine file (.gastrt)")
    p.add_argument("input", help="keypoint file or OpenPose output directory")
    p.add_argument("-o", "--output", help="output .npz or .json (default: INPUT_3d.npz here)")
    p.add_argument("--format", default="auto", choices=("auto",) + FORMATS,
                   help="2D joint layout of the file (default: auto)")
    p.add_argument("--size", metavar="WxH",
                   help="video resolution in pixels; required when the file has none")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="test-time flip augmentation (default: on)")
    p.add_argument("--people", type=positive_int, metavar="N",
                   help="lift at most N people (default: all)")
    p.add_argument("--world", action="store_true",
                   help="also write poses_world: demo camera->world rotation, feet on z=0")
    p.add_argument("--npz-video", metavar="NAME",
                   help="which video of a multi-video VideoPose3D npz (its key); to draw over a video "
                        "file use `gastrt render --overlay`")
    p.add_argument("--video", action=_RenamedVideo, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help="where the engine runs: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--size-check", action=argparse.BooleanOptionalAction, default=True,
                   help="refuse keypoints far outside the WxH frame: a wrong --size gives wrong poses "
                        "(default on; --no-size-check skips it)")
    p.add_argument("--max-gap", type=non_negative_int, metavar="FRAMES",
                   help=f"most consecutive frames without any detection that are filled by interpolation "
                        f"(default {MAX_GAP_RECEPTIVE_FIELDS}x the engine's receptive field; 0: no limit)")
    p.set_defaults(func=_cmd_lift)


class _RenamedVideo(argparse.Action):
    """`lift --video` chose a video inside an npz, which read like an overlay: renamed."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--video was renamed --npz-video (a video inside a VideoPose3D npz); to draw the poses "
                     "over a video file: gastrt render RESULT --overlay VIDEO")
