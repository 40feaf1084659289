"""Reproduce the published benchmark table: every built-in preset, on this machine, with
``gastrt bench`` (gastrt.bench.run_bench), appended to benchmarks/RESULTS.md with the date,
device and commit.

    python benchmarks/run_all.py                       # CPU, all presets, window + sequence
    python benchmarks/run_all.py --device cuda         # the same on a GPU (batches up to 4096)
    python benchmarks/run_all.py --presets gast-27,rie-243 --modes window --compare eager
    python benchmarks/run_all.py --analytic            # print METHOD.md's FLOP / byte table only

The table: one row per preset, mode and batch size, with the median latency and throughput of
gastrt, eager PyTorch and torch.compile, measured in the same run (see the gastrt.bench docstring for how;
METHOD.md for the analytic counts). ``--json-dir DIR`` also keeps every run's JSON document.
Runs from a source checkout (python/ first on sys.path) unless GASTRT_BENCH_INSTALLED is set.
Needs torch for the presets (pip install gastrt[torch]).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SNAPSHOT_ENV = "GASTRT_RUN_ALL_SNAPSHOT"  # set by the parent for its case processes
if os.environ.get(_SNAPSHOT_ENV):
    sys.path.insert(0, os.environ[_SNAPSHOT_ENV])
elif not os.environ.get("GASTRT_BENCH_INSTALLED"):
    sys.path.insert(0, os.path.join(ROOT, "python"))

import gastrt  # noqa: E402
from gastrt import bench  # noqa: E402
from gastrt.bench import report  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "RESULTS.md")
VIEW_OPS = ("input_flat", "output_flat")

DEFAULT_BATCHES = {
    ("cpu", "window"): "1,64,512",
    ("cpu", "sequence"): "1",
    ("cuda", "window"): "1,64,512,4096",
    ("cuda", "sequence"): "1,16",
}


# ---------------------------------------------------------------------------------------------
# analytic counts (METHOD.md)
# ---------------------------------------------------------------------------------------------

def _gast_internal_floats(op, shapes) -> int:
    """Intermediate floats of one gast_block in the unfused NumPy formulation (per call)."""
    n, j, t, c = shapes[op.inputs[0]]
    h, gc = op.attrs["heads"], op.attrs["head_channels"]
    rows = n * j * t
    # hh 4C, two graph-conv outputs 2C, loc C, logits H*J + softmax H*J, ab 2H, g H*gc,
    # attention output H*gc, glb C, concat [x|loc|glb] 3C
    return rows * (4 * c + 2 * c + c + 2 * h * j + 2 * h + 2 * h * gc + c + 3 * c)


def analytic(engine_path: str, seq_len: int = 1000) -> dict:
    from gastrt.plan import infer_shapes, op_flops

    eng = gastrt.load(engine_path, backend="numpy")
    plan = eng.plans["pos"]
    wshape = lambda n: eng.weights[n].shape  # noqa: E731
    out = {"receptive_field": plan.receptive_field, "params": int(eng.metadata["parameter_count"]),
           "weight_bytes_fp32": int(sum(a.size for a in eng.weights.values()) * 4)}
    j, f, rf = plan.in_joints, plan.in_features, plan.receptive_field
    cases = [("window", (1, rf, j, f), 1)]
    if "sequence" in plan.modes:
        cases.append(("sequence", (1, seq_len + rf - 1, j, f), seq_len))
    for mode, shape, frames in cases:
        shapes = infer_shapes(plan, shape, wshape, mode)
        flops = sum(op_flops(op, shapes, wshape) for op in plan.ops)
        sizes = {name: int(_prod(s)) * 4 for name, s in shapes.items()}
        views = {o for op in plan.ops if op.kind in VIEW_OPS for o in op.outputs}  # reshapes: no bytes
        for v in views:
            sizes[v] = 0
        written = sum(sizes[o] for op in plan.ops for o in op.outputs)
        internal = sum(_gast_internal_floats(op, shapes) * 4 for op in plan.ops if op.kind == "gast_block")
        # peak live: a buffer lives from its producer to its last reader (unfused executor)
        last = {name: i for i, op in enumerate(plan.ops) for name in op.inputs}
        final = plan.ops[-1].outputs[0]
        live, peak = {"input": sizes["input"]}, sizes["input"]
        for i, op in enumerate(plan.ops):
            for o in op.outputs:
                live[o] = sizes[o]
            peak = max(peak, sum(live.values()))
            for name in list(live):
                if name != final and last.get(name, -1) <= i:
                    del live[name]
        out[mode] = {"flops_per_frame": flops / frames, "act_written_per_frame": written / frames,
                     "gast_internal_per_frame": internal / frames, "peak_live_bytes": peak, "frames": frames}
    return out


def _prod(s) -> int:
    p = 1
    for v in s:
        p *= int(v)
    return p


def _mb(b: float) -> str:
    return f"{b / 1e6:.2f}"


def analytic_table(presets, seq_len: int = 1000) -> str:
    rows = ["| preset | RF | params | weights fp32 MB | window FLOPs/frame | window act. MB/frame "
            "| window peak live MB | seq FLOPs/frame | seq act. MB/frame | seq peak live MB (1000 fr) "
            "| AI window b=1 | AI window b→∞ | AI seq |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in presets:
        a = analytic(bench.preset_engine(p), seq_len)
        w = a["window"]
        wa = w["act_written_per_frame"] + w["gast_internal_per_frame"]
        # traffic: every activation written once and read once; weights once per call
        ai1 = w["flops_per_frame"] / (a["weight_bytes_fp32"] + 2 * wa)
        aiinf = w["flops_per_frame"] / (2 * wa)
        s = a.get("sequence")
        if s:
            sa = s["act_written_per_frame"] + s["gast_internal_per_frame"]
            ais = s["flops_per_frame"] / (a["weight_bytes_fp32"] / seq_len + 2 * sa)
            seq = (f"{s['flops_per_frame'] / 1e6:.1f} M | {_mb(sa)} | {_mb(s['peak_live_bytes'])} | ")
            seq_ai = f"{ais:.0f}"
        else:
            seq, seq_ai = "windows | windows | windows | ", "= window"
        rows.append(f"| {p} | {a['receptive_field']} | {a['params'] / 1e6:.2f} M | {_mb(a['weight_bytes_fp32'])} | "
                    f"{w['flops_per_frame'] / 1e6:.1f} M | {_mb(wa)} | {_mb(w['peak_live_bytes'])} | {seq}"
                    f"{ai1:.1f} | {aiinf:.0f} | {seq_ai} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# measured table (gastrt.bench.report renders it)
# ---------------------------------------------------------------------------------------------

def _checkout_state() -> tuple[str | None, bool | None]:
    def git(*a):
        try:
            r = subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def _native_digest(pkg_dir: str) -> str | None:
    import glob
    import hashlib
    libs = sorted(glob.glob(os.path.join(pkg_dir, "_native*.so")) + glob.glob(os.path.join(pkg_dir, "_native*.pyd")))
    if not libs:
        return None
    with open(libs[0], "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def section(docs: list[dict], argv: list[str], started: float, crashes: list[str] = (), *,
            commit: str | None = None, dirty: bool | None = None, native: str | None = None) -> str:
    """The RESULTS.md section of a run's documents (gastrt.bench.report.results_section)."""
    return report.results_section(docs, argv, started, crashes, commit=commit, dirty=dirty, native=native)


def append_results(text: str, path: str = RESULTS) -> None:
    report.append_results(text, path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default="all", help="comma-separated presets, or 'all' (the 7 non-causal ones)")
    ap.add_argument("--modes", default="window,sequence")
    ap.add_argument("--batch", default=None, help="window-mode batch sizes (default: 1,64,512 on CPU, "
                    "1,64,512,4096 on CUDA)")
    ap.add_argument("--seq-batch", default=None, help="sequence-mode batch sizes (default 1 on CPU, 1,16 on CUDA)")
    ap.add_argument("--seq-len", type=int, default=1000)
    ap.add_argument("--compare", default=None,
                    help="as gastrt bench --compare (default: eager,compile, plus tensorrt on a GPU where installed)")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--max-time", type=float, default=5.0)
    ap.add_argument("--results", default=RESULTS, help="markdown file to append to (default benchmarks/RESULTS.md)")
    ap.add_argument("--note", action="append", default=[], help="a note for the section (repeatable)")
    ap.add_argument("--json-dir", default=None, help="also write each run's JSON document here")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run the package in place instead of a frozen copy of it")
    ap.add_argument("--retries", type=int, default=2, help="re-runs of a case whose process crashed (default 2)")
    ap.add_argument("--analytic", action="store_true", help="print the analytic FLOP / byte table and exit")
    ap.add_argument("--one", nargs=3, metavar=("PRESET", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    presets = list(bench.BASE_PRESETS) if args.presets == "all" else [p.strip() for p in args.presets.split(",")]
    if args.analytic:
        print(analytic_table(presets, args.seq_len))
        return 0
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.one:
        return _run_one(args, args.one[0], args.one[1], args.one[2])
    for p in presets:
        if p not in bench.PRESETS:
            print(f"run_all: unknown preset {p!r}: expected one of {', '.join(bench.PRESETS)}", file=sys.stderr)
            return 2
    started = time.time()
    docs, crashes = [], []
    tmp = tempfile.mkdtemp(prefix="gastrt-run-all-")
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.abspath(gastrt.__file__))
    snapshot = None
    if not args.no_snapshot:
        # measure a frozen copy of the package: a native module rebuilt in place while a case
        # runs would crash it (and would mix two builds in one table)
        snapshot = os.path.join(tmp, "pkg")
        shutil.copytree(pkg, os.path.join(snapshot, "gastrt"), ignore=shutil.ignore_patterns("__pycache__"))
        env[_SNAPSHOT_ENV] = snapshot
    commit, dirty = _checkout_state()
    native = _native_digest(snapshot and os.path.join(snapshot, "gastrt") or pkg)
    # each (preset, mode) in its own process: a crash (or a rebuilt native module) loses one
    # case, not the run, and no compiled-graph / allocator state leaks between presets
    passthrough = [a for a in argv if a not in ("--analytic",)]
    for p in presets:
        for mode in modes:
            out = os.path.join(tmp, f"{p}-{mode}.json")
            for attempt in range(1 + args.retries):
                print(f"[{datetime.datetime.now():%H:%M:%S}] {p} {mode}"
                      + (f" (retry {attempt})" if attempt else "") + " ...", file=sys.stderr, flush=True)
                t0 = time.time()
                r = subprocess.run([sys.executable, os.path.abspath(__file__)] + passthrough
                                   + ["--one", p, mode, out], env=env)
                print(f"  ({time.time() - t0:.0f} s, exit {r.returncode})", file=sys.stderr, flush=True)
                if r.returncode == 2:
                    return 2
                if r.returncode == 0 and os.path.exists(out):
                    with open(out) as f:
                        d = json.load(f)
                    docs.append(d)
                    if args.json_dir:
                        os.makedirs(args.json_dir, exist_ok=True)
                        stamp = d["created"].replace(":", "").replace("-", "")[:15]
                        bench.write_json(d, os.path.join(args.json_dir, f"{stamp}-{p}-{mode}.json"))
                    break
            else:
                crashes.append(f"{p} {mode}: the benchmark process failed (exit {r.returncode}) "
                               f"{1 + args.retries} times; no numbers")
    if not docs:
        print("run_all: no case produced results", file=sys.stderr)
        return 1
    text = section(docs, argv, started, list(args.note) + crashes, commit=commit, dirty=dirty, native=native)
    shutil.rmtree(tmp, ignore_errors=True)
    append_results(text, args.results)
    print(text)
    print(f"appended to {args.results}", file=sys.stderr)
    return 0


def _run_one(args, preset: str, mode: str, out: str) -> int:
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    batches = (args.batch or DEFAULT_BATCHES[(kind, "window")]) if mode != "sequence" \
        else (args.seq_batch or DEFAULT_BATCHES[(kind, "sequence")])
    try:
        d = bench.run_bench(preset, device=args.device, batches=batches, mode=mode, seq_len=args.seq_len,
                            precision=args.precision, compare=args.compare, warmup=args.warmup,
                            repeat=args.repeat, max_time=args.max_time, threads=args.threads,
                            backend=args.backend, progress=None)
    except gastrt.GastrtError as e:
        print(f"gastrt: error: {e}", file=sys.stderr)
        return 2
    print(bench.format_table(d), file=sys.stderr, flush=True)
    bench.write_json(d, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
