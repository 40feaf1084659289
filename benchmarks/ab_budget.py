"""Speed of ``lift_sequence`` at the default workspace budget against one unbounded chunk (#15:
"speed at the default budget stays within noise of today's").

    python benchmarks/ab_budget.py [--preset gast-27] [--frames 4000] [--rounds 5] [--threads 2]

Two engines from the same file, one with ``workspace_budget`` at its default (chunks of a few
thousand frames), one with the budget lifted (the whole sequence in one backend call), timed
interleaved round by round (gastrt.bench.measure.interleaved), flip on. Prints one JSON line:
medians, spreads, the ratio, and the chunk each side used. Needs torch once to build the preset.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import gastrt  # noqa: E402
from gastrt.bench.measure import interleaved  # noqa: E402
from rss_lift_sequence import build  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="gast-27")
    ap.add_argument("--frames", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gastrt")
        build(args.preset, path)
        budgeted = gastrt.load(path, threads=args.threads)
        whole = gastrt.load(path, threads=args.threads)
        whole.workspace_budget = 1 << 50
        whole.max_sequence_frames = 1 << 30
        seq = (np.random.default_rng(0).standard_normal((args.frames, budgeted.num_joints, 2)) * 0.3).astype(np.float32)
        same = np.array_equal(budgeted.lift_sequence(seq, flip=True), whole.lift_sequence(seq, flip=True))
        t = interleaved({"budget": lambda: budgeted.lift_sequence(seq, flip=True),
                         "whole": lambda: whole.lift_sequence(seq, flip=True)},
                        min_rounds=args.rounds, max_rounds=args.rounds, warmup=1, block_s=None)
        print(json.dumps({
            "preset": args.preset, "frames": args.frames, "threads": args.threads, "flip": True,
            "chunk_budget": budgeted.sequence_chunk("pos", 1, True),
            "chunk_whole": whole.sequence_chunk("pos", 1, True),
            "same_bits": bool(same),
            "budget_s": t["budget"].median, "budget_spread": t["budget"].spread,
            "whole_s": t["whole"].median, "whole_spread": t["whole"].spread,
            "ratio_budget_over_whole": t["budget"].median / t["whole"].median,
            "round_ratios": [b / w for b, w in zip(t["budget"].times, t["whole"].times)],
        }))


if __name__ == "__main__":
    main()
