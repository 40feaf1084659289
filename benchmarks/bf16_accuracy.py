"""How far each bf16 engine is from fp32 on the bench presets: gastrt's bf16 engine and
OpenVINO's bf16 inference on the same exported graph (the bf16 contender of ``gastrt bench``),
each against gastrt's fp32 engine of the same preset (itself within ~1e-6 of the eager model).

    python benchmarks/bf16_accuracy.py [--presets gast-27,...] [--batch 64] [--seed 1]

Error = max |y - y_fp32| / max |y_fp32| over one batch of random windows, and over one random
sequence (the tolerance's form, engine_file.PRECISION_TOLERANCE: 1e-2 for bf16; a bf16 engine's
sequence-mode width-3 convs run Winograd F(2,3), so its sequence error is measured on its own).
Whether a preset can meet the bf16 tolerance at all is a property of its weights: where
OpenVINO's bf16 misses it by as much as ours, no bf16 engine of that model would meet it, and
``--precision auto`` keeps fp32 there. Needs torch (the presets' weights) and, for the OpenVINO
column, openvino.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

try:
    import gastrt  # noqa: F401
except ImportError:  # a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import gastrt  # noqa: E402
from gastrt.bench.contenders import rel_err  # noqa: E402
from gastrt.bench.onnx_peers import peer_engine, peer_unavailable  # noqa: E402
from gastrt.bench.presets import preset_engine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="gast-27,gast-243,videopose3d-243,rie-243")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frames", type=int, default=1000, help="frames of the random sequence")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ov_missing = peer_unavailable("openvino")
    print(f"bf16 engines against fp32, max error / max output, {args.batch} random windows (seed {args.seed}); "
          f"gastrt computes in: {gastrt.build_config().get('bf16_dot')}")
    print("| model | gastrt bf16 windows | OpenVINO bf16 (gx) windows | gastrt bf16 sequence "
          f"({args.frames} frames) | OpenVINO bf16 (gx) sequence |")
    print("|---|---:|---:|---:|---:|")
    for name in args.presets.split(","):
        f32 = gastrt.load(preset_engine(name, "fp32"), threads=args.threads)
        b16 = gastrt.load(preset_engine(name, "bf16"), threads=args.threads)
        x = np.random.default_rng(args.seed).standard_normal(
            (args.batch, f32.receptive_field, f32.num_joints, 2)).astype(np.float32)
        plan = next(iter(f32.plans))
        ref = f32.run_plan(plan, x, "window")
        ours = rel_err(b16.run_plan(plan, x, "window"), ref)
        seq = (np.random.default_rng(args.seed + 1).standard_normal((args.frames, f32.num_joints, 2)) * 0.5
               ).astype(np.float32)
        ref_s = f32.lift_sequence(seq)
        ours_s = rel_err(b16.lift_sequence(seq), ref_s)
        if ov_missing:
            ov = ov_s = ov_missing
        else:
            peer = peer_engine('openvino', b16, args.threads, 'bf16')
            ov = f"{rel_err(peer.run_plan(plan, x, 'window'), ref):.2e}"
            ov_s = f"{rel_err(peer.lift_sequence(seq), ref_s):.2e}"
        print(f"| {name} | {ours:.2e} | {ov} | {ours_s:.2e} | {ov_s} |")


if __name__ == "__main__":
    main()
