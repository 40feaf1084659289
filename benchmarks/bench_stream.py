"""Streaming benchmark: push latency of Engine.stream and FLOPs per pushed frame vs a window.

    python benchmarks/bench_stream.py                       # GAST-27 and VideoPose3D-243, 1 slot
    python benchmarks/bench_stream.py --slots 1 8 --blas-threads 2
    python benchmarks/bench_stream.py --precision fp32 bf16 --kernels native
    python benchmarks/bench_stream.py --engine my.gastrt    # an engine file instead of the presets

Without --engine, engines of the shipped configurations (GAST-Net 27 frames / 128 channels,
VideoPose3D 243 frames / 1024 channels) are built from random weights (needs torch) into a
temporary directory. CPU targets: GAST-27 <= 5 ms per push (1 slot), VideoPose3D-243 <= 1 ms per
push. GPU targets (--device cuda): 64 slots of GAST-27 <= 100 us per push, 1024 slots of
VideoPose3D-243 >= 1M pushed frames/s. Push times are host to host (NumPy frames in, poses out:
what a live pipeline sees), median of --pushes after 3 warm-up pushes (gastrt.bench.measure).

    python benchmarks/bench_stream.py --device cuda --precision fp32 fp16   # slots 1, 64, 1024

--blas-threads sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before NumPy is imported (the
per-column GEMMs are small: on a busy machine one thread is often faster than two).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

PRESETS = ("gast-27", "videopose3d-243")
TARGET_MS = {"gast-27": 5.0, "videopose3d-243": 1.0}                  # CPU, 1 slot, ms per push
GPU_TARGETS = {("gast-27", 64): ("ms", 0.1), ("videopose3d-243", 1024): ("frames/s", 1e6)}


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", action="append", help="engine file(s) to bench (default: the presets)")
    p.add_argument("--preset", action="append", choices=PRESETS, help="presets to bench (default: both)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--slots", type=int, nargs="+", default=None,
                   help="slot counts (default 1 on the CPU; 1 64 1024 on a GPU)")
    p.add_argument("--pushes", type=int, default=50, help="timed pushes per case (default 50)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16", "bf16"),
                   help="engine precisions to build from the presets (default fp32)")
    p.add_argument("--flip", action="store_true")
    p.add_argument("--causal", action="store_true", help="build the presets causal")
    p.add_argument("--kernels", choices=("auto", "numpy", "native", "cuda"), default="auto")
    p.add_argument("--backend", choices=("numpy", "native"), default=None,
                   help="engine backend (default: native when built)")
    p.add_argument("--blas-threads", type=int, default=1, help="NumPy BLAS threads (default 1; 0 = leave as is)")
    return p.parse_args()


def main() -> int:
    args = _args()
    if args.blas_threads > 0:
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(args.blas_threads)
    import numpy as np
    try:   # the installed package (with its compiled runtime) when there is one
        import gastrt
    except ImportError:  # a source checkout
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
        import gastrt
    from gastrt.bench.measure import interleaved

    print(f"gastrt {gastrt.__version__}, numpy {np.__version__}, BLAS threads "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, native built: {gastrt.build_config()['native']}, "
          f"CUDA: {gastrt.cuda_available()}, {os.cpu_count()} CPUs")
    engines = []
    tmp = None
    if args.engine:
        engines = [(os.path.basename(e), e) for e in args.engine]
    else:
        import torch
        from gastrt.reference import factory
        tmp = tempfile.TemporaryDirectory()
        for name in args.preset or PRESETS:
            fam, cfg = factory.PRESETS[name]
            ck = os.path.join(tmp.name, name + ".bin")
            torch.save({"model_pos": factory.random_state_dict(fam, cfg, seed=0)}, ck)
            for prec in args.precision:
                label = name if prec == "fp32" else f"{name} {prec}"
                engines.append((label, gastrt.build(ck, os.path.join(tmp.name, f"{name}-{prec}.gastrt"),
                                                    causal=args.causal, precision=prec)))

    on_gpu = args.device != "cpu"
    slot_list = args.slots or ([1, 64, 1024] if on_gpu else [1])
    rows = []
    for name, path in engines:
        eng = gastrt.load(path, device=args.device) if on_gpu else gastrt.load(path, backend=args.backend)
        rng = np.random.default_rng(0)
        for slots in slot_list:
            st = eng.stream(slots=slots, flip=args.flip, kernels=args.kernels)
            x = (rng.standard_normal((slots, eng.num_joints, 2)) * 0.3).astype(np.float32)
            # each push timed on its own, after 3 warm-up pushes (the first one primes the rings)
            push = interleaved({"push": lambda: st.push(x)}, warmup=3, block_s=None,
                               min_rounds=args.pushes, max_rounds=args.pushes)["push"]
            # the non-streaming alternative: one window per new frame through engine.lift
            win = np.repeat(x[:, None], eng.receptive_field, axis=1)
            n_lift = max(3, args.pushes // 10)
            lift = interleaved({"lift": lambda: eng.lift(win, flip=args.flip)}, warmup=1, block_s=None,
                               min_rounds=n_lift, max_rounds=n_lift)["lift"]
            fpp, wf = st.flops_per_push(), st.window_flops()
            med, lift_ms = push.median * 1e3, lift.median * 1e3
            rows.append((name, slots, med, push.percentile(90) * 1e3, slots / med * 1e3, lift_ms,
                         fpp, wf, st.kernels, eng.backend.name))
            base = name.split()[0].replace(".gastrt", "")
            note = ""
            if on_gpu and (base, slots) in GPU_TARGETS:
                unit, want = GPU_TARGETS[(base, slots)]
                got = med if unit == "ms" else slots / med * 1e3
                ok = got <= want if unit == "ms" else got >= want
                note = f"  (GPU target {'<=' if unit == 'ms' else '>='} {want:g} {unit}: {'met' if ok else 'NOT met'})"
            elif not on_gpu and base in TARGET_MS and slots == 1:
                target = TARGET_MS[base]
                note = f"  (target <= {target} ms: {'met' if med <= target else 'NOT met'})"
            print(f"{name:23s} slots={slots:<4d} push median {med:8.3f} ms  p90 {rows[-1][3]:8.3f} ms  "
                  f"{rows[-1][4]:10.0f} frames/s | window/frame via lift {lift_ms:8.3f} ms | "
                  f"FLOPs/push {fpp / 1e6:8.2f} M vs window {wf / 1e6:8.2f} M ({wf / fpp:5.2f}x fewer) "
                  f"[{st.kernels} kernels, {eng.backend.name} engine]{note}")
    if not on_gpu:
        print("GPU streaming targets (64 slots GAST-27 <= 100 us/push, 1024 slots VideoPose3D-243 >= 1M frames/s): "
              "run with --device cuda on a GPU.")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
