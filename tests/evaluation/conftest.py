"""Small random-weight engines for the evaluation tests (built once per session)."""
from __future__ import annotations

import pytest

VP17 = ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                        "filter_widths": [3, 3], "channels": 16, "trajectory": False})
VP15 = ("videopose3d", {"num_joints_in": 15, "in_features": 2, "num_joints_out": 15,
                        "filter_widths": [3, 3], "channels": 16, "trajectory": False})


@pytest.fixture(scope="session")
def eval_engines(tmp_path_factory):
    """{'h36m': path of a 17 -> 17 engine, 'humaneva': 15 -> 15} (VideoPose3D, receptive field 9)."""
    pytest.importorskip("torch")
    from gastrt_testutil import small_engine

    d = tmp_path_factory.mktemp("eval-engines")
    return {"h36m": small_engine(d, "eval-vp17", *VP17)[1], "humaneva": small_engine(d, "eval-vp15", *VP15)[1]}
