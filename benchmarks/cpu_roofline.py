"""This machine's CPU limits, for the "how far from the roofline" column of RESULTS.md.

    python benchmarks/cpu_roofline.py [--threads N]

* fp32 GEMM peak: C = A @ B, 2048 x 2048 x 2048, through the native runtime's own BLAS and
  thread pool (``gastrt._native.sgemm``), 1 thread and N threads.
* DRAM read bandwidth: a 512 MB float32 array summed by NumPy (vectorised, one thread per
  slice; NumPy releases the GIL), 1 and N threads: the rate weight streaming can reach (batch-1
  windows read every weight once per call).
Each is the median of its rounds (gastrt.bench.measure.interleaved, one call per round).
* bf16 dot-product GEMM (where the CPU has AVX512-BF16 / AMX): one thread of the kernel the
  runtime picked (``gastrt._native.gemm_bf16_dot``), net of its per-call weight packing.
* Then each batch-1 window model's floor: max(FLOPs / GEMM peak, weight bytes / bandwidth).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

import numpy as np

try:
    import gastrt  # noqa: F401
except ImportError:  # a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

import gastrt  # noqa: E402
from gastrt import _native  # noqa: E402
from gastrt.bench.measure import interleaved  # noqa: E402


def median_s(fn, rounds: int) -> float:
    """Median seconds of one call of ``fn`` (after a warm-up call)."""
    return interleaved({"f": fn}, min_rounds=rounds, max_rounds=rounds, block_s=None)["f"].median


def gemm_peak(threads: int, n: int = 2048) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return 2 * n ** 3 / median_s(lambda: _native.sgemm(a, b, out=out, threads=threads), 7)


def bf16_gemm_rate() -> float | None:
    """FLOP/s of one thread of the bf16 dot-product GEMM this CPU runs (None where it has none):
    1728 x 3072 x 1024 (VideoPose3D-243's largest conv at batch 64), minus a 1-row call with the
    same weights, which times the binding's per-call weight packing."""
    if gastrt.build_config().get("bf16_dot") not in ("amx", "avx512bf16"):
        return None
    m, k, n = 1728, 3072, 1024
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = (rng.standard_normal((k, n), dtype=np.float32).view(np.uint32) & 0xFFFF0000).view(np.float32)
    full = median_s(lambda: _native.gemm_bf16_dot(a, w, kernel="auto"), 5)
    one = median_s(lambda: _native.gemm_bf16_dot(a[:1], w, kernel="auto"), 5)
    return 2 * m * k * n / (full - one)


def read_bandwidth(threads: int, nbytes: int = 512 << 20) -> float:
    x = np.ones(nbytes // 4, np.float32)
    parts = np.array_split(x, threads)

    def run():
        if threads == 1:
            x.sum()
            return
        ts = [threading.Thread(target=p.sum) for p in parts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    return nbytes / median_s(run, 5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    from gastrt.bench.presets import preset_engine

    peak = {t: gemm_peak(t) for t in sorted({1, args.threads})}
    bw = {t: read_bandwidth(t) for t in sorted({1, args.threads})}
    for t in peak:
        print(f"threads {t}: sgemm 2048^3 {peak[t] / 1e9:.1f} GFLOP/s; DRAM read {bw[t] / 1e9:.1f} GB/s")
    bf16 = bf16_gemm_rate()
    if bf16 is not None:
        print(f"threads 1: bf16 dot-product GEMM ({gastrt.build_config()['bf16_dot']}) 1728x3072x1024 "
              f"{bf16 / 1e9:.1f} GFLOP/s (x{args.threads} threads: {args.threads * bf16 / 1e9:.1f})")
    t = args.threads
    print(f"batch-1 window floors at {t} threads: max(FLOPs / GEMM peak, fp32 weight bytes / read bandwidth)")
    for name in ("gast-27", "gast-243", "videopose3d-243", "rie-243"):
        eng = gastrt.load(preset_engine(name), threads=t)
        flops = float(eng.flops_per_frame("window"))
        wbytes = 4 * sum(int(np.prod(w.shape)) for w in eng.weights.values())
        floor = max(flops / peak[t], wbytes / bw[t])
        print(f"  {name:16s} {flops / 1e6:7.0f} MFLOP, {wbytes / 1e6:6.1f} MB of weights: "
              f"compute {1e3 * flops / peak[t]:.2f} ms, weights {1e3 * wbytes / bw[t]:.2f} ms "
              f"-> at most {1 / floor:.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
