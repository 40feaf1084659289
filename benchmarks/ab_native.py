"""A/B of gastrt builds (or settings), interleaved round by round in one run.

    python benchmarks/ab_native.py OLD_PATH NEW_PATH [--rounds R] [--presets gast-27,...]
                                   [--precision fp32|fp16|bf16] [--env NAME:VAR=VALUE[,VAR=VALUE]] ...

OLD_PATH / NEW_PATH: folders holding an importable ``gastrt`` package with its built extension
(a checkout's ``python/`` after an in-place build, or a copy of an older one). Each ``--env``
adds one more contender: NEW_PATH run with those environment variables (e.g.
``--env nopack:GASTRT_SMALL_PANELS=0``; ``--precision bf16 --env p32:GASTRT_PANELS_16BIT=0`` times a
bf16 engine's 16-bit conv panels against fp32 ones). Every contender is one child process that loads the
same bench preset engines (default threads: all cores) and times one case per request; the
parent runs the cases round by round, each round every contender once (the order reversed every
other round), so a noisy machine slows all of them alike. Per case: the median frames/s of OLD
and, for each other contender, the median and min-max of the per-round speed ratios
(contender / OLD, higher = faster).

Cases: window batch 1 and 64, and a 1000-frame sequence for the models that have one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r'''
import json, sys, time
import numpy as np
import gastrt
engines = {}
rng = np.random.default_rng(0)
for line in sys.stdin:
    path, mode, b, iters = json.loads(line)
    e = engines.get(path) or engines.setdefault(path, gastrt.load(path))
    j, rf = e.num_joints, e.receptive_field
    if mode == "window":
        x = (rng.standard_normal((b, rf, j, 2)) * 0.3).astype(np.float32)
        f = lambda: e.lift(x)
    else:
        x = (rng.standard_normal((b, j, 2)) * 0.3).astype(np.float32)
        f = lambda: e.lift_sequence(x)
    f()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    print(json.dumps(sorted(ts)[len(ts) // 2]), flush=True)
'''

CASES = {  # preset -> [(mode, batch or frames, calls per turn)]
    "gast-27": [("window", 1, 60), ("window", 64, 8)],
    "gast-243": [("window", 1, 15), ("sequence", 1000, 3)],
    "videopose3d-243": [("window", 1, 30), ("window", 64, 4), ("sequence", 1000, 4)],
    "rie-243": [("window", 1, 20), ("window", 64, 3)],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--presets", default=",".join(CASES))
    ap.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                    help="the preset engines' precision (default fp32)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.new))
    from gastrt.bench.presets import preset_engine

    contenders = {"old": (args.old, {}), "new": (args.new, {})}
    for spec in args.env:
        name, _, assigns = spec.partition(":")
        contenders[name] = (args.new, dict(a.split("=", 1) for a in assigns.split(",") if a))
    cases = [(p, *c) for p in args.presets.split(",") for c in CASES[p]]
    paths = {p: preset_engine(p, args.precision) for p in dict.fromkeys(c[0] for c in cases)}
    procs = {k: subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONPATH": os.path.abspath(root), **env})
             for k, (root, env) in contenders.items()}
    res = {(c, k): [] for c in cases for k in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for c in cases:
            for k in order:
                procs[k].stdin.write(json.dumps([paths[c[0]], c[1], c[2], c[3]]) + "\n")
                procs[k].stdin.flush()
                res[(c, k)].append(json.loads(procs[k].stdout.readline()))
    for p in procs.values():
        p.stdin.close()
        p.wait()
    print(f"{args.rounds} interleaved rounds; speed ratio = contender / old per round: median [min-max]")
    for c in cases:
        old = res[(c, "old")]
        line = f"{c[0]:16s} {c[1]:8s} {c[2]:5d}  old {c[2] / statistics.median(old):8.1f} frames/s"
        for k in contenders:
            if k == "old":
                continue
            ratios = [a / b for a, b in zip(old, res[(c, k)])]
            line += f" | {k} {statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
