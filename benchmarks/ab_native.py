"""A/B of the native GAST-27 engine: old module vs new module, interleaved rounds in one run.

    python benchmarks/ab_native.py OLD_ROOT NEW_ROOT [--rounds R] [--threads N]

Two child processes (one per source tree: ROOT/python on sys.path), each lowering the same
random GAST-27 checkpoint (seed 0) and building a NativeBackend with the same threads. The parent
alternates: for each round and case, a block of calls on A then on B (order swapped every other
round), and collects per-call times. Prints medians, IQR and the per-round ratio new/old.
"""
import json
import subprocess
import sys
import time

import numpy as np

CASES = {"gast27-w1": ("window", 1, 20), "gast27-w64": ("window", 64, 3), "gast27-seq": ("sequence", 1, 2)}
SEQ = 1000

CHILD = r'''
import sys, json, time
import numpy as np
sys.path.insert(0, sys.argv[1] + "/python")
import gastrt
from gastrt.backends.native import NativeBackend
from gastrt.families import detect_and_lower
from gastrt.reference.factory import PRESETS, random_state_dict
threads = int(sys.argv[2])
family, cfg = PRESETS["gast-27"]
sd = random_state_dict(family, cfg, seed=0)
low = detect_and_lower({k: v.numpy() for k, v in sd.items()}, None, False)
weights = {k: np.ascontiguousarray(v, np.float32) for k, v in low.weights.items()}
plan = low.plans["pos"]
be = NativeBackend({"pos": plan}, weights, threads)
rng = np.random.default_rng(1)
xs = {}
for name, (mode, batch) in json.loads(sys.argv[3]).items():
    t = plan.receptive_field if mode == "window" else %d + plan.receptive_field - 1
    xs[name] = ((rng.standard_normal((batch, t, plan.in_joints, 2)) * 0.5).astype(np.float32), mode)
print(json.dumps({"file": gastrt.__file__, "ok": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "out":
        x, mode = xs[cmd["case"]]
        np.save(cmd["path"], be.run("pos", x, mode))
        print(json.dumps({}), flush=True)
        continue
    x, mode = xs[cmd["case"]]
    ts = []
    for _ in range(cmd["n"]):
        t0 = time.perf_counter(); be.run("pos", x, mode); ts.append(time.perf_counter() - t0)
    print(json.dumps({"t": ts}), flush=True)
''' % SEQ


def main():
    old, new = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 15
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    cases = {k: (v[0], v[1]) for k, v in CASES.items()}
    procs = {}
    for tag, root in (("old", old), ("new", new)):
        p = subprocess.Popen([sys.executable, "-c", CHILD, root, str(threads), json.dumps(cases)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        print(tag, p.stdout.readline().strip(), flush=True)
        procs[tag] = p

    def ask(tag, cmd):
        procs[tag].stdin.write(json.dumps(cmd) + "\n")
        procs[tag].stdin.flush()
        return json.loads(procs[tag].stdout.readline())

    # same output from both trees
    for case in CASES:
        for tag in procs:
            ask(tag, {"op": "out", "case": case, "path": f"/tmp/h5_ab_{tag}_{case}.npy"})
        a, b = np.load(f"/tmp/h5_ab_old_{case}.npy"), np.load(f"/tmp/h5_ab_new_{case}.npy")
        print(f"{case}: max |new - old| / max |old| = {np.abs(a - b).max() / np.abs(a).max():.2e}")
    # warm-up
    for case, (_, _, n) in CASES.items():
        for tag in procs:
            ask(tag, {"op": "time", "case": case, "n": n})
    times = {(c, t): [] for c in CASES for t in procs}
    ratios = {c: [] for c in CASES}
    t_start = time.time()
    for r in range(rounds):
        for case, (_, _, n) in CASES.items():
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            med = {}
            for tag in order:
                ts = ask(tag, {"op": "time", "case": case, "n": n})["t"]
                times[(case, tag)] += ts
                med[tag] = float(np.median(ts))
            ratios[case].append(med["new"] / med["old"])
            print(f"round {r} {case}: old {med['old']*1e3:.3f} ms, new {med['new']*1e3:.3f} ms", flush=True)
    print(f"{rounds} rounds in {time.time() - t_start:.0f} s, threads={threads}")
    print(f"{'case':<12}{'old median ms':>15}{'old IQR':>17}{'new median ms':>15}{'new IQR':>17}"
          f"{'new/old per round: median [min, max]':>40}")
    for case in CASES:
        row = f"{case:<12}"
        for tag in ("old", "new"):
            ts = np.array(times[(case, tag)]) * 1e3
            q1, q2, q3 = np.percentile(ts, [25, 50, 75])
            row += f"{q2:>15.3f}{f'[{q1:.3f}, {q3:.3f}]':>17}"
        rr = np.array(ratios[case])
        row += f"{f'{np.median(rr):.3f} [{rr.min():.3f}, {rr.max():.3f}]':>40}"
        print(row, flush=True)
    for p in procs.values():
        p.stdin.close()
        p.wait()


if __name__ == "__main__":
    main()
