"""Loading the originals' npz layouts: the restricted reader, joint removal, camera transform,
root-relative 3D, screen normalisation, HumanEva chunks, and one clear error per bad input."""
from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from eval_helpers import (COCO_META, H36M32_LEFT, H36M32_RIGHT, H36M_ACTIONS, H36M_DROP_17, H36M_META,
                          HUMANEVA_ACTIONS, motion, normalize, quat_matrix, to_camera, write_h36m,
                          write_humaneva)
from gastrt.errors import GastrtError
from gastrt.evaluation import cameras as calib
from gastrt.evaluation.datasets import load_eval_data, project_to_2d, world_to_camera
from gastrt.evaluation.npz import read_npz
from gastrt.skeletons import H36M_17, H36M_TOES_19, HUMANEVA_15


@pytest.fixture(scope="module")
def h36m(tmp_path_factory):
    return write_h36m(str(tmp_path_factory.mktemp("h36m")))


def remove_joints_ref(left, right, drop, n=32):
    """Skeleton.remove_joints' re-indexing of the left/right lists, written out."""
    kept = [j for j in range(n) if j not in drop]
    return [kept.index(j) for j in left if j in kept], [kept.index(j) for j in right if j in kept]


# -- the restricted npz reader --------------------------------------------------------------------

def test_reader_reads_savez_layout(tmp_path):
    d = {"S1": {"Walking": np.arange(12, dtype=np.float32).reshape(1, 4, 3)}, "S2": {"x": [np.ones((2, 2)), None]}}
    meta = {"layout_name": "h36m", "num_joints": np.int64(17), "f": np.float32(0.5), "sym": [[1], [2]]}
    path = str(tmp_path / "a.npz")
    np.savez_compressed(path, positions_3d=d, metadata=meta, plain=np.eye(3))
    got = read_npz(path, ["positions_3d", "metadata", "plain"])
    assert np.array_equal(got["positions_3d"]["S1"]["Walking"], d["S1"]["Walking"])
    assert got["positions_3d"]["S2"]["x"][1] is None
    assert got["metadata"]["num_joints"] == 17 and got["metadata"]["sym"] == [[1], [2]]
    assert np.array_equal(got["plain"], np.eye(3))


def test_reader_reads_protocol2_pickles(tmp_path):
    """Files from older NumPy carry bytes as _codecs.encode(..., 'latin1')."""
    arr = np.array({"S1": {"A": np.ones((2, 3, 3), np.float32)}}, dtype=object)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    pickle.dump(arr, buf, protocol=2)
    path = str(tmp_path / "p2.npz")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("positions_3d.npy", buf.getvalue())
    assert read_npz(path, ["positions_3d"])["positions_3d"]["S1"]["A"].shape == (2, 3, 3)


class _Hostile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_reader_never_runs_pickle_code(tmp_path):
    marker = str(tmp_path / "pwned")
    path = str(tmp_path / "evil.npz")
    np.savez(path, positions_3d=np.array({"S1": _Hostile(marker)}, dtype=object))
    with pytest.raises(GastrtError, match=r"refusing to load io\.open"):
        read_npz(path, ["positions_3d"])
    assert not os.path.exists(marker)


def test_reader_errors(tmp_path):
    path = str(tmp_path / "a.npz")
    np.savez_compressed(path, positions_3d={"S1": {}})
    with pytest.raises(GastrtError, match=r"no 'positions_2d' array \(has: positions_3d\)"):
        read_npz(path, ["positions_2d"])
    with pytest.raises(GastrtError, match="more than the 10 allowed"):
        read_npz(path, ["positions_3d"], max_bytes=10)
    bad = tmp_path / "b.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GastrtError, match="not an npz"):
        read_npz(str(bad), ["positions_3d"])
    with pytest.raises(GastrtError, match="no such file"):
        read_npz(str(tmp_path / "missing.npz"), ["positions_3d"])


# -- Human3.6M preprocessing ---------------------------------------------------------------------

def test_h36m_layout_and_round_trips(h36m):
    p3, p2, world = h36m
    data = load_eval_data("h36m", p3, p2)
    assert data.subjects == ["S9", "S11"]
    assert list(data.sequences) == [(s, a) for s in ("S9", "S11") for a in H36M_ACTIONS]
    kept = [j for j in range(32) if j not in H36M_DROP_17]
    assert len(kept) == 17
    # the skeleton's symmetry after remove_joints is gastrt's H36M_17 and the 2D file's
    assert remove_joints_ref(H36M32_LEFT, H36M32_RIGHT, H36M_DROP_17) == (data.joints_left, data.joints_right)
    assert (data.joints_left, data.joints_right) == (list(H36M_17.joints_left), list(H36M_17.joints_right))
    assert [data.kps_left, data.kps_right] == H36M_META["keypoints_symmetry"]
    for (subject, action), views in data.sequences.items():
        assert len(views) == 4
        w = world[subject][action][:, kept].astype(np.float64)
        for ci, s in enumerate(views):
            intr = calib.H36M_INTRINSICS[ci]
            q, t = calib.H36M_EXTRINSICS[subject][ci]
            frames = len(w)
            assert s.keypoints.shape == (frames, 17, 2) and s.positions.shape == (frames, 17, 3)
            assert s.keypoints.dtype == np.float32 and s.positions.dtype == np.float32
            # 3D: camera space with joint 0 the trajectory, the rest root-relative
            cam = to_camera(w, q, t)
            assert np.allclose(s.positions[:, 0], cam[:, 0], atol=2e-5)
            assert np.allclose(s.positions[:, 1:], cam[:, 1:] - cam[:, :1], atol=2e-5)
            assert np.all(s.target[:, 0] == 0) and np.array_equal(s.target[:, 1:], s.positions[:, 1:])
            # back to the world with the rotation matrix: the file's poses
            back = s.positions.astype(np.float64).copy()
            back[:, 1:] += back[:, :1]
            assert np.allclose(back @ quat_matrix(q).T + np.asarray(t) / 1000, w, atol=3e-5)
            # 2D: the file's pixels (cut to the 3D's frames), screen-normalised with this camera
            px = np.load(p2, allow_pickle=True)["positions_2d"].item()[subject][action][ci]
            assert px.shape[0] == frames + 3
            assert np.allclose(s.keypoints, normalize(px[:frames], intr["res_w"], intr["res_h"]), atol=1e-6)
            # and the package's projection of the 3D gives the same 2D
            absolute = s.positions.copy()
            absolute[:, 1:] += absolute[:, :1]
            proj = project_to_2d(absolute, data_camera(subject, ci).intrinsic)
            assert np.allclose(proj, s.keypoints, atol=2e-5)


def data_camera(subject, ci):
    from gastrt.evaluation.cameras import cameras_for
    return cameras_for("h36m")[subject][ci]


def test_camera_preprocessing_matches_the_originals():
    cam = data_camera("S9", 0)
    intr = calib.H36M_INTRINSICS[0]
    assert cam.res_w == 1000 and cam.res_h == 1002 and cam.id == "54138969"
    assert np.allclose(cam.translation, np.array(calib.H36M_EXTRINSICS["S9"][0][1]) / 1000)
    f = np.array(intr["focal_length"]) / 1000 * 2
    c = np.array(intr["center"]) / 1000 * 2 - [1, 1002 / 1000]
    assert np.allclose(cam.intrinsic, np.concatenate([f, c, intr["radial_distortion"],
                                                      intr["tangential_distortion"]]), atol=1e-7)
    x = np.random.default_rng(0).normal(size=(5, 3))
    q, t = calib.H36M_EXTRINSICS["S9"][0]
    assert np.allclose(world_to_camera(x, cam.orientation, cam.translation), to_camera(x, q, t), atol=1e-5)


def test_19_joint_layout(h36m):
    p3, p2, world = h36m
    # GAST-Net's 19-joint model keeps the toes; its 2D file has 19 keypoints
    data = load_eval_data("h36m", p3, p2, subjects=["S9"], num_joints_in=17, num_joints_out=19)
    drop19 = [5, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]
    kept = [j for j in range(32) if j not in drop19]
    s = data.sequences[("S9", "Walking")][2]
    q, t = calib.H36M_EXTRINSICS["S9"][2]
    cam = to_camera(world["S9"]["Walking"][:, kept], q, t)
    assert np.allclose(s.positions[:, 1:], cam[:, 1:] - cam[:, :1], atol=2e-5)
    assert remove_joints_ref(H36M32_LEFT, H36M32_RIGHT, drop19) == (list(H36M_TOES_19.joints_left),
                                                                   list(H36M_TOES_19.joints_right))
    assert (data.joints_left, data.joints_right) == (list(H36M_TOES_19.joints_left), list(H36M_TOES_19.joints_right))


def test_action_filter_is_a_prefix_of_the_group(h36m):
    p3, p2, _ = h36m
    data = load_eval_data("h36m", p3, p2, subjects=["S11"], action_filter=["Walk"])
    assert list(data.sequences) == [("S11", "Walking 1"), ("S11", "Walking")]


# -- HumanEva ---------------------------------------------------------------------------------------

def test_humaneva_defaults_and_chunks(tmp_path):
    p3, p2, world = write_humaneva(str(tmp_path))
    data = load_eval_data("humaneva", p3, p2, action_filter=["Walk", "Jog", "Box"])
    assert data.subjects == ["Validate/S1", "Validate/S2", "Validate/S3"]
    want = [a for a in HUMANEVA_ACTIONS if not a.startswith("Gestures")]
    assert list(data.sequences) == [(s, a) for s in data.subjects for a in want]
    assert (data.joints_left, data.joints_right) == (list(HUMANEVA_15.joints_left), list(HUMANEVA_15.joints_right))
    s = data.sequences[("Validate/S2", "Jog 1 chunk0")][1]
    q, t = calib.HUMANEVA_EXTRINSICS["S2"][1]
    cam = to_camera(world["Validate/S2"]["Jog 1 chunk0"], q, t)
    assert np.allclose(s.positions[:, 1:], cam[:, 1:] - cam[:, :1], atol=2e-5)
    px = np.load(p2, allow_pickle=True)["positions_2d"].item()["Validate/S2"]["Jog 1 chunk0"][1]
    assert np.allclose(s.keypoints, normalize(px, 640, 480), atol=1e-6)


def test_humaneva_coco_detections_map_to_15_joints(tmp_path):
    p3, p2, _ = write_humaneva(str(tmp_path), coco=True)
    data = load_eval_data("humaneva", p3, p2, subjects=["Validate/S1"], num_joints_in=15, num_joints_out=15)
    assert data.notes and "GAST-Net" in data.notes[0]
    assert (data.kps_left, data.kps_right) == (list(HUMANEVA_15.joints_left), list(HUMANEVA_15.joints_right))
    coco = normalize(np.load(p2, allow_pickle=True)["positions_2d"].item()["Validate/S1"]["Box 1 chunk0"][0], 640, 480)
    got = data.sequences[("Validate/S1", "Box 1 chunk0")][0].keypoints
    # GAST-Net main.py, joint by joint
    assert np.allclose(got[:, 0], (coco[:, 11] + coco[:, 12]) / 2, atol=1e-6)
    assert np.allclose(got[:, 1], (coco[:, 5] + coco[:, 6]) / 2, atol=1e-6)
    for he, c in {2: 5, 3: 7, 4: 9, 5: 6, 6: 8, 7: 10, 8: 11, 9: 13, 10: 15, 11: 12, 12: 14, 13: 16, 14: 0}.items():
        assert np.allclose(got[:, he], coco[:, c], atol=1e-6)
    # a VideoPose3D HumanEva engine takes the 17 COCO keypoints as they are
    data = load_eval_data("humaneva", p3, p2, subjects=["Validate/S1"], num_joints_in=17, num_joints_out=15)
    assert [data.kps_left, data.kps_right] == COCO_META["keypoints_symmetry"]


# -- one clear error per bad input ----------------------------------------------------------------

def _rewrite(path, key, fn):
    z = dict(np.load(path, allow_pickle=True))
    obj = z[key].item()
    fn(obj)
    z[key] = obj
    np.savez_compressed(path, **z)


@pytest.mark.parametrize("case, needle", [
    ("no_subject_2d", r"subject S11 is missing from positions_2d"),
    ("no_action_2d", r"action 'Sitting 2' of subject S9 is missing"),
    ("nan_3d", r"positions_3d\['S9'\]\['Walking'\]: 1 non-finite values \(NaN/inf\), the first in frame 5"),
    ("nan_2d", r"positions_2d\['S11'\]\['Directions'\]\[3\]: 1 non-finite"),
    ("short_2d", r"\[1\]: 10 frames, fewer than the 23 of the 3D poses"),
    ("cameras", r"3 camera views, expected 4"),
    ("joints_3d", r"17 joints, expected the 32"),
    ("not_array", r"expected a numeric \(T, J, 3\) array, got str"),
    ("no_positions_3d", r"no 'positions_3d' array"),
])
def test_bad_h36m_inputs(tmp_path, case, needle):
    p3, p2, _ = write_h36m(str(tmp_path))
    if case == "no_subject_2d":
        _rewrite(p2, "positions_2d", lambda d: d.pop("S11"))
    elif case == "no_action_2d":
        _rewrite(p2, "positions_2d", lambda d: d["S9"].pop("Sitting 2"))
    elif case == "nan_3d":
        _rewrite(p3, "positions_3d", lambda d: d["S9"]["Walking"].__setitem__((5, 3, 1), np.nan))
    elif case == "nan_2d":
        _rewrite(p2, "positions_2d", lambda d: d["S11"]["Directions"][3].__setitem__((0, 0, 0), np.nan))
    elif case == "short_2d":
        _rewrite(p2, "positions_2d", lambda d: d["S9"]["Walking 1"].__setitem__(1, d["S9"]["Walking 1"][1][:10]))
    elif case == "cameras":
        _rewrite(p2, "positions_2d", lambda d: d["S9"]["Walking 1"].pop())
    elif case == "joints_3d":
        _rewrite(p3, "positions_3d", lambda d: d["S9"].__setitem__("Walking", d["S9"]["Walking"][:, :17]))
    elif case == "not_array":
        _rewrite(p3, "positions_3d", lambda d: d["S9"].__setitem__("Walking", "oops"))
    elif case == "no_positions_3d":
        np.savez_compressed(p3, poses=np.zeros(3))
    with pytest.raises(GastrtError, match=needle):
        load_eval_data("h36m", p3, p2)


def test_bad_requests(h36m):
    p3, p2, _ = h36m
    with pytest.raises(GastrtError, match="positions_3d has no subject 'S7'"):
        load_eval_data("h36m", p3, p2, subjects=["S7"])
    with pytest.raises(GastrtError, match="17 keypoints per frame, but the engine takes 15"):
        load_eval_data("h36m", p3, p2, num_joints_in=15)
    with pytest.raises(GastrtError, match="predicts 16 joints"):
        load_eval_data("h36m", p3, p2, num_joints_out=16)
    with pytest.raises(GastrtError, match="no action of S9 matches"):
        load_eval_data("h36m", p3, p2, subjects=["S9"], action_filter=["Eating"])
    with pytest.raises(GastrtError, match="unknown dataset"):
        load_eval_data("mpii", p3, p2)


def test_uncalibrated_subject(tmp_path):
    rng = np.random.default_rng(0)
    p3 = str(tmp_path / "d3.npz")
    np.savez_compressed(p3, positions_3d={"S2": {"Walking": motion(rng, 5, 32)}})
    np.savez_compressed(str(tmp_path / "d2.npz"), positions_2d={"S2": {"Walking": [np.zeros((5, 17, 2))] * 4}},
                        metadata=H36M_META)
    with pytest.raises(GastrtError, match=r"'S2' has no camera calibration .*S1, S5, S6, S7, S8, S9, S11"):
        load_eval_data("h36m", p3, str(tmp_path / "d2.npz"), subjects=["S2"])


def test_deeply_nested_pickle_is_refused_before_unpickling(tmp_path):
    """A dict keyed by a tuple nested 10^6 deep would crash the C unpickler / hashing (SIGSEGV):
    the shared opcode pre-scan (gastrt.checkpoint.scan_pickle) refuses it first."""
    import io
    import zipfile

    from gastrt.errors import GastrtError
    from gastrt.evaluation.npz import read_npz
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|O", "fortran_order": False, "shape": ()})
    npy.write(b"\x80\x02}" + b"N" + b"\x85" * 1_000_000 + b"Ns.")
    path = tmp_path / "deep.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("positions_3d.npy", npy.getvalue())
    with pytest.raises(GastrtError, match="nested more than 100 levels"):
        read_npz(str(path), ["positions_3d"])
