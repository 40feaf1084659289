"""TensorRT: the builder and the runner. Build .plan files and check parity with the NumPy oracle
(window and sequence forms, flip, chunking past the profile, padding under it) and the version /
GPU checks: everywhere against the emulated TensorRT + cuda-python of tests/trt_emulator.py
(8.6, 10 and 11 API variants; onnxruntime computes), and against the real ones where TensorRT and
a CUDA GPU exist. Also the one-line error without TensorRT, the .plan container, and the
runner's chunking logic behind a stand-in network."""
from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np
import pytest

import gastrt  # noqa: E402
from gastrt_testutil import rel_err, small_engine  # noqa: E402
from gastrt.backends import tensorrt_runner as tr  # noqa: E402
from gastrt.cli import main  # noqa: E402
from trt_emulator import Emulator  # noqa: E402


MISSING = "TensorRT is not installed: pip install 'gastrt[tensorrt]'"

CONFIGS = {
    "gast-17": ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16}),
    "vp3d": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                             "filter_widths": [3, 3, 3], "channels": 64, "trajectory": True}),
    "rie-s3": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 16, "stage": 3}),
}


def _gpu_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
        tr.device_properties(0)
        return True
    except Exception:
        return False


needs_trt = pytest.mark.skipif(not _gpu_tensorrt(), reason="TensorRT, cuda-python and a CUDA GPU are required")


@pytest.fixture(scope="module")
def engines(module_dir):
    """name -> (checkpoint path, engine path, Engine on the NumPy backend)."""
    pytest.importorskip("torch")
    d = module_dir
    cache = {}

    def get(name, causal=False):
        if (name, causal) not in cache:
            family, config = CONFIGS[name]
            ck, path = small_engine(d, name, family, config, causal)
            cache[(name, causal)] = (ck, path, gastrt.load(path, backend="numpy"))
        return cache[(name, causal)]

    return get


# ---- everywhere -----------------------------------------------------------------------------------
def test_build_without_tensorrt(tmp_path, monkeypatch, capsys):
    """`gastrt build --backend tensorrt` without TensorRT: one line naming the extra, exit 2."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "m.plan"
    assert main(["build", str(tmp_path / "ckpt.bin"), "--backend", "tensorrt", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"gastrt: error: {MISSING}"
    assert not out.exists()
    from gastrt.tensorrt_builder import build_tensorrt
    with pytest.raises(gastrt.GastrtError) as e:
        build_tensorrt(str(tmp_path / "ckpt.bin"), str(out))
    assert str(e.value) == MISSING


def _fake_container(path, engines=None, meta=None, **over):
    header = {"meta": meta or {"family": "gast", "plans": {}, "weight_shapes": {}}, "tensorrt_version": "10.0.0",
              "compute_capability": [9, 0], "device_name": "test GPU",
              "engines": {"pos/window": {"profile": {"min": [1, 9, 17, 2], "opt": [4, 9, 17, 2],
                                                     "max": [8, 9, 17, 2]}}}}
    header.update(over)
    tr.write_plan(str(path), header, engines or {"pos/window": b"engine-bytes" * 100})


def _plan_meta(eng):
    """The metadata a real build stores in a plan: the engine's, plus its weights' shapes."""
    return dict(eng.metadata, weight_shapes={n: list(w.shape) for n, w in eng.weights.items()})


def test_plan_container(tmp_path, monkeypatch, engines):
    p = tmp_path / "m.plan"
    _fake_container(p, {"pos/window": b"a" * 1000, "pos/sequence": b"b" * 77}, meta=_plan_meta(engines("gast-17")[2]))
    assert tr.is_tensorrt_plan(p) and not tr.is_tensorrt_plan(tmp_path / "nope")
    header, blobs = tr.read_plan(str(p))
    assert bytes(blobs["pos/window"]) == b"a" * 1000 and bytes(blobs["pos/sequence"]) == b"b" * 77
    assert header["format"] == "gastrt-tensorrt" and header["tensorrt_version"] == "10.0.0"
    assert all(e["offset"] % tr.ALIGN == 0 for e in header["engines"].values())
    assert header["engines"]["pos/window"]["profile"]["max"] == [8, 9, 17, 2]
    assert sorted(os.listdir(tmp_path)) == ["m.plan"]          # written through a temp file

    raw = p.read_bytes()
    bad = tmp_path / "bad.plan"
    bad.write_bytes(raw[:-10])
    with pytest.raises(gastrt.EngineFileError, match="truncated"):
        tr.read_plan(str(bad))
    bad.write_bytes(raw[:-1] + b"x")
    with pytest.raises(gastrt.EngineFileError, match="checksum"):
        tr.read_plan(str(bad))
    tr.read_plan(str(bad), verify=False)
    bad.write_bytes(b"GASTRTR")
    with pytest.raises(gastrt.EngineFileError, match="too short"):
        tr.read_plan(str(bad))
    hb = json.dumps({"format": "gastrt-tensorrt", "format_version": 99}).encode()
    bad.write_bytes(tr.MAGIC + struct.pack("<Q", len(hb)) + hb)
    with pytest.raises(gastrt.EngineFileError, match="newer"):
        tr.read_plan(str(bad))

    with pytest.raises(gastrt.GastrtError, match="runs on a GPU"):
        gastrt.load(str(p), backend="tensorrt", device="cpu")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(gastrt.GastrtError) as e:
        gastrt.load(str(p), backend="tensorrt", device="cuda:0")
    assert str(e.value) == MISSING


@pytest.mark.parametrize("edit", [
    lambda m: m.__setitem__("family", ["x"]), lambda m: m.__setitem__("hyper", 5),
    lambda m: m.__setitem__("receptive_field", "9"), lambda m: m["plans"].pop("pos"),
    lambda m: m["weight_shapes"].clear(), lambda m: m.__setitem__("joints_left", [99]),
])
def test_crafted_plan_metadata_is_one_error(tmp_path, engines, capsys, edit):
    """Found by review: a plan with valid checksums but odd metadata gave TypeError / AttributeError
    tracebacks in `gastrt info`; it is checked like an engine file's (engine_file.check_metadata)."""
    meta = _plan_meta(engines("gast-17")[2])
    edit(meta)
    p = tmp_path / "crafted.plan"
    _fake_container(p, meta=meta)
    with pytest.raises(gastrt.EngineFileError, match="corrupted plan metadata"):
        gastrt.load(str(p), backend="tensorrt", device="cuda")
    for argv in (["info", str(p)], ["info", str(p), "--json"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "corrupted plan metadata" in err[0]


def test_profile_validation():
    from gastrt.tensorrt_builder import _check_profile
    _check_profile(1, 64, 4096)
    for bad in ((0, 1, 2), (4, 2, 8), (1, 8, 4), (1, 2, 2.5)):
        with pytest.raises(gastrt.GastrtError):
            _check_profile(*bad)


class _StandIn:
    """A TensorRT network stand-in: the NumPy oracle behind the profile's shape limits."""

    def __init__(self, eng, plan, mode, lo, hi):
        self.eng, self.plan, self.mode = eng, plan, mode
        self.min_shape, self.max_shape = lo, hi
        self.calls = []

    def execute(self, x):
        assert all(a <= s <= b for a, s, b in zip(self.min_shape, x.shape, self.max_shape)), (x.shape, self.max_shape)
        self.calls.append(x.shape)
        y = self.eng.backend.run(self.plan, x, self.mode)
        return y[:, 0] if self.mode == "window" else y


def test_runner_chunking(engines):
    """The runner's batching: windows past the profile's max run in chunks, under its min padded;
    long sequences run in exact overlapping chunks; several people chunked. Behind the real
    gastrt.Engine (lift / lift_sequence / flip) with a stand-in for the TensorRT network."""
    from gastrt.engine import Engine

    _, path, ref = engines("gast-17", True)
    rf, j = ref.receptive_field, ref.num_joints
    be = tr.TensorRTBackend.__new__(tr.TensorRTBackend)
    be.path, be.device_index = path, 0
    be.header = {"meta": ref.metadata}
    be.cudart = type("cudart", (), {"cudaSetDevice": staticmethod(lambda i: (0,)),
                                    "cudaError_t": type("e", (), {"cudaSuccess": 0})})
    import threading
    be._lock = threading.Lock()
    be.nets = {"pos/window": _StandIn(ref, "pos", "window", [3, rf, j, 2], [8, rf, j, 2]),
               "pos/sequence": _StandIn(ref, "pos", "sequence", [1, rf, j, 2], [2, rf + 15, j, 2])}
    eng = Engine(path, ref.metadata, ref.plans, dict(ref.weights), be, "cuda:0")
    rng = np.random.default_rng(0)
    for b in (1, 2, 8, 19):
        x = rng.standard_normal((b, rf, j, 2)).astype(np.float32)
        for flip in (False, True):
            assert rel_err(eng.lift(x, flip=flip), ref.lift(x, flip=flip)) < 1e-6
    assert max(s[0] for s in be.nets["pos/window"].calls) == 8
    for shape in ((40, j, 2), (3, 37, j, 2), (1, j, 2)):
        seq = rng.standard_normal(shape).astype(np.float32)
        for flip in (False, True):
            assert rel_err(eng.lift_sequence(seq, flip=flip), ref.lift_sequence(seq, flip=flip)) < 1e-6
    assert max(s[1] for s in be.nets["pos/sequence"].calls) == rf + 15
    with pytest.raises(gastrt.GastrtError, match="no TensorRT engine"):
        be.run("traj", np.zeros((1, rf, j, 2), np.float32), "window")


# ---- build + run: emulated TensorRT 8.6 / 10 / 11 everywhere, the real one where it exists ------
TRT_TOL = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2}   # vs the fp32 NumPy oracle
# TensorRT version, cuda-python flavour (12-old: cuda.cudart; 12: cuda.bindings.runtime; 13: int(obj) deprecated)
EMULATED = {"emu-8.6": ("8.6.1", "12-old"), "emu-10": ("10.9.0", "12"), "emu-11": ("11.0.0", "13")}
TRT_ENVS = list(EMULATED) + ["real"]


@pytest.fixture(params=TRT_ENVS)
def trt_env(request, monkeypatch):
    """-> (name, Emulator or None for the real TensorRT)."""
    pytest.importorskip("onnx")
    if request.param == "real":
        if not _gpu_tensorrt():
            pytest.skip("TensorRT, cuda-python and a CUDA GPU are required")
        return request.param, None
    pytest.importorskip("onnxruntime")
    version, cuda_python = EMULATED[request.param]
    return request.param, Emulator(version, cuda_python=cuda_python).install(monkeypatch)


def _precisions(env: str, emu) -> list[str]:
    import tensorrt as trt
    out = ["fp32", "fp16"]
    major = int(trt.__version__.split(".")[0])
    if emu is None and major >= 10 and tr.device_properties(0)["compute_capability"][0] >= 8:
        out.append("bf16")                       # emulated: bf16 builds, onnxruntime cannot run it
    return out


def _check_build_record(emu, precision: str, res: dict, ref):
    """What the emulator saw the builder do, per TensorRT version."""
    if emu is None:
        return
    assert len(emu.builds) == len(res["engines"])
    for rec in emu.builds:
        if emu.major >= 10:
            assert rec["strongly_typed"], "TensorRT >= 10: the graph's types carry the precision"
            assert not {"FP16", "BF16"} & set(rec["builder_flags"])
        else:
            assert not rec["strongly_typed"] and rec["flags"] == 1   # EXPLICIT_BATCH
            assert ("FP16" in rec["builder_flags"]) == (precision == "fp16")
        if precision == "fp32":
            assert "TF32" not in rec["builder_flags"], "fp32 must not round to TF32"
    assert ("pos/sequence" in res["engines"]) == (ref.family != "rie")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tensorrt_parity(engines, tmp_path, name, trt_env):
    """Build (profile batch 2..8, sequences up to 2 people x RF+23 frames) and lift through the
    runner: windows under the minimum (padded) and past the maximum (chunked), long sequences in
    overlapping chunks, several people, flip, the trajectory network."""
    from gastrt.tensorrt_builder import build_tensorrt

    env, emu = trt_env
    causal = name == "gast-17"
    ck, _, ref = engines(name, causal)
    rf, j = ref.receptive_field, ref.num_joints
    for precision in _precisions(env, emu):
        if emu is not None:
            emu.builds.clear()
        out = tmp_path / f"{name}-{precision}.plan"
        res = build_tensorrt(ck, str(out), causal=causal, precision=precision, min_batch=2, opt_batch=4,
                             max_batch=8, max_frames=24, seq_max_batch=2)
        assert tr.is_tensorrt_plan(out)
        _check_build_record(emu, precision, res, ref)
        eng = gastrt.load(str(out), backend="tensorrt", device="cuda:0")
        assert (eng.family, eng.receptive_field, eng.num_joints, eng.causal, eng.precision) == \
            (ref.family, ref.receptive_field, ref.num_joints, ref.causal, precision)
        assert eng.backend.name == "tensorrt" and eng.kps_left == ref.kps_left
        tol = TRT_TOL[precision]
        rng = np.random.default_rng(1)
        for b in (1, 5, 19):
            x = rng.standard_normal((b, rf, j, 2)).astype(np.float32) * 0.5
            for flip in (False, True):
                got = eng.lift(x, flip=flip)
                assert np.isfinite(got).all() and rel_err(got, ref.lift(x, flip=flip)) < tol, (precision, b, flip)
        for shape in ((50, j, 2), (3, 11, j, 2)):
            seq = rng.standard_normal(shape).astype(np.float32) * 0.5
            for flip in (False, True):
                got = eng.lift_sequence(seq, flip=flip)
                assert rel_err(got, ref.lift_sequence(seq, flip=flip)) < tol, (precision, shape, flip)
        if ref.has_trajectory:
            x = rng.standard_normal((3, rf, j, 2)).astype(np.float32) * 0.5
            assert rel_err(eng.lift_trajectory(x), ref.lift_trajectory(x)) < tol
        if emu is not None:   # every call stayed inside the profiles the plan declares
            assert emu.executions and all(
                all(a <= s <= b for a, s, b in zip(p["keypoints"][0], shape, p["keypoints"][2]))
                for p, shape, _ in emu.executions)
            emu.executions.clear()
        eng.backend.close()
        if emu is not None:
            assert not emu.streams and len(emu.allocs) == 0, "close() frees the stream and the buffers"


def test_tensorrt_cli_and_mismatch(engines, tmp_path, capsys, trt_env):
    env, emu = trt_env
    ck, path, ref = engines("vp3d")
    out = tmp_path / "m.plan"
    assert main(["build", ck, "--backend", "tensorrt", "-o", str(out), "--min-batch", "1", "--opt-batch", "8",
                 "--max-batch", "64"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "traj/window" in text and "pos/sequence" in text
    header, blobs = tr.read_plan(str(out))
    assert header["engines"]["pos/window"]["profile"] == {"min": [1, ref.receptive_field, 17, 2],
                                                          "opt": [8, ref.receptive_field, 17, 2],
                                                          "max": [64, ref.receptive_field, 17, 2]}
    x = np.random.default_rng(0).standard_normal((4, ref.receptive_field, 17, 2)).astype(np.float32)
    assert rel_err(gastrt.load(str(out), backend="tensorrt", device=0).lift(x), ref.lift(x)) < TRT_TOL["fp32"]
    via_load = gastrt.load(str(out), device="cuda")          # gastrt.load recognises the container
    assert via_load.backend.name == "tensorrt" and rel_err(via_load.lift(x), ref.lift(x)) < TRT_TOL["fp32"]
    with pytest.raises(gastrt.GastrtError, match="runs on a GPU"):
        gastrt.load(str(out), device="cpu")
    assert main(["info", str(out)]) == 0
    assert "TensorRT" in capsys.readouterr().out
    for field, value, msg in (("tensorrt_version", "0.0.1", "built with TensorRT 0.0.1"),
                              ("compute_capability", [1, 0], "compute capability 1.0")):
        bad = tmp_path / f"{field}.plan"
        tr.write_plan(str(bad), dict(header, **{field: value}), {k: bytes(v) for k, v in blobs.items()})
        with pytest.raises(gastrt.GastrtError, match=msg):
            gastrt.load(str(bad), backend="tensorrt", device="cuda")
    with pytest.raises(gastrt.GastrtError, match="does not exist"):
        gastrt.load(str(out), backend="tensorrt", device="cuda:7")
    # an engine TensorRT cannot deserialize (the header claims this version, the bytes are not an engine)
    bad = tmp_path / "junk.plan"
    tr.write_plan(str(bad), header, {k: b"\0" * 512 for k in blobs})
    with pytest.raises(gastrt.GastrtError, match="could not deserialize"):
        gastrt.load(str(bad), backend="tensorrt", device="cuda")
    # the CLI refuses a CPU device for the build, in one line
    assert main(["build", ck, "--backend", "tensorrt", "-o", str(tmp_path / "x.plan"), "--device", "cpu"]) == 2
    assert "GPU" in capsys.readouterr().err and not (tmp_path / "x.plan").exists()
    assert main(["build", ck, "--backend", "tensorrt", "-o", str(tmp_path / "x.plan"), "--device", "cuda:9"]) == 2
    err = capsys.readouterr().err
    assert "cuda:9 does not exist" in err and err.count("\n") == 1 and not (tmp_path / "x.plan").exists()


def test_tensorrt_bf16_build(engines, tmp_path, monkeypatch):
    """bf16: a strongly typed build on TensorRT >= 10 (emulated: onnxruntime cannot run bf16, so
    this checks the build only); TensorRT 8.6 refuses with one clear error."""
    from gastrt.tensorrt_builder import build_tensorrt

    pytest.importorskip("onnx")
    ck, _, ref = engines("gast-17")
    emu = Emulator("10.9.0").install(monkeypatch)
    res = build_tensorrt(ck, str(tmp_path / "b.plan"), precision="bf16", min_batch=1, opt_batch=2, max_batch=4,
                         max_frames=8, seq_max_batch=1)
    assert res["precision"] == "bf16" and sorted(res["engines"]) == ["pos/sequence", "pos/window"]
    assert all(r["strongly_typed"] and "BF16" not in r["builder_flags"] for r in emu.builds)
    assert gastrt.load(str(tmp_path / "b.plan"), backend="tensorrt", device="cuda").precision == "bf16"
    Emulator("8.6.1").install(monkeypatch)
    with pytest.raises(gastrt.GastrtError, match="bf16 TensorRT engines need TensorRT >= 10"):
        build_tensorrt(ck, str(tmp_path / "c.plan"), precision="bf16")
    assert not (tmp_path / "c.plan").exists()


def test_tensorrt_run_device(engines, monkeypatch):
    """run_device: device tensors in the profile, enqueued on the caller's stream, no chunking
    (emulated: CPU torch tensors stand in for CUDA ones)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from gastrt.tensorrt_builder import build_tensorrt

    emu = Emulator("10.9.0").install(monkeypatch)

    monkeypatch.setattr(tr, "device_view", emu.device_view(torch))
    ck, _, ref = engines("gast-17")
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        plan = os.path.join(d, "m.plan")
        build_tensorrt(ck, plan, min_batch=1, opt_batch=6, max_batch=6, max_frames=30, seq_max_batch=2)
        eng = gastrt.load(plan, backend="tensorrt", device="cuda")
    be = eng.backend
    rf, j = ref.receptive_field, ref.num_joints
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, rf, j, 2)).astype(np.float32)
    y = be.run_device("pos", torch.from_numpy(x), "window")
    assert tuple(y.shape) == (6, 1, 17, 3) and rel_err(y.numpy(), ref.backend.run("pos", x, "window")) < 1e-5
    s = rng.standard_normal((2, 29 + rf - 1, j, 2)).astype(np.float32)
    y = be.run_device("pos", torch.from_numpy(s), "sequence", stream=be.stream_handle)
    assert rel_err(y.numpy(), ref.backend.run("pos", s, "sequence")) < 1e-5
    assert emu.executions[-1][2] == be.stream_handle
    # a contiguous slice off the 256-byte grid: copied to aligned memory first
    big = emu.empty_tensor(torch, (7, rf, j, 2))
    big.copy_(torch.from_numpy(rng.standard_normal((7, rf, j, 2)).astype(np.float32)))
    sl = big[1:]
    assert sl.data_ptr() % 256 and sl.is_contiguous()
    y = be.run_device("pos", sl, "window")
    assert rel_err(y.numpy(), ref.backend.run("pos", sl.numpy(), "window")) < 1e-5
    with pytest.raises(gastrt.GastrtError, match="outside the optimization profile"):
        be.run_device("pos", torch.zeros((7, rf, j, 2)), "window")
    assert be.device_bytes() > 0
    be.close()
