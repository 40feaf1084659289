"""A small run of every CUDA kernel family for compute-sanitizer (memcheck / racecheck):
one tiny engine per family in fp32 and fp16, window and sequence mode, eager and graph,
both GAST paths, a grouped RIE launch, streaming pushes, device-array I/O. Not collected by pytest (no test_
prefix); run by benchmarks/gpu_check.sh:

    compute-sanitizer --tool memcheck --error-exitcode 3 python tests/cuda/sanitizer_smoke.py
"""
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import conftest  # noqa: E402,F401  (gastrt import path)

import gastrt  # noqa: E402
from _models import engine_file, keypoints, rel_err  # noqa: E402


def main():
    if not gastrt.cuda_available():
        print("sanitizer_smoke: no CUDA GPU")
        return 2
    d = tempfile.mkdtemp(prefix="gastrt-san-")
    rng = np.random.default_rng(0)
    worst = 0.0
    for key in ("gast17", "vp3d", "rie3"):
        for precision in ("fp32", "fp16"):
            path = engine_file(d, key, precision=precision)
            gpu = gastrt.load(path, device="cuda")
            cpu = gastrt.load(path, backend="numpy")
            modes = [(1,), (3,)]
            for fused in ((0, 1) if key.startswith("gast") and precision == "fp16" else (-1,)):
                gpu.backend.set_option("gast_fused", fused)
                for graphs in (False, True):
                    gpu.backend.use_graphs = graphs
                    for (n,) in modes:
                        w = keypoints(rng, n, gpu.receptive_field, gpu.num_joints)
                        worst = max(worst, rel_err(gpu.lift(w), cpu.lift(w)))
                    s = keypoints(rng, 1, 30, gpu.num_joints)[0]
                    worst = max(worst, rel_err(gpu.lift_sequence(s), cpu.lift_sequence(s)))
            if key != "rie3":  # streaming: stream_in / ring_write / ring_gather + per-column programs
                st = gpu.stream(slots=3)
                q = keypoints(rng, 1, gpu.receptive_field + 4, gpu.num_joints)[0]
                for f in range(q.shape[0]):
                    st.push(np.stack([q[f]] * 3), present=np.array([True, f % 2 == 0, f > 2]))
                st.flush()
            print(f"{key} {precision}: ok", flush=True)
    # the cuBLASLt tactic forced wherever it is correct (its matmuls, per-tap accumulation, bias copy)
    from gastrt.backends.cuda import CudaBackend
    for key in ("gast17", "vp3d"):
        path = engine_file(d, key, precision="fp16")
        cpu = gastrt.load(path, backend="numpy")
        be = CudaBackend(cpu.plans, cpu.weights, 0, "fp16", gemm_tactic="cublaslt")
        w = keypoints(rng, 3, cpu.receptive_field, cpu.num_joints)
        worst = max(worst, rel_err(be.run("pos", w, "window")[:, 0], cpu.lift(w)))
        s = keypoints(rng, 2, cpu.receptive_field + 9, cpu.num_joints)
        be.run("pos", s, "sequence")
        lt = sum(t["chosen"] == "cublaslt" for t in be.gemm_tactics())
        print(f"{key} fp16 cublaslt tactic ({be.cublaslt_status}): {lt} layer shapes on cuBLASLt: ok", flush=True)
        be.close()
    try:
        import torch
        if torch.cuda.is_available():
            x = torch.from_numpy(keypoints(rng, 2, gpu.receptive_field, 17)).cuda()
            gpu.backend.run_device("pos", x, "window")
            torch.cuda.synchronize()
            print("device arrays: ok")
    except ImportError:
        pass
    print(f"sanitizer_smoke: worst rel err {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
