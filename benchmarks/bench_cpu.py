"""Native CPU runtime vs the eager PyTorch reference models, fp32, same thread count.

    python benchmarks/bench_cpu.py [--threads N] [--cases gast27-w1,...] [--budget SECONDS]

For each case: the eager model (gastrt.reference.factory, random weights, eval mode,
torch.inference_mode) and the native engine of the same weights (lowered by gastrt), checked
against each other first (max abs err / max abs ref), then timed by gastrt.bench.measure's
interleaved: alternating blocks of back-to-back calls (torch block, native block, torch block,
...) after warm-up, so a noisy machine slows both alike; medians of the per-call times of the
blocks are reported.
Prints frames/s, speed-up, FLOPs per output frame, achieved GFLOP/s and its fraction of a plain
large sgemm through the same BLAS and thread pool, and the engine's workspace bytes.
FLOPs are the nominal (direct-convolution) count for both contenders; in sequence mode the
native runtime runs its width-3 layers by Winograd F(4,3) with half their multiplies, so its
"GFLOP/s" there is an equivalent rate and can exceed the sgemm roofline
(GASTRT_CONV_WINOGRAD=0 measures the direct form).
Needs torch (pip install gastrt[torch]).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

try:
    import gastrt  # noqa: F401
except ImportError:  # running from a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from gastrt.backends import build_config, native_module  # noqa: E402
from gastrt.backends.native import NativeBackend, default_threads  # noqa: E402
from gastrt.bench.measure import interleaved  # noqa: E402
from gastrt.families import detect_and_lower  # noqa: E402
from gastrt.plan import plan_flops  # noqa: E402

SEQ = 1000

# name -> (preset, mode, batch, target speed-up)
CASES = {
    "gast27-w1": ("gast-27", "window", 1, 5.0),
    "gast27-w64": ("gast-27", "window", 64, 5.0),
    "gast27-seq": ("gast-27", "sequence", 1, 3.0),
    "vp3d243-w1": ("videopose3d-243", "window", 1, 2.0),
    "vp3d243-w64": ("videopose3d-243", "window", 64, 1.0),
    "vp3d243-seq": ("videopose3d-243", "sequence", 1, 1.2),
    "rie243-w64": ("rie-243", "window", 64, 1.5),
}


def sgemm_gflops(threads: int, n: int = 2048, reps: int = 7) -> float:
    """Best of `reps` plain n^3 sgemms through the runtime's BLAS + thread pool: the roofline
    (best, not median: it should say what the machine can do, not how busy it was)."""
    native = native_module()
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    c = np.empty((n, n), np.float32)
    native.sgemm(a, a, out=c, threads=threads)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        native.sgemm(a, a, out=c, threads=threads)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def build(preset: str):
    import torch
    from gastrt.reference.factory import PRESETS, build_model, random_state_dict

    family, cfg = PRESETS[preset]
    sd = random_state_dict(family, cfg, seed=0)
    models = {}
    for optimized in (True, False):
        if family == "rie" and not optimized:
            continue
        m = build_model(family, cfg, optimized=optimized)
        m.load_state_dict(sd, strict=True)
        models["window" if optimized else "sequence"] = m.eval()
    low = detect_and_lower({k: v.numpy() for k, v in sd.items()}, None, False)
    weights = {k: np.ascontiguousarray(v, np.float32) for k, v in low.weights.items()}
    return models, low.plans["pos"], weights, torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    ap.add_argument("--budget", type=float, default=8.0, help="seconds of timing per case (min 3 rounds)")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    if native_module() is None:
        print("bench_cpu: this gastrt has no native runtime (gastrt.build_config()['native'] is False)")
        return 2
    cfg = build_config()
    peak = sgemm_gflops(args.threads)
    print(f"threads={args.threads}  torch {torch.__version__}  {cfg['blas']} (kernels: {cfg['blas_core']}, "
          f"{cfg['blas_core_note']})  cpu_isa={cfg['cpu_isa']}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"plain sgemm 2048^3 through the runtime's BLAS + pool (best of 7): {peak:.1f} GFLOP/s; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs\n")

    hdr = (f"{'case':<13}{'frames':>7}{'torch fps':>11}{'native fps':>12}{'speed-up':>10}{'target':>8}"
           f"{'MFLOP/fr':>10}{'GFLOP/s':>9}{'%sgemm':>8}{'ws MiB':>8}{'max rel err':>13}{'reps':>6}")
    print(hdr)
    print("-" * len(hdr))
    built = {}
    rng = np.random.default_rng(1)
    ok_all = True
    for name in args.cases.split(","):
        preset, mode, batch, target = CASES[name]
        if preset not in built:
            built[preset] = build(preset)
        models, plan, weights, torch = built[preset]
        be = NativeBackend({"pos": plan}, weights, args.threads)
        j = plan.in_joints
        if mode == "window":
            t_in = plan.receptive_field
            x = (rng.standard_normal((batch, t_in, j, 2)) * 0.5).astype(np.float32)
            frames = batch
        else:
            t_in = SEQ + plan.receptive_field - 1
            x = (rng.standard_normal((1, t_in, j, 2)) * 0.5).astype(np.float32)
            frames = SEQ
        xt = torch.from_numpy(x)
        model = models[mode]

        with torch.inference_mode():
            ref = model(xt).numpy()
        got = be.run("pos", x, mode)
        ref = ref.reshape(got.shape)
        err = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))

        def run_torch():
            with torch.inference_mode():
                model(xt)

        def run_native():
            be.run("pos", x, mode)

        # alternating blocks of back-to-back calls after warm-up: a noisy machine slows both alike
        timing = interleaved({"torch": run_torch, "native": run_native}, budget=args.budget)
        med, reps = {k: t.median for k, t in timing.items()}, timing["torch"].rounds
        flops = plan_flops(plan, x.shape, lambda n: weights[n].shape, mode) / frames
        fps_t, fps_n = frames / med["torch"], frames / med["native"]
        gflops = flops * fps_n / 1e9
        ws = be.workspace_bytes("pos", x.shape[0], x.shape[1], mode) / 2 ** 20
        speed = fps_n / fps_t
        ok = speed >= target
        ok_all &= ok
        print(f"{name:<13}{frames:>7}{fps_t:>11.1f}{fps_n:>12.1f}{speed:>9.2f}x{target:>7.1f}x"
              f"{flops / 1e6:>10.1f}{gflops:>9.1f}{100 * gflops / peak:>7.0f}%{ws:>8.1f}{err:>13.1e}{reps:>6}"
              + ("" if ok else "  (below target)"), flush=True)

    if any(CASES[n][1] == "sequence" for n in args.cases.split(",")):
        wino = os.environ.get("GASTRT_CONV_WINOGRAD", "1") != "0"
        print("\nsequence rows: nominal FLOPs; width-3 layers with >= 128 channels run Winograd F(4,3)"
              if wino else "\nsequence rows: direct convolution (GASTRT_CONV_WINOGRAD=0)")
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    # workspace per batch size (window mode), the engine's own accounting
    print("\nworkspace bytes per call (window mode):")
    for preset, (models, plan, weights, _) in built.items():
        be = NativeBackend({"pos": plan}, weights, args.threads)
        sizes = ", ".join(f"b{b}: {be.workspace_bytes('pos', b, plan.receptive_field, 'window') / 2 ** 20:.2f} MiB"
                          for b in (1, 8, 64, 256))
        print(f"  {preset:<16} {sizes}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
