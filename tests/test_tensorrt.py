"""TensorRT: the builder and the runner. Where TensorRT and a CUDA GPU exist: build .plan files
and check parity with the NumPy oracle (window and sequence forms, flip, chunking past the
profile, padding under it) and the version / GPU checks. Everywhere: the one-line error without
TensorRT, the .plan container, and the runner's chunking logic behind a stand-in network."""
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


MISSING = "TensorRT is not installed: pip install gastrt[tensorrt]"

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
def engines(tmp_path_factory):
    """name -> (checkpoint path, engine path, Engine on the NumPy backend)."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("trt")
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


def _fake_container(path, engines=None, **over):
    header = {"meta": {"family": "gast", "plans": {}, "weight_shapes": {}}, "tensorrt_version": "10.0.0",
              "compute_capability": [9, 0], "device_name": "test GPU",
              "engines": {"pos/window": {"profile": {"min": [1, 9, 17, 2], "opt": [4, 9, 17, 2],
                                                     "max": [8, 9, 17, 2]}}}}
    header.update(over)
    tr.write_plan(str(path), header, engines or {"pos/window": b"engine-bytes" * 100})


def test_plan_container(tmp_path, monkeypatch):
    p = tmp_path / "m.plan"
    _fake_container(p, {"pos/window": b"a" * 1000, "pos/sequence": b"b" * 77})
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
        tr.load_tensorrt(str(p), "cpu")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(gastrt.GastrtError) as e:
        tr.load_tensorrt(str(p), "cuda:0")
    assert str(e.value) == MISSING


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
    eng = Engine(path, ref.metadata, ref.plans, ref._weights, be, "cuda:0")
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


# ---- with TensorRT and a GPU ---------------------------------------------------------------------
TRT_TOL = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2}   # vs the fp32 NumPy oracle


def _precisions():
    out = ["fp32", "fp16"]
    if _gpu_tensorrt():
        import tensorrt as trt
        cc = tr.device_properties(0)["compute_capability"]
        if int(trt.__version__.split(".")[0]) >= 10 and cc[0] >= 8:
            out.append("bf16")
    return out


@needs_trt
@pytest.mark.parametrize("precision", _precisions())
@pytest.mark.parametrize("name", list(CONFIGS))
def test_tensorrt_parity(engines, tmp_path, name, precision):
    from gastrt.tensorrt_builder import build_tensorrt

    causal = name == "gast-17"
    ck, _, ref = engines(name, causal)
    out = tmp_path / f"{name}.plan"
    res = build_tensorrt(ck, str(out), causal=causal, precision=precision, min_batch=2, opt_batch=4,
                         max_batch=8, max_frames=24, seq_max_batch=2)
    assert tr.is_tensorrt_plan(out)
    eng = tr.load_tensorrt(str(out), "cuda:0")
    assert (eng.family, eng.receptive_field, eng.num_joints, eng.causal, eng.precision) == \
        (ref.family, ref.receptive_field, ref.num_joints, ref.causal, precision)
    assert eng.backend.name == "tensorrt" and eng.kps_left == ref.kps_left
    assert ("pos/sequence" in res["engines"]) == (ref.family != "rie")
    tol = TRT_TOL[precision]
    rng = np.random.default_rng(1)
    rf, j = ref.receptive_field, ref.num_joints
    for b in (1, 5, 19):
        x = rng.standard_normal((b, rf, j, 2)).astype(np.float32) * 0.5
        for flip in (False, True):
            assert rel_err(eng.lift(x, flip=flip), ref.lift(x, flip=flip)) < tol, (b, flip)
    for shape in ((50, j, 2), (3, 11, j, 2)):
        seq = rng.standard_normal(shape).astype(np.float32) * 0.5
        for flip in (False, True):
            assert rel_err(eng.lift_sequence(seq, flip=flip), ref.lift_sequence(seq, flip=flip)) < tol
    if ref.has_trajectory:
        x = rng.standard_normal((3, rf, j, 2)).astype(np.float32) * 0.5
        assert rel_err(eng.lift_trajectory(x), ref.lift_trajectory(x)) < tol
    eng.backend.close()


@needs_trt
def test_tensorrt_cli_and_mismatch(engines, tmp_path, capsys):
    ck, path, ref = engines("vp3d")
    out = tmp_path / "m.plan"
    assert main(["build", ck, "--backend", "tensorrt", "-o", str(out), "--min-batch", "1", "--opt-batch", "8",
                 "--max-batch", "64"]) == 0
    assert "wrote" in capsys.readouterr().out
    header, blobs = tr.read_plan(str(out))
    x = np.random.default_rng(0).standard_normal((4, ref.receptive_field, 17, 2)).astype(np.float32)
    assert rel_err(tr.load_tensorrt(str(out), 0).lift(x), ref.lift(x)) < TRT_TOL["fp32"]
    for field, value, msg in (("tensorrt_version", "0.0.1", "built with TensorRT 0.0.1"),
                              ("compute_capability", [1, 0], "compute capability 1.0")):
        bad = tmp_path / f"{field}.plan"
        tr.write_plan(str(bad), dict(header, **{field: value}), {k: bytes(v) for k, v in blobs.items()})
        with pytest.raises(gastrt.GastrtError, match=msg):
            tr.load_tensorrt(str(bad), "cuda")
