"""GPU benchmark of gastrt's CUDA executor (run by benchmarks/gpu_check.sh on the target GPU).

All device times are CUDA-event times, the median (and p99) of many runs with the warm-up
runs excluded. End-to-end times (NumPy in / out, host staging included) are perf_counter
times of the public Engine calls. Both are timed by gastrt.bench.measure (``interleaved``).

1. Per-layer: every conv and GAST block of GAST-27 (batch 4096 windows) and VideoPose3D-243
   (a 100000-frame sequence), fp16, as single-op programs: TFLOP/s vs cuBLAS (torch.matmul)
   on the same GEMM shape (M = rows, K = k * Ci, N = Co). The GAST blocks are timed on both
   paths (fused and multi-kernel), to settle the auto choice on this GPU.
2. GAST-27: batch-1 latency p50 / p99 (device and end to end), batch-4096 fp16 throughput;
   against PyTorch eager (the reference model) in fp32 and fp16.
3. VideoPose3D-243: a 100000-frame sequence in fp16 (dilated model) against eager fp16.
4. RIE-243 (stage 3): batch 4096 windows, fp16 and fp32, against eager.
Each model section also checks the engine's output against eager fp32 (max rel error).
The summary table comes last. `--json PATH` also writes every number.

Needs torch with CUDA (eager baselines, cuBLAS, the reference models / checkpoints).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import gastrt  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(HERE, "..", "python"))
    import gastrt  # noqa: F401

from gastrt.bench.measure import CudaTimer, interleaved  # noqa: E402
from gastrt.plan import infer_shapes, op_flops  # noqa: E402

RESULTS: dict = {"sections": {}, "errors": {}}
SUMMARY: list[tuple[str, str, str]] = []   # (what, gastrt, baseline / note)


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q / 100 * (len(v) - 1))))]


def med(v):
    return statistics.median(v)


def torch_ms(fn, iters, warmup):
    """CUDA-event milliseconds of `iters` calls of fn on the current device's stream, after
    `warmup` untimed calls."""
    import torch
    return _ms(fn, iters, warmup, CudaTimer(torch, torch.device("cuda", torch.cuda.current_device())))


def host_ms(fn, iters, warmup):
    """perf_counter milliseconds of `iters` calls of fn after `warmup` untimed calls."""
    return _ms(fn, iters, warmup, None)


def _ms(fn, iters, warmup, timer):
    t = interleaved({"f": fn}, warmup=warmup, block_s=None, min_rounds=iters, max_rounds=iters, timer=timer)
    return t["f"].ms


# ---- models --------------------------------------------------------------------------------------
def build(tmp, preset, precision):
    """-> (engine file, checkpoint file, family, config) of a preset, built once into `tmp`."""
    import torch
    from gastrt.reference.factory import PRESETS, make_checkpoint
    family, cfg = PRESETS[preset]
    ck = os.path.join(tmp, preset + ".bin")
    if not os.path.exists(ck):
        torch.save(make_checkpoint(family, cfg, seed=0), ck)
    out = os.path.join(tmp, f"{preset}.{precision}.gastrt")
    if not os.path.exists(out):
        gastrt.build(ck, out, precision=precision)
    return out, ck, family, cfg


def eager(ck, family, cfg, optimized, half):
    import torch
    from gastrt.reference.factory import build_model
    sd = torch.load(ck, map_location="cpu", weights_only=True)["model_pos"]
    m = build_model(family, cfg, optimized=optimized)
    m.load_state_dict(sd, strict=True)
    m = m.cuda().eval()
    return m.half() if half else m


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ---- 1. per layer --------------------------------------------------------------------------------
def per_layer(tmp, iters):
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "cuda"))
    from op_harness import OpHarness   # the single-op test harness
    rows = []
    for preset, mode, n, t_extra in (("gast-27", "window", 4096, 0), ("videopose3d-243", "sequence", 1, 100000)):
        path, _, _, _ = build(tmp, preset, "fp16")
        eng = gastrt.load(path, backend="numpy")
        plan = eng.plans["pos"]
        t = plan.receptive_field + (t_extra - 1 if t_extra else 0)
        wshape = lambda w: eng.weights[w].shape  # noqa: E731
        shapes = infer_shapes(plan, (n, t, plan.in_joints, plan.in_features), wshape, mode)
        h = OpHarness("fp16", device=0)
        for i, op in enumerate(plan.ops):
            if op.kind not in ("conv", "gast_block"):
                continue
            xs = shapes[op.inputs[0]]
            flops = op_flops(op, shapes, wshape)
            name = f"{preset}#{i} {op.kind}"
            if op.kind == "conv":
                co = wshape(op.weights["w"])[1]
                res_t = shapes[op.inputs[1]][2] if len(op.inputs) > 1 else None
                code, arena = h.conv_code(op, xs, co, mode, res_t)
                ms = h.time_program(code, arena, iters, 5, random_data=True)
                _, _, to, _ = shapes[op.outputs[0]]
                M, K, N = xs[0] * xs[1] * to, op.attrs["k"] * xs[3], co
                a = torch.randn(M, K, device="cuda", dtype=torch.float16)
                b = torch.randn(K, N, device="cuda", dtype=torch.float16)
                tms = torch_ms(lambda: torch.matmul(a, b), iters, 5)
                del a, b
                row = {"layer": name, "M": M, "K": K, "N": N, "ms": med(ms), "tflops": flops / med(ms) / 1e9,
                       "cublas_ms": med(tms), "cublas_tflops": 2 * M * K * N / med(tms) / 1e9}
            else:
                row = {"layer": name, "M": xs[0] * xs[1] * xs[2], "K": xs[3], "N": 2 * xs[3]}
                for fused, tag in ((1, "fused"), (0, "multi")):
                    h.eng.set_option("gast_fused", fused)
                    if fused and not h.gast_fused(op, xs):
                        continue
                    code, arena = h.gast_code(op, xs)
                    ms = h.time_program(code, arena, iters, 5, random_data=True)
                    row[f"{tag}_ms"] = med(ms)
                    row[f"{tag}_tflops"] = flops / med(ms) / 1e9
                h.eng.set_option("gast_fused", -1)
                row["auto"] = "fused" if h.gast_fused(op, xs) else "multi"
            rows.append(row)
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
        del h
    RESULTS["sections"]["per_layer"] = rows
    convs = [r for r in rows if "cublas_ms" in r]
    if convs:
        ours = sum(r["ms"] for r in convs)
        theirs = sum(r["cublas_ms"] for r in convs)
        SUMMARY.append(("conv layers, sum of medians (fp16)", f"{ours:.3f} ms", f"cuBLAS GEMMs {theirs:.3f} ms"))
        big = max(convs, key=lambda r: r["M"] * r["K"] * r["N"])
        SUMMARY.append((f"largest conv {big['M']}x{big['K']}x{big['N']}", f"{big['tflops']:.1f} TFLOP/s",
                        f"cuBLAS {big['cublas_tflops']:.1f} TFLOP/s"))
    for r in rows:
        if "fused_ms" in r and "multi_ms" in r:
            SUMMARY.append((f"{r['layer']} rows={r['M']} c={r['K']}",
                            f"fused {r['fused_ms']:.3f} / multi {r['multi_ms']:.3f} ms", f"auto={r['auto']}"))


# ---- 2. GAST-27 ----------------------------------------------------------------------------------
def gast27(tmp, iters):
    import torch
    out = {}
    rng = np.random.default_rng(0)
    for precision in ("fp32", "fp16"):
        path, ck, fam, cfg = build(tmp, "gast-27", precision)
        g = gastrt.load(path, device="cuda")
        rf = g.receptive_field
        x1 = (rng.standard_normal((1, rf, 17, 2)) * 0.3).astype(np.float32)
        dev1 = g.backend.time("pos", "window", 1, rf, iters=max(iters, 200), warmup=20)
        e2e1 = host_ms(lambda: g.lift(x1), max(iters, 200), 20)
        xb = (rng.standard_normal((4096, rf, 17, 2)) * 0.3).astype(np.float32)
        devb = g.backend.time("pos", "window", 4096, rf, iters=iters, warmup=5)
        e2eb = host_ms(lambda: g.lift(xb), max(10, iters // 5), 2)
        out[precision] = {"b1_dev_p50": med(dev1), "b1_dev_p99": pct(dev1, 99), "b1_e2e_p50": med(e2e1),
                          "b1_e2e_p99": pct(e2e1, 99), "b4096_dev_ms": med(devb), "b4096_e2e_ms": med(e2eb),
                          "b4096_fps": 4096 / med(devb) * 1e3}
        m32 = eager(ck, fam, cfg, True, False)
        with torch.no_grad():
            ref = m32(torch.from_numpy(xb[:256]).cuda()).float().cpu().numpy()[:, 0]
        out[precision]["rel_err_vs_eager_fp32"] = rel(g.lift(xb[:256]), ref)
        print(f"  gastrt {precision}: {out[precision]}", flush=True)
        g = None  # free the engine before the next one
    for half in (False, True):
        m = eager(ck, fam, cfg, True, half)
        dt = torch.float16 if half else torch.float32
        x1t = torch.from_numpy(x1).cuda().to(dt)
        xbt = torch.from_numpy(xb).cuda().to(dt)
        with torch.no_grad():
            e1 = torch_ms(lambda: m(x1t), max(iters, 200), 20)
            eb = torch_ms(lambda: m(xbt), iters, 5)
        tag = "eager_fp16" if half else "eager_fp32"
        out[tag] = {"b1_p50": med(e1), "b1_p99": pct(e1, 99), "b4096_ms": med(eb), "b4096_fps": 4096 / med(eb) * 1e3}
        print(f"  {tag}: {out[tag]}", flush=True)
        m = None
    RESULTS["sections"]["gast27"] = out
    f16, f32 = out["fp16"], out["fp32"]
    SUMMARY.append(("GAST-27 batch 1 fp16, device p50/p99", f"{f16['b1_dev_p50']:.3f}/{f16['b1_dev_p99']:.3f} ms",
                    f"eager fp16 {out['eager_fp16']['b1_p50']:.3f}/{out['eager_fp16']['b1_p99']:.3f} ms "
                    "(events around Python dispatch; gastrt: a graph replay)"))
    SUMMARY.append(("GAST-27 batch 1 fp16, end-to-end p50/p99", f"{f16['b1_e2e_p50']:.3f}/{f16['b1_e2e_p99']:.3f} ms",
                    "NumPy in/out"))
    SUMMARY.append(("GAST-27 batch 1 fp32, device p50", f"{f32['b1_dev_p50']:.3f} ms",
                    f"eager fp32 {out['eager_fp32']['b1_p50']:.3f} ms"))
    SUMMARY.append(("GAST-27 batch 4096 fp16 throughput", f"{f16['b4096_fps']:.0f} windows/s",
                    f"eager fp16 {out['eager_fp16']['b4096_fps']:.0f}, fp32 {out['eager_fp32']['b4096_fps']:.0f}"))
    SUMMARY.append(("GAST-27 max rel err vs eager fp32", f"fp32 {f32['rel_err_vs_eager_fp32']:.1e}",
                    f"fp16 {f16['rel_err_vs_eager_fp32']:.1e}"))


# ---- 3. VideoPose3D-243 sequence ------------------------------------------------------------------
def vp3d_sequence(tmp, iters, frames):
    import torch
    path, ck, fam, cfg = build(tmp, "videopose3d-243", "fp16")
    g = gastrt.load(path, device="cuda")
    rng = np.random.default_rng(1)
    seq = (rng.standard_normal((frames, 17, 2)) * 0.3).astype(np.float32)
    t_in = frames + g.receptive_field - 1
    dev = g.backend.time("pos", "sequence", 1, t_in, iters=max(5, iters // 5), warmup=2)
    e2e = host_ms(lambda: g.lift_sequence(seq), 5, 1)
    y = g.lift_sequence(seq)
    m = eager(ck, fam, cfg, False, True)
    xp = np.pad(seq, ((g.pad, g.pad), (0, 0), (0, 0)), mode="edge")[None]
    xt = torch.from_numpy(xp).cuda().half()
    with torch.no_grad():
        em = torch_ms(lambda: m(xt), max(5, iters // 5), 2)
        ref = eager(ck, fam, cfg, False, False)(xt.float()).cpu().numpy()[0]
    out = {"frames": frames, "dev_ms": med(dev), "e2e_ms": med(e2e), "fps": frames / med(dev) * 1e3,
           "eager_fp16_ms": med(em), "rel_err_vs_eager_fp32": rel(y, ref)}
    print(f"  {out}", flush=True)
    RESULTS["sections"]["vp3d243_sequence"] = out
    SUMMARY.append((f"VideoPose3D-243 {frames}-frame sequence fp16", f"{out['dev_ms']:.2f} ms device, "
                    f"{out['e2e_ms']:.1f} ms e2e", f"eager fp16 {out['eager_fp16_ms']:.2f} ms; "
                    f"rel err {out['rel_err_vs_eager_fp32']:.1e}"))


# ---- 4. RIE-243 ----------------------------------------------------------------------------------
def rie(tmp, iters):
    import torch
    out = {}
    rng = np.random.default_rng(2)
    xb = None
    for precision in ("fp32", "fp16"):
        path, ck, fam, cfg = build(tmp, "rie-243", precision)
        g = gastrt.load(path, device="cuda")
        rf = g.receptive_field
        if xb is None:
            xb = (rng.standard_normal((4096, rf, 17, 2)) * 0.3).astype(np.float32)
        dev = g.backend.time("pos", "window", 4096, rf, iters=iters, warmup=5)
        e2e = host_ms(lambda: g.lift(xb), max(5, iters // 10), 2)
        m32 = eager(ck, fam, cfg, True, False)
        with torch.no_grad():
            ref = m32(torch.from_numpy(xb[:256]).cuda()).float().cpu().numpy()[:, 0]
        out[precision] = {"dev_ms": med(dev), "e2e_ms": med(e2e), "fps": 4096 / med(dev) * 1e3,
                          "rel_err_vs_eager_fp32": rel(g.lift(xb[:256]), ref)}
        print(f"  gastrt {precision}: {out[precision]}", flush=True)
        g = None  # free the engine before the next one
    for half in (False, True):
        tag = "eager_fp16" if half else "eager_fp32"
        try:
            m = eager(ck, fam, cfg, True, half)
            xt = torch.from_numpy(xb).cuda().to(torch.float16 if half else torch.float32)
            with torch.no_grad():
                em = torch_ms(lambda: m(xt), iters, 5)
            out[tag] = {"ms": med(em), "fps": 4096 / med(em) * 1e3}
        except Exception as e:  # the reference may not run in half precision
            out[tag] = {"error": repr(e)}
        print(f"  {tag}: {out[tag]}", flush=True)
    RESULTS["sections"]["rie243"] = out
    e16 = out["eager_fp16"].get("fps")
    SUMMARY.append(("RIE-243 batch 4096 fp16 throughput", f"{out['fp16']['fps']:.0f} windows/s",
                    f"eager fp16 {e16:.0f}" if e16 else "eager fp16 failed"))
    SUMMARY.append(("RIE-243 batch 4096 fp32 throughput", f"{out['fp32']['fps']:.0f} windows/s",
                    f"eager fp32 {out['eager_fp32'].get('fps', float('nan')):.0f}"))
    SUMMARY.append(("RIE-243 max rel err vs eager fp32", f"fp32 {out['fp32']['rel_err_vs_eager_fp32']:.1e}",
                    f"fp16 {out['fp16']['rel_err_vs_eager_fp32']:.1e}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=50, help="timed runs per measurement (median)")
    ap.add_argument("--frames", type=int, default=100000, help="VideoPose3D sequence length")
    ap.add_argument("--quick", action="store_true", help="fewer runs, 20000-frame sequence")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: layers,gast,vp3d,rie")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--cache", default=None, help="folder for checkpoints / engines (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.iters, args.frames = 20, 20000
    if not gastrt.cuda_available():
        print("bench_gpu: no CUDA build / GPU (gastrt.cuda_available() is False)")
        return 2
    import torch
    if not torch.cuda.is_available():
        print("bench_gpu: torch has no CUDA (needed for the eager and cuBLAS baselines)")
        return 2
    # fp32 baselines in plain FP32 (gastrt's fp32 kernels use no TF32): like-for-like speed, and
    # "rel err vs eager fp32" measured against a true fp32 reference
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    RESULTS["tf32"] = False
    from gastrt.backends import native_module
    RESULTS["device"] = native_module().cuda_device_name(0)
    RESULTS["build"] = gastrt.build_config()
    print(f"device: {RESULTS['device']}; torch {torch.__version__}", flush=True)
    tmp = args.cache or tempfile.mkdtemp(prefix="gastrt-bench-")
    os.makedirs(tmp, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    sections = [("layers", "per-layer TFLOP/s vs cuBLAS", lambda: per_layer(tmp, args.iters)),
                ("gast", "GAST-27 latency / throughput", lambda: gast27(tmp, args.iters)),
                ("vp3d", "VideoPose3D-243 sequence", lambda: vp3d_sequence(tmp, args.iters, args.frames)),
                ("rie", "RIE-243 batch 4096", lambda: rie(tmp, args.iters))]
    for key, title, fn in sections:
        if key in skip:
            continue
        print(f"== {title}", flush=True)
        t = time.time()
        try:
            fn()
        except Exception as e:
            traceback.print_exc()
            RESULTS["errors"][key] = repr(e)
            SUMMARY.append((title, "FAILED", repr(e)[:60]))
        torch.cuda.empty_cache()
        print(f"   ({time.time() - t:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)
    w0 = max([len(a) for a, _, _ in SUMMARY] + [10])
    w1 = max([len(b) for _, b, _ in SUMMARY] + [10])
    print("\n== summary (" + RESULTS["device"] + ")")
    print(f"{'measure':<{w0}}  {'gastrt':<{w1}}  baseline / note")
    for a, b, c in SUMMARY:
        print(f"{a:<{w0}}  {b:<{w1}}  {c}")
    return 1 if RESULTS["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
