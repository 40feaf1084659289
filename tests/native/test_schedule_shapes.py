"""One geometry: the C++ schedule's shape of every plan value (Engine.schedule_shapes, built by
csrc/cpu/executor.cpp) equals plan.infer_shapes, for every bench preset (causal too) and the
test configurations, in window and sequence mode, odd batch sizes and frame counts; where one
side refuses an input shape, the other refuses it too."""
from __future__ import annotations

import functools

import pytest

_native = pytest.importorskip("gastrt._native")
pytest.importorskip("torch")  # the reference factory makes the weights

from gastrt.bench import BASE_PRESETS  # noqa: E402
from gastrt.errors import NativeError  # noqa: E402
from gastrt.families import detect_and_lower  # noqa: E402
from gastrt.plan import infer_shapes  # noqa: E402
from gastrt.reference import factory  # noqa: E402

# The configurations the other tests build (15 / 17 / 19 joints, trajectory model, RIE stages).
TEST_CONFIGS = {
    "gast-15": ("gast", {"num_joints": 15, "filter_widths": [3, 3], "channels": 16}),
    "gast-17": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 16}),
    "gast-19": ("gast", {"num_joints": 19, "filter_widths": [3, 3], "channels": 8}),
    "videopose3d-traj": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                         "filter_widths": [3, 3], "channels": 32, "trajectory": True}),
    "videopose3d-15out": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                                          "filter_widths": [3, 3, 3], "channels": 16, "trajectory": False}),
    "rie-stage3": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 8, "stage": 3}),
    "rie-stage1": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 16, "latent": 8, "stage": 1}),
}
CASES = {**{b: factory.PRESETS[b] for b in BASE_PRESETS}, **TEST_CONFIGS}


@functools.lru_cache(maxsize=None)
def state_dicts(name: str):
    family, config = CASES[name]
    as_np = lambda sd: {k: v.numpy() for k, v in sd.items()}  # noqa: E731
    pos = as_np(factory.random_state_dict(family, config, seed=1))
    traj = as_np(factory.random_state_dict(family, config, seed=1, trajectory=True)) \
        if config.get("trajectory") else None
    return pos, traj


def frame_counts(rf: int, mode: str) -> list[int]:
    """A too-short input, the receptive field, and (sequence) odd lengths beyond it."""
    ts = [rf - 1] if rf > 1 else []
    if mode == "window":
        return ts + [rf, rf + 2]
    return ts + [rf, rf + 1, rf + 6, 2 * rf + 3]


def check_shapes(eng, plan, weights, n: int, t: int, mode: str) -> bool:
    """Compares one input shape; True when it is a valid one."""
    wshape = lambda name: weights[name].shape  # noqa: E731
    try:
        want = infer_shapes(plan, (n, t, plan.in_joints, plan.in_features), wshape, mode)
    except ValueError as e:
        with pytest.raises(NativeError):
            eng.schedule_shapes(n, t, mode)
        assert str(e)
        return False
    got = eng.schedule_shapes(n, t, mode)
    assert got == {k: tuple(v) for k, v in want.items()}, (plan.name, n, t, mode)
    assert tuple(eng.output_shape(n, t, mode)) == want[plan.ops[-1].outputs[0]]
    return True


@pytest.mark.parametrize("causal", [False, True], ids=["", "causal"])
@pytest.mark.parametrize("name", list(CASES))
def test_schedule_shapes_match_infer_shapes(name, causal):
    pos, traj = state_dicts(name)
    lowered = detect_and_lower(pos, traj, causal)
    assert set(lowered.plans) == ({"pos", "traj"} if traj is not None else {"pos"})
    for plan in lowered.plans.values():
        eng = _native.Engine(plan.to_json(), lowered.weights, 1)
        valid = 0
        for mode in ("window", "sequence"):
            if mode not in plan.modes:
                with pytest.raises(NativeError, match=f"has no {mode} mode"):
                    eng.schedule_shapes(1, plan.receptive_field, mode)
                continue
            for n in (1, 3, 8):
                for t in frame_counts(plan.receptive_field, mode):
                    valid += check_shapes(eng, plan, lowered.weights, n, t, mode)
        assert valid >= 3 * len(plan.modes), "too few valid shapes compared"
