"""Shared fixtures: checkpoints in the original training-script layout with random weights and
random BatchNorm statistics, built into engines once per session."""
from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:  # test the installed package (with its compiled runtime) when there is one
    import gastrt  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import gastrt  # noqa: F401


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
