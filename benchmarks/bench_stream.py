"""Streaming benchmark: push latency of Engine.stream and FLOPs per pushed frame vs a window.

    python benchmarks/bench_stream.py                       # GAST-27 and VideoPose3D-243, 1 slot
    python benchmarks/bench_stream.py --slots 1 8 --blas-threads 2
    python benchmarks/bench_stream.py --precision fp32 bf16 --kernels native
    python benchmarks/bench_stream.py --engine my.gastrt    # an engine file instead of the presets

Without --engine, engines of the shipped configurations (GAST-Net 27 frames / 128 channels,
VideoPose3D 243 frames / 1024 channels) are built from random weights (needs torch) into a
temporary directory. CPU targets: GAST-27 <= 5 ms per push (1 slot), VideoPose3D-243 <= 1 ms per
push. GPU targets (64 slots GAST-27 <= 100 us per push, 1024 slots VideoPose3D-243 >= 1M frames/s)
need a CUDA streaming backend, which gastrt does not have: this script measures the CPU only.

--blas-threads sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before NumPy is imported (the
per-column GEMMs are small: on a busy machine one thread is often faster than two).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

PRESETS = ("gast-27", "videopose3d-243")
TARGET_MS = {"gast-27": 5.0, "videopose3d-243": 1.0}


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", action="append", help="engine file(s) to bench (default: the presets)")
    p.add_argument("--preset", action="append", choices=PRESETS, help="presets to bench (default: both)")
    p.add_argument("--slots", type=int, nargs="+", default=[1], help="slot counts (default 1)")
    p.add_argument("--pushes", type=int, default=50, help="timed pushes per case (default 50)")
    p.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "fp16", "bf16"),
                   help="engine precisions to build from the presets (default fp32)")
    p.add_argument("--flip", action="store_true")
    p.add_argument("--causal", action="store_true", help="build the presets causal")
    p.add_argument("--kernels", choices=("auto", "numpy", "native"), default="auto")
    p.add_argument("--backend", choices=("numpy", "native"), default=None,
                   help="engine backend (default: native when built)")
    p.add_argument("--blas-threads", type=int, default=1, help="NumPy BLAS threads (default 1; 0 = leave as is)")
    return p.parse_args()


def main() -> int:
    args = _args()
    if args.blas_threads > 0:
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(args.blas_threads)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(os.path.dirname(here), "python"))
    import numpy as np
    import gastrt
    from gastrt.stream import Stream

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

    rows = []
    for name, path in engines:
        eng = gastrt.load(path, backend=args.backend)
        rng = np.random.default_rng(0)
        for slots in args.slots:
            st = eng.stream(slots=slots, flip=args.flip) if args.kernels == "auto" else \
                Stream(eng, slots=slots, flip=args.flip, kernels=args.kernels)
            x = (rng.standard_normal((slots, eng.num_joints, 2)) * 0.3).astype(np.float32)
            for _ in range(3):                       # warm-up (the first push primes the rings)
                st.push(x)
            times = []
            for _ in range(args.pushes):
                t0 = time.perf_counter()
                st.push(x)
                times.append(time.perf_counter() - t0)
            times = np.array(times) * 1e3
            # the non-streaming alternative: one window per new frame through engine.lift
            win = np.repeat(x[:, None], eng.receptive_field, axis=1)
            eng.lift(win, flip=args.flip)
            t0 = time.perf_counter()
            n_lift = max(3, args.pushes // 10)
            for _ in range(n_lift):
                eng.lift(win, flip=args.flip)
            lift_ms = (time.perf_counter() - t0) / n_lift * 1e3
            fpp, wf = st.flops_per_push(), st.window_flops()
            med = float(np.median(times))
            rows.append((name, slots, med, float(np.percentile(times, 90)), slots / med * 1e3, lift_ms,
                         fpp, wf, st.kernels, eng.backend.name))
            target = TARGET_MS.get(name.split()[0].replace(".gastrt", ""))
            note = f"  (target <= {target} ms: {'met' if med <= target else 'NOT met'})" if target and slots == 1 else ""
            print(f"{name:23s} slots={slots:<4d} push median {med:8.3f} ms  p90 {rows[-1][3]:8.3f} ms  "
                  f"{rows[-1][4]:10.0f} frames/s | window/frame via lift {lift_ms:8.3f} ms | "
                  f"FLOPs/push {fpp / 1e6:8.2f} M vs window {wf / 1e6:8.2f} M ({wf / fpp:5.2f}x fewer) "
                  f"[{st.kernels} kernels, {eng.backend.name} engine]{note}")
    print("GPU streaming targets (64 slots GAST-27 <= 100 us/push, 1024 slots VideoPose3D-243 >= 1M frames/s): "
          "not measured: gastrt has no CUDA streaming backend (Stream runs its per-column steps on the CPU).")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
