"""Tiny engines for the CUDA tests: random original-layout checkpoints -> .gastrt files.
Needs torch (the reference models); callers importorskip it."""
from __future__ import annotations

import os

import numpy as np

# Small configurations of each family (every op kind, the three GAST skeletons, RIE stages 1 and
# 3, the VideoPose3D trajectory plan); channels chosen so the GAST blocks take both the fused
# and the multi-kernel paths on a GPU.
TINY = {
    "gast17": ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16}),
    "gast15": ("gast", {"num_joints": 15, "filter_widths": [3, 3], "channels": 32}),
    "gast19": ("gast", {"num_joints": 19, "filter_widths": [3, 3, 3], "channels": 16}),
    "vp3d": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                             "filter_widths": [3, 3], "channels": 64, "trajectory": True}),
    "rie3": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 32, "latent": 32, "stage": 3}),
    "rie1": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 32, "latent": 32, "stage": 1}),
}


def engine_file(tmpdir, key_or_family, config=None, precision="fp32", causal=False, seed=0) -> str:
    import gastrt
    from gastrt_testutil import save_checkpoint

    if config is None:
        family, config = TINY[key_or_family]
        tag = key_or_family
    else:
        family, tag = key_or_family, key_or_family + str(abs(hash(repr(config))) % 10 ** 8)
    ck = os.path.join(str(tmpdir), f"{tag}_{seed}.bin")
    if not os.path.exists(ck):
        save_checkpoint(ck, family, config, seed=seed)
    out = os.path.join(str(tmpdir), f"{tag}_{seed}_{precision}_{int(causal)}.gastrt")
    if not os.path.exists(out):
        gastrt.build(ck, out, causal=causal, precision=precision)
    return out


def keypoints(rng, n, t, j, f=2) -> np.ndarray:
    return (rng.standard_normal((n, t, j, f)) * 0.5).astype(np.float32)


def rel_err(y, ref) -> float:
    """max |y - ref| / max |ref|: the relative error the tolerance tables refer to."""
    y = np.asarray(y, np.float64)
    ref = np.asarray(ref, np.float64)
    assert y.shape == ref.shape, (y.shape, ref.shape)
    if not np.all(np.isfinite(y)):
        return float("inf")
    return float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-12))
