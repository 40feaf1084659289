"""Readers for 2D keypoint files. Every reader returns a :class:`RawKeypoints` in pixels with
people and frames laid out densely; a frame or joint the file does not have is 0 (score 0)
so that ``fill.present_mask`` flags it.

Containers (detected by :func:`detect_container`):

* ``gast-json``       GAST-Net JSON: ``{"label", "data": [{"frame_index" (1-based),
                      "skeleton": [{"pose": [[x, y]]*J, "score": [[s]]*J, "bbox": [...]}]}]}``;
                      a skeleton with an empty bbox is skipped, as in the original loader
* ``openpose-json``   OpenPose ``--write_json`` output: a directory of per-frame
                      ``*_<frame>_keypoints.json`` files (or one such file):
                      ``{"people": [{"pose_keypoints_2d": [x, y, c] * J}]}``, J = 25 or 18
* ``mmpose-json``     MMPose predictions: ``MMPoseInferencer(pred_out_dir=...)`` video output
                      ``[{"frame_id", "instances": [{"keypoints", "keypoint_scores"}]}]``, the
                      ``topdown_demo_with_mmdet --save-predictions`` output ``{"meta_info",
                      "instance_info": [...same frames...]}``, or one image's instance list
* ``videopose3d-npz`` VideoPose3D custom dataset (``prepare_data_2d_custom.py``):
                      ``positions_2d[video]['custom'][0]`` (T, J, 2) and ``metadata`` with
                      ``layout_name`` and ``video_metadata[video] = {'w', 'h'}``
* ``array``           ``.npy`` / ``.npz`` array (T, J, 2|3) or (P, T, J, 2|3); channel 3 is a
                      score. An ``.npz`` may add ``scores`` (P, T, J), ``size`` [w, h] and
                      ``format`` (a layout name)
"""
from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import GastrtError as UserError

Progress = Callable[[str, int, int], None]

CONTAINERS = ("gast-json", "openpose-json", "mmpose-json", "videopose3d-npz", "array")


@dataclass
class RawKeypoints:
    """A keypoint file as read. keypoints: (P, T, J, 2) float32 pixels, scores: (P, T, J)
    float32 or None, fmt_hint: a layout name the file states (or None), size: (w, h) the file
    states (or None), extra: container details (label, video name, ...)."""
    keypoints: np.ndarray
    scores: np.ndarray | None
    container: str
    source: str
    fmt_hint: str | None = None
    size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_people(self) -> int:
        return self.keypoints.shape[0]

    @property
    def num_frames(self) -> int:
        return self.keypoints.shape[1]

    @property
    def num_joints(self) -> int:
        return self.keypoints.shape[2]


# What reading a damaged zip (.npz) can raise besides BadZipFile: an unknown compression method,
# an "encrypted" flag, a stream that ends early, a corrupt deflate stream, a huge member.
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
              zlib.error)


def _err(source: str, msg: str) -> UserError:
    return UserError(f"{source}: {msg}")


def _load_json(path: str) -> Any:
    try:
        if os.path.getsize(path) == 0:
            raise _err(path, "file is empty")
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise _err(path, f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise _err(path, "not a text JSON file (bad UTF-8)") from None
    except RecursionError:
        raise _err(path, "malformed JSON (nested too deeply for a keypoint file)") from None
    except OSError as e:
        raise _err(path, f"cannot read: {e.strerror or e}") from None


# A file's frame numbers become a dense (P, T, J) array: a jump of millions of frames between two
# detections (a corrupt or hostile file: 17 kB asking for 9 GB) is refused, naming the frames.
MAX_FRAME_GAP = 100_000   # ~55 minutes at 30 fps without any detection
MAX_FRAME_NUMBER = 10 ** 12   # far past any video; keeps the arithmetic in int64


def check_frame_numbers(path: str, numbers, what: str) -> None:
    """Frame numbers (ints, any order) must not leave a gap wider than MAX_FRAME_GAP."""
    s = sorted(set(int(v) for v in numbers))
    if s and max(abs(s[0]), abs(s[-1])) > MAX_FRAME_NUMBER:
        v = s[-1] if abs(s[-1]) >= abs(s[0]) else s[0]
        raise _err(path, f"{what} {str(v)[:30]} is out of range (at most {MAX_FRAME_NUMBER:,}): corrupt frame numbers?")
    if len(s) < 2:
        return
    d = np.diff(np.asarray(s, dtype=np.int64))
    k = int(np.argmax(d))
    if d[k] > MAX_FRAME_GAP:
        raise _err(path, f"{what} jumps from {s[k]} to {s[k + 1]} ({int(d[k]) - 1:,} frames without data; at most "
                         f"{MAX_FRAME_GAP:,} allowed): corrupt frame numbers?")


def _openpose_frame_files(directory: str) -> tuple[list[tuple[int, str]], int]:
    """(frame index from 0, file) of an OpenPose output folder, and the file number of frame 0
    (a folder written with --frame_first N, or trimmed, does not start at 0)."""
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(".json"))
    if not names:
        raise _err(directory, "directory holds no .json files (expected OpenPose per-frame "
                              "*_keypoints.json files)")
    nums = []
    for n in names:
        m = re.search(r"(\d+)(?:_keypoints)?\.json$", n, re.IGNORECASE)
        nums.append(int(m.group(1)) if m else None)
    if all(v is not None for v in nums) and len(set(nums)) == len(nums):
        check_frame_numbers(directory, nums, "the frame files' numbering")
        first = min(nums)
        pairs = sorted((v - first, os.path.join(directory, n)) for v, n in zip(nums, names))
    else:
        first = 0
        pairs = [(i, os.path.join(directory, n)) for i, n in enumerate(names)]
    return pairs, first


def detect_container(path: str) -> str:
    """Which reader a path needs (see module doc). Raises UserError for unknown files."""
    if os.path.isdir(path):
        return "openpose-json"
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return "array"
    if ext == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                keys = {os.path.splitext(n)[0] for n in z.namelist()}
        except ZIP_ERRORS:
            if os.path.exists(path) and os.path.getsize(path) == 0:
                raise _err(path, "file is empty") from None
            raise _err(path, "not a valid .npz archive") from None
        if "poses_3d" in keys:
            raise _err(path, "this is a `gastrt lift` output (poses_3d), not a 2D keypoint "
                             "file; render it with `gastrt render`")
        return "videopose3d-npz" if "positions_2d" in keys else "array"
    if ext == ".json":
        return _json_container(_load_json(path), path)[0]
    raise _err(path, f"unknown keypoint file type {ext or '(no extension)'!r}: expected a "
                     f".json (GAST-Net, OpenPose, MMPose), .npz (VideoPose3D, array) or .npy "
                     f"file, or an OpenPose output directory")


def _json_container(obj: Any, path: str) -> tuple[str, Any]:
    if isinstance(obj, dict):
        if "data" in obj and isinstance(obj["data"], list):
            return "gast-json", obj
        if "people" in obj:
            return "openpose-json", obj
        if "instance_info" in obj:
            return "mmpose-json", obj
    elif isinstance(obj, list):
        if not obj:
            raise _err(path, "JSON holds an empty list: no frames")
        first = obj[0]
        if isinstance(first, dict) and ("instances" in first or "keypoints" in first):
            return "mmpose-json", obj
    raise _err(path, "unrecognised JSON layout: expected GAST-Net ({'label', 'data': [...]}), "
                     "OpenPose ({'people': [...]}) or MMPose predictions "
                     "([{'frame_id', 'instances'}])")


# --- GAST-Net JSON ---------------------------------------------------------------------------

def read_gast_json(path: str, obj: Any = None, progress: Progress | None = None) -> RawKeypoints:
    """GAST-Net keypoint JSON (COCO-17 or COCO-WholeBody-133 poses). -> RawKeypoints."""
    obj = _load_json(path) if obj is None else obj
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise _err(path, "not a GAST-Net keypoint JSON (no 'data' list)")
    if not data:
        raise _err(path, "'data' is empty: no frames")
    entries = []  # (frame, person, pose, score)
    num_frames, num_joints = 0, None
    for k, fr in enumerate(data):
        if not isinstance(fr, dict) or "frame_index" not in fr or "skeleton" not in fr:
            raise _err(path, f"data[{k}] lacks 'frame_index' or 'skeleton'")
        try:
            fi = int(fr["frame_index"])
        except (TypeError, ValueError, OverflowError):  # OverflowError: Infinity
            raise _err(path, f"data[{k}].frame_index is not an integer") from None
        if fi < 1:
            raise _err(path, f"data[{k}].frame_index is {fi}; GAST-Net frames count from 1")
        num_frames = max(num_frames, fi)
        skeletons = fr["skeleton"] or []
        if not isinstance(skeletons, list):
            raise _err(path, f"data[{k}].skeleton must be a list of people, got {type(skeletons).__name__}")
        for i, sk in enumerate(skeletons):
            if not isinstance(sk, dict) or "pose" not in sk:
                raise _err(path, f"data[{k}].skeleton[{i}] has no 'pose'")
            bbox = sk.get("bbox")
            if bbox is not None and not isinstance(bbox, list):
                raise _err(path, f"data[{k}].skeleton[{i}].bbox must be a list [x1, y1, x2, y2] (or []), "
                                 f"got {type(bbox).__name__}")
            if bbox is not None and len(bbox) == 0:
                continue  # the original loader skips empty boxes
            try:
                pose = np.asarray(sk["pose"], dtype=np.float32)
                score = np.asarray(sk.get("score", np.ones(len(pose))), dtype=np.float32)
            except (TypeError, ValueError):
                raise _err(path, f"data[{k}].skeleton[{i}]: pose/score are not numbers") from None
            if pose.size == 0:
                continue
            if pose.ndim != 2 or pose.shape[1] < 2:
                raise _err(path, f"data[{k}].skeleton[{i}].pose has shape {pose.shape}, "
                                 f"expected (J, 2)")
            score = score.reshape(-1)
            if num_joints is None:
                num_joints = pose.shape[0]
            if pose.shape[0] != num_joints or score.shape[0] != num_joints:
                raise _err(path, f"data[{k}].skeleton[{i}] has {pose.shape[0]} joints / "
                                 f"{score.shape[0]} scores, earlier poses had {num_joints}")
            entries.append((fi - 1, i, pose[:, :2], score))
        if progress:
            progress("read", k + 1, len(data))
    if num_joints is None:
        raise _err(path, "no skeleton in any frame: nothing to lift")
    P = 1 + max(e[1] for e in entries)
    # frame 1 counts: the array starts at the video's first frame
    check_frame_numbers(path, [1] + [int(fr["frame_index"]) for fr in data], "frame_index")
    kp = np.zeros((P, num_frames, num_joints, 2), dtype=np.float32)
    sc = np.zeros((P, num_frames, num_joints), dtype=np.float32)
    for t, p, pose, score in entries:
        kp[p, t], sc[p, t] = pose, score
    return RawKeypoints(kp, sc, "gast-json", path, None, None,
                        {"label": obj.get("label"), "label_index": obj.get("label_index")})


# --- OpenPose ---------------------------------------------------------------------------------

def _openpose_people(obj: Any, path: str) -> list[np.ndarray]:
    if not isinstance(obj, dict) or not isinstance(obj.get("people"), list):
        raise _err(path, "not an OpenPose frame JSON (no 'people' list)")
    out = []
    for i, person in enumerate(obj["people"]):
        flat = person.get("pose_keypoints_2d", person.get("pose_keypoints")) \
            if isinstance(person, dict) else None
        if flat is None:
            raise _err(path, f"people[{i}] has no 'pose_keypoints_2d' (OpenPose body output)")
        try:
            arr = np.asarray(flat, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise _err(path, f"people[{i}].pose_keypoints_2d is not a list of numbers") from None
        if arr.size == 0:
            continue
        if arr.size % 3:
            raise _err(path, f"people[{i}].pose_keypoints_2d has {arr.size} values, not a "
                             f"multiple of 3 (x, y, confidence)")
        out.append(arr.reshape(-1, 3))
    return out


def read_openpose(path: str, progress: Progress | None = None) -> RawKeypoints:
    """OpenPose JSON: a directory of per-frame files (frame number from the file name) or one
    frame file. Joints: BODY_25 (25) or COCO-18 (18). -> RawKeypoints (fmt_hint 'openpose')."""
    files, first = _openpose_frame_files(path) if os.path.isdir(path) else ([(0, path)], 0)
    frames: list[tuple[int, list[np.ndarray], str]] = []
    for k, (t, f) in enumerate(files):
        frames.append((t, _openpose_people(_load_json(f), f), f))
        if progress:
            progress("read", k + 1, len(files))
    num_joints = None
    for _, people, f in frames:
        for arr in people:
            if num_joints is None:
                num_joints = arr.shape[0]
            elif arr.shape[0] != num_joints:
                raise _err(f, f"a person has {arr.shape[0]} joints, other frames have "
                              f"{num_joints} (mixed OpenPose models?)")
    if num_joints is None:
        raise _err(path, "no person in any OpenPose frame: nothing to lift")
    T = 1 + max(t for t, _, _ in frames)
    P = max(len(people) for _, people, _ in frames)
    kp = np.zeros((P, T, num_joints, 2), dtype=np.float32)
    sc = np.zeros((P, T, num_joints), dtype=np.float32)
    for t, people, _ in frames:
        for p, arr in enumerate(people):
            kp[p, t], sc[p, t] = arr[:, :2], arr[:, 2]
    return RawKeypoints(kp, sc, "openpose-json", path, "openpose", None,
                        {"files": len(files), "frame_start": first})


# --- MMPose -------------------------------------------------------------------------------------

_MMPOSE_DATASETS = {"coco": "coco", "coco_wholebody": "wholebody", "mpii": "mpii",
                    "h36m": "h36m"}


def read_mmpose(path: str, obj: Any = None, progress: Progress | None = None) -> RawKeypoints:
    """MMPose prediction JSON (inferencer video output, topdown demo output, or one image's
    instance list). Person slots follow instance order. -> RawKeypoints."""
    obj = _load_json(path) if obj is None else obj
    hint, base = None, 0
    if isinstance(obj, dict):
        meta = obj.get("meta_info") or {}
        if not isinstance(meta, dict):
            raise _err(path, f"'meta_info' must be an object, got {type(meta).__name__}")
        hint = _MMPOSE_DATASETS.get(str(meta.get("dataset_name", "")).lower())
        frames, base = obj.get("instance_info"), 1  # the demo counts frames from 1
    else:
        frames = obj
    if not isinstance(frames, list) or not frames:
        raise _err(path, "MMPose predictions hold no frames")
    if isinstance(frames[0], dict) and "instances" not in frames[0] and "keypoints" in frames[0]:
        frames = [{"frame_id": base, "instances": frames}]  # a single image's instances
    ids = []
    for k, fr in enumerate(frames):
        if not isinstance(fr, dict) or not isinstance(fr.get("instances"), list):
            raise _err(path, f"frame {k} has no 'instances' list")
        fid = fr.get("frame_id", k + base)
        try:
            ids.append(int(fid))
        except (TypeError, ValueError, OverflowError):
            raise _err(path, f"frame {k}: frame_id {str(fid)[:40]!r} is not an integer") from None
    base = min(base, min(ids))
    check_frame_numbers(path, ids + [base], "frame_id")  # the array starts at base
    num_joints, entries = None, []
    for k, (fr, fid) in enumerate(zip(frames, ids)):
        for i, inst in enumerate(fr["instances"]):
            try:
                pose = np.asarray(inst["keypoints"], dtype=np.float32)
                score = np.asarray(inst.get("keypoint_scores", np.ones(len(pose))),
                                   dtype=np.float32).reshape(-1)
            except (KeyError, TypeError, ValueError):
                raise _err(path, f"frame {k} instance {i}: no numeric 'keypoints'") from None
            if pose.ndim != 2 or pose.shape[1] < 2:
                raise _err(path, f"frame {k} instance {i}: keypoints shape {pose.shape}, "
                                 f"expected (J, 2)")
            if num_joints is None:
                num_joints = pose.shape[0]
            if pose.shape[0] != num_joints or score.shape[0] != num_joints:
                raise _err(path, f"frame {k} instance {i} has {pose.shape[0]} keypoints / "
                                 f"{score.shape[0]} scores, earlier ones had {num_joints}")
            entries.append((fid - base, i, pose[:, :2], score))
        if progress:
            progress("read", k + 1, len(frames))
    if num_joints is None:
        raise _err(path, "no instance in any frame: nothing to lift")
    T = 1 + max(i - base for i in ids)
    P = 1 + max(e[1] for e in entries)
    kp = np.zeros((P, T, num_joints, 2), dtype=np.float32)
    sc = np.zeros((P, T, num_joints), dtype=np.float32)
    for t, p, pose, score in entries:
        kp[p, t], sc[p, t] = pose, score
    return RawKeypoints(kp, sc, "mmpose-json", path, hint, None, {})


# --- VideoPose3D custom npz ---------------------------------------------------------------------

_VP3D_LAYOUTS = {"coco": "coco", "h36m": "h36m", "mpii": "mpii", "humaneva15": "h36m"}


class _NpzObjectUnpickler(pickle.Unpickler):
    """The pickle inside an object-dtype .npy may only rebuild numpy arrays and plain data:
    a keypoint file from elsewhere must not be able to run code."""
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays and plain data)")
        return super().find_class(module, name)


def _load_object_npy(z: zipfile.ZipFile, member: str):
    """The single object stored in an object-dtype .npy inside an npz, unpickled restrictedly."""
    with z.open(member) as f:
        version = np.lib.format.read_magic(f)
        _shape, _fortran, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
        if dtype != np.dtype(object):
            return np.lib.format.read_array(f, allow_pickle=False)
        arr = _NpzObjectUnpickler(f).load()
    return arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr


def read_videopose3d(path: str, video: str | None = None) -> RawKeypoints:
    """VideoPose3D custom 2D dataset npz (the format pickles dicts; read with a restricted
    unpickler that rebuilds only arrays and plain data). Picks ``video`` (or the only one).
    -> RawKeypoints with size from video_metadata."""
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            positions = _load_object_npy(z, "positions_2d.npy")
            metadata = _load_object_npy(z, "metadata.npy") if "metadata.npy" in names else {}
    except Exception as e:  # a corrupt or hostile file can raise nearly anything
        raise _err(path, f"not a readable VideoPose3D npz ({type(e).__name__}: {e})") from None
    if not isinstance(positions, dict) or not positions:
        raise _err(path, "positions_2d holds no video")
    if video is None:
        if len(positions) > 1:
            raise _err(path, f"holds {len(positions)} videos ({', '.join(sorted(positions))}); "
                             f"pick one with --npz-video (video= in Python)")
        video = next(iter(positions))
    if video not in positions:
        raise _err(path, f"no video {video!r} (has: {', '.join(sorted(positions))})")
    entry = positions[video]
    if isinstance(entry, dict):
        if "custom" in entry:
            entry = entry["custom"]
        elif len(entry) == 1:
            entry = next(iter(entry.values()))
        else:
            raise _err(path, f"positions_2d[{video!r}] has no 'custom' entry")
    if isinstance(entry, (list, tuple)):
        if not entry:
            raise _err(path, f"positions_2d[{video!r}]['custom'] is empty")
        entry = entry[0]
    arr = np.asarray(entry, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] < 2 or arr.shape[0] == 0:
        raise _err(path, f"positions_2d[{video!r}] has shape {arr.shape}, expected (T, J, 2)")
    size = None
    vm = (metadata or {}).get("video_metadata", {}).get(video)
    if isinstance(vm, dict) and "w" in vm and "h" in vm:
        size = (int(vm["w"]), int(vm["h"]))
    hint = _VP3D_LAYOUTS.get(str((metadata or {}).get("layout_name", "")).lower())
    scores = arr[None, ..., 2] if arr.shape[-1] > 2 else None
    return RawKeypoints(arr[None, ..., :2].copy(), scores, "videopose3d-npz", path, hint, size,
                        {"video": video})


# --- plain arrays -----------------------------------------------------------------------------

MAX_ARRAY_BYTES = 1 << 29   # all arrays of one file together: ~3.9M frames (36 h at 30 fps) of 17 joints
# x 2 floats; reading peaks at ~2.5x this (the array, its float32 copy, the 2D slice)


def _check_npy_header(f, available: int, path: str, what: str) -> int:
    """Reads the .npy header at ``f`` and refuses, before anything is allocated, an array whose
    declared size exceeds the bytes that follow it (``available`` in all, header included) or
    MAX_ARRAY_BYTES, and object arrays. The file position is left after the header. -> the
    array's declared bytes."""
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f)
    except Exception as e:  # noqa: BLE001 (a corrupt header raises ValueError, SyntaxError, ...)
        raise _err(path, f"{what}: not a readable numpy array header ({type(e).__name__}: {str(e)[:120]})") from None
    if dtype.hasobject:
        raise _err(path, f"{what}: holds Python objects (dtype {dtype}); expected numbers")
    nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise _err(path, f"{what}: declares shape {tuple(shape)} ({nbytes / 2**30:.1f} GiB), above the "
                         f"{MAX_ARRAY_BYTES >> 20} MiB limit for a keypoint file")
    if nbytes > available - f.tell():
        raise _err(path, f"{what}: declares shape {tuple(shape)} ({nbytes:,} bytes) but holds only "
                         f"{max(0, available - f.tell()):,} bytes of data")
    return nbytes


def _check_array_file(path: str) -> None:
    """Every array's header in an .npy / .npz checked (_check_npy_header) before numpy reads it."""
    if path.lower().endswith(".npy"):
        with open(path, "rb") as f:
            _check_npy_header(f, os.path.getsize(path), path, "array")
        return
    total = 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):   # numpy would read a bare 'keypoints' member too
                raise _err(path, f"member {info.filename[:80]!r} is not a .npy array (an .npz holds only those)")
            with z.open(info) as f:
                total += _check_npy_header(f, info.file_size, path, info.filename[:-4])
                if total > MAX_ARRAY_BYTES:   # several arrays, each under the limit, inflating together
                    raise _err(path, f"its arrays declare {total / 2**20:,.0f} MiB together, above the "
                                     f"{MAX_ARRAY_BYTES >> 20} MiB limit for a keypoint file")


def read_array(path: str) -> RawKeypoints:
    """``.npy`` / ``.npz`` array (T, J, C) or (P, T, J, C), C = 2 (x, y) or 3 (x, y, score)."""
    size, hint, scores = None, None, None
    try:
        if os.path.getsize(path) == 0:
            raise _err(path, "file is empty")
        _check_array_file(path)
        if path.lower().endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as z:
                names = [n for n in ("keypoints", "keypoints_2d", "kpts", "arr_0") if n in z.files]
                arrays = [n for n in z.files if n not in ("scores", "size", "format")]
                if names:
                    key = names[0]
                elif len(arrays) == 1:
                    key = arrays[0]
                else:
                    raise _err(path, f"cannot tell which array holds the keypoints "
                                     f"({', '.join(z.files) or 'none'}); name it 'keypoints'")
                arr = z[key]
                if "scores" in z.files:
                    scores = np.asarray(z["scores"], dtype=np.float32)
                if "size" in z.files:
                    s = np.asarray(z["size"]).reshape(-1)
                    if s.size != 2:
                        raise _err(path, f"'size' must be [w, h], got {s.tolist()}")
                    size = (int(s[0]), int(s[1]))
                if "format" in z.files:
                    hint = str(z["format"])
    except ValueError as e:
        if isinstance(e, UserError):
            raise
        raise _err(path, f"not a readable numpy array file ({e})") from None
    except ZIP_ERRORS as e:
        raise _err(path, f"not a readable numpy array file ({type(e).__name__}: {e})") from None
    return array_keypoints(arr, scores=scores, size=size, fmt_hint=hint, source=path)


def array_keypoints(arr: Any, *, scores: Any = None, size: tuple[int, int] | None = None,
                    fmt_hint: str | None = None, source: str = "keypoints") -> RawKeypoints:
    """An in-memory keypoint array as a file would give it: (T, J, C) or (P, T, J, C) pixels,
    C = 2 (x, y) or 3 (x, y, score); scores (T, J) / (P, T, J) or None. ``source`` names it
    in errors."""
    try:
        arr = np.asarray(arr)
    except Exception:
        raise _err(source, "keypoints are not an array of numbers") from None
    if arr.dtype.kind not in "fiu":
        raise _err(source, f"keypoints have dtype {arr.dtype}, expected numbers")
    arr = np.asarray(arr, dtype=np.float32)
    if scores is not None:
        try:
            scores = np.asarray(scores, dtype=np.float32)
        except (TypeError, ValueError):
            raise _err(source, "scores are not an array of numbers") from None
    if arr.ndim == 3:
        arr = arr[None]
        if scores is not None and scores.ndim == 2:
            scores = scores[None]
    if arr.ndim != 4 or arr.shape[-1] not in (2, 3) or 0 in arr.shape:
        raise _err(source, f"keypoint array has shape {arr.shape}, expected (T, J, 2|3) or "
                           f"(P, T, J, 2|3)")
    if arr.shape[-1] == 3 and scores is None:
        scores = arr[..., 2]
    if scores is not None and scores.shape != arr.shape[:-1]:
        raise _err(source, f"scores have shape {scores.shape}, keypoints {arr.shape[:-1]}")
    return RawKeypoints(np.ascontiguousarray(arr[..., :2]), scores, "array", source, fmt_hint, size, {})


def read_keypoints(path: str | os.PathLike, *, video: str | None = None,
                   progress: Progress | None = None) -> RawKeypoints:
    """Read any supported keypoint file or OpenPose directory (see module doc)."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.lower().endswith(".json"):
        container, obj = _json_container(_load_json(path), path)
        if container == "gast-json":
            return read_gast_json(path, obj, progress)
        if container == "mmpose-json":
            return read_mmpose(path, obj, progress)
        return read_openpose(path, progress)
    container = detect_container(path)
    if container == "openpose-json":
        return read_openpose(path, progress)
    if container == "videopose3d-npz":
        return read_videopose3d(path, video)
    return read_array(path)
