"""Streaming inference (gastrt.stream): exactness against lift_sequence for every family, causal
or not, any length and start time, flip; FLOP accounting; bad input; the `gastrt stream` CLI."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gastrt_testutil import drive_stream as _drive
from gastrt_testutil import rel_err
from gastrt_testutil import stream_seqs as _seqs

torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.errors import GastrtError  # noqa: E402
from gastrt.plan import plan_flops  # noqa: E402
from gastrt.reference import factory  # noqa: E402
from gastrt.stream import Stream, StreamOutput  # noqa: E402

TOL = 1e-5
CONFIGS = {
    "gast33": ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16}),
    "gast333": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 8}),
    "vp": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                           "filter_widths": [3, 3, 3], "channels": 32, "trajectory": False}),
    # RIE's FC blocks are 1024 wide whatever the config: stage 1 has the fewest
    "rie": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 8, "stage": 1}),
}


@pytest.fixture(scope="module")
def engines(module_dir):
    """name or name + '_c' (causal) -> Engine (numpy backend: the reference arithmetic; RIE, which
    streams through engine.lift windows, on the default backend: it is the slow one)."""
    d = module_dir
    cache, paths = {}, {}

    def get(name: str, backend: str | None = "numpy"):
        causal = name.endswith("_c")
        base = name[:-2] if causal else name
        if name not in paths:
            ck = d / f"{base}.bin"
            if not ck.exists():
                fam, cfg = CONFIGS[base] if base in CONFIGS else factory.PRESETS[base]
                # the original checkpoint layout (model_pos = random_state_dict); the optimizer
                # state make_checkpoint adds is irrelevant here and slow to produce
                torch.save({"epoch": 1, "model_pos": factory.random_state_dict(fam, cfg, seed=3)}, str(ck))
            paths[name] = gastrt.build(str(ck), str(d / f"{name}.gastrt"), causal=causal)
        if base == "rie" and backend == "numpy":
            backend = None
        key = (name, backend)
        if key not in cache:
            cache[key] = gastrt.load(paths[name], backend=backend)
        return cache[key]

    return get


_EXACT = [(name, causal, flip) for name in ("gast33", "gast333", "vp") for causal in (False, True)
          for flip in (False, True)] + [("rie", False, False), ("rie", True, True)]  # RIE is slow: 2 of 4


@pytest.mark.parametrize("name, causal, flip", _EXACT,
                         ids=[f"{n}-{'causal' if c else 'sym'}-{'flip' if f else 'plain'}" for n, c, f in _EXACT])
def test_exact_vs_lift_sequence(engines, name, causal, flip):
    eng = engines(name + ("_c" if causal else ""))
    rf = eng.receptive_field
    lengths = [1, 2, rf - 1, rf + 4] + ([2 * rf + 3] if name != "rie" else [])
    seqs = _seqs(eng, lengths, seed=len(name) + causal)
    stream = eng.stream(slots=len(seqs), flip=flip)
    assert stream.lookahead == (0 if causal else eng.pad)
    assert stream.windowed == (name == "rie")
    res = _drive(stream, seqs, starts=[0, 3, 1, 5, 2][:len(seqs)])
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, eng.lift_sequence(q, flip=flip)) < TOL
        assert not o.filled.any()
    assert all(stream.state(i) == "flushed" for i in range(len(seqs)))


@pytest.mark.parametrize("name", ["gast33", "vp_c", "rie"])
def test_slots_out_of_phase(engines, name):
    """Slots that skip pushes (present=False) do not advance; several start mid-stream."""
    eng = engines(name)
    seqs = _seqs(eng, [eng.receptive_field + 6, 11, 3], seed=7)
    gaps = [lambda s: False, lambda s: s % 2 == 1, lambda s: s % 3 != 0]
    res = _drive(eng.stream(slots=4), seqs, starts=[2, 0, 4], gaps=gaps)
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, eng.lift_sequence(q)) < TOL


@pytest.mark.parametrize("name", ["gast33", "vp", "vp_c"])
def test_one_frame_per_push_and_lag(engines, name):
    eng = engines(name)
    (q,) = _seqs(eng, [eng.receptive_field + 3], seed=1)
    ref = eng.lift_sequence(q)
    st = eng.stream()                         # one slot: a single (J, 2) frame is accepted
    la = st.lookahead
    for f in range(len(q)):
        out = st.push(q[f])
        if f < la:
            assert len(out) == 0
        else:                                 # the frame `lookahead` back became final
            assert len(out) == 1 and out.frames[0] == f - la and out.slots[0] == 0
            assert rel_err(out.poses[0], ref[f - la]) < TOL
        assert st.frames_pushed(0) == f + 1
    rest = st.flush(0)
    assert list(rest.frames) == list(range(len(q) - la, len(q)))
    if la:
        assert rel_err(rest.poses, ref[len(q) - la:]) < TOL
    else:
        assert len(rest) == 0
    st.reset(0)
    out = st.push(q[0])
    out = out if len(out) else st.flush(0)
    items = list(out)                         # iteration yields StreamPose(slot, frame, pose, filled)
    assert len(items) == 1 and items[0].slot == 0 and items[0].frame == 0 and items[0].filled is False
    assert items[0].pose.shape == (eng.num_joints_out, 3) and out.poses.dtype == np.float32


def test_reset_and_restart(engines):
    eng = engines("gast33")
    a, b = _seqs(eng, [12, 5], seed=5)
    st = eng.stream(slots=2)
    for f in range(6):                        # a partial sequence, then thrown away
        st.push(np.stack([a[f], b[0]]), np.array([True, False]))
    st.reset(0)
    assert st.state(0) == "idle" and st.frames_pushed(0) == 0
    outs = [st.push(np.stack([b[f], a[0]]), np.array([True, False])) for f in range(len(b))]
    outs.append(st.flush(0))
    o = StreamOutput.concat(outs, 17)
    assert rel_err(o.poses, eng.lift_sequence(b)) < TOL
    with pytest.raises(GastrtError, match="flushed"):
        st.push(np.stack([a[0], a[0]]), np.array([True, False]))
    st.reset()                                # all slots
    outs = [st.push(np.stack([a[f], a[f]])) for f in range(len(a))] + [st.flush()]
    o = StreamOutput.concat(outs, 17)
    for s in range(2):
        assert rel_err(o.for_slot(s).poses, eng.lift_sequence(a)) < TOL
    assert len(st.flush(1)) == 0              # flushing a flushed / idle slot returns nothing


@pytest.mark.parametrize("name, minimum", [("videopose3d-243", 8.0), ("gast-27", 1.6)])
def test_flops_per_push(engines, name, minimum):
    eng = engines(name)
    plan = eng.plans["pos"]
    wshape = lambda n: eng._weights[n].shape  # noqa: E731
    st = eng.stream(slots=2)
    # one pushed frame costs exactly one column of the full-sequence model ...
    shp = (1, 40 + plan.receptive_field - 1, plan.in_joints, 2)
    per_col = plan_flops(plan, shp[:1] + (shp[1] + 1,) + shp[2:], wshape, "sequence") - \
        plan_flops(plan, shp, wshape, "sequence")
    assert st.flops_per_push() == per_col
    assert st.window_flops() == plan_flops(plan, (1, plan.receptive_field, plan.in_joints, 2), wshape, "window")
    # ... counted as it runs
    x = np.zeros((2, plan.in_joints, 2), np.float32)
    for _ in range(3):
        st.push(x)
    st.push(x, np.array([True, False]))
    assert st.columns == 7 and st.flops == 7 * per_col
    assert st.window_flops() / st.flops_per_push() >= minimum
    assert eng.flops_per_frame("window") / st.flops_per_push() >= minimum
    stf = eng.stream(slots=1, flip=True)
    assert stf.flops_per_push() == 2 * per_col
    stf.push(x[:1])
    assert stf.flops == 2 * per_col


def test_rie_flops_are_windows(engines):
    eng = engines("rie")
    st = eng.stream(slots=3)
    assert st.windowed and st.flops_per_push() == st.window_flops()
    st.push(np.zeros((3, 17, 2), np.float32))
    assert st.flops == 3 * st.window_flops()


def test_nan_keypoints_are_held(engines):
    eng = engines("vp")
    (q,) = _seqs(eng, [eng.receptive_field + 5], seed=9)
    bad = q.copy()
    bad[4, 3] = np.nan
    bad[5, 3, 0] = np.inf
    bad[9, :] = np.nan
    held = bad.copy()
    for f in range(1, len(q)):
        m = ~np.isfinite(held[f]).all(axis=-1)
        held[f][m] = held[f - 1][m]
    st = eng.stream(slots=1)
    outs = [st.push(bad[f:f + 1]) for f in range(len(q))] + [st.flush()]
    o = StreamOutput.concat(outs, 17)
    assert rel_err(o.poses, eng.lift_sequence(held)) < TOL
    assert np.flatnonzero(o.filled).tolist() == [4, 5, 9]
    # the caller can flag frames it filled itself
    st.reset()
    fl = np.array([True])
    o = st.push(q[:1], filled=fl)
    o = StreamOutput.concat([o] + [st.push(q[f:f + 1]) for f in range(1, 20)] + [st.flush()], 17)
    assert o.filled[0] and not o.filled[1:].any()


def test_bad_input(engines):
    eng = engines("gast33")
    st = eng.stream(slots=2)
    x = np.zeros((2, 17, 2), np.float32)
    with pytest.raises(GastrtError, match=r"expected shape \(2, 17, 2\)"):
        st.push(np.zeros((2, 16, 2), np.float32))          # wrong joint count
    with pytest.raises(GastrtError, match=r"expected shape"):
        st.push(np.zeros((3, 17, 2), np.float32))          # more persons than slots
    with pytest.raises(GastrtError, match="floating-point"):
        st.push(np.zeros((2, 17, 2), np.int32))
    with pytest.raises(GastrtError, match="present"):
        st.push(x, present=np.array([1, 0]))
    with pytest.raises(GastrtError, match="slot 5 does not exist"):
        st.flush(5)
    with pytest.raises(GastrtError, match="slots must be"):
        eng.stream(slots=0)
    # a NaN in the first frame of a sequence: clear error, nothing changes
    y = x.copy()
    y[1, 2] = np.nan
    with pytest.raises(GastrtError, match="slot 1: the first frame"):
        st.push(y)
    assert st.state(0) == "idle" and st.state(1) == "idle" and st.columns == 0
    st.push(y, present=np.array([True, False]))            # slot 1's NaN frame is ignored
    assert st.state(0) == "active" and st.state(1) == "idle"
    with pytest.raises(GastrtError, match="slot 1"):        # slot 1 would start on a NaN frame
        st.push(y)
    assert st.frames_pushed(0) == 1                         # the failed push changed nothing
    st.push(x)
    assert st.frames_pushed(0) == 2 and st.frames_pushed(1) == 1
    y[0, 0] = np.nan                                        # later frames: held, flagged
    assert len(st.push(y)) == 0 and st.frames_pushed(0) == 3


def _native_linear_available():
    from gastrt.backends import native_module
    mod = native_module()
    return mod is not None and hasattr(mod, "stream_linear")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("name, slots, flip", [("vp", 1, False), ("vp_c", 3, True), ("gast33", 1, False)])
def test_native_kernels_match_lift_sequence(tmp_path, name, slots, flip, precision):
    """The native few-row kernel (fp32, or the engine's stored fp16 / bf16 weights read as such)
    against lift_sequence of the same engine on the NumPy backend (weights upcast to fp32): only
    the summation order differs, so fp32's tolerance holds at every precision."""
    if not _native_linear_available():
        pytest.skip("the native CPU runtime is not built")
    causal = name.endswith("_c")
    fam, cfg = CONFIGS[name[:-2] if causal else name]
    ck = tmp_path / "m.bin"
    torch.save({"model_pos": factory.random_state_dict(fam, cfg, seed=5)}, str(ck))
    path = gastrt.build(str(ck), str(tmp_path / "m.gastrt"), causal=causal, precision=precision)
    eng_np = gastrt.load(path, backend="numpy")
    assert eng_np.precision == precision
    seqs = _seqs(eng_np, [eng_np.receptive_field + 5, 3, 30][:slots], seed=9)
    st = Stream(eng_np, slots=slots, flip=flip, kernels="native")
    assert st.kernels == "native"
    rows = slots * (2 if flip else 1) * (17 if name.startswith("gast") else 1)
    assert rows <= st._prog.LINEAR_ROWS      # the native kernel really runs
    want_dtype = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16}[precision]
    convs = [s for s in st._prog.steps if s.kind == "conv"]
    assert convs and all(s.stored_w.dtype == want_dtype for s in convs)
    res = _drive(st, seqs, starts=[0, 2, 1][:slots])
    for q, o in zip(seqs, res):
        assert rel_err(o.poses, eng_np.lift_sequence(q, flip=flip)) < TOL


def test_native_kernels_fall_back_to_blas_for_many_rows(engines):
    """Beyond LINEAR_ROWS rows a column is a real GEMM: BLAS (fp32 weights) takes it, exactly."""
    if not _native_linear_available():
        pytest.skip("the native CPU runtime is not built")
    eng = engines("gast33")
    seqs = _seqs(eng, [12, 7], seed=3)
    st = Stream(eng, slots=2, kernels="native")
    assert 2 * 17 > st._prog.LINEAR_ROWS
    for q, o in zip(seqs, _drive(st, seqs, starts=[0, 1])):
        assert rel_err(o.poses, eng.lift_sequence(q)) < TOL


def test_stream_linear_kernel(rng=np.random.default_rng(12)):
    """gastrt._native.stream_linear vs NumPy: odd sizes, every weight format, bias, act, residual;
    output poisoned first; bad weights rejected with a clear error."""
    if not _native_linear_available():
        pytest.skip("the native CPU runtime is not built")
    from gastrt import _native
    from gastrt.engine_file import from_bf16_bits, to_bf16_bits
    for m, k, n in [(1, 1, 1), (1, 3072, 1024), (3, 1031, 17), (16, 102, 1030), (5, 4099, 2053)]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w32 = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32)
        for w in (w32, w32.astype(np.float16), to_bf16_bits(w32)):
            wf = from_bf16_bits(w) if w.dtype == np.uint16 else w.astype(np.float32)
            z = x.astype(np.float64) @ wf + b
            ref = np.where(z >= 0, z, 0.2 * z) + r
            for threads in (1, 2):
                out = np.full((m, n), np.nan, np.float32)
                _native.stream_linear(x, w, b, r, act="lrelu", out=out, threads=threads)
                assert rel_err(out, ref) < TOL, (m, k, n, w.dtype, threads)
    with pytest.raises(TypeError, match="float32, float16 or uint16"):
        _native.stream_linear(x, w32.astype(np.float64), b)
    with pytest.raises(ValueError, match="rows"):
        _native.stream_linear(x[:, :-1], w32, b)


# --- the CLI ------------------------------------------------------------------------------------

def _coco_people(rng, n_frames, size=(640, 480)):
    base = rng.uniform([200, 100], [440, 380], size=(17, 2))
    return [base + rng.normal(0, 3, size=(17, 2)) for _ in range(n_frames)]


def test_cli_stream(engines, tmp_path, monkeypatch, capsys):
    from gastrt.cli import main
    from gastrt.keypoints import coco_to_h36m, normalize_screen

    eng = engines("gast33")
    rng = np.random.default_rng(4)
    W, H = 640, 480
    a = _coco_people(rng, 14)
    b = _coco_people(rng, 14)
    c = _coco_people(rng, 14)
    # a: frames 0-13; b: frames 2-5 and again 8-13 (a new sequence); c: frames 3-6, no free slot
    # with --slots 2 until b leaves (dropped in 3-5, tracked from 6); frame 6 of a misses joint 4
    # (held from frame 5)
    lines = []
    for f in range(14):
        people = [{"id": 1, "keypoints": a[f].tolist()}]
        if f == 6:
            people[0]["keypoints"][4] = None
        if 2 <= f <= 5 or f >= 8:
            people.append({"id": "b", "keypoints": [[x, y, 0.9] for x, y in b[f].tolist()]})
        if 3 <= f <= 6:
            people.append({"id": 7, "keypoints": c[f].tolist(), "scores": [1.0] * 17})
        lines.append(json.dumps({"frame": 100 + f, "people": people}))
    lines.insert(5, "")                                     # blank lines are skipped
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    path = eng.path
    assert main(["stream", path, "--size", f"{W}x{H}", "--slots", "2", "--format", "coco"]) == 0
    cap = capsys.readouterr()
    out = [json.loads(s) for s in cap.out.splitlines()]
    assert "no free slot for person 7" in cap.err
    assert [o["frame"] for o in out] == list(range(100, 114))
    ids = [[p["id"] for p in o["people"]] for o in out]
    assert ids == [[1, "b"] if (2 <= f <= 5 or f >= 8) else [1, 7] if f == 6 else [1] for f in range(14)]

    def lifted(seq):
        seq = np.asarray(seq, np.float32)
        return eng.lift_sequence(normalize_screen(coco_to_h36m(seq), W, H))

    a_held = [p.copy() for p in a]
    a_held[6][4] = a_held[5][4]
    got_a = np.array([o["people"][0]["pose_3d"] for o in out])
    assert rel_err(got_a, lifted(a_held)) < 1e-4               # the JSON has 6 decimals
    assert [o["people"][0]["filled"] for o in out] == [f == 6 for f in range(14)]
    for seg in (range(2, 6), range(8, 14)):
        got_b = np.array([out[f]["people"][1]["pose_3d"] for f in seg])
        assert rel_err(got_b, lifted([b[f] for f in seg])) < 1e-4
    assert rel_err(np.array(out[6]["people"][1]["pose_3d"]), lifted([c[6]])[0]) < 1e-4


def test_cli_stream_errors(engines, monkeypatch, capsys):
    from gastrt.cli import main

    eng = engines("vp_c")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"people": []}\n{"people": [}\n'))
    assert main(["stream", eng.path, "--size", "100x100"]) == 2
    cap = capsys.readouterr()
    assert "stdin line 2: not valid JSON" in cap.err and cap.out.count("\n") == 1
    monkeypatch.setattr("sys.stdin", io.StringIO('{"people": [{"id": 1, "keypoints": [[1, 2]]}]}\n'))
    assert main(["stream", eng.path]) == 2
    assert "no image size" in capsys.readouterr().err
    for dev in ("tpu", "cuda:x") + (() if gastrt.cuda_available() else ("cuda",)):
        monkeypatch.setattr("sys.stdin", io.StringIO(""))
        assert main(["stream", eng.path, "--device", dev]) == 2, dev
        err = capsys.readouterr().err
        assert err.startswith("gastrt: error:") and err.count("\n") == 1 and "cuda" in err.lower(), err
    monkeypatch.setattr("sys.stdin", io.StringIO(
        '{"size": [100, 100], "people": [{"id": 1, "keypoints": [[1, 2], [3, 4]]}]}\n'))
    assert main(["stream", eng.path, "--format", "coco"]) == 2
    assert "cannot feed" in capsys.readouterr().err
    # causal engine: each frame's line comes out as soon as it is pushed
    kp = [[10.0 + j, 20.0 + j] for j in range(17)]
    monkeypatch.setattr("sys.stdin", io.StringIO(
        "".join(json.dumps({"size": [100, 100], "people": [{"keypoints": kp}]}) + "\n" for _ in range(3))))
    assert main(["stream", eng.path]) == 0
    out = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert [o["frame"] for o in out] == [0, 1, 2] and all(o["people"][0]["id"] == 0 for o in out)


def test_stream_slot_count_is_bounded(tmp_path, ckpt_cache):
    """stream(slots=10**9) is one GastrtError naming the limit, not a MemoryError."""
    import gastrt
    from gastrt.stream.core import MAX_SLOTS

    eng = gastrt.load(gastrt.build(ckpt_cache("gast", {"num_joints": 17, "filter_widths": [3, 3],
                                                        "channels": 16}, seed=2), str(tmp_path / "g.gastrt")))
    with pytest.raises(gastrt.GastrtError, match="at most 10,000,000 slots"):
        eng.stream(slots=10 ** 9)
    with pytest.raises(gastrt.GastrtError, match="at most"):
        eng.stream(slots=MAX_SLOTS + 1)
    assert eng.stream(slots=3).slots == 3
