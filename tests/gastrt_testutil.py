"""Helpers shared by the test modules (imported by name; conftest.py only holds fixtures)."""
from __future__ import annotations

import os

import numpy as np

import gastrt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# fp32 tolerance: max |engine - eager| / max |eager|
TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "non-finite values in the result"
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def subprocess_env() -> dict:
    """Environment for a child interpreter that imports the same gastrt as the tests."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(gastrt.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    return env
