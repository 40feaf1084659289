"""Streaming on the GPU (Stream over a CUDA engine: backends/cuda CudaStreamColumns, the
executor's stream_in / ring_write / ring_gather ops). The same stream runs twice: on the NumPy
simulator of the executor (tests/cuda/sim_engine.py, everywhere: it checks the lowering, the
ring layout, buckets and the slot table) and on the GPU when there is one. Either way the
concatenated output of every slot must equal the NumPy executor's lift_sequence of the same
sequence (edge padding, causal shift and flip included)."""
from __future__ import annotations

import numpy as np
import pytest

import gastrt
from gastrt.backends import cuda as C
from gastrt.backends.cuda.lowering import lower_stream
from gastrt.errors import GastrtError

from _models import engine_file, rel_err  # noqa: E402
from gastrt_testutil import drive_stream, stream_seqs  # noqa: E402
from sim_engine import SimEngine  # noqa: E402

# against the fp32 NumPy executor on the same (rounded) weights: the GPU keeps activations in the
# engine precision (as test_cuda_engine.py)
MODEL_TOL = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 8e-2}
KEYS = ["gast17", "gast19", "vp3d"]
ON_GPU = gastrt.cuda_available()


@pytest.fixture(scope="module")
def files(module_dir):
    pytest.importorskip("torch")
    d = module_dir
    cache = {}

    def get(key, precision="fp32", causal=False):
        if (key, precision, causal) not in cache:
            cache[(key, precision, causal)] = engine_file(d, key, precision=precision, causal=causal)
        return cache[(key, precision, causal)]

    return get


def _engines(path, precision, where):
    """(engine with a CUDA backend on the simulator or the GPU, NumPy reference engine)."""
    ref = gastrt.load(path, backend="numpy")
    if where == "gpu":
        return gastrt.load(path, device="cuda"), ref
    eng = gastrt.load(path, backend="numpy")
    eng.backend = C.CudaBackend(eng.plans, eng._weights, 0, precision,
                                _engine=SimEngine(0, C.DTYPE_CODE[precision]))
    return eng, ref


WHERE = ["sim", pytest.param("gpu", marks=pytest.mark.skipif(not ON_GPU, reason="needs a CUDA build and a GPU"))]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_stream_matches_lift_sequence(files, where, key, precision):
    eng, ref = _engines(files(key, precision), precision, where)
    rf = eng.receptive_field
    seqs = stream_seqs(eng, [1, rf - 1, rf + 6], seed=len(key))
    st = eng.stream(slots=len(seqs))
    assert st.kernels == "cuda", st.kernels
    res = drive_stream(st, seqs, starts=[2, 0, 1], gaps=[None, None, lambda s: s % 5 == 3])
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, ref.lift_sequence(q)) <= MODEL_TOL[precision]


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("key, causal, flip", [("gast17", True, True), ("vp3d", True, False), ("vp3d", False, True)])
def test_stream_causal_and_flip(files, where, key, causal, flip):
    eng, ref = _engines(files(key, "fp32", causal), "fp32", where)
    seqs = stream_seqs(eng, [eng.receptive_field + 3, 4], seed=7)
    st = eng.stream(slots=2, flip=flip)
    assert st.lookahead == (0 if causal else eng.pad)
    res = drive_stream(st, seqs, starts=[0, 3])
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, ref.lift_sequence(q, flip=flip)) <= MODEL_TOL["fp32"]


def test_rings_survive_buckets_and_graphs_replay(files):
    """Active-slot counts move between buckets 1, 2, 4 and 5 (= all slots): every bucket's program
    finds the rings where the largest left them (the arena is sized once, never regrown, which
    would zero them); every push's body is a graph replay; slots restart after reset."""
    eng, ref = _engines(files("vp3d"), "fp32", "sim")
    st = eng.stream(slots=5)
    sim = st._prog._eng
    arena = sim.arena_bytes()
    seqs = stream_seqs(eng, [3, 9, 14, 20, 26], seed=3)
    res = drive_stream(st, seqs, starts=[0, 1, 2, 3, 4], gaps=[None, lambda s: s % 3 == 0, None, None, None])
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, ref.lift_sequence(q)) <= MODEL_TOL["fp32"]
    assert sim.arena_bytes() == arena
    assert sorted(st._prog._progs) == [1, 2, 4, 5]
    assert sim.runs and all(g for _, _, g in sim.runs)
    st.reset()
    q = stream_seqs(eng, [11], seed=4)[0]
    o = drive_stream(st, [q], starts=[0])[0]
    assert rel_err(o.poses, ref.lift_sequence(q)) <= MODEL_TOL["fp32"]


def test_stream_program_layout(files):
    """The program reads the user's input only in its prologue (stream_in) and writes the output
    only in its epilogue: the rest is one graph body. Ring offsets do not depend on the bucket."""
    eng, _ = _engines(files("gast19"), "fp16", "sim")
    st = eng.stream(slots=3, flip=True)   # 6 virtual slots
    geo = st._prog.geo
    lows = {nb: lower_stream(st.plan, geo, nb, 6, st._prog._wids, 1) for nb in (1, 2, 4, 6)}
    rings = {nb: {k: v for k, v in low.buffers.items() if k.startswith("ring:")} for nb, low in lows.items()}
    assert rings[1] and all(r == rings[1] for r in rings.values())
    for low in lows.values():
        ops = [name for name, _ in C.program_layout().decode_program(low.code)]
        assert ops[0] == "stream_in" and ops[-1] == "layout"
        assert "stream_in" not in ops[1:] and "ring_gather" in ops and "gast_block" in ops


def test_stream_cuda_kernels_option(files):
    cpu = gastrt.load(files("gast17"), backend="numpy")
    with pytest.raises(GastrtError, match="device='cuda'"):
        cpu.stream(slots=1, kernels="cuda")
    eng, ref = _engines(files("gast17"), "fp32", "sim")
    st = eng.stream(slots=1, kernels="numpy")   # the CPU column steps over a CUDA engine's weights
    assert st.kernels == "numpy"
    q = stream_seqs(eng, [12], seed=5)[0]
    o = drive_stream(st, [q], starts=[0])[0]
    assert rel_err(o.poses, ref.lift_sequence(q)) <= MODEL_TOL["fp32"]


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA build and a GPU")
def test_cli_stream_on_gpu(files, monkeypatch, capsys):
    """`gastrt stream --device cuda` writes what the CPU run writes (fp32, same engine)."""
    import io
    import json

    from gastrt.cli import main

    path = files("gast17")
    rng = np.random.default_rng(8)
    lines = []
    for f in range(20):
        people = [{"id": p, "keypoints": (rng.uniform(100, 500, (17, 2))).tolist()} for p in range(1 + f % 3)]
        lines.append(json.dumps({"frame": f, "size": [640, 480], "people": people}))
    outs = {}
    for dev in ("cpu", "cuda"):
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
        assert main(["stream", path, "--device", dev, "--slots", "4"]) == 0
        outs[dev] = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert len(outs["cpu"]) == len(outs["cuda"]) == 20
    for a, b in zip(outs["cpu"], outs["cuda"]):
        assert [p["id"] for p in a["people"]] == [p["id"] for p in b["people"]]
        for pa, pb in zip(a["people"], b["people"]):
            assert rel_err(np.array(pb["pose_3d"]), np.array(pa["pose_3d"])) <= 1e-4


def test_failed_push_leaves_the_slot_unstarted(files, monkeypatch):
    """A push whose GPU run fails (out of memory, a CUDA error) changes nothing: the slot that it
    would have started is still idle, so the next push refills its rings (an active slot over
    unfilled rings would be silently wrong)."""
    eng, ref = _engines(files("vp3d"), "fp32", "sim")
    st = eng.stream(slots=1)
    q = stream_seqs(eng, [30], seed=9)[0]
    drive_stream(st, [q[:5]], starts=[0])
    st.reset(0)
    real = st._prog._eng.run_host
    calls = {"n": 0}

    def flaky(*a):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("gastrt: CUDA error cudaErrorLaunchFailure: simulated")
        return real(*a)

    monkeypatch.setattr(st._prog._eng, "run_host", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        st.push(q[0])
    assert st.state(0) == "idle" and st.frames_pushed(0) == 0
    o = drive_stream(st, [q], starts=[0])[0]
    assert rel_err(o.poses, ref.lift_sequence(q)) <= MODEL_TOL["fp32"]


def test_stream_uses_the_engine_options(files):
    eng, _ = _engines(files("gast17"), "fp16", "sim")
    eng.backend.set_option("gast_fused", 0)
    st = eng.stream(slots=2)
    assert st._prog._eng.get_option("gast_fused") == 0


def test_stream_records_cover_every_row():
    """The stream ops run on all max_n rows of a call, so a record claiming fewer rows is refused
    when the program is created (program.cu's checks; sized with fewer rows, the GPU kernels
    would write past their buffers)."""
    L = C.program_layout()
    jf, max_n = 34, 4
    rows = L.stream_table_cols
    col, table = 0, 1024

    def stream_in(n):
        return np.asarray(L.encode("stream_in", src=L.ref_input, col=col, table=table, n=n, jf=jf), np.int64)

    sim = SimEngine(0, 0)
    sim.create_program(stream_in(max_n), 4096, max_n, jf + rows, 0)
    for n, in_per_n in ((1, jf + rows),                  # fewer rows
                        (max_n, jf + rows + 1)):         # another row stride
        with pytest.raises(AssertionError, match="covers all"):
            sim.create_program(stream_in(n), 4096, max_n, in_per_n, 0)
    ring = L.encode("ring_write", col=col, ring=2048, table=table, n=1, nv=1, g=1, c=2, h=3)
    with pytest.raises(AssertionError, match="covers all"):
        sim.create_program(np.asarray(ring, np.int64), 4096, max_n, jf + rows, 0)
