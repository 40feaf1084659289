"""Huge pages for the native runtime's big buffers (csrc/common/big_alloc.h): packed weights and
workspaces of >= 2 MB are placed on 2 MB-aligned blocks with madvise(MADV_HUGEPAGE) unless
GASTRT_HUGE_PAGES=0. Placement must never change a result: both settings give the same bits."""
import json
import subprocess
import sys

import numpy as np
import pytest

from gastrt_testutil import save_checkpoint, subprocess_env

pytest.importorskip("gastrt._native")

CHILD = r'''
import json, sys
import numpy as np
import gastrt
spec = json.loads(sys.argv[1])
out = {}
for key, path in spec["engines"].items():
    e = gastrt.load(path, backend="native")
    out[key + "/window"] = e.lift(np.load(spec["windows"]))
    out[key + "/sequence"] = e.lift_sequence(np.load(spec["sequence"]))
    # bytes of packed weights: the >= 2 MB blocks that take the huge-page path
    out[key + "/packed"] = np.array(sum(e.backend._engines["pos"].panel_bytes.values()))
np.savez(spec["out"], **out)
print("ok")
'''


# 1024 channels: the width-3 conv packs 3 * 1024 * 1024 weights, 12 MB as fp32 panels and 6 MB as
# 16-bit panels or bf16 pairs, and its 1x1 conv 4 MB / 2 MB; a 300-frame sequence's workspace is
# several MB: all take the huge-page path.
CONFIG = {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3],
          "channels": 1024, "trajectory": False}


def test_huge_pages_never_change_a_result(tmp_path):
    import gastrt

    ck = save_checkpoint(tmp_path / "ck.bin", "videopose3d", CONFIG, seed=3)
    engines = {p: gastrt.build(ck, str(tmp_path / f"{p}.gastrt"), precision=p) for p in ("fp32", "bf16")}
    seed = int(np.random.default_rng().integers(1 << 30))
    rng = np.random.default_rng(seed)
    np.save(tmp_path / "x.npy", (rng.standard_normal((37, 9, 17, 2)) * 0.5).astype(np.float32))
    np.save(tmp_path / "s.npy", (rng.standard_normal((300, 17, 2)) * 0.5).astype(np.float32))
    got = {}
    for setting in ("1", "0"):
        spec = {"engines": engines, "windows": str(tmp_path / "x.npy"), "sequence": str(tmp_path / "s.npy"),
                "out": str(tmp_path / f"y{setting}.npz")}
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)],
                           env={**subprocess_env(), "GASTRT_HUGE_PAGES": setting},
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        got[setting] = np.load(tmp_path / f"y{setting}.npz")
    for p in engines:
        assert int(got["1"][p + "/packed"]) >= 8 << 20, (p, int(got["1"][p + "/packed"]))
    assert sorted(got["1"].files) == sorted(got["0"].files)
    for key in got["1"].files:
        assert np.isfinite(got["1"][key]).all() and np.array_equal(got["1"][key], got["0"][key]), (key, seed)
