import numpy as np

from gastrt.keypoints.fill import fill_missing, present_mask


def test_present_mask_rules():
    kp = np.array([[1, 2], [0, 0], [np.nan, 3], [4, 5], [6, 7]], np.float32)
    sc = np.array([0.9, 0.9, 0.9, 0.0, np.nan], np.float32)
    np.testing.assert_array_equal(present_mask(kp), [True, False, False, True, True])
    np.testing.assert_array_equal(present_mask(kp, sc), [True, False, False, False, False])


def test_linear_interpolation_and_edge_hold_by_hand():
    T = 7
    kp = np.zeros((1, T, 2, 2), np.float32)
    present = np.zeros((1, T, 2), bool)
    # joint 0 seen at t=1 (10, 100) and t=4 (40, 130)
    kp[0, 1, 0], kp[0, 4, 0] = (10, 100), (40, 130)
    present[0, [1, 4], 0] = True
    # joint 1 seen everywhere but t=5
    kp[0, :, 1] = np.arange(T)[:, None] * [1, 2]
    present[0, :, 1] = True
    present[0, 5, 1] = False
    kp[0, 5, 1] = np.nan
    r = fill_missing(kp, present)
    x = r.keypoints[0, :, 0]
    np.testing.assert_allclose(x[:, 0], [10, 10, 20, 30, 40, 40, 40])
    np.testing.assert_allclose(x[:, 1], [100, 100, 110, 120, 130, 130, 130])
    np.testing.assert_allclose(r.keypoints[0, 5, 1], [5, 10])
    np.testing.assert_array_equal(r.frame_present[0], [True] * 5 + [False, True])
    assert not r.never_seen.any()
    assert r.filled_joints[0, :, 0].sum() == 5


def test_never_seen_joint_uses_frame_centre_and_absent_person_stays_nan():
    kp = np.zeros((2, 3, 3, 2), np.float32)
    present = np.zeros((2, 3, 3), bool)
    kp[0, :, 0] = [[0, 0.5], [2, 2], [4, 4]]
    kp[0, :, 1] = [[2, 2], [4, 4], [6, 6]]
    present[0, :, :2] = True
    r = fill_missing(kp, present)
    np.testing.assert_allclose(r.keypoints[0, :, 2], [[1, 1.25], [3, 3], [5, 5]])
    assert r.never_seen[0].tolist() == [False, False, True]
    assert np.isnan(r.keypoints[1]).all()
    np.testing.assert_array_equal(r.frame_present[1], [False] * 3)
