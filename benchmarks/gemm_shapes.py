"""Per-shape GEMM rates, one thread: ONNX Runtime (MLAS, a MatMul-only graph with the weight
as an initializer, i.e. pre-packed) vs gastrt's conv (k = 1: its GEMM path choice, weights read
in place) and plain OpenBLAS (gastrt's copy), interleaved round by
round (gastrt.bench.measure.interleaved); medians. The shapes are the products behind the #17
cells (RIE-243 and VideoPose3D-243 layers). The engine's pre-packed small-M path is not here:
``_native.conv(small_panels=True)`` packs the weights inside every call, which is not what the
engine times (it packs once per layer).

    python benchmarks/gemm_shapes.py
"""
from __future__ import annotations

import os
import sys

import numpy as np

try:
    import gastrt  # noqa: F401
except ImportError:  # a source checkout
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from gastrt import _native  # noqa: E402
from gastrt.bench.measure import interleaved  # noqa: E402

SHAPES = [(5184, 90, 256), (1728, 768, 256), (1728, 256, 256), (576, 768, 256), (192, 768, 256),
          (64, 1024, 1024), (64, 2048, 1024), (27, 3072, 1024), (9, 3072, 1024), (1, 3072, 1024)]


def main() -> int:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    _native.sgemm(np.zeros((2048, 8), np.float32), np.zeros((8, 512), np.float32), threads=1)
    print("M x K x N: GFLOP/s on one thread")
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = np.zeros(n, np.float32)
        g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              initializer=[numpy_helper.from_array(w, "w")])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x4 = x[None, None]
        t = interleaved({
            "ORT": lambda: sess.run(None, {"x": x}),
            "gastrt conv": lambda: _native.conv(x4, w, b, k=1, stride=1, threads=1),
            "OpenBLAS": lambda: _native.sgemm(x, w, threads=1)}, min_rounds=5, max_rounds=9)
        fl = 2 * m * k * n
        print(f"{m:5d} x {k:5d} x {n:5d}  " + "  ".join(f"{name} {fl / v.median / 1e9:5.1f}"
                                                       for name, v in t.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
