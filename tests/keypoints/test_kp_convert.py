import numpy as np
import pytest

from gastrt.keypoints import convert as cv
from kp_helpers import (LANK, LEAR, LELB, LEYE, LHIP, LKNE, LSHO, LWRI, NOSE, RANK, REAR, RELB,
                        REYE, RHIP, RKNE, RSHO, RWRI, coco_pose, wholebody_pose)


def _hand_coco_h36m(c):
    """H36M-17 from COCO-17, written out joint by joint from GAST-Net's definition."""
    c = c.astype(np.float64)
    sh = (c[LSHO] + c[RSHO]) / 2
    out = np.zeros((17, 2))
    out[0] = (c[LHIP] + c[RHIP]) / 2                                # pelvis
    out[1], out[2], out[3] = c[RHIP], c[RKNE], c[RANK]
    out[4], out[5], out[6] = c[LHIP], c[LKNE], c[LANK]
    spine = (c[LSHO] + c[RSHO] + c[LHIP] + c[RHIP]) / 4
    thorax = sh + (c[NOSE] - sh) / 3
    out[8] = thorax
    out[8, 1] -= ((c[LEYE, 1] + c[REYE, 1]) / 2 - c[NOSE, 1]) * 2 / 3
    out[7] = spine
    out[7, 0] += 2 * (spine[0] - (out[0, 0] + thorax[0]) / 2)       # uses thorax before y fix
    out[9] = c[NOSE] - (c[NOSE] - sh) / 4                           # neck/nose
    out[10, 0] = (c[LEYE, 0] + c[REYE, 0] + c[LEAR, 0] + c[REAR, 0]) / 4
    out[10, 1] = c[LEYE, 1] + c[REYE, 1] - c[NOSE, 1]               # head
    out[11], out[12], out[13] = c[LSHO], c[LELB], c[LWRI]
    out[14], out[15], out[16] = c[RSHO], c[RELB], c[RWRI]
    return out


def test_coco_to_h36m_matches_hand_computation():
    c = coco_pose(2)
    got = cv.coco_to_h36m(c)
    np.testing.assert_allclose(got, _hand_coco_h36m(c), rtol=0, atol=1e-3)
    # spot values: pelvis = mean of hips, head x = mean of eyes+ears
    np.testing.assert_allclose(got[0], (c[LHIP] + c[RHIP]) / 2)
    assert got[10, 0] == pytest.approx(np.mean(c[[1, 2, 3, 4], 0]))


def test_coco_to_h36m_batched_and_zero_frame_invalid():
    seq = np.stack([coco_pose(t) for t in range(4)])
    seq[2] = 0
    out = cv.coco_to_h36m(seq[None])[0]
    for t in (0, 1, 3):
        np.testing.assert_allclose(out[t], _hand_coco_h36m(seq[t]), atol=1e-3)
    np.testing.assert_array_equal(out[2], 0)
    np.testing.assert_array_equal(cv.nonzero_frames(out), [True, True, False, True])


def test_mpii_to_h36m():
    m = np.arange(32, dtype=np.float32).reshape(16, 2) * 3 + 5
    out = cv.mpii_to_h36m(m)
    # r-ankle, r-knee, r-hip, l-hip, l-knee, l-ankle, pelvis, thorax, neck, head-top, ...
    order = {3: 0, 2: 1, 1: 2, 4: 3, 5: 4, 6: 5, 0: 6, 8: 7, 9: 8, 10: 9,
             16: 10, 15: 11, 14: 12, 11: 13, 12: 14, 13: 15}
    for h, mp in order.items():
        np.testing.assert_array_equal(out[h], m[mp])
    np.testing.assert_allclose(out[7], (m[2] + m[3] + m[12] + m[13]) / 4)


def test_wholebody_to_toes():
    wb = wholebody_pose(1)
    out = cv.wholebody_to_h36m_toes(wb)
    body = cv.coco_to_h36m(wb[:17])
    np.testing.assert_array_equal(out[[0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16,
                                       17, 18]], body)
    np.testing.assert_allclose(out[4], (wb[20] + wb[21]) / 2)   # right toe: r-big, r-small
    np.testing.assert_allclose(out[8], (wb[17] + wb[18]) / 2)   # left toe
    assert cv.wholebody_to_h36m_toes(wb[:23]).shape == (19, 2)


def test_openpose_orders_name_the_same_joints():
    coco = coco_pose()
    op18 = np.full((18, 2), -1, np.float32)
    # OpenPose COCO-18: nose neck rsho relb rwri lsho lelb lwri rhip rkne rank lhip lkne lank
    #                   reye leye rear lear
    names18 = [NOSE, None, RSHO, RELB, RWRI, LSHO, LELB, LWRI, RHIP, RKNE, RANK, LHIP, LKNE,
               LANK, REYE, LEYE, REAR, LEAR]
    for i, c in enumerate(names18):
        if c is not None:
            op18[i] = coco[c]
    np.testing.assert_array_equal(op18[cv.OPENPOSE18_TO_COCO17], coco)
    # BODY_25: as COCO-18 with mid-hip inserted at 8, then feet
    names25 = names18[:8] + [None] + names18[8:]
    op25 = np.full((25, 2), -1, np.float32)
    for i, c in enumerate(names25):
        if c is not None:
            op25[i] = coco[c]
    wb = wholebody_pose()
    op25[19:25] = wb[17:23]  # LBigToe LSmallToe LHeel RBigToe RSmallToe RHeel
    np.testing.assert_array_equal(op25[cv.BODY25_TO_COCO17], coco)
    np.testing.assert_array_equal(op25[cv.BODY25_TO_WHOLEBODY23], wb[:23])


def test_normalize_screen():
    x = np.array([[0, 0], [1920, 1080], [960, 540]], np.float32)
    n = cv.normalize_screen(x, 1920, 1080)
    np.testing.assert_allclose(n, [[-1, -0.5625], [1, 0.5625], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(cv.image_coordinates(n, 1920, 1080), x, atol=1e-3)


def test_world_transform():
    q = cv.DEMO_ROTATION.astype(np.float64)
    w, x, y, z = q / np.linalg.norm(q)
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    v = np.random.default_rng(0).normal(size=(5, 17, 3)).astype(np.float32)
    np.testing.assert_allclose(cv.camera_to_world(v), v @ R.T, atol=1e-5)
    r = cv.rebase_height(cv.camera_to_world(v))
    assert r[..., 2].min() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("fmt,file_j,eng_j,needle", [
    ("coco", 17, 19, "foot keypoints"),
    ("mpii", 16, 19, "foot keypoints"),
    ("h36m", 17, 19, "engine's own layout"),
    ("coco", 25, 17, "COCO-17 needs 17"),
    ("openpose", 45, 17, "18 (COCO-18) or 25"),
    ("coco", 17, 15, "engine's layout"),
])
def test_plan_layout_mismatch(fmt, file_j, eng_j, needle):
    with pytest.raises(ValueError, match="f.json") as e:
        cv.plan_layout(fmt, file_j, eng_j, source="f.json")
    assert needle in str(e.value)


def test_plan_layout_choices():
    assert cv.plan_layout("openpose", 25, 19).layout == "wholebody"
    assert cv.plan_layout("openpose", 25, 17).layout == "coco"
    assert cv.plan_layout("wholebody", 133, 17).select.tolist() == list(range(17))
    p = cv.plan_layout("coco", 17, 17, engine_input="coco")  # VideoPose3D on COCO input
    x = coco_pose()
    np.testing.assert_array_equal(p.convert(x), x)
    with pytest.raises(ValueError, match="unknown keypoint format"):
        cv.plan_layout("halpe", 26, 17)


def test_guess_format_ambiguous_array():
    assert cv.guess_format(17, "gast-json") == "coco"
    assert cv.guess_format(133, "gast-json") == "wholebody"
    with pytest.raises(ValueError, match="--format coco or --format h36m"):
        cv.guess_format(17, "array", "x.npy")
    with pytest.raises(ValueError, match="26 joints"):
        cv.guess_format(26, "mmpose-json", "x.json")
