"""ONNX export built from the plan: onnxruntime (CPU) parity against the NumPy oracle over
families x configs x causal x window/sequence x batch 1 and 5, fp32 and fp16; the checker
(full_check), no forbidden ops, sane node counts, the CLI, and its errors."""
from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt_testutil import rel_err, small_engine  # noqa: E402
from gastrt import onnx_export  # noqa: E402
from gastrt.cli import main  # noqa: E402
from gastrt.onnx_export import FORBIDDEN_OPS, build_model, check_model, export_onnx  # noqa: E402


FP32_TOL = 1e-5      # max |onnx - engine| / max |engine|
FP16_TOL = 3e-3      # fp16 graph vs the fp32 result

# small channel counts keep the suite fast; the structure is the shipped one
CONFIGS = {
    "gast-17": ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16}),
    "gast-19": ("gast", {"num_joints": 19, "filter_widths": [3, 3], "channels": 16}),
    "gast-15": ("gast", {"num_joints": 15, "filter_widths": [3, 3], "channels": 16}),
    "vp3d": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                             "filter_widths": [3, 3, 3], "channels": 64, "trajectory": False}),
    "vp3d-humaneva": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                                      "filter_widths": [3, 3, 3], "channels": 64, "trajectory": True}),
    "rie-s1": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 16, "stage": 1}),
    "rie-s3": ("rie", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16, "latent": 16, "stage": 3}),
}
# node budgets of these configs (a regression guard: the graph stays a handful of nodes per plan op)
MAX_NODES = {"gast": 110, "videopose3d": 50, "rie": 300}


@pytest.fixture(scope="module")
def engines(module_dir):
    """(name, causal) -> (engine path, Engine on the NumPy backend). Checkpoints in the original
    layout ({'model_pos': ..., 'model_traj': ...}) with random weights and BatchNorm statistics."""
    d = module_dir
    cache = {}

    def get(name, causal=False):
        key = (name, causal)
        if key not in cache:
            family, config = CONFIGS[name]
            _, path = small_engine(d, name, family, config, causal)
            cache[key] = (path, gastrt.load(path, backend="numpy"))
        return cache[key]

    return get


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(sess, x):
    return sess.run(["poses"], {"keypoints": x})[0]


def _oracle(eng, x, mode, plan="pos"):
    y = eng.backend.run(plan, x, mode)
    return y[:, 0] if mode == "window" else y


def _check_graph(model, info, family):
    check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & FORBIDDEN_OPS, ops & FORBIDDEN_OPS
    assert info["node_count"] == len(model.graph.node) == sum(info["op_types"].values())
    assert info["node_count"] <= MAX_NODES[family], info["op_types"]


@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnxruntime_parity(engines, name, causal):
    family, _ = CONFIGS[name]
    _, eng = engines(name, causal)
    plan = eng.plans["pos"]
    rf, j = plan.receptive_field, plan.in_joints
    rng = np.random.default_rng(zlib.crc32(f"{name}{causal}".encode()))
    assert plan.modes == (("window",) if family == "rie" else ("window", "sequence"))
    for mode in plan.modes:
        # window: one window per row; sequence: two lengths through the same symbolic-T graph
        lengths = [rf] if mode == "window" else [rf, rf + 12]
        inputs = [rng.standard_normal((b, t, j, 2)).astype(np.float32) * 0.5 for b in (1, 5) for t in lengths]
        fp32 = []
        for precision in ("fp32", "fp16"):
            model, info = build_model(eng, mode=mode, precision=precision)
            _check_graph(model, info, family)
            sess = _session(model)
            for i, x in enumerate(inputs):
                got = _run(sess, x)
                if precision == "fp32":
                    ref = _oracle(eng, x, mode)
                    assert got.dtype == np.float32 and got.shape == ref.shape
                    assert rel_err(got, ref) < FP32_TOL, (name, mode, x.shape)
                    fp32.append(got)
                else:
                    assert rel_err(got, fp32[i]) < FP16_TOL, (name, mode, "fp16", x.shape)


def test_trajectory_network(engines):
    """VideoPose3D's trajectory model exports too (plan='traj'): windows -> [B, 1, 3]."""
    _, eng = engines("vp3d-humaneva")
    rng = np.random.default_rng(4)
    for mode in ("window", "sequence"):
        model, info = build_model(eng, mode=mode, plan="traj")
        _check_graph(model, info, "videopose3d")
        t = eng.receptive_field + (0 if mode == "window" else 5)
        x = rng.standard_normal((5, t, 17, 2)).astype(np.float32)
        assert rel_err(_run(_session(model), x), _oracle(eng, x, mode, "traj")) < FP32_TOL


def test_graph_layout(engines):
    """GEMM layout: VideoPose3D windows are Reshape + MatMul only (no Transpose, no Conv); the
    sequence form's dilated convs are Conv nodes with dilations; shapes are symbolic where asked."""
    _, eng = engines("vp3d")
    model, info = build_model(eng, mode="window")
    assert "Transpose" not in info["op_types"] and "Conv" not in info["op_types"]
    assert info["op_types"]["MatMul"] == 6       # expand + 2 x (strided conv + 1x1) + shrink
    inp = model.graph.input[0].type.tensor_type.shape.dim
    assert inp[0].dim_param == "batch" and [d.dim_value for d in inp[1:]] == [27, 17, 2]

    model, info = build_model(eng, mode="sequence")
    dil = sorted(a.ints[1] for n in model.graph.node if n.op_type == "Conv" for a in n.attribute
                 if a.name == "dilations")
    assert dil == [1, 1, 1, 1, 3, 9]             # expand, 2 x (dilated conv + 1x1), shrink
    inp = model.graph.input[0].type.tensor_type.shape.dim
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in inp[:2]] == ["batch", "frames"]
    assert [d.dim_param for d in out[:2]] == ["batch", "frames_out"]

    model, _ = build_model(eng, mode="sequence", dynamic_batch=False, batch_size=2, seq_len=10)
    inp = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in inp] == [2, 36, 17, 2]
    x = np.random.default_rng(0).standard_normal((2, 36, 17, 2)).astype(np.float32)
    assert rel_err(_run(_session(model), x), _oracle(eng, x, "sequence")) < FP32_TOL


def test_fp16_softmax_runs_in_fp32(engines):
    """fp16 graphs: explicit Casts at input and output; GAST-Net's softmax reads fp32."""
    _, eng = engines("gast-17")
    model, _ = build_model(eng, mode="window", precision="fp16")
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    assert nodes[0].op_type == "Cast" and nodes[0].input[0] == "keypoints"
    assert producer["poses"].op_type == "Cast"
    softmaxes = [n for n in nodes if n.op_type == "Softmax"]
    assert len(softmaxes) == 2
    for sm in softmaxes:
        src = producer[producer[sm.input[0]].input[0]]          # Softmax <- LeakyRelu <- Cast
        assert src.op_type == "Cast" and src.attribute[0].i == onnx.TensorProto.FLOAT
    fp16 = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert len(fp16) > 10


def test_bf16_graph_is_valid(engines):
    """bf16 (for TensorRT): valid ONNX at opset >= 16; onnxruntime has no CPU kernels for it."""
    for name in ("gast-17", "vp3d", "rie-s3"):
        _, eng = engines(name)
        for mode in eng.plans["pos"].modes:
            model, info = build_model(eng, mode=mode, precision="bf16")
            _check_graph(model, info, CONFIGS[name][0])
    with pytest.raises(gastrt.GastrtError, match="opset"):
        build_model(engines("vp3d")[1], precision="bf16", opset=13)


def test_opsets(engines):
    _, eng = engines("gast-17")
    x = np.random.default_rng(1).standard_normal((2, 9, 17, 2)).astype(np.float32)
    for opset in (13, 21):
        model, _ = build_model(eng, opset=opset)
        check_model(model)
        assert model.opset_import[0].version == opset
        assert rel_err(_run(_session(model), x), _oracle(eng, x, "window")) < FP32_TOL


def test_export_writes_atomically(engines, tmp_path, monkeypatch):
    path, eng = engines("vp3d")
    out = tmp_path / "m.onnx"
    info = export_onnx(path, str(out), mode="sequence")
    assert info["path"] == str(out) and os.path.getsize(out) == info["bytes"]
    loaded = onnx.load(str(out))
    assert len(loaded.graph.node) == info["node_count"]
    assert '"family": "videopose3d"' in {p.key: p.value for p in loaded.metadata_props}["gastrt"]
    # a failure while writing leaves the previous file untouched and no temp file behind
    out.write_bytes(b"previous")
    import gastrt.engine_file as ef

    def boom(fd):
        raise OSError("disk full")
    monkeypatch.setattr(ef.os, "fsync", boom)
    with pytest.raises(gastrt.GastrtError, match="disk full"):  # a write failure names the path
        export_onnx(eng, str(out))
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_cli_export(engines, tmp_path, capsys):
    path, eng = engines("gast-17", True)
    out = tmp_path / "g.onnx"
    assert main(["export", path, "-o", str(out), "--mode", "sequence", "--opset", "17", "--verify"]) == 0
    text = capsys.readouterr().out
    assert f"wrote      {out}" in text and "nodes" in text and "MatMul" in text and "verify" in text
    err = float(text.split("max relative error")[1].split()[0])
    assert err < FP32_TOL
    model = onnx.load(str(out))
    check_model(model)

    # defaults: window form, next to the engine; static batch and fp16
    assert main(["export", path]) == 0
    assert os.path.exists(os.path.splitext(path)[0] + ".onnx")
    out2 = tmp_path / "s.onnx"
    assert main(["export", path, "-o", str(out2), "--static-batch", "--batch", "3", "--precision", "fp16"]) == 0
    dims = onnx.load(str(out2)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 9, 17, 2]
    x = np.random.default_rng(2).standard_normal((3, 9, 17, 2)).astype(np.float32)
    sess = ort.InferenceSession(str(out2), providers=["CPUExecutionProvider"])
    assert rel_err(_run(sess, x), eng.lift(x)) < FP16_TOL


def _one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gastrt: error:"), err
    for n in needles:
        assert n in err, err
    return err


def test_bad_input(engines, tmp_path, capsys):
    rie_path, rie = engines("rie-s1")
    with pytest.raises(gastrt.GastrtError, match="RIE has no sequence form"):
        export_onnx(rie, str(tmp_path / "r.onnx"), mode="sequence")
    _one_line_error(capsys, ["export", rie_path, "-o", str(tmp_path / "r.onnx"), "--mode", "sequence"],
                    "RIE has no sequence form")
    assert not (tmp_path / "r.onnx").exists()
    _one_line_error(capsys, ["export", rie_path, "-o", str(tmp_path / "r.onnx"), "--opset", "12"],
                    "unsupported opset 12")
    with pytest.raises(gastrt.GastrtError, match="unknown mode"):
        build_model(rie, mode="frames")
    with pytest.raises(gastrt.GastrtError, match="unknown precision"):
        build_model(rie, precision="int8")
    with pytest.raises(gastrt.GastrtError, match="no 'traj' network"):
        build_model(rie, plan="traj")
    _one_line_error(capsys, ["export", str(tmp_path / "missing.gastrt")], "missing.gastrt")


def test_missing_onnx_extra(engines, tmp_path, monkeypatch, capsys):
    """Without onnx the API and the CLI fail with one line naming the extra."""
    path, eng = engines("vp3d")
    monkeypatch.setitem(sys.modules, "onnx", None)     # `import onnx` now raises ImportError
    with pytest.raises(gastrt.GastrtError, match=r"pip install 'gastrt\[onnx\]'"):
        export_onnx(eng, str(tmp_path / "m.onnx"))
    _one_line_error(capsys, ["export", path, "-o", str(tmp_path / "m.onnx")], "pip install 'gastrt[onnx]'")
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(gastrt.GastrtError, match=r"pip install 'gastrt\[onnx\]'"):
        onnx_export.run_onnxruntime(b"", np.zeros((1, 27, 17, 2), np.float32))
