"""Human3.6M / HumanEva-I test data in the originals' npz layouts, preprocessed as their run.py does.

Files (written by VideoPose3D's ``data/prepare_data_h36m.py``, ``prepare_data_humaneva.py`` and
``prepare_data_2d_h36m_generic.py``; GAST-Net and RIE reuse them):

* ``data_3d_*.npz``: ``positions_3d`` = {subject: {action: (T, J, 3) float32}}, world
  coordinates in metres; Human3.6M J = 32 (S1, S5-S9, S11; actions like 'Walking 1'),
  HumanEva J = 15 (subjects 'Train/S1', 'Validate/S2', ...; actions 'Walking 1 chunk0', ...).
* ``data_2d_*.npz``: ``positions_2d`` = {subject: {action: [per camera (T', J2, 2+) pixels]}}
  (T' >= T: extra video frames are cut) and ``metadata`` = {'layout_name', 'num_joints',
  'keypoints_symmetry': [left, right]}.

Preprocessing (run.py / GAST-Net main.py load_data): drop the joints the originals drop
(Human3.6M 32 -> 17, or 19 with the toes for GAST-Net's 19-joint model), rotate into each
camera with its extrinsics, make joints 1.. relative to the hip (joint 0 keeps the trajectory;
evaluation zeroes it), and screen-normalise the 2D with each camera's resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import GastrtError
from ..keypoints import normalize_screen, qrot
from ..skeletons import skeleton_for
from .cameras import cameras_for
from .npz import MAX_MEMBER_BYTES, read_npz

# Human3.6M: the 32 mocap joints -> the originals' skeletons (h36m_dataset.py remove_joints)
H36M_REMOVED = {
    17: (4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31),
    19: (5, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31),   # GAST-Net 'cpn_ft_h36m_dbb_19'
}
# GAST-Net main.py: its HumanEva model takes the COCO-17 detections mapped onto the 15 joints
# (0 pelvis = mean of the hips, 1 thorax = mean of the shoulders, 14 head = nose)
COCO17_TO_HUMANEVA15 = ((11, 12), (5, 6), 5, 7, 9, 6, 8, 10, 11, 13, 15, 12, 14, 16, 0)

MAX_JOINTS = 256
MAX_FRAMES = 10_000_000


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    raw_joints: int
    default_subjects: tuple[str, ...]
    default_actions: tuple[str, ...] | None   # None: every action
    default_by_subject: bool


SPECS = {
    # run.py defaults: -ste S9,S11, all actions
    "h36m": DatasetSpec("h36m", "Human3.6M", 32, ("S9", "S11"), None, False),
    # the originals' HumanEva protocol (VideoPose3D / GAST-Net READMEs):
    # -ste Validate/S1,Validate/S2,Validate/S3 -a Walk,Jog,Box --by-subject
    "humaneva": DatasetSpec("humaneva", "HumanEva-I", 15, ("Validate/S1", "Validate/S2", "Validate/S3"),
                            ("Walk", "Jog", "Box"), True),
}


def spec(dataset: str) -> DatasetSpec:
    try:
        return SPECS[dataset]
    except KeyError:
        raise GastrtError(f"unknown dataset {dataset!r}: expected one of {', '.join(SPECS)}") from None


def action_group(action: str) -> str:
    """run.py groups sequences by the action name's first word: 'Walking 1' and 'Walking' ->
    'Walking', 'Walking 1 chunk0' -> 'Walking'."""
    return action.split(" ")[0]


def action_selected(action: str, action_filter) -> bool:
    """run.py's filter: an action group is kept when it starts with one of the filter names
    (so 'Walk' keeps 'Walking', 'WalkDog' and 'WalkTogether')."""
    return action_filter is None or any(action_group(action).startswith(a) for a in action_filter)


def kept_joints(raw_joints: int, removed) -> list[int]:
    return [j for j in range(raw_joints) if j not in set(removed)]


def world_to_camera(x: np.ndarray, orientation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """World (..., 3) -> camera space: rotate x - t by the inverse (conjugate) quaternion. float32."""
    q_inv = np.asarray(orientation, dtype=np.float32) * np.array([1, -1, -1, -1], dtype=np.float32)
    return qrot(q_inv, np.asarray(x, dtype=np.float32) - np.asarray(translation, dtype=np.float32))


def project_to_2d(x: np.ndarray, intrinsic: np.ndarray) -> np.ndarray:
    """Camera space (..., 3) -> screen-normalised 2D (..., 2) with Human3.6M's distortion model
    (camera.py project_to_2d): intrinsic (9,) = f (2), c (2), radial k (3), tangential p (2)."""
    x = np.asarray(x, dtype=np.float32)
    k = np.asarray(intrinsic, dtype=np.float32)
    f, c, rad, tan = k[:2], k[2:4], k[4:7], k[7:9]
    xx = x[..., :2] / x[..., 2:]
    r2 = np.sum(xx ** 2, axis=-1, keepdims=True)
    radial = 1 + np.sum(rad * np.concatenate([r2, r2 ** 2, r2 ** 3], axis=-1), axis=-1, keepdims=True)
    tangential = np.sum(tan * xx, axis=-1, keepdims=True)
    return (f * (xx * (radial + tangential) + tan * r2) + c).astype(np.float32)


@dataclass
class EvalSequence:
    """One camera's view of one action. keypoints (T, J_in, 2) screen-normalised; positions
    (T, J_out, 3) camera space in metres, joints 1.. relative to joint 0, joint 0 the trajectory."""
    subject: str
    action: str
    camera: int
    keypoints: np.ndarray
    positions: np.ndarray

    @property
    def target(self) -> np.ndarray:
        """The ground truth evaluation compares with: positions with joint 0 zeroed (run.py)."""
        t = self.positions.copy()
        t[:, 0] = 0
        return t


@dataclass
class EvalData:
    """Preprocessed test sequences. ``sequences`` keeps the 3D file's order: subject (as
    requested), then action, then camera."""
    dataset: str
    subjects: list[str]
    sequences: dict[tuple[str, str], list[EvalSequence]]
    joints_left: list[int]
    joints_right: list[int]
    kps_left: list[int] | None
    kps_right: list[int] | None
    num_joints_in: int
    num_joints_out: int
    notes: list[str] = field(default_factory=list)


# -- validation of untrusted file contents ----------------------------------------------------------

def _array(obj, where: str, last: tuple[int, ...]) -> np.ndarray:
    """A (T, J, C) real array with C in ``last`` and sane sizes, as float32."""
    if not isinstance(obj, np.ndarray) or obj.dtype.kind not in "fiu":
        kind = obj.dtype if isinstance(obj, np.ndarray) else type(obj).__name__
        raise GastrtError(f"{where}: expected a numeric (T, J, {'|'.join(map(str, last))}) array, got {kind}")
    if obj.ndim != 3 or obj.shape[2] not in last or obj.shape[0] < 1 or obj.shape[1] < 1:
        raise GastrtError(f"{where}: expected shape (T, J, {'|'.join(map(str, last))}), got {obj.shape}")
    if obj.shape[0] > MAX_FRAMES or obj.shape[1] > MAX_JOINTS:
        raise GastrtError(f"{where}: shape {obj.shape} is too large (at most {MAX_FRAMES:,} frames, "
                          f"{MAX_JOINTS} joints)")
    a = obj.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        t = int(np.argwhere(bad)[0][0])
        raise GastrtError(f"{where}: {int(bad.sum())} non-finite values (NaN/inf), the first in frame {t}")
    return a


def _dict(obj, where: str) -> dict:
    if not isinstance(obj, dict):
        raise GastrtError(f"{where}: expected a dict, got {type(obj).__name__}")
    return obj


def _symmetry(metadata, path: str, joints: int):
    if not isinstance(metadata, dict) or "keypoints_symmetry" not in metadata:
        return None, None
    sym = metadata["keypoints_symmetry"]
    try:
        left, right = ([int(j) for j in side] for side in sym)
    except (TypeError, ValueError):
        raise GastrtError(f"{path}: metadata['keypoints_symmetry'] must be [left joints, right joints]") from None
    if len(left) != len(right) or not all(0 <= j < joints for j in left + right):
        raise GastrtError(f"{path}: metadata['keypoints_symmetry'] {[left, right]} does not fit "
                          f"{joints} keypoints")
    return left, right


def _camera_views(entry, where: str, n_cams: int) -> list:
    if isinstance(entry, np.ndarray) and entry.dtype.hasobject and entry.ndim == 1:
        entry = list(entry)
    if not isinstance(entry, (list, tuple)):
        raise GastrtError(f"{where}: expected a list of {n_cams} per-camera arrays, got {type(entry).__name__}")
    if len(entry) != n_cams:
        raise GastrtError(f"{where}: {len(entry)} camera views, expected {n_cams}")
    return list(entry)


def _coco_to_humaneva(kps: np.ndarray) -> np.ndarray:
    out = np.empty(kps.shape[:-2] + (15, kps.shape[-1]), dtype=np.float32)
    for j, src in enumerate(COCO17_TO_HUMANEVA15):
        out[..., j, :] = (kps[..., src[0], :] + kps[..., src[1], :]) / 2 if isinstance(src, tuple) else kps[..., src, :]
    return out


def load_eval_data(dataset: str, path_3d: str, path_2d: str, subjects=None, action_filter=None,
                   num_joints_in: int | None = None, num_joints_out: int | None = None,
                   max_bytes: int = MAX_MEMBER_BYTES) -> EvalData:
    """Read and preprocess the test sequences of ``subjects`` (default: the dataset's test
    subjects) whose action group passes ``action_filter`` (a list of prefixes; None: all).
    num_joints_in / num_joints_out: what the model takes and predicts (default: the 2D file's
    joint count / the dataset's skeleton). Raises GastrtError naming the file, key and field."""
    sp = spec(dataset)
    subjects = list(dict.fromkeys(subjects or sp.default_subjects))
    out_j = num_joints_out or (17 if dataset == "h36m" else 15)
    if dataset == "h36m":
        if out_j not in H36M_REMOVED:
            hint = " (a HumanEva engine: --dataset humaneva)" if out_j == 15 else ""
            raise GastrtError(f"the engine predicts {out_j} joints; Human3.6M evaluation supports "
                              f"{' or '.join(map(str, H36M_REMOVED))}{hint}")
        keep = kept_joints(32, H36M_REMOVED[out_j])
    elif out_j != 15:
        raise GastrtError(f"the engine predicts {out_j} joints; HumanEva evaluation needs 15")
    else:
        keep = list(range(15))
    skel = skeleton_for(out_j)
    cams = cameras_for(dataset)

    pos3d = _dict(read_npz(path_3d, ["positions_3d"], max_bytes=max_bytes)["positions_3d"],
                  f"{path_3d}: positions_3d")
    d2 = read_npz(path_2d, ["positions_2d"], optional=["metadata"], max_bytes=max_bytes)
    pos2d = _dict(d2["positions_2d"], f"{path_2d}: positions_2d")
    metadata = d2.get("metadata")

    seqs: dict[tuple[str, str], list[EvalSequence]] = {}
    notes: list[str] = []
    for subject in subjects:
        if subject not in pos3d:
            raise GastrtError(f"{path_3d}: positions_3d has no subject {subject!r} "
                              f"(has: {', '.join(map(str, pos3d))})")
        if subject not in cams:
            known = sorted({s.rsplit("/", 1)[-1] for s in cams}, key=lambda s: (len(s), s))
            raise GastrtError(f"subject {subject!r} has no camera calibration in {sp.title} "
                              f"(calibrated subjects: {', '.join(known)})")
        if subject not in pos2d:
            raise GastrtError(f"{path_2d}: subject {subject} is missing from positions_2d "
                              f"(has: {', '.join(map(str, pos2d))})")
        actions3d = _dict(pos3d[subject], f"{path_3d}: positions_3d[{subject!r}]")
        actions2d = _dict(pos2d[subject], f"{path_2d}: positions_2d[{subject!r}]")
        for action, world in actions3d.items():
            if not isinstance(action, str):
                raise GastrtError(f"{path_3d}: positions_3d[{subject!r}] has a non-string action key {action!r}")
            if action_selected(action, action_filter):
                if action not in actions2d:
                    raise GastrtError(f"{path_2d}: action {action!r} of subject {subject} is missing "
                                      "from positions_2d")
                seqs[(subject, action)] = _views(sp, subject, action, world, actions2d[action], cams[subject],
                                                 keep, path_3d, path_2d)
    if not seqs:
        raise GastrtError(f"{path_3d}: no action of {', '.join(subjects)} matches --actions "
                          f"{','.join(action_filter or [])}")

    j2 = _common_joints(seqs, path_2d)
    kps_left, kps_right = _symmetry(metadata, path_2d, j2)
    in_j = num_joints_in or j2
    if in_j != j2:
        if dataset == "humaneva" and j2 == 17 and in_j == 15:
            for views in seqs.values():
                for s in views:
                    s.keypoints = _coco_to_humaneva(s.keypoints)
            kps_left, kps_right = list(skel.joints_left), list(skel.joints_right)
            notes.append("2D: COCO-17 keypoints mapped to the 15 HumanEva joints as GAST-Net's main.py does")
        else:
            raise GastrtError(f"{path_2d}: {j2} keypoints per frame, but the engine takes {in_j}")
    return EvalData(dataset, subjects, seqs, list(skel.joints_left), list(skel.joints_right),
                    kps_left, kps_right, in_j, out_j, notes)


def _views(sp: DatasetSpec, subject: str, action: str, world, entry_2d, cams, keep, path_3d: str,
           path_2d: str) -> list[EvalSequence]:
    """One action's camera views: 3D into each camera, root-relative; 2D cut to the 3D's frames
    and screen-normalised with that camera's resolution."""
    where3 = f"{path_3d}: positions_3d[{subject!r}][{action!r}]"
    world = _array(world, where3, (3,))
    if world.shape[1] != sp.raw_joints:
        raise GastrtError(f"{where3}: {world.shape[1]} joints, expected the {sp.raw_joints} of "
                          f"{sp.title}'s data_3d layout")
    world = world[:, keep]
    where2 = f"{path_2d}: positions_2d[{subject!r}][{action!r}]"
    out = []
    for ci, (cam, kps) in enumerate(zip(cams, _camera_views(entry_2d, where2, len(cams)))):
        kps = _array(kps, f"{where2}[{ci}]", tuple(range(2, 9)))[..., :2]
        if kps.shape[0] < world.shape[0]:   # longer is fine: some videos have extra frames
            raise GastrtError(f"{where2}[{ci}]: {kps.shape[0]} frames, fewer than the "
                              f"{world.shape[0]} of the 3D poses")
        pos = world_to_camera(world, cam.orientation, cam.translation)
        pos[:, 1:] -= pos[:, :1]   # root-relative; joint 0 keeps the trajectory (run.py)
        out.append(EvalSequence(subject, action, ci, normalize_screen(kps[:world.shape[0]], cam.res_w, cam.res_h),
                                pos))
    return out


def _common_joints(seqs: dict, path_2d: str) -> int:
    counts = {s.keypoints.shape[1]: s for views in seqs.values() for s in views}
    if len(counts) > 1:
        a, b = list(counts.values())[:2]
        raise GastrtError(f"{path_2d}: positions_2d[{a.subject!r}][{a.action!r}][{a.camera}] has "
                          f"{a.keypoints.shape[1]} keypoints, [{b.subject!r}][{b.action!r}][{b.camera}] "
                          f"has {b.keypoints.shape[1]}")
    return next(iter(counts))
