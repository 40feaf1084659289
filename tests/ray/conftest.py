"""The Ray layer's fixtures: one local Ray (2 CPUs) for the whole tests/ray folder, a small
GAST-Net engine, and the baseball keypoint files from ../shared/data."""
from __future__ import annotations

import os

import pytest

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
BASEBALL17 = os.path.join(SHARED, "gast_baseball_coco17.json")
BASEBALL133 = os.path.join(SHARED, "gast_baseball_wholebody133.json")
# GAST-Net, 17 joints, receptive field 9, 16 channels: built in about a second, lifts fast
SMALL_GAST = ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16})


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray with 2 CPUs, shared by the tests/ray modules and shut down at the end. Its
    workers import this checkout's gastrt (not an older installed copy)."""
    # ray.data, not ray: with tests/ on sys.path, this folder would pass for a "ray" namespace package
    pytest.importorskip("ray.data")
    pytest.importorskip("pandas")
    import ray
    import gastrt

    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(gastrt.__file__)))
    pythonpath = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p)
    if ray.is_initialized():
        ray.shutdown()
    # the dashboard process serves Ray's state API (ray.util.state), which the kill test uses
    ray.init(num_cpus=2, include_dashboard=True, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
             log_to_driver=False)
    try:
        from ray.data import DataContext
        DataContext.get_current().enable_progress_bars = False
    except Exception:  # noqa: BLE001
        pass
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_engine(ckpt_cache, tmp_path_factory):
    import gastrt

    path = str(tmp_path_factory.mktemp("ray_engine") / "small.gastrt")
    gastrt.build(ckpt_cache(*SMALL_GAST, seed=11), path)
    return path


@pytest.fixture(scope="session")
def baseball():
    if not (os.path.isfile(BASEBALL17) and os.path.isfile(BASEBALL133)):
        pytest.skip(f"the baseball keypoint files are not in {SHARED}")
    return BASEBALL17, BASEBALL133
