"""Peak RSS of ``Engine.lift_sequence`` on a long video (#15's memory budget).

    python benchmarks/rss_lift_sequence.py --frames 1000,100000 [--preset gast-27] [--threads 2]

Builds the preset's engine once (random weights; torch is needed for that step only, in a child
process), then runs each length in a fresh process that never imports torch and reports the
process's peak RSS (VmHWM), the chunk the engine picked (output frames per backend call, from
the workspace budget), and the time.
Prints one JSON line per length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "python")


def build(preset: str, path: str) -> None:
    import torch

    import gastrt
    from gastrt.reference.factory import PRESETS, make_checkpoint

    family, config = PRESETS[preset]
    ck = path + ".bin"
    torch.save(make_checkpoint(family, config, seed=0, optimizer_step=False), ck)
    gastrt.build(ck, path)
    os.remove(ck)


def measure(path: str, frames: int, threads: int, flip: bool) -> dict:
    import numpy as np

    import gastrt
    from gastrt.bench.measure import proc_status_bytes as _vm

    eng = gastrt.load(path, threads=threads)
    rng = np.random.default_rng(0)
    seq = (rng.standard_normal((frames, eng.num_joints, 2)) * 0.3).astype(np.float32)
    base = _vm("VmRSS")
    t0 = time.perf_counter()
    y = eng.lift_sequence(seq, flip=flip)
    dt = time.perf_counter() - t0
    assert y.shape == (frames, eng.num_joints_out, 3) and np.isfinite(y).all()
    chunk = eng.sequence_chunk("pos", 1, flip)
    return {"frames": frames, "flip": flip, "threads": threads, "chunk": chunk,
            "rss_before_mib": round(base / 2**20, 1), "peak_rss_mib": round(_vm("VmHWM") / 2**20, 1),
            "input_output_mib": round((seq.nbytes + y.nbytes) / 2**20, 1),
            "seconds": round(dt, 2), "frames_per_s": round(frames / dt, 1),
            "backend": eng.backend.name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="1000,100000")
    ap.add_argument("--preset", default="gast-27")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--engine", help="(internal) engine path for one measurement")
    args = ap.parse_args()
    if args.engine:
        print(json.dumps(measure(args.engine, int(args.frames), args.threads, not args.no_flip)), flush=True)
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f"{args.preset}.gastrt")
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r}); "
                        f"import rss_lift_sequence as r; r.build({args.preset!r}, {path!r})"],
                       check=True, env=env)
        for n in args.frames.split(","):
            cmd = [sys.executable, __file__, "--engine", path, "--frames", n, "--threads", str(args.threads)]
            if args.no_flip:
                cmd.append("--no-flip")
            subprocess.run(cmd, check=True, env=env)


if __name__ == "__main__":
    main()
