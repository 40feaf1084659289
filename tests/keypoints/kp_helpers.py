"""Shared helpers for the keypoint tests: a fake engine and writers for synthetic fixtures."""
from __future__ import annotations

import json
import os

import numpy as np

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
BASEBALL17 = os.path.normpath(os.path.join(SHARED, "gast_baseball_coco17.json"))
BASEBALL133 = os.path.normpath(os.path.join(SHARED, "gast_baseball_wholebody133.json"))

# COCO-17 joint ids
NOSE, LEYE, REYE, LEAR, REAR, LSHO, RSHO, LELB, RELB, LWRI, RWRI, LHIP, RHIP, LKNE, RKNE, \
    LANK, RANK = range(17)


class FakeEngine:
    """Same attributes as a gastrt engine. lift_sequence: x, y = 3-frame temporal mean
    (edge padded), z = x * y (+ 0.25 when flip) -- so batching and flips are visible."""

    def __init__(self, num_joints=17, family="gast", metadata=None):
        self.family = family
        self.receptive_field = 27
        self.num_joints = num_joints
        self.causal = False
        self.joints_left = [4, 5, 6, 11, 12, 13]
        self.joints_right = [1, 2, 3, 14, 15, 16]
        self.metadata = dict(metadata or {})
        self.calls = []

    def lift_sequence(self, seq, flip=False):
        seq = np.asarray(seq, dtype=np.float32)
        self.calls.append((seq.shape, flip))
        assert seq.shape[-2] == self.num_joints and seq.shape[-1] == 2
        assert seq.ndim in (3, 4)
        tax = seq.ndim - 3
        pad = [(0, 0)] * seq.ndim
        pad[tax] = (1, 1)
        p = np.pad(seq, pad, mode="edge")
        T = seq.shape[tax]
        sl = lambda a, b: np.take(p, np.arange(a, a + T), axis=tax)  # noqa: E731
        xy = (sl(0, 0) + sl(1, 0) + sl(2, 0)) / 3
        z = seq[..., :1] * seq[..., 1:2] + (0.25 if flip else 0.0)
        return np.concatenate([xy, z], axis=-1).astype(np.float32)


def coco_pose(t=0, person=0):
    """A plausible COCO-17 pose in pixels, moving a little with t and person."""
    base = np.array([
        [500, 200], [510, 190], [490, 190], [520, 195], [480, 195],
        [540, 260], [460, 260], [555, 330], [445, 330], [560, 400], [440, 400],
        [525, 420], [475, 420], [530, 520], [470, 520], [535, 620], [465, 620]],
        dtype=np.float32)
    return base + np.float32(3 * t) + np.array([200 * person, 7 * person], dtype=np.float32)


def wholebody_pose(t=0, person=0):
    """COCO-WholeBody-133: body from coco_pose, distinct feet, face/hands filled."""
    kp = np.zeros((133, 2), dtype=np.float32)
    kp[:17] = coco_pose(t, person)
    # l-big-toe, l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel
    kp[17:23] = [[545, 640], [552, 636], [530, 630], [455, 640], [448, 636], [470, 630]]
    kp[17:23] += np.float32(3 * t)
    kp[23:] = kp[0] + 1.0
    return kp


def write_gast_json(path, frames, label="test"):
    """frames: {frame_index (1-based): [pose (J,2) or None for empty bbox, ...]}"""
    data = []
    for fi in sorted(frames):
        sk = []
        for pose in frames[fi]:
            if pose is None:
                sk.append({"pose": [], "score": [], "bbox": []})
            else:
                pose = np.asarray(pose)
                sk.append({"pose": pose.tolist(), "score": [[0.9]] * len(pose),
                           "bbox": [0, 0, 10, 10]})
        data.append({"frame_index": fi, "skeleton": sk})
    with open(path, "w") as f:
        json.dump({"label": label, "label_index": 0, "data": data}, f)
    return str(path)
