"""Seeded fuzz suite (#15): mutated checkpoints, engine files and keypoint files through the CLI
and the API, in a child process with a memory limit (tests/fuzz_driver.py says what counts as
a finding). Fixed seeds, so a failure reproduces; about 2 minutes in all on the CI machine.

GASTRT_FUZZ_SEED=N and GASTRT_FUZZ_SCALE=K (K times the cases) run a different or longer
campaign by hand.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import numpy as np
import pytest

from gastrt_testutil import save_checkpoint

pytest.importorskip("torch")   # only to write the seed checkpoints

import gastrt  # noqa: E402

_BASE_POSE = np.array([[500, 200], [510, 190], [490, 190], [520, 195], [480, 195], [540, 260], [460, 260],
                       [555, 330], [445, 330], [560, 400], [440, 400], [525, 420], [475, 420], [530, 520],
                       [470, 520], [535, 620], [465, 620]], np.float32)


def coco_pose(t=0, person=0):
    """A COCO-17 pose in pixels of a 1280x720 frame, moving with t and person."""
    return _BASE_POSE + np.float32(3 * t) + np.array([200 * person, 7 * person], np.float32)

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = int(os.environ.get("GASTRT_FUZZ_SEED", "20261206"))
SCALE = float(os.environ.get("GASTRT_FUZZ_SCALE", "1"))
# cases per kind (sized so the three take ~2 minutes on the 2-core CI machine)
CASES = {"checkpoint": 250, "engine": 500, "keypoints": 400}
MEMORY_LIMIT = 6 << 30          # address space of the child: a blow-up fails the case, not the host
MAX_RSS_MB = 1500               # what the whole campaign may peak at

GAST = ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16})
VP = ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                      "filter_widths": [3, 3], "channels": 32, "trajectory": False})
RIE = ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 16, "stage": 3})


@pytest.fixture(scope="module")
def work(module_dir):
    d = str(module_dir)
    save_checkpoint(os.path.join(d, "gast_zip.bin"), *GAST, seed=1)
    save_checkpoint(os.path.join(d, "vp_legacy.bin"), *VP, seed=2, legacy=True)
    save_checkpoint(os.path.join(d, "rie_zip.bin"), *RIE, seed=3)
    eng_path = gastrt.build(os.path.join(d, "gast_zip.bin"), os.path.join(d, "base.gastrt"))
    os.link(eng_path, os.path.join(d, "small.gastrt"))
    eng = gastrt.load(eng_path, backend="numpy")
    x = np.random.default_rng(0).standard_normal((3, eng.receptive_field, 17, 2)).astype(np.float32) * 0.3
    np.save(os.path.join(d, "base_in.npy"), x)
    np.save(os.path.join(d, "base_out.npy"), eng.lift(x))

    frames = [{"frame_index": t + 1,
               "skeleton": [{"pose": coco_pose(t, p).tolist(), "score": [[0.9]] * 17, "bbox": [0, 0, 9, 9]}
                            for p in range(2)]} for t in range(24)]
    with open(os.path.join(d, "k.json"), "w") as f:
        json.dump({"label": "fuzz", "label_index": 0, "data": frames}, f)
    kp = np.stack([np.stack([coco_pose(t, p) for t in range(24)]) for p in range(2)])
    np.save(os.path.join(d, "k.npy"), kp)
    np.savez(os.path.join(d, "k.npz"), keypoints=kp, scores=np.full(kp.shape[:-1], 0.9, np.float32),
             size=np.array([1280, 720]), format=np.array("coco"))
    mm = {"meta_info": {"dataset_name": "coco", "num_keypoints": 17},
          "instance_info": [{"frame_id": t + 1, "instances": [
              {"keypoints": coco_pose(t).tolist(), "keypoint_scores": [0.9] * 17,
               "bbox": [[0, 0, 1, 1]], "bbox_score": 0.99}]} for t in range(24)]}
    with open(os.path.join(d, "mm.json"), "w") as f:
        json.dump(mm, f)
    return d


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize("kind", list(CASES))
def test_fuzz_campaign_finds_nothing(work, kind):
    cases = max(1, int(CASES[kind] * SCALE))
    seed = SEED + list(CASES).index(kind)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", GASTRT_THREADS="1",
               PYTHONPATH=os.pathsep.join([HERE] + [p for p in sys.path if p]))
    res = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_driver.py"), kind, str(seed), str(cases), work],
                         capture_output=True, text=True, env=env, preexec_fn=_limit_memory, timeout=900)
    assert res.returncode == 0, f"the fuzz child died (exit {res.returncode}): {res.stderr[-3000:]}"
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["cases"] == cases
    found = report["failures"]
    assert not found, (f"{len(found)} of {cases} {kind} cases (seed {seed}) found problems; first ones:\n"
                       + "\n".join(json.dumps(f) for f in found[:8]))
    assert report["max_rss_mb"] < MAX_RSS_MB, report["max_rss_mb"]
