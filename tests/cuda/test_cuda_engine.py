"""Whole engines on the GPU: every family and precision against the NumPy executor, CUDA graph
replay == eager launches, device arrays in / out (torch, CuPy, CAI, DLPack, out=), stream
ordering, out-of-memory and bad-device errors, concurrent calls."""
from __future__ import annotations


import numpy as np
import pytest

import gastrt
from gastrt.errors import GastrtError, OutOfMemoryError

pytestmark = pytest.mark.skipif(not gastrt.cuda_available(), reason="needs a CUDA build of gastrt and a GPU")

from _models import TINY, engine_file, keypoints, rel_err  # noqa: E402
from gastrt_testutil import run_in_threads  # noqa: E402

# model-level tolerance against the fp32 NumPy executor on the same (rounded) weights: the GPU
# keeps activations in the engine precision, so errors add up over the layers.
MODEL_TOL = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 8e-2}


@pytest.fixture(scope="module")
def files(module_dir):
    pytest.importorskip("torch")
    d = module_dir
    return {k: {p: engine_file(d, k, precision=p) for p in ("fp32", "fp16", "bf16")} for k in TINY}


def _pair(path):
    return gastrt.load(path, device="cuda"), gastrt.load(path, backend="numpy")


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_engine_matches_numpy(files, key, precision):
    gpu, cpu = _pair(files[key][precision])
    assert gpu.backend.name == "cuda"
    rng = np.random.default_rng(0)
    for n in (1, 3, 37):
        w = keypoints(rng, n, gpu.receptive_field, gpu.num_joints)
        assert rel_err(gpu.lift(w), cpu.lift(w)) <= MODEL_TOL[precision], n
    s = keypoints(rng, 1, 61, gpu.num_joints)[0]
    assert rel_err(gpu.lift_sequence(s), cpu.lift_sequence(s)) <= MODEL_TOL[precision]
    if gpu.joints_left:
        w = keypoints(rng, 5, gpu.receptive_field, gpu.num_joints)
        assert rel_err(gpu.lift(w, flip=True), cpu.lift(w, flip=True)) <= MODEL_TOL[precision]
    if gpu.has_trajectory:
        w = keypoints(rng, 4, gpu.receptive_field, gpu.num_joints)
        assert rel_err(gpu.lift_trajectory(w), cpu.lift_trajectory(w)) <= MODEL_TOL[precision]


@pytest.mark.parametrize("key", ["gast17", "vp3d", "rie3"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_replay_equals_eager(files, key, precision):
    gpu, _ = _pair(files[key][precision])
    be = gpu.backend
    rng = np.random.default_rng(1)
    x = keypoints(rng, 5, gpu.receptive_field, gpu.num_joints)
    be.use_graphs = False
    eager = be.run("pos", x, "window")
    be.use_graphs = True
    first = be.run("pos", x, "window")   # captures
    again = be.run("pos", x, "window")   # replays
    x2 = keypoints(rng, 7, gpu.receptive_field, gpu.num_joints)  # same bucket (8), new data
    be.use_graphs = False
    eager2 = be.run("pos", x2, "window")
    be.use_graphs = True
    replay2 = be.run("pos", x2, "window")
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(again, eager)
    np.testing.assert_array_equal(replay2, eager2)


def test_gast_paths_agree(files):
    """fp16 GAST: fused blocks vs the multi-kernel path, whole model."""
    gpu, cpu = _pair(files["gast17"]["fp16"])
    w = keypoints(np.random.default_rng(2), 9, gpu.receptive_field, 17)
    gpu.backend.set_option("gast_fused", 1)
    assert "fused" in gpu.backend.describe_program("pos", "window", 9)
    a = gpu.lift(w)
    gpu.backend.set_option("gast_fused", 0)
    assert "multi-kernel" in gpu.backend.describe_program("pos", "window", 9)
    b = gpu.lift(w)
    assert rel_err(a, cpu.lift(w)) <= MODEL_TOL["fp16"]
    assert rel_err(b, cpu.lift(w)) <= MODEL_TOL["fp16"]


# ---- device arrays -------------------------------------------------------------------------------
def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    return torch


def test_torch_in_out(files):
    torch = _torch_cuda()
    gpu, _ = _pair(files["vp3d"]["fp16"])
    x = keypoints(np.random.default_rng(3), 6, gpu.receptive_field, 17)
    want = gpu.backend.run("pos", x, "window")
    xt = torch.from_numpy(x).cuda()
    y = gpu.backend.run_device("pos", xt, "window")
    assert isinstance(y, torch.Tensor) and y.is_cuda and tuple(y.shape) == want.shape
    np.testing.assert_array_equal(y.cpu().numpy(), want)
    out = torch.full(want.shape, float("nan"), device="cuda")
    r = gpu.backend.run_device("pos", xt, "window", out=out)
    assert r is out
    np.testing.assert_array_equal(out.cpu().numpy(), want)
    # stream ordering: produce x on a side stream, consume on it, no explicit sync in between
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        xs = torch.from_numpy(x).cuda(non_blocking=True) * 1.0
        ys = gpu.backend.run_device("pos", xs, "window")
        z = ys * 2.0
    s.synchronize()
    np.testing.assert_array_equal(z.cpu().numpy(), want * 2)
    # non-contiguous / float64 input: converted on the device
    x64 = torch.from_numpy(x).double().cuda()
    np.testing.assert_allclose(gpu.backend.run_device("pos", x64, "window").cpu().numpy(), want)


def test_dlpack_only_producer(files):
    torch = _torch_cuda()
    gpu, _ = _pair(files["gast17"]["fp32"])
    x = keypoints(np.random.default_rng(4), 2, gpu.receptive_field, 17)

    class OnlyDLPack:  # e.g. a JAX array: no __cuda_array_interface__
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, stream=None):
            return self.t.__dlpack__(stream=stream) if stream is not None else self.t.__dlpack__()

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    y = gpu.backend.run_device("pos", OnlyDLPack(torch.from_numpy(x).cuda()), "window")
    np.testing.assert_array_equal(y.cpu().numpy(), gpu.backend.run("pos", x, "window"))
    # and back: the output goes out through DLPack with no copy
    back = torch.from_dlpack(y)
    assert back.data_ptr() == y.data_ptr()


def test_cupy_in_out(files):
    cupy = pytest.importorskip("cupy")
    gpu, _ = _pair(files["rie3"]["fp16"])
    x = keypoints(np.random.default_rng(5), 3, gpu.receptive_field, 17)
    want = gpu.backend.run("pos", x, "window")
    y = gpu.backend.run_device("pos", cupy.asarray(x), "window")
    assert isinstance(y, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(y), want)
    out = cupy.empty(want.shape, cupy.float32)
    gpu.backend.run_device("pos", cupy.asarray(x), "window", out=out)
    np.testing.assert_array_equal(cupy.asnumpy(out), want)


def test_cai_only_arrays(files):
    """Neither torch nor CuPy needed: gastrt's own CudaArray in and out."""
    from gastrt.backends import native_module
    from gastrt.backends.cuda import CudaArray
    gpu, _ = _pair(files["vp3d"]["fp32"])
    x = keypoints(np.random.default_rng(6), 4, gpu.receptive_field, 17)
    want = gpu.backend.run("pos", x, "window")
    xd = CudaArray.from_numpy(x, gpu.backend.device_index, native_module())
    y = gpu.backend.run_device("pos", xd, "window")
    np.testing.assert_array_equal(y.get(), want)
    with pytest.raises(GastrtError, match="out: expected shape"):
        gpu.backend.run_device("pos", xd, "window", out=CudaArray((1, 2), 0, native_module()))


def test_run_accepts_device_array_and_returns_numpy(files):
    torch = _torch_cuda()
    gpu, _ = _pair(files["gast17"]["fp16"])
    x = keypoints(np.random.default_rng(7), 2, gpu.receptive_field, 17)
    y = gpu.backend.run("pos", torch.from_numpy(x).cuda(), "window")
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(y, gpu.backend.run("pos", x, "window"))


# ---- errors ---------------------------------------------------------------------------------------
def test_out_of_memory_then_usable(files):
    gpu, cpu = _pair(files["gast17"]["fp16"])
    be = gpu.backend
    x = keypoints(np.random.default_rng(8), 3, gpu.receptive_field, 17)
    ok = gpu.lift(x)
    with pytest.raises(OutOfMemoryError, match="out of memory"):
        be._eng.reserve_arena(1 << 50)  # a real cudaMalloc failure (1 PiB)
    np.testing.assert_array_equal(gpu.lift(x), ok)
    be.set_option("arena_limit", be._eng.arena_bytes())
    big = keypoints(np.random.default_rng(9), 4096, gpu.receptive_field, 17)
    with pytest.raises(GastrtError, match="batch size 4096"):
        gpu.lift(big)
    np.testing.assert_array_equal(gpu.lift(x), ok)
    be.set_option("arena_limit", -1)
    assert rel_err(gpu.lift(big[:100]), cpu.lift(big[:100])) <= MODEL_TOL["fp16"]


def test_bad_device(files):
    from gastrt.backends import native_module
    n = native_module().cuda_device_count()
    with pytest.raises(GastrtError, match="does not exist"):
        gastrt.load(files["gast17"]["fp32"], device=f"cuda:{n}")
    with pytest.raises(GastrtError):
        gastrt.load(files["gast17"]["fp32"], device="cuda:x")


def test_device_selection(files):
    gpu = gastrt.load(files["gast17"]["fp32"], device="cuda:0")
    assert gpu.device == "cuda:0" and gpu.backend.device_index == 0
    assert gpu.backend.device_name


def test_concurrent_calls(files):
    gpu, cpu = _pair(files["gast17"]["fp32"])
    rng = np.random.default_rng(10)
    xs = [keypoints(rng, 1 + i, gpu.receptive_field, 17) for i in range(6)]
    want = [cpu.lift(x) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(5):
            got[i] = gpu.lift(xs[i])

    errors = run_in_threads(work, len(xs))
    assert not errors, errors
    for g, w in zip(got, want):
        assert rel_err(g, w) <= MODEL_TOL["fp32"]


def test_large_window_batch_chunks(files):
    gpu, cpu = _pair(files["vp3d"]["fp16"])
    gpu.backend.max_batch = 1024
    x = keypoints(np.random.default_rng(11), 2500, gpu.receptive_field, 17)
    assert rel_err(gpu.lift(x), cpu.lift(x)) <= MODEL_TOL["fp16"]


def test_explicit_stream_with_conversion(files):
    """run_device(stream=s) with a float64 input: the conversion copy and the output are made on
    s (stream_context), so work queued on s alone sees them finished."""
    torch = _torch_cuda()
    gpu, _ = _pair(files["gast17"]["fp32"])
    x = keypoints(np.random.default_rng(12), 5, gpu.receptive_field, 17)
    want = gpu.backend.run("pos", x, "window")
    s = torch.cuda.Stream()
    x64 = torch.from_numpy(x).double().cuda()
    torch.cuda.synchronize()
    y = gpu.backend.run_device("pos", x64, "window", stream=s.cuda_stream)
    with torch.cuda.stream(s):
        z = y * 2.0
    s.synchronize()
    np.testing.assert_allclose(z.cpu().numpy(), want * 2, rtol=1e-6, atol=1e-7)


def test_run_device_refuses_a_capturing_stream(files):
    torch = _torch_cuda()
    gpu, _ = _pair(files["gast17"]["fp32"])
    x = torch.from_numpy(keypoints(np.random.default_rng(13), 2, gpu.receptive_field, 17)).cuda()
    gpu.backend.run_device("pos", x, "window")          # warm: the program exists
    g = torch.cuda.CUDAGraph()
    with pytest.raises(Exception, match="capturing a CUDA graph"):
        with torch.cuda.graph(g):
            gpu.backend.run_device("pos", x, "window")
    torch.cuda.synchronize()
    assert gpu.backend.run_device("pos", x, "window").shape[0] == 2   # still usable


def test_raw_engine_is_thread_safe(files):
    """The native engine locks every entry point (the bindings release the GIL): concurrent
    run / describe / option calls on one engine without the backend's lock."""
    gpu, cpu = _pair(files["gast17"]["fp32"])
    be = gpu.backend
    rng = np.random.default_rng(14)
    xs = [keypoints(rng, 3, gpu.receptive_field, 17) for _ in range(4)]
    want = [cpu.backend.run("pos", x, "window") for x in xs]
    prog = be.program("pos", "window", be.bucket(3, "window"), gpu.receptive_field)
    out = [None] * len(xs)

    def work(i):
        for _ in range(10):
            y = np.empty((3,) + prog.low.out_tail, np.float32)
            be._eng.run_host(prog.id, xs[i], y, 3, True)
            be._eng.describe_program(prog.id)
            out[i] = y

    errors = run_in_threads(work, len(xs))
    assert not errors, errors
    for got, w in zip(out, want):
        assert rel_err(got, w) <= MODEL_TOL["fp32"]
