"""Shared fixtures: checkpoints in the original training-script layout with random weights and
random BatchNorm statistics, built into engines once per session."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "python") not in sys.path and not os.environ.get("GASTRT_TEST_INSTALLED"):
    sys.path.insert(0, os.path.join(ROOT, "python"))

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# fp32 tolerance: max |engine - eager| / max |eager|
TOL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "non-finite values in the result"
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="session")
def ckpt_cache(tmp_path_factory):
    """(family, config-json, seed) -> checkpoint path written with torch.save (zip format)."""
    torch = pytest.importorskip("torch")
    from gastrt.reference import factory
    import json

    d = tmp_path_factory.mktemp("ckpt")
    cache = {}

    def get(family, config, seed=0, legacy=False):
        key = (family, json.dumps(config, sort_keys=True), seed, legacy)
        if key not in cache:
            path = str(d / f"c{len(cache)}.bin")
            ck = factory.make_checkpoint(family, config, seed=seed)
            torch.save(ck, path, _use_new_zipfile_serialization=not legacy)
            cache[key] = path
        return cache[key]

    return get
