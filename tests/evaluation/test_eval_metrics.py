"""The four metrics against independent plain-NumPy versions (per-frame loops, Umeyama's
Procrustes), on random data of odd sizes, plus their invariances."""
from __future__ import annotations

import numpy as np
import pytest

from gastrt.errors import GastrtError
from gastrt.evaluation.metrics import mean_velocity_error, mpjpe, n_mpjpe, p_mpjpe


def ref_mpjpe(p, t):
    total, n = 0.0, 0
    for a, b in zip(p.reshape(-1, 3), t.reshape(-1, 3)):
        total += np.sqrt(((a - b) ** 2).sum())
        n += 1
    return total / n


def ref_procrustes_frame(y, x):
    """Align y (J, 3) to x with the similarity that minimises the squared error (Umeyama 1991:
    rotation without reflection, scale, translation) -> aligned y."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cov = xc.T @ yc / len(x)                       # 3x3 cross-covariance
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1
    rot = u @ s @ vt                               # x ~ c * rot @ y + t
    var_y = (yc ** 2).sum() / len(y)
    c = np.trace(np.diag(d) @ s) / var_y
    return c * yc @ rot.T + mx


def ref_p_mpjpe(p, t):
    errs = [np.linalg.norm(ref_procrustes_frame(a, b) - b, axis=1).mean() for a, b in zip(p, t)]
    return float(np.mean(errs))


def ref_n_mpjpe(p, t):
    out = []
    for a, b in zip(p.reshape(-1, *p.shape[-2:]), t.reshape(-1, *t.shape[-2:])):
        s = (a * b).sum() / (a * a).sum()
        out.append(np.linalg.norm(s * a - b, axis=1))
    return float(np.mean(out))


def ref_mpjve(p, t):
    out = []
    for i in range(1, len(p)):
        out.append(np.linalg.norm((p[i] - p[i - 1]) - (t[i] - t[i - 1]), axis=1))
    return float(np.mean(out))


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


@pytest.mark.parametrize("frames, joints", [(1, 3), (7, 17), (33, 15), (5, 19)])
def test_metrics_match_independent_numpy(frames, joints):
    rng = np.random.default_rng(frames * 100 + joints)
    t = rng.normal(0, 0.3, (frames, joints, 3)).astype(np.float32)
    p = (t + rng.normal(0, 0.05, t.shape)).astype(np.float32)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    assert mpjpe(p, t) == pytest.approx(ref_mpjpe(p64, t64), rel=1e-12)
    assert p_mpjpe(p, t) == pytest.approx(ref_p_mpjpe(p64, t64), rel=1e-9)
    assert n_mpjpe(p, t) == pytest.approx(ref_n_mpjpe(p64, t64), rel=1e-9)
    # the originals' batch layout (B, T, J, 3): n_mpjpe scales per frame
    assert n_mpjpe(p[None], t[None]) == pytest.approx(n_mpjpe(p, t), rel=1e-12)
    if frames > 1:
        assert mean_velocity_error(p, t) == pytest.approx(ref_mpjve(p64, t64), rel=1e-12)


def test_known_values():
    t = np.zeros((2, 2, 3))
    p = t.copy()
    p[0, 0] = [3, 4, 0]          # one joint 5 m off, in one of 2 frames of 2 joints
    assert mpjpe(p, t) == pytest.approx(5 / 4)
    assert mean_velocity_error(p, t) == pytest.approx(5 / 2)   # frame 1 - frame 0 differs at one joint


def test_invariances():
    rng = np.random.default_rng(3)
    t = rng.normal(0, 0.3, (9, 17, 3))
    rot, scale, shift = random_rotation(rng), 1.7, rng.normal(size=3)
    moved = scale * t @ rot.T + shift
    assert p_mpjpe(moved, t) == pytest.approx(0, abs=1e-9)
    assert mpjpe(moved, t) > 0.1
    assert n_mpjpe(0.6 * t, t) == pytest.approx(0, abs=1e-12)
    assert mean_velocity_error(t + shift, t) == pytest.approx(0, abs=1e-12)
    # a mirror image is no rotation: Procrustes must not undo it
    mirrored = t * np.array([-1, 1, 1])
    assert p_mpjpe(mirrored, t) > 0.05
    assert p_mpjpe(mirrored, t) == pytest.approx(ref_p_mpjpe(mirrored, t), rel=1e-9)


def test_perfect_prediction_is_zero():
    t = np.random.default_rng(0).normal(size=(6, 17, 3))
    for f in (mpjpe, p_mpjpe, n_mpjpe, mean_velocity_error):
        assert f(t, t) == pytest.approx(0, abs=1e-9)


def test_bad_shapes():
    with pytest.raises(GastrtError, match="same"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(GastrtError, match="2 frames"):
        mean_velocity_error(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)))
    with pytest.raises(GastrtError, match=r"\(N, J, 3\)"):
        p_mpjpe(np.zeros((17, 3)), np.zeros((17, 3)))


def test_nan_propagates_not_zero():
    t = np.random.default_rng(1).normal(size=(4, 17, 3))
    p = t.copy()
    p[2, 3, 1] = np.nan
    for f in (mpjpe, p_mpjpe, n_mpjpe, mean_velocity_error):
        assert np.isnan(f(p, t))
    # a prediction collapsed to one point has no Procrustes alignment: NaN, never 0
    assert np.isnan(p_mpjpe(np.zeros_like(t), t))
