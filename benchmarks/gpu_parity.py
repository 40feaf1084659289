"""Parity of the CUDA engine, as one table (benchmarks/gpu_check.sh, command 1): every family at
its shipped size (GAST-27, VideoPose3D-243, RIE-243), fp32 / fp16 / bf16, in window, window+flip,
sequence and stream mode, against the NumPy executor of the fp32 engine (the oracle; it is itself
within 1e-5 of the eager PyTorch models, tests/test_parity.py), and once per precision with each
GEMM tactic mode (custom, cublaslt). Max error relative to the oracle's largest magnitude.

Goals (the issue's): fp32 <= 1e-5, fp16 <= 3e-3, bf16 <= 1e-2. Exit status 1 when one is missed
or a case fails. ``--dry-run``: no GPU, only the plumbing (the oracle side runs; torch needed).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import gastrt
except ImportError:  # a source checkout
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    import gastrt

GOAL = {"fp32": 1e-5, "fp16": 3e-3, "bf16": 1e-2}
PRESETS = ("gast-27", "videopose3d-243", "rie-243")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")  # NaN never passes
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def stream_poses(eng, seq, flip):
    st = eng.stream(slots=1, flip=flip)
    out = [st.push(f) for f in seq] + [st.flush()]
    frames = np.concatenate([o.frames for o in out])
    poses = np.concatenate([o.poses for o in out])
    return poses[np.argsort(frames, kind="stable")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--cache", default=None)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    from gpu_headline import Models  # the same checkpoints / engine files (and cache) as the headline

    gpu = gastrt.cuda_available() and not args.dry_run
    tmp = args.cache or tempfile.mkdtemp(prefix="gastrt-parity-")
    os.makedirs(tmp, exist_ok=True)
    models = Models(tmp)
    rng = np.random.default_rng(0)
    cols = ("window", "flip", "sequence", "stream", "stream+flip", "tactic=custom", "tactic=cublaslt")
    print(f"{'model':<17} {'prec':<5} " + " ".join(f"{c:>15}" for c in cols) + "   goal", flush=True)
    missed = 0
    for preset in args.presets.split(","):
        oracle = gastrt.load(models.engine_file(preset, "fp32"), backend="numpy")
        rf, j = oracle.receptive_field, oracle.num_joints
        win = (rng.standard_normal((5, rf, j, 2)) * 0.3).astype(np.float32)
        seq = (rng.standard_normal((rf + 40, j, 2)) * 0.3).astype(np.float32)
        ref = {"window": oracle.lift(win), "flip": oracle.lift(win, flip=True)}
        has_seq = "sequence" in oracle.plans["pos"].modes
        if has_seq:
            ref["sequence"] = oracle.lift_sequence(seq)
            ref["stream+flip"] = oracle.lift_sequence(seq, flip=True)
        for precision in ("fp32", "fp16", "bf16"):
            t0 = time.perf_counter()
            cells = []
            worst = 0.0
            try:
                path = models.engine_file(preset, precision)
                if not gpu:
                    cells = ["skipped"] * len(cols)
                else:
                    eng = gastrt.load(path, device="cuda")
                    got = {"window": eng.lift(win), "flip": eng.lift(win, flip=True)}
                    if has_seq:
                        got["sequence"] = eng.lift_sequence(seq)
                        got["stream"] = stream_poses(eng, seq, False)
                        got["stream+flip"] = stream_poses(eng, seq, True)
                    refs = dict(ref, stream=ref.get("sequence"))
                    for mode in ("custom", "cublaslt"):
                        from gastrt.backends.cuda import CudaBackend
                        be = CudaBackend(eng.plans, eng.weights, 0, precision, gemm_tactic=mode)
                        got[f"tactic={mode}"] = be.run("pos", win, "window")[:, 0]
                        refs[f"tactic={mode}"] = ref["window"]
                        be.close()
                    for c in cols:
                        if c not in got:
                            cells.append("-")
                            continue
                        e = rel(got[c], refs[c])
                        worst = max(worst, e)
                        cells.append(f"{e:.1e}")
            except Exception as e:  # noqa: BLE001 - the table goes on
                missed += 1
                cells = cells + ["FAILED"] * (len(cols) - len(cells))
                print(f"{preset} {precision}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc(limit=3)
            ok = gpu and worst <= GOAL[precision] and "FAILED" not in cells
            if gpu and not ok:
                missed += 1
            status = ("MET" if ok else "MISSED") if gpu else "-"
            print(f"{preset:<17} {precision:<5} " + " ".join(f"{c:>15}" for c in cells)
                  + f"   <= {GOAL[precision]:g} {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
    if not gpu:
        print("gpu_parity: no CUDA GPU: the CUDA cells were skipped (dry run)")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
