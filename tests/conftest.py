"""Shared fixtures: checkpoints in the original training-script layout with random weights and
random BatchNorm statistics, built into engines once per session."""
from __future__ import annotations

import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bf16 engines run on the bf16 dot-product kernel where the CPU has AVX512-BF16 (the default,
# GASTRT_BF16_DOT=auto). The suite pins fp32 arithmetic for them, so that its bf16 expectations
# hold on every CPU; tests/native/test_bf16_dot.py runs the dot-product kernels (emulated on any
# CPU, AVX512-BF16 where there is one) in-process by name and in child processes by mode.
os.environ.setdefault("GASTRT_BF16_DOT", "off")
try:  # test the installed package (with its compiled runtime) when there is one
    import gastrt  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import gastrt  # noqa: F401


@pytest.fixture(scope="session")
def ckpt_cache(tmp_path_factory):
    """(family, config-json, seed) -> checkpoint path written with torch.save (zip format,
    or the legacy format with legacy=True)."""
    pytest.importorskip("torch")
    import json

    from gastrt_testutil import save_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    cache = {}

    def get(family, config, seed=0, legacy=False):
        key = (family, json.dumps(config, sort_keys=True), seed, legacy)
        if key not in cache:
            path = str(d / f"c{len(cache)}.bin")
            cache[key] = save_checkpoint(path, family, config, seed=seed, legacy=legacy)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory, request):
    """A temp folder for one test module's shared files (engines, exported models), removed when
    the module ends: a full run's engines would otherwise pile up to several GB."""
    d = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield d
    shutil.rmtree(d, ignore_errors=True)
