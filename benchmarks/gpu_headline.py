"""The headline GPU numbers, each printed the moment it is measured (benchmarks/gpu_check.sh,
command 1, runs this last; ~1-2 minutes on an H100):

1. GAST-27 batch-1 latency with CUDA graphs, fp16 and fp32: device time of a graph replay
   (CUDA events) and end to end (NumPy in / out).                          goal <= 50 us
2. GAST-27 batch 4096 fp16 against eager fp32 and eager fp16, interleaved round by round in
   the same run, CUDA events on torch's stream around each call.           goal >= 30x eager fp32
3. VideoPose3D-243 sequence, fp16: frames/s of a long sequence (device time). goal >= 5 M frames/s
4. Streaming: GAST-27, 64 slots, fp16 and fp32, host-to-host push latency. goal <= 100 us
5. The per-layer tactic table (our GEMM kernel against cuBLASLt) of the engines above.

Every section catches its own failure and the next one runs. A summary table comes last;
``--json PATH`` writes every number. ``--dry-run`` (no GPU needed) only checks the script's
plumbing (it builds the engines, which needs torch, and prints each GPU section as skipped).
"""
from __future__ import annotations

import argparse
import json
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

from gastrt.bench.measure import CudaTimer, interleaved  # noqa: E402

GOALS = {  # section: (unit, comparison, value)
    "gast27_b1_us": ("us", "<=", 50.0),
    "gast27_b4096_vs_eager_fp32": ("x", ">=", 30.0),
    "vp3d243_seq_fps": ("frames/s", ">=", 5e6),
    "stream64_push_us": ("us", "<=", 100.0),
}
RESULTS: dict = {}
SUMMARY: list[tuple[str, str, str]] = []


def verdict(key: str, value: float) -> str:
    unit, cmp, want = GOALS[key]
    ok = value <= want if cmp == "<=" else value >= want
    return f"goal {cmp} {want:g} {unit}: {'MET' if ok else 'MISSED'}"


def say(msg: str) -> None:
    print(msg, flush=True)


def med(v) -> float:
    return float(np.median(v))


def p99(v) -> float:
    return float(np.percentile(v, 99))


class Models:
    """Checkpoints (random weights and BN statistics) and engines of the presets, built once."""

    def __init__(self, tmp: str):
        self.tmp = tmp
        self.engines: dict = {}

    def checkpoint(self, preset: str) -> str:
        import torch
        from gastrt.reference.factory import PRESETS, make_checkpoint
        ck = os.path.join(self.tmp, preset + ".bin")
        if not os.path.exists(ck):
            fam, cfg = PRESETS[preset]
            torch.save(make_checkpoint(fam, cfg, seed=0), ck)
        return ck

    def engine_file(self, preset: str, precision: str) -> str:
        out = os.path.join(self.tmp, f"{preset}.{precision}.gastrt")
        if not os.path.exists(out):
            gastrt.build(self.checkpoint(preset), out, precision=precision)
        return out

    def load(self, preset: str, precision: str):
        key = (preset, precision)
        if key not in self.engines:
            self.engines[key] = gastrt.load(self.engine_file(preset, precision), device="cuda")
        return self.engines[key]

    def eager(self, preset: str, half: bool):
        import torch
        from gastrt.reference.factory import PRESETS, build_model
        fam, cfg = PRESETS[preset]
        sd = torch.load(self.checkpoint(preset), map_location="cpu", weights_only=True)["model_pos"]
        m = build_model(fam, cfg, optimized=True)
        m.load_state_dict(sd, strict=True)
        m = m.cuda().eval()
        return m.half() if half else m


def gast27_latency(M: Models, iters: int) -> None:
    rng = np.random.default_rng(0)
    for precision in ("fp16", "fp32"):
        g = M.load("gast-27", precision)
        rf = g.receptive_field
        x1 = (rng.standard_normal((1, rf, 17, 2)) * 0.3).astype(np.float32)
        dev_ms = g.backend.time("pos", "window", 1, rf, iters=iters, warmup=20)
        e2e = interleaved({"lift": lambda: g.lift(x1)}, warmup=20, block_s=None, min_rounds=iters,
                          max_rounds=iters)["lift"].times
        d50, d99, e50 = med(dev_ms) * 1e3, p99(dev_ms) * 1e3, med(e2e) * 1e6
        RESULTS[f"gast27_b1_{precision}"] = {"device_p50_us": d50, "device_p99_us": d99, "e2e_p50_us": e50}
        line = f"GAST-27 batch 1 {precision}: device p50 {d50:.1f} us (p99 {d99:.1f}), end to end {e50:.1f} us"
        if precision == "fp16":
            line += "  " + verdict("gast27_b1_us", d50)
            SUMMARY.append(("GAST-27 batch-1 latency fp16 (graph replay)", f"{d50:.1f} us device, {e50:.1f} us e2e",
                            verdict("gast27_b1_us", d50)))
        say(line)


def gast27_batch(M: Models, rounds: int) -> None:
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = M.load("gast-27", "fp16")
    rf = g.receptive_field
    x = torch.randn(4096, rf, 17, 2, device="cuda") * 0.3
    x16 = x.half()
    m32, m16 = M.eager("gast-27", False), M.eager("gast-27", True)
    out = torch.empty(4096, 1, 17, 3, device="cuda")
    with torch.no_grad():
        ref = m32(x)[:, 0]
        err = float((g.lift(x) - ref).abs().max() / ref.abs().max())
        fns = {"gastrt fp16": lambda: g.lift(x, out=out), "eager fp32": lambda: m32(x), "eager fp16": lambda: m16(x16)}
        t = interleaved(fns, warmup=3, block_s=None, min_rounds=rounds, max_rounds=rounds,
                        timer=CudaTimer(torch, torch.device("cuda", torch.cuda.current_device())))
    ms = {k: v.median * 1e3 for k, v in t.items()}
    spread = {k: (float(np.percentile(v.times, 10)) * 1e3, float(np.percentile(v.times, 90)) * 1e3)
              for k, v in t.items()}
    ratio32, ratio16 = ms["eager fp32"] / ms["gastrt fp16"], ms["eager fp16"] / ms["gastrt fp16"]
    RESULTS["gast27_b4096"] = {"ms": ms, "p10_p90_ms": spread, "vs_eager_fp32": ratio32, "vs_eager_fp16": ratio16,
                               "rel_err_vs_eager_fp32": err, "rounds": rounds}
    say("GAST-27 batch 4096, interleaved rounds: " + ", ".join(
        f"{k} {v:.3f} ms [{spread[k][0]:.3f}-{spread[k][1]:.3f}]" for k, v in ms.items()))
    say(f"  gastrt fp16 = {ratio32:.1f}x eager fp32, {ratio16:.1f}x eager fp16 ({4096 / ms['gastrt fp16'] * 1e3:.0f}"
        f" windows/s); max rel err vs eager fp32 {err:.1e}  " + verdict("gast27_b4096_vs_eager_fp32", ratio32))
    SUMMARY.append(("GAST-27 batch 4096 fp16 vs eager fp32 / fp16", f"{ratio32:.1f}x / {ratio16:.1f}x",
                    verdict("gast27_b4096_vs_eager_fp32", ratio32)))


def vp3d_sequence(M: Models, frames: int) -> None:
    g = M.load("videopose3d-243", "fp16")
    t_in = frames + g.receptive_field - 1
    dev_ms = g.backend.time("pos", "sequence", 1, t_in, iters=10, warmup=2)
    fps = frames / med(dev_ms) * 1e3
    RESULTS["vp3d243_sequence"] = {"frames": frames, "device_ms": med(dev_ms), "frames_per_s": fps}
    say(f"VideoPose3D-243 {frames}-frame sequence fp16: {med(dev_ms):.2f} ms device = {fps / 1e6:.2f} M frames/s  "
        + verdict("vp3d243_seq_fps", fps))
    SUMMARY.append(("VideoPose3D-243 sequence fp16", f"{fps / 1e6:.2f} M frames/s", verdict("vp3d243_seq_fps", fps)))


def stream64(M: Models, pushes: int) -> None:
    rng = np.random.default_rng(2)
    for precision in ("fp16", "fp32"):
        g = M.load("gast-27", precision)
        st = g.stream(slots=64)
        x = (rng.standard_normal((64, g.num_joints, 2)) * 0.3).astype(np.float32)
        t = interleaved({"push": lambda: st.push(x)}, warmup=5, block_s=None, min_rounds=pushes,
                        max_rounds=pushes)["push"]
        us, us90 = t.median * 1e6, float(np.percentile(t.times, 90)) * 1e6
        RESULTS[f"stream64_{precision}"] = {"push_p50_us": us, "push_p90_us": us90, "kernels": st.kernels}
        line = f"GAST-27 stream, 64 slots, {precision} ({st.kernels}): push p50 {us:.1f} us (p90 {us90:.1f})"
        if precision == "fp16":
            line += "  " + verdict("stream64_push_us", us)
            SUMMARY.append(("GAST-27 64-slot stream push fp16 (host to host)", f"{us:.1f} us",
                            verdict("stream64_push_us", us)))
        say(line)


def tactics(M: Models) -> None:
    say("per-layer GEMM tactics (our kernel vs cuBLASLt; us = median device time, err = max rel error vs float64):")
    say(f"  {'engine':<22} {'shape':<44} {'ours us':>8} {'cuBLASLt':>8} {'ours err':>9} {'lib err':>9}  chosen")
    rows = []
    for (preset, precision), g in M.engines.items():
        for r in g.backend.gemm_tactics():
            rows.append(dict(r, engine=f"{preset} {precision}"))
            f = lambda v, p: "-" if v < 0 else format(v, p)  # noqa: E731
            say(f"  {preset + ' ' + precision:<22} {r['shape']:<44} {f(r['custom_us'], '8.1f'):>8} "
                f"{f(r['cublaslt_us'], '8.1f'):>8} {f(r['custom_err'], '9.1e'):>9} {f(r['cublaslt_err'], '9.1e'):>9}"
                f"  {r['chosen']}" + (f"  ({r['note']})" if r["note"] else ""))
    RESULTS["tactics"] = rows
    n_lt = sum(r["chosen"] == "cublaslt" for r in rows)
    SUMMARY.append(("GEMM tactics chosen", f"{n_lt} cuBLASLt / {len(rows) - n_lt} ours",
                    next(iter(M.engines.values())).backend.cublaslt_status if M.engines else "-"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300, help="batch-1 timed runs")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds at batch 4096")
    ap.add_argument("--frames", type=int, default=200000, help="VideoPose3D sequence length")
    ap.add_argument("--pushes", type=int, default=300, help="timed stream pushes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=None, help="folder for checkpoints / engines (default: a temp dir)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU: print the sections as skipped")
    args = ap.parse_args()
    sections = [("gast27 batch-1 latency", lambda M: gast27_latency(M, args.iters)),
                ("gast27 batch 4096 vs eager", lambda M: gast27_batch(M, args.rounds)),
                ("vp3d243 sequence", lambda M: vp3d_sequence(M, args.frames)),
                ("stream 64 slots", lambda M: stream64(M, args.pushes)),
                ("tactics", tactics)]
    gpu = gastrt.cuda_available()
    if gpu:
        from gastrt.backends.base import native_module
        say(f"gpu_headline: gastrt {gastrt.__version__} on {native_module().cuda_device_name(0)}")
    else:
        say(f"gpu_headline: gastrt {gastrt.__version__}, no CUDA GPU")
    tmp = args.cache or tempfile.mkdtemp(prefix="gastrt-headline-")
    os.makedirs(tmp, exist_ok=True)
    M = Models(tmp)
    failed = 0
    # The CPU part (checkpoints with random weights, engine builds) runs in a dry run too: it is
    # what the GPU machine spends before the first GPU number.
    t0 = time.perf_counter()
    for preset, precision in (("gast-27", "fp16"), ("gast-27", "fp32"), ("videopose3d-243", "fp16")):
        M.engine_file(preset, precision)
    say(f"  (engines built in {time.perf_counter() - t0:.1f} s)")
    for name, fn in sections:
        if args.dry_run or not gpu:
            say(f"[{name}] skipped: no CUDA GPU")
            SUMMARY.append((name, "skipped", "no CUDA GPU"))
            continue
        t0 = time.perf_counter()
        try:
            fn(M)
        except Exception as e:  # one section's failure does not stop the others
            failed += 1
            say(f"[{name}] FAILED: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
            SUMMARY.append((name, "FAILED", f"{type(e).__name__}: {str(e)[:120]}"))
        say(f"  ({name}: {time.perf_counter() - t0:.1f} s)")
    say("\n== headline summary")
    w = max(len(a) for a, _, _ in SUMMARY)
    for a, b, c in SUMMARY:
        say(f"  {a:<{w}}  {b:<32}  {c}")
    if args.json:
        tmpj = args.json + ".tmp"
        with open(tmpj, "w") as f:
            json.dump({"results": RESULTS, "summary": SUMMARY}, f, indent=1, default=str)
        os.replace(tmpj, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
