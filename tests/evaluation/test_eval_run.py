"""The evaluation loop: grouping and frame-weighted averaging as run.py, a perfect predictor
scores 0, and the engine's flip / edge padding are the originals' (UnchunkedGenerator + evaluate)."""
from __future__ import annotations

import numpy as np
import pytest

import gastrt
from eval_helpers import write_h36m
from gastrt.errors import GastrtError
from gastrt.evaluation.datasets import load_eval_data
from gastrt.evaluation.run import engine_predictor, evaluate, flip_tta
from test_eval_metrics import ref_mpjpe, ref_mpjve, ref_n_mpjpe, ref_p_mpjpe


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    p3, p2, _ = write_h36m(str(tmp_path_factory.mktemp("run")))
    return load_eval_data("h36m", p3, p2)


def original_flip(x, left, right):
    """The originals' mirror of one batch item: x negated, then the lists swapped by index
    assignment exactly as generators.py writes it."""
    y = np.array(x, copy=True)
    y[..., 0] *= -1
    y[..., left + right, :] = y[..., right + left, :]
    return y


class Lookup:
    """A 'predictor' that knows the answer for the inputs it was shown: keypoints -> poses."""

    def __init__(self):
        self.table = {}

    def add(self, x, y):
        self.table[np.ascontiguousarray(x, np.float32).tobytes()] = np.asarray(y, np.float32)

    def __call__(self, x):
        return self.table[np.ascontiguousarray(x, np.float32).tobytes()]


def test_perfect_predictor_scores_zero(data):
    exact = Lookup()
    for views in data.sequences.values():
        for s in views:
            exact.add(s.keypoints, s.target)
            # mirrored input -> mirrored truth: an ideal, mirror-consistent model
            exact.add(original_flip(s.keypoints, data.kps_left, data.kps_right),
                      original_flip(s.target, data.joints_left, data.joints_right))
    for predict in (exact, flip_tta(exact, data.kps_left, data.kps_right, data.joints_left, data.joints_right)):
        (group,) = evaluate(data, predict)
        assert [a.action for a in group.actions] == ["Walking", "Sitting", "Directions"]
        for a in group.actions:
            for m in ("mpjpe", "p_mpjpe", "n_mpjpe", "mpjve"):
                assert getattr(a, m) == pytest.approx(0, abs=1e-6), (a.action, m)


def test_frame_weighted_per_action_then_mean_over_actions(data):
    rng = np.random.default_rng(7)
    noisy, truth = Lookup(), {}
    for views in data.sequences.values():
        for s in views:
            y = s.target + rng.normal(0, 0.02, s.target.shape).astype(np.float32)
            noisy.add(s.keypoints, y)
            truth[id(s)] = (y.astype(np.float64), s.target.astype(np.float64))
    results = evaluate(data, noisy, by_subject=False)
    (group,) = results
    walking = group.actions[0]
    seqs = [s for k in [("S9", "Walking 1"), ("S9", "Walking"), ("S11", "Walking 1"), ("S11", "Walking")]
            for s in data.sequences[k]]
    assert walking.sequences == 16 and walking.frames == sum(len(s.target) for s in seqs)
    for name, ref in (("mpjpe", ref_mpjpe), ("p_mpjpe", ref_p_mpjpe), ("n_mpjpe", ref_n_mpjpe), ("mpjve", ref_mpjve)):
        weighted = sum(len(s.target) * ref(*truth[id(s)]) for s in seqs) / walking.frames * 1000
        assert getattr(walking, name) == pytest.approx(weighted, rel=1e-9), name
        assert group.average[name] == pytest.approx(np.mean([getattr(a, name) for a in group.actions]), rel=1e-12)
    # per subject: one group per subject, in the requested order
    per = evaluate(data, noisy, by_subject=True, action_filter=["Sit", "Dir"])
    assert [g.subject for g in per] == ["S9", "S11"]
    assert [a.action for a in per[0].actions] == ["Sitting", "Directions"]


def test_bad_predictions_are_errors(data):
    nan = lambda x: np.full((len(x), 17, 3), np.nan, np.float32)  # noqa: E731
    with pytest.raises(GastrtError, match="non-finite"):
        evaluate(data, nan)
    with pytest.raises(GastrtError, match=r"shape \(.*, 16, 3\), expected"):
        evaluate(data, lambda x: np.zeros((len(x), 16, 3), np.float32))
    # every predicted pose a single point: Procrustes is undefined, reported, never 0
    with pytest.raises(GastrtError, match="P-MPJPE is undefined"):
        evaluate(data, lambda x: np.zeros((len(x), 17, 3), np.float32))


def test_single_frame_sequences(data):
    from gastrt.evaluation.run import evaluate_action

    s = data.sequences[("S9", "Walking")][0]
    short = type(s)(s.subject, s.action, 0, s.keypoints[:1], s.positions[:1])
    rng = np.random.default_rng(0)
    noisy = lambda x: rng.normal(0, 0.3, (len(x), 17, 3)).astype(np.float32)  # noqa: E731
    with pytest.raises(GastrtError, match="MPJVE is undefined"):
        evaluate_action("Walking", [short], noisy)
    # a 1-frame chunk among longer ones is left out of MPJVE only
    r = evaluate_action("Walking", [short, s], noisy)
    assert r.frames == 1 + len(s.positions) and np.isfinite(r.mpjve)


def test_engine_flip_and_padding_are_the_originals(data, eval_engines):
    engine = gastrt.load(eval_engines["h36m"], backend="numpy")
    s = data.sequences[("S11", "Directions")][1]
    x = s.keypoints
    pad = engine.pad
    # UnchunkedGenerator: edge-pad the whole sequence, mirror a second copy, one batch of 2
    padded = np.pad(x, ((pad, pad), (0, 0), (0, 0)), "edge")
    batch = np.stack([padded, original_flip(padded, data.kps_left, data.kps_right)])
    windows = np.lib.stride_tricks.sliding_window_view(batch, engine.receptive_field, axis=1)
    windows = np.ascontiguousarray(windows.transpose(0, 1, 4, 2, 3)).reshape(-1, engine.receptive_field, 17, 2)
    pred = engine.lift(windows).reshape(2, len(x), 17, 3)           # the model, frame by frame
    # evaluate(): un-mirror the second, average
    pred[1] = original_flip(pred[1], data.joints_left, data.joints_right)
    want = pred.mean(axis=0)
    assert np.allclose(engine.lift_sequence(x), pred[0], atol=1e-5)      # full sequence, edge-padded
    predict, how = engine_predictor(engine, data, flip=True)
    assert how == "engine"
    assert np.allclose(predict(x), want, atol=1e-5)
    generic = flip_tta(engine.lift_sequence, data.kps_left, data.kps_right, data.joints_left, data.joints_right)
    assert np.allclose(generic(x), want, atol=1e-5)
    # a 2D file whose symmetry differs from the engine's: the file's is used, as the originals do
    other = type(data)(**{**data.__dict__, "kps_left": [1, 2, 3], "kps_right": [4, 5, 6]})
    predict, how = engine_predictor(engine, other, flip=True)
    assert how == "data"
    ref = flip_tta(engine.lift_sequence, [1, 2, 3], [4, 5, 6], data.joints_left, data.joints_right)
    assert np.allclose(predict(x), ref(x), atol=1e-5)
    # no symmetry in the 2D file: flip cannot be done faithfully
    none = type(data)(**{**data.__dict__, "kps_left": None, "kps_right": None})
    with pytest.raises(GastrtError, match=r"metadata\['keypoints_symmetry'\] is needed"):
        engine_predictor(engine, none, flip=True, path_2d="d2.npz")
    assert engine_predictor(engine, none, flip=False)[1] is None
