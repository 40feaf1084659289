"""The Python half of the CUDA backend, verified without a GPU: CudaBackend runs on a NumPy
simulator of the native engine (sim_engine.py) that interprets the program bytecode with the
executor's rules, and must agree with the NumPy executor. Runs everywhere (no skip on GPU-less
machines); needs torch only to make the tiny checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.backends import cuda as C  # noqa: E402
from gastrt.backends.cuda import backend as B, lowering  # noqa: E402
from gastrt.backends.numpy_backend import NumpyBackend  # noqa: E402
from gastrt.errors import GastrtError  # noqa: E402

from _models import TINY, engine_file, keypoints, rel_err  # noqa: E402
from sim_engine import SimEngine  # noqa: E402

# model-level tolerance against the fp32 NumPy executor (the simulator stores activations in the
# engine precision, like the GPU)
MODEL_TOL = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 8e-2}


@pytest.fixture(scope="module")
def files(module_dir):
    d = module_dir
    return {k: {p: engine_file(d, k, precision=p) for p in ("fp32", "fp16", "bf16")} for k in TINY}


def _pair(path, precision):
    eng = gastrt.load(path, backend="numpy")
    sim = SimEngine(0, C.DTYPE_CODE[precision])
    be = C.CudaBackend(eng.plans, eng._weights, 0, precision, _engine=sim)
    return eng, NumpyBackend(eng.plans, eng._weights), be, sim


@pytest.mark.parametrize("key", sorted(TINY))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_backend_matches_numpy(files, key, precision):
    eng, ref, be, sim = _pair(files[key][precision], precision)
    rng = np.random.default_rng(1)
    for pname, plan in eng.plans.items():
        j, rf = plan.in_joints, plan.receptive_field
        for n in (1, 3, 5):  # buckets 1, 4, 8: the IO steps see n, the body the bucket
            x = keypoints(rng, n, rf, j)
            y = be.run(pname, x, "window")
            assert rel_err(y, ref.run(pname, x, "window")) <= MODEL_TOL[precision], (pname, n)
        if "sequence" in plan.modes:
            x = keypoints(rng, 2, rf + 12, j)
            y = be.run(pname, x, "sequence")
            assert rel_err(y, ref.run(pname, x, "sequence")) <= MODEL_TOL[precision], pname
    assert all(g for _, _, g in sim.runs)


def test_engine_api_over_simulator(files):
    """The public Engine calls (lift, lift_sequence, flip, trajectory) with a CUDA backend."""
    eng, _, be, _ = _pair(files["vp3d"]["fp32"], "fp32")
    cpu = gastrt.load(files["vp3d"]["fp32"], backend="numpy")
    eng.backend = be
    rng = np.random.default_rng(2)
    w = keypoints(rng, 6, eng.receptive_field, 17)
    np.testing.assert_allclose(eng.lift(w, flip=True), cpu.lift(w, flip=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eng.lift_trajectory(w), cpu.lift_trajectory(w), rtol=1e-5, atol=1e-6)
    s = keypoints(rng, 1, 40, 17)[0]
    np.testing.assert_allclose(eng.lift_sequence(s), cpu.lift_sequence(s), rtol=1e-5, atol=1e-6)


def test_backend_protocol_over_simulator(files):
    """CudaBackend is a gastrt Backend: capabilities, workspace / device bytes, describe, close."""
    from gastrt.backends.base import Backend

    eng, _, be, sim = _pair(files["gast17"]["fp16"], "fp16")
    assert isinstance(be, Backend)
    caps = be.capabilities
    assert (caps.device_arrays, caps.stream, caps.device, caps.threads) == (True, "cuda", "cuda:0", None)
    assert caps.modes == frozenset({"window", "sequence"})
    ws = be.workspace_bytes("pos", 3, eng.receptive_field, "window")
    assert ws == be.lowered("pos", "window", 4, eng.receptive_field).arena_bytes
    assert be.device_bytes() > sim.arena_bytes() > 0       # weights + arena
    d = be.describe()
    assert d["name"] == "cuda" and d["device_arrays"] and d["precision"] == "fp16"
    assert be.is_device_array(np.zeros(3, np.float32)) is False
    be.close()
    assert not sim.progs
    with pytest.raises(GastrtError, match="closed"):
        be.run("pos", keypoints(np.random.default_rng(0), 1, eng.receptive_field, 17), "window")


def test_rie_convs_are_grouped(files):
    eng = gastrt.load(files["rie3"]["fp32"], backend="numpy")
    plan = eng.plans["pos"]
    steps = lowering.schedule(plan)
    sizes = [len(s) for s in steps if plan.ops[s[0]].kind == "conv"]
    assert max(sizes) >= 5, sizes  # the five branches (+ the global path) per level
    order = [i for s in steps for i in s]
    assert sorted(order) == list(range(len(plan.ops)))
    pos = {i: k for k, i in enumerate(order)}
    produced = {o: i for i, op in enumerate(plan.ops) for o in op.outputs}
    for i, op in enumerate(plan.ops):  # topological
        for name in op.inputs:
            if name in produced:
                assert pos[produced[name]] < pos[i]


def test_chunking_buckets_and_cache(files):
    eng, ref, be, sim = _pair(files["gast17"]["fp32"], "fp32")
    be.max_batch = 4
    rng = np.random.default_rng(3)
    x = keypoints(rng, 10, eng.receptive_field, 17)
    np.testing.assert_allclose(be.run("pos", x, "window"), ref.run("pos", x, "window"), rtol=1e-5, atol=1e-6)
    ns = [n for _, n, _ in sim.runs[-3:]]
    assert ns == [4, 4, 2]
    assert be.bucket(3, "window") == 4 and be.bucket(3, "sequence") == 3
    for t in range(B.PROGRAM_CACHE + 3):  # LRU: old programs are destroyed in the simulator too
        be.run("pos", keypoints(rng, 1, eng.receptive_field + 2 * t, 17), "sequence")
    assert len(be._progs) == B.PROGRAM_CACHE and len(sim.progs) == B.PROGRAM_CACHE


def test_arena_reuse_and_no_aliasing(files):
    """Buffers whose live ranges overlap never overlap in the arena; the arena is smaller than
    the sum of the buffers (they are reused). fp16: the GAST blocks run fused, no scratch."""
    eng = gastrt.load(files["gast19"]["fp16"], backend="numpy")
    sim = SimEngine(0, 1)
    be = C.CudaBackend(eng.plans, eng._weights, 0, "fp16", _engine=sim)
    low = be.lowered("pos", "window", 8, eng.receptive_field)
    plan = eng.plans["pos"]
    step_of = {i: k for k, s in enumerate(low.steps) for i in s}
    live = {}
    for name, (off, shape) in low.buffers.items():
        first = min(step_of[i] for i, op in enumerate(plan.ops) if name in op.outputs)
        last = max([step_of[i] for i, op in enumerate(plan.ops) if name in op.inputs] + [first])
        live[name] = (first, last, off, off + int(np.prod(shape)) * 2)
    names = sorted(live)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            f1, l1, o1, e1 = live[names[a]]
            f2, l2, o2, e2 = live[names[b]]
            if f1 <= l2 and f2 <= l1:
                assert e1 <= o2 or e2 <= o1, (names[a], names[b])
    total = sum(e - o for _, _, o, e in live.values())
    assert low.arena_bytes < total


@pytest.mark.parametrize("fused", [0, 1])
def test_gast_scratch_paths(files, fused):
    """Both GAST paths' planning (scratch or none) lowers and runs; a tiny scratch budget forces
    the multi-kernel path's time chunking (sizes checked by the simulator)."""
    eng, ref, be, sim = _pair(files["gast15"]["fp16"], "fp16")
    be.set_option("gast_fused", fused)
    be.set_option("gast_scratch_budget", 1)
    x = keypoints(np.random.default_rng(4), 3, eng.receptive_field + 6, 15)
    assert rel_err(be.run("pos", x, "sequence"), ref.run("pos", x, "sequence")) <= MODEL_TOL["fp16"]


def test_out_of_memory_names_the_batch(files):
    eng, ref, be, sim = _pair(files["gast17"]["fp32"], "fp32")
    rng = np.random.default_rng(5)
    small = keypoints(rng, 2, eng.receptive_field, 17)
    be.run("pos", small, "window")
    be.set_option("arena_limit", sim.arena_bytes())
    with pytest.raises(GastrtError, match="batch size 64"):
        be.run("pos", keypoints(rng, 64, eng.receptive_field, 17), "window")
    np.testing.assert_allclose(be.run("pos", small, "window"), ref.run("pos", small, "window"), rtol=1e-5, atol=1e-6)


def test_bad_inputs(files):
    eng, _, be, _ = _pair(files["rie1"]["fp32"], "fp32")
    with pytest.raises(GastrtError, match="sequence"):
        be.run("pos", keypoints(np.random.default_rng(0), 1, 20, 17), "sequence")
    with pytest.raises(GastrtError, match="expected input"):
        be.run("pos", np.zeros((2, eng.receptive_field, 16, 2), np.float32), "window")


def test_stream_context_is_a_no_op_off_the_gpu():
    """run_device(stream=...) makes ``stream`` the array library's current stream while it
    converts the input and allocates the output; nothing happens without a stream or for arrays
    that are not CUDA arrays (the GPU side runs in tests/cuda/test_cuda_engine.py)."""
    torch = pytest.importorskip("torch")
    for x, stream in ((np.zeros(3, np.float32), 7), (torch.zeros(3), 7), (torch.zeros(3), None)):
        with C.stream_context(x, stream) as ctx:
            assert ctx is None


def test_run_device_over_simulator(files):
    """CudaBackend.run_device's own logic (otherwise GPU-only): __cuda_array_interface__ input,
    a new CudaArray or ``out=`` output, chunking by pointer offsets past max_batch, sequence
    mode, the CAI stream handed to the executor (None: no stream, then a sync), shape / out
    checks. Host memory stands in for device memory (sim_engine.HostMemoryModule / HostCAI)."""
    from sim_engine import HostCAI, HostMemoryModule

    eng, ref, be, sim = _pair(files["gast17"]["fp32"], "fp32")
    be._mod = HostMemoryModule()
    plan = eng.plans["pos"]
    rf, j = plan.receptive_field, plan.in_joints
    rng = np.random.default_rng(21)
    x = keypoints(rng, 11, rf, j)
    want = ref.run("pos", x, "window")

    y = be.run_device("pos", HostCAI(x), "window")                    # -> a CudaArray
    assert isinstance(y, C.CudaArray) and y.shape == want.shape
    assert rel_err(y.get(), want) <= MODEL_TOL["fp32"]
    assert sim.device_runs[-1][4:] == (0, False) and sim.syncs >= 1    # CAI without a stream: synced
    y_ptr = y.ptr
    del y
    assert y_ptr not in be._mod.allocs                                 # CudaArray frees its memory

    be.max_batch = 4                                                   # 11 rows -> chunks 4 + 4 + 3
    out = HostCAI(np.full(want.shape, np.nan, np.float32), stream=7)
    before = len(sim.device_runs)
    r = be.run_device("pos", HostCAI(x, stream=7), "window", out=out)
    assert r is out and rel_err(out.a, want) <= MODEL_TOL["fp32"]
    runs = sim.device_runs[before:]
    assert [n for _, n, *_ in runs] == [4, 4, 3]
    in_row, out_row = rf * j * 2 * 4, int(np.prod(want.shape[1:])) * 4
    x0, y0 = runs[0][2], runs[0][3]
    assert [(xp - x0, yp - y0) for _, _, xp, yp, _, _ in runs] == [(0, 0), (4 * in_row, 4 * out_row),
                                                                   (8 * in_row, 8 * out_row)]
    assert all(r_[4:] == (7, True) for r_ in runs)                     # ordered on the CAI stream

    s = keypoints(rng, 2, rf + 9, j)                                   # sequence mode
    got = be.run_device("pos", HostCAI(s), "sequence", stream=3)
    assert rel_err(got.get(), ref.run("pos", s, "sequence")) <= MODEL_TOL["fp32"]
    assert sim.device_runs[-1][4:] == (3, True)

    with pytest.raises(GastrtError, match="out: expected shape"):
        be.run_device("pos", HostCAI(x), "window", out=HostCAI(np.zeros((11, 3), np.float32)))
    with pytest.raises(GastrtError, match="expected input"):
        be.run_device("pos", HostCAI(x[:, :, :5]), "window")
    with pytest.raises(GastrtError, match="float32"):
        be.run_device("pos", type("F64", (), {"__cuda_array_interface__": dict(
            HostCAI(x).__cuda_array_interface__, typestr="<f8")})(), "window")


def test_program_layout_encodes_by_name():
    """The record layout comes from the extension (program_records.h, every build): each record's
    fields cover its words in order; records encode / decode by field name, refusing missing or
    unknown fields and over-long arrays."""
    L = C.program_layout()
    assert {"layout", "conv", "gast_block", "rie_encode", "concat", "output_assemble", "stream_in", "ring_write",
            "ring_gather"} <= set(L.records)
    for name, rec in L.records.items():
        at = 0
        for off, cnt in rec["fields"].values():
            assert off == at and cnt >= 1, name
            at += cnt
        assert at == rec["nfields"], name
        assert L.name_of(rec["opcode"]) == name
    code = L.encode("ring_gather", ring=0, dst=256, table=512, n=2, nv=4, g=1, c=8, h=5, k=2, lag=[4, 2])
    assert code[:2] == [L.opcode("ring_gather"), L.records["ring_gather"]["nfields"]]
    (name, [f]), = L.decode_program(code)
    assert name == "ring_gather" and f["lag"][:3] == [4, 2, 0] and f["h"] == 5
    conv = dict(x=0, w=1, b=2, res=L.ref_none, y=256, n_seq=1, t_in=3, t_out=1, t_res=0, t_ypitch=1, ci=2, co=4,
                k=3, stride=1, dilation=1, res_offset=0, res_stride=1, ldy=4, act=1)
    (name, convs), = L.decode_program(L.encode_group("conv", [conv, dict(conv, y=512)]))
    assert name == "conv" and [c["y"] for c in convs] == [256, 512] and convs[0] == conv
    with pytest.raises(GastrtError, match="missing fields"):
        L.encode("stream_in", src=L.ref_input, col=0, table=256, n=1)
    with pytest.raises(GastrtError, match="unknown"):
        L.encode("stream_in", src=L.ref_input, col=0, table=256, n=1, jf=2, rows=1)
    with pytest.raises(GastrtError, match="at most"):
        L.encode("ring_gather", ring=0, dst=256, table=512, n=2, nv=4, g=1, c=8, h=5, k=2, lag=[1] * 17)
    with pytest.raises(GastrtError, match="truncated"):
        L.decode_program(code[:-1])
