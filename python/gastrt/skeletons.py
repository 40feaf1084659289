"""Skeleton facts shared by the families: parents, left/right symmetry, GAST-Net's graph masks.

GAST-Net does not save its adjacency in the checkpoint; it is rebuilt from the joint count
exactly as the original does (`adj_mx_from_skeleton` of the layout's parents, then
`LocalGraph`'s symmetric and connectivity masks). Only the *pattern* (> 0) of those matrices
matters: the learned per-channel logits `e` replace the values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import GastrtError


@dataclass(frozen=True)
class Skeleton:
    name: str
    parents: tuple[int, ...]
    joints_left: tuple[int, ...]
    joints_right: tuple[int, ...]
    distal: tuple[int, ...]  # GAST-Net's distal joints (2nd-order neighbourhood)
    names: tuple[str, ...] = ()  # joint names, in joint order (what output files record)

    @property
    def num_joints(self) -> int:
        return len(self.parents)


H36M_17 = Skeleton(
    "Human3.6M-17",
    (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15),
    (4, 5, 6, 11, 12, 13), (1, 2, 3, 14, 15, 16),
    (3, 6, 10, 13, 16),
    ("Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Neck/Nose", "Head",
     "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist"),
)
H36M_TOES_19 = Skeleton(
    "Human3.6M+toes-19",
    (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 10, 13, 14, 10, 16, 17),
    (5, 6, 7, 8, 13, 14, 15), (1, 2, 3, 4, 16, 17, 18),
    (3, 4, 7, 8, 12, 15, 18),
    ("Hip", "RHip", "RKnee", "RAnkle", "RToe", "LHip", "LKnee", "LAnkle", "LToe", "Spine", "Thorax",
     "Neck/Nose", "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist"),
)
HUMANEVA_15 = Skeleton(
    "HumanEva-15",
    (-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1),
    (2, 3, 4, 8, 9, 10), (5, 6, 7, 11, 12, 13),
    (4, 7, 10, 13),
    ("Pelvis", "Thorax", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist", "LHip", "LKnee",
     "LAnkle", "RHip", "RKnee", "RAnkle", "Head"),
)

# COCO-17 keypoint symmetry (left, right), for models whose inputs are raw COCO detections
COCO_17_LR = ((1, 3, 5, 7, 9, 11, 13, 15), (2, 4, 6, 8, 10, 12, 14, 16))
# COCO-17 bones (child, parent), for drawing COCO-ordered 2D input
COCO_17_BONES = ((1, 0), (2, 0), (3, 1), (4, 2), (6, 5), (7, 5), (9, 7), (8, 6), (10, 8),
                 (11, 5), (12, 6), (12, 11), (13, 11), (15, 13), (14, 12), (16, 14))

_BY_JOINTS = {s.num_joints: s for s in (H36M_17, H36M_TOES_19, HUMANEVA_15)}


def skeleton_for(num_joints: int) -> Skeleton:
    """The layout the originals use for a joint count (15, 17 or 19)."""
    try:
        return _BY_JOINTS[num_joints]
    except KeyError:
        raise ValueError(
            f"no skeleton for {num_joints} joints: expected 15 (HumanEva), 17 (Human3.6M) "
            f"or 19 (Human3.6M with toes)") from None


def adjacency(skel: Skeleton) -> np.ndarray:
    """Row-normalised (A + I) of the bone graph, as `adj_mx_from_skeleton` builds it. [J, J]"""
    j = skel.num_joints
    a = np.zeros((j, j), dtype=np.float64)
    for child, parent in enumerate(skel.parents):
        if parent >= 0:
            a[child, parent] = a[parent, child] = 1.0
    a += np.eye(j)
    return (a / a.sum(axis=1, keepdims=True)).astype(np.float32)


def gast_masks(skel: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """GAST-Net LocalGraph masks (bool [J, J]): symmetric (self + mirror joint) and
    connectivity (1st-order rows for proximal joints, 2nd-order rows for distal joints)."""
    j = skel.num_joints
    sym = np.eye(j, dtype=bool)
    for l, r in zip(skel.joints_left, skel.joints_right):
        sym[l, r] = sym[r, l] = True
    adj = adjacency(skel).astype(np.float64)
    first, second = adj > 0, (adj @ adj) > 0
    distal = np.zeros(j, dtype=bool)
    distal[list(skel.distal)] = True
    con = np.where(distal[:, None], second, first)
    return sym, con


# -- flip test-time augmentation (the originals' TTA), defined once for every caller ------------
# Engine (host and device arrays) and Stream all flip through these three functions.

def flip_permutation(n: int, left, right) -> np.ndarray:
    """Index array p [n] with flipped[..., j, :] = x[..., p[j], :] (left <-> right). A
    one-joint layout (the trajectory output) flips to itself."""
    p = np.arange(n)
    if n > 1:
        if not left:
            raise GastrtError("flip=True needs the left/right joint symmetry, which this engine's "
                              f"{n}-joint layout does not define")
        p[list(left)] = right
        p[list(right)] = left
    return p


def flip_joints(x, perm: np.ndarray):
    """x [..., J, C] -> a new array: joints permuted by ``perm`` and the first coordinate
    negated. Works on NumPy, torch and CuPy arrays alike (plain indexing only)."""
    y = x[..., perm.tolist(), :] if not isinstance(x, np.ndarray) else x[..., perm, :]
    y[..., 0] *= -1
    return y


def merge_flipped(y, y_flipped, perm_out: np.ndarray):
    """The TTA average: (y + unflip(y_flipped)) / 2, both [..., J, C]. Returns a NumPy array
    for NumPy input; device arrays are combined in place into ``y`` (no new allocation)."""
    back = flip_joints(y_flipped, perm_out)
    if isinstance(y, np.ndarray):
        return (y + back) * np.float32(0.5)
    y += back
    y *= 0.5
    return y
