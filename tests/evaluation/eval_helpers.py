"""Synthetic Human3.6M / HumanEva files in the originals' exact npz layouts, with known 3D.

The 2D is made the way VideoPose3D's prepare_data_h36m.py makes data_2d_h36m_gt.npz (world ->
camera -> distorted projection -> pixels), but with code written here: quaternions as rotation
matrices and the projection in pixel units, so the package's own camera code is checked, not
reused. The files are written with np.savez_compressed, exactly as the originals do."""
from __future__ import annotations

import os

import numpy as np

from gastrt.evaluation import cameras as calib

H36M_META = {"layout_name": "h36m", "num_joints": 17,
             "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]}
HUMANEVA_META = {"layout_name": "humaneva15", "num_joints": 15,
                 "keypoints_symmetry": [[2, 3, 4, 8, 9, 10], [5, 6, 7, 11, 12, 13]]}
COCO_META = {"layout_name": "coco", "num_joints": 17,
             "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]}

# h36m_dataset.py: the 32-joint skeleton's symmetry and the joints its remove_joints() drops
H36M32_LEFT = [6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 22, 23]
H36M32_RIGHT = [1, 2, 3, 4, 5, 24, 25, 26, 27, 28, 29, 30, 31]
H36M_DROP_17 = [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]

H36M_ACTIONS = {"Walking 1": 23, "Walking": 19, "Sitting 2": 17, "Directions": 21}
HUMANEVA_ACTIONS = {"Walking 1 chunk0": 18, "Walking 1 chunk2": 9, "Jog 1 chunk0": 15,
                    "Box 1 chunk0": 13, "Gestures 1 chunk0": 11}
# a made-up pinhole for HumanEva (the originals ship no HumanEva intrinsics)
HE_F, HE_C = 800.0, (320.0, 240.0)


def quat_matrix(q) -> np.ndarray:
    """Rotation matrix of the unit quaternion (w, x, y, z): v_world = R @ v_camera."""
    w, x, y, z = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def to_camera(world: np.ndarray, q, t_mm) -> np.ndarray:
    """World metres -> camera metres (float64)."""
    return (np.asarray(world, np.float64) - np.asarray(t_mm, np.float64) / 1000) @ quat_matrix(q)


def pixels_h36m(cam_xyz: np.ndarray, intr: dict) -> np.ndarray:
    """Human3.6M's distortion model, in pixels."""
    x = cam_xyz[..., :2] / cam_xyz[..., 2:]
    r2 = (x ** 2).sum(-1, keepdims=True)
    k = np.asarray(intr["radial_distortion"])
    p = np.asarray(intr["tangential_distortion"])
    radial = 1 + k[0] * r2 + k[1] * r2 ** 2 + k[2] * r2 ** 3
    tan = (p * x).sum(-1, keepdims=True)
    d = x * (radial + tan) + p * r2
    return np.asarray(intr["focal_length"]) * d + np.asarray(intr["center"])


def pixels_pinhole(cam_xyz: np.ndarray) -> np.ndarray:
    return HE_F * cam_xyz[..., :2] / cam_xyz[..., 2:] + np.asarray(HE_C)


def motion(rng, frames: int, joints: int) -> np.ndarray:
    """A body-sized point cloud drifting around the capture volume's centre: (T, J, 3) metres,
    z up, in front of every camera."""
    root = np.array([0.2, -0.3, 0.9]) + np.cumsum(rng.normal(0, 0.01, (frames, 3)), axis=0)
    offsets = rng.normal(0, 0.25, (joints, 3))
    offsets[0] = 0
    wobble = rng.normal(0, 0.01, (frames, joints, 3))
    return (root[:, None] + offsets[None] + wobble).astype(np.float32)


def write_h36m(folder, subjects=("S9", "S11"), actions=None, extra_frames=3, seed=0,
               meta=H36M_META, world=None, name="h36m") -> tuple[str, str, dict]:
    """data_3d (32 joints, world metres) + data_2d (4 cameras, 17 kept joints in pixels, 'extra_frames'
    more frames than the 3D as some real videos have). -> (path_3d, path_2d, world dict)."""
    rng = np.random.default_rng(seed)
    actions = actions or H36M_ACTIONS
    keep = [j for j in range(32) if j not in H36M_DROP_17]
    world = world or {s: {a: motion(rng, t, 32) for a, t in actions.items()} for s in subjects}
    pos2d = {}
    for s, acts in world.items():
        pos2d[s] = {}
        for a, w in acts.items():
            views = []
            w_long = np.concatenate([w, np.repeat(w[-1:], extra_frames, axis=0)])
            for intr, (q, t) in zip(calib.H36M_INTRINSICS, calib.H36M_EXTRINSICS[s]):
                views.append(pixels_h36m(to_camera(w_long[:, keep], q, t), intr).astype(np.float32))
            pos2d[s][a] = views
    p3, p2 = os.path.join(folder, f"data_3d_{name}.npz"), os.path.join(folder, f"data_2d_{name}_gt.npz")
    np.savez_compressed(p3, positions_3d=world)
    np.savez_compressed(p2, positions_2d=pos2d, metadata=meta)
    return p3, p2, world


def write_humaneva(folder, subjects=("Train/S1", "Validate/S1", "Validate/S2", "Validate/S3"), seed=1,
                   coco=False) -> tuple[str, str, dict]:
    """data_3d_humaneva15 / data_2d_humaneva15 (3 cameras). coco=True: the 2D holds 17 COCO
    keypoints (as detectron_pt_coco), placed so that GAST-Net's mapping gives back the 15 joints."""
    rng = np.random.default_rng(seed)
    world, pos2d = {}, {}
    for s in subjects:
        world[s] = {a: motion(rng, t, 15) for a, t in HUMANEVA_ACTIONS.items()}
        pos2d[s] = {}
        for a, w in world[s].items():
            views = []
            for q, t in calib.HUMANEVA_EXTRINSICS[s.split("/")[-1]]:
                px = pixels_pinhole(to_camera(w, q, t)).astype(np.float32)
                views.append(he15_to_coco(px) if coco else px)
            pos2d[s][a] = views
    p3 = os.path.join(folder, "data_3d_humaneva15.npz")
    p2 = os.path.join(folder, "data_2d_humaneva15_" + ("detectron_pt_coco" if coco else "gt") + ".npz")
    np.savez_compressed(p3, positions_3d=world)
    np.savez_compressed(p2, positions_2d=pos2d, metadata=COCO_META if coco else HUMANEVA_META)
    return p3, p2, world


def he15_to_coco(px: np.ndarray) -> np.ndarray:
    """COCO-17 keypoints (as detectron_pt_coco) carrying the HumanEva limbs: shoulders, elbows,
    wrists, hips, knees, ankles and the nose at the matching HumanEva joints; eyes and ears at
    the head."""
    c = np.zeros(px.shape[:-2] + (17, 2), np.float32)
    for coco, he in ((0, 14), (1, 14), (2, 14), (3, 14), (4, 14), (5, 2), (6, 5), (7, 3), (8, 6),
                     (9, 4), (10, 7), (11, 8), (12, 11), (13, 9), (14, 12), (15, 10), (16, 13)):
        c[..., coco, :] = px[..., he, :]
    return c


def normalize(px: np.ndarray, w: int, h: int) -> np.ndarray:
    """camera.py normalize_screen_coordinates, written out."""
    return px / w * 2 - np.array([1, h / w])
