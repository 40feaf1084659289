"""The native backend through the public API: gastrt.load(..., backend="native") against
backend="numpy" on engines built from original-layout checkpoints (random weights)."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("gastrt._native")

import gastrt  # noqa: E402
from gastrt.backends.native import NativeBackend, default_threads  # noqa: E402
from gastrt_testutil import run_in_threads  # noqa: E402

TOL = 1e-5

CONFIGS = {
    "gast": {"num_joints": 17, "filter_widths": [3, 3], "channels": 16},
    "videopose3d": {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                    "filter_widths": [3, 3], "channels": 32, "trajectory": True},
    "rie": {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 8, "stage": 3},
}


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    assert np.isfinite(got).all()
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="module")
def engines(ckpt_cache, module_dir):
    out = {}
    d = module_dir
    for fam, cfg in CONFIGS.items():
        path = gastrt.build(ckpt_cache(fam, cfg, seed=3), str(d / f"{fam}.gastrt"))
        out[fam] = (gastrt.load(path, backend="native", threads=2), gastrt.load(path, backend="numpy"))
    return out


@pytest.mark.parametrize("fam", list(CONFIGS))
def test_native_backend_matches_numpy(engines, fam):
    nat, ref = engines[fam]
    assert nat.backend.name == "native" and ref.backend.name == "numpy"
    rng = np.random.default_rng(7)
    rf = nat.receptive_field
    for b in (1, 5):
        w = rng.standard_normal((b, rf, 17, 2)).astype(np.float32) * 0.5
        assert rel_err(nat.lift(w), ref.lift(w)) <= TOL
        assert rel_err(nat.lift(w, flip=True), ref.lift(w, flip=True)) <= TOL
    seq = rng.standard_normal((40, 17, 2)).astype(np.float32) * 0.5
    assert rel_err(nat.lift_sequence(seq), ref.lift_sequence(seq)) <= TOL
    if nat.has_trajectory:
        w = rng.standard_normal((3, rf, 17, 2)).astype(np.float32)
        assert rel_err(nat.lift_trajectory(w), ref.lift_trajectory(w)) <= TOL
        assert rel_err(nat.trajectory_sequence(seq), ref.trajectory_sequence(seq)) <= TOL


def test_native_is_the_default_cpu_backend(engines, ckpt_cache, tmp_path):
    path = gastrt.build(ckpt_cache("gast", CONFIGS["gast"], seed=3), str(tmp_path / "g.gastrt"))
    eng = gastrt.load(path)
    assert eng.backend.name == "native"
    assert eng.backend.threads == default_threads()
    assert gastrt.load(path, threads=1).backend.threads == 1


def test_native_backend_concurrent_lift(engines):
    nat, ref = engines["gast"]
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((b, nat.receptive_field, 17, 2)).astype(np.float32) for b in (1, 4, 9, 2)]
    want = [ref.lift(x) for x in xs]
    errs = []

    def go(i):
        for _ in range(10):
            e = rel_err(nat.lift(xs[i]), want[i])
            if e > TOL:
                errs.append(e)

    raised = run_in_threads(go, len(xs))
    assert not raised, raised
    assert not errs


def test_workspace_bytes_through_backend(engines):
    nat, _ = engines["videopose3d"]
    be = nat.backend
    assert isinstance(be, NativeBackend)
    rf = nat.receptive_field
    assert 0 < be.workspace_bytes("pos", 1, rf, "window") < be.workspace_bytes("pos", 32, rf, "window")
    assert be.output_shape("pos", 3, rf + 10, "sequence") == (3, 11, 17, 3)
    be.clear_cache()
