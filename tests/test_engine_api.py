"""Engine file, checkpoint variants, lowering errors and bad input."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from gastrt_testutil import TOL, assert_no_temp_files, rel_err, subprocess_env

torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.checkpoint import CheckpointError  # noqa: E402
from gastrt.engine_file import from_bf16_bits, read_engine, to_bf16_bits  # noqa: E402
from gastrt.reference import factory  # noqa: E402

SMALL = ("gast", {"num_joints": 17, "filter_widths": [3, 3], "channels": 16})


@pytest.fixture(scope="module")
def small(tmp_path_factory, ckpt_cache):
    ck = ckpt_cache(*SMALL, seed=11)
    path = gastrt.build(ck, str(tmp_path_factory.mktemp("small") / "small.gastrt"))
    return ck, path


def test_metadata_and_api_names(small):
    ck, path = small
    eng = gastrt.load(path, backend="numpy")
    assert (eng.family, eng.receptive_field, eng.num_joints, eng.causal, eng.precision) == \
        ("gast", 9, 17, False, "fp32")
    meta, tensors = read_engine(path)
    assert meta["format_version"] == 2 and meta["hyper"]["channels"] == 16 and len(meta["content_sha256"]) == 64
    assert meta["source_sha256"] and meta["gastrt_version"] == gastrt.__version__
    sd = torch.load(ck, weights_only=True)["model_pos"]
    trainable = sum(v.numel() for k, v in sd.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert meta["parameter_count"] == trainable
    # every BatchNorm is folded: no running statistics survive in the engine
    assert not any("running" in n or "bn" in n for n in tensors)


def test_engine_file_is_safetensors_compatible(small):
    safetensors = pytest.importorskip("safetensors.numpy")
    _, path = small
    loaded = safetensors.load_file(path)
    _, tensors = read_engine(path)
    assert set(loaded) == set(tensors)
    for k in loaded:
        np.testing.assert_array_equal(loaded[k], tensors[k])


def test_bf16_rounding():
    """Round to nearest even (ties to even, overflow to inf) and NaN kept a NaN: the rounding
    add would carry a NaN's mantissa into inf or -0 (0x7FFFFFFF -> 0x8000)."""
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x7F7FFFFF, 0x7FFFFFFF, 0xFFC00001, 0x7F800001,
                     0x7F800000, 0x00000001], np.uint32)
    got = to_bf16_bits(bits.view(np.float32))
    np.testing.assert_array_equal(got[:4], np.array([0x3F80, 0x3F82, 0x3F81, 0x7F80], np.uint16))
    assert np.isnan(from_bf16_bits(got[4:7])).all()
    assert got[5] >> 15 == 1  # the sign is kept
    np.testing.assert_array_equal(got[7:], np.array([0x7F80, 0x0000], np.uint16))


def test_default_output_path(tmp_path, ckpt_cache):
    import shutil
    ck = str(tmp_path / "model.bin")
    shutil.copy(ckpt_cache(*SMALL, seed=11), ck)
    out = gastrt.build(ck)
    assert out == str(tmp_path / "model.gastrt") and os.path.exists(out)


@pytest.mark.parametrize("variant", ["wrapped", "legacy", "bare", "module", "bare-legacy"])
def test_checkpoint_variants(tmp_path, small, variant):
    ck, ref_path = small
    full = torch.load(ck, weights_only=True)
    sd = full["model_pos"]
    obj = {"wrapped": full, "legacy": full, "bare": sd, "bare-legacy": sd,
           "module": dict(full, model_pos={"module." + k: v for k, v in sd.items()})}[variant]
    p = str(tmp_path / f"{variant}.bin")
    torch.save(obj, p, _use_new_zipfile_serialization="legacy" not in variant)
    eng = gastrt.load(gastrt.build(p, str(tmp_path / "v.gastrt")), backend="numpy")
    ref = gastrt.load(ref_path, backend="numpy")
    x = np.random.default_rng(0).standard_normal((2, 9, 17, 2)).astype(np.float32)
    np.testing.assert_array_equal(eng.lift(x), ref.lift(x))


def test_input_dtypes_and_layouts(small):
    _, path = small
    eng = gastrt.load(path, backend="numpy")
    x = np.random.default_rng(1).standard_normal((4, 9, 17, 2))
    ref = eng.lift(x.astype(np.float32))
    # float64 is converted (documented), non-contiguous input is handled
    assert rel_err(eng.lift(x), ref) < TOL["fp32"]
    xt = np.asfortranarray(x.astype(np.float32))
    assert rel_err(eng.lift(xt), ref) < TOL["fp32"]
    assert rel_err(eng.lift(x.astype(np.float32)[::-1].copy()[::-1]), ref) < TOL["fp32"]


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 17, 2), np.float32), r"expected shape \(B, 9, 17, 2\)"),
    (np.zeros((2, 9, 16, 2), np.float32), r"expected shape"),
    (np.zeros((9, 17, 2), np.float32), r"expected shape"),
    (np.zeros((0, 9, 17, 2), np.float32), r"empty"),
    (np.zeros((2, 9, 17, 2), np.int32), r"floating-point"),
    (np.full((1, 9, 17, 2), np.nan, np.float32), r"non-finite"),
    (np.full((1, 9, 17, 2), np.inf, np.float32), r"non-finite"),
    ("not an array", r"floating-point"),
])
def test_bad_windows(small, bad, match):
    eng = gastrt.load(small[1], backend="numpy")
    with pytest.raises(ValueError, match=match):
        eng.lift(bad)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((0, 17, 2), np.float32), r"empty"),
    (np.zeros((5, 17, 3), np.float32), r"expected shape \(T, 17, 2\)"),
    (np.zeros((5, 17), np.float32), r"expected shape"),
    (np.array([[[np.nan, 0.0]] * 17] * 4, np.float32), r"non-finite"),
])
def test_bad_sequences(small, bad, match):
    eng = gastrt.load(small[1], backend="numpy")
    with pytest.raises(ValueError, match=match):
        eng.lift_sequence(bad)


def _pixels(shape, w=1280, h=720, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.2, 0.8, shape) * np.array([w, h])).astype(np.float32)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_pixel_coordinates_are_refused_with_the_helper_named(small, backend):
    """Detector pixels fed straight to an engine: one error naming gastrt.prepare_keypoints,
    for lift, lift_sequence and stream pushes; normalised inputs of any plausible range pass."""
    if backend == "native":
        pytest.importorskip("gastrt._native", reason="native runtime not built")
    eng = gastrt.load(small[1], backend=backend)
    for call, x in ((eng.lift, _pixels((2, 9, 17, 2))), (eng.lift_sequence, _pixels((30, 17, 2))),
                    (eng.lift_sequence, _pixels((2, 30, 17, 2)))):
        with pytest.raises(gastrt.GastrtError, match=r"look like pixel coordinates.*gastrt\.prepare_keypoints"):
            call(x)
    st = eng.stream(slots=2)
    with pytest.raises(gastrt.GastrtError, match="look like pixel coordinates"):
        st.push(_pixels((2, 17, 2)))
    # a point far off-screen in normalised coordinates is still an input, not pixels
    x = np.random.default_rng(1).standard_normal((2, 9, 17, 2)).astype(np.float32) * 0.5
    x[0, 0, 0] = [19.5, -19.5]
    assert np.isfinite(eng.lift(x)).all()
    # what the error proposes works: pixels -> prepare_keypoints -> lift_sequence
    prep = gastrt.prepare_keypoints(_pixels((30, 17, 2)), size=(1280, 720), layout="coco17", engine=eng)
    assert prep.keypoints_2d.shape == (1, 30, 17, 2) and np.abs(prep.keypoints_2d).max() <= 1.0
    assert eng.lift_sequence(prep.keypoints_2d).shape == (1, 30, 17, 3)


def _corrupt(path, tmp_path, how):
    data = bytearray(open(path, "rb").read())
    out = tmp_path / f"{how}.gastrt"
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "flipped-byte":
        data[-100] ^= 0xFF
    elif how == "header-garbage":
        data[10:20] = b"\x00" * 10
    elif how == "newer-format":
        hlen = struct.unpack("<Q", data[:8])[0]
        header = json.loads(bytes(data[8:8 + hlen]))
        meta = json.loads(header["__metadata__"]["gastrt"])
        meta["format_version"] = 99
        header["__metadata__"]["gastrt"] = json.dumps(meta)
        hb = json.dumps(header).encode()
        hb += b" " * (-(len(hb) + 8) % 8)
        data = struct.pack("<Q", len(hb)) + hb + data[8 + hlen:]
    elif how == "empty":
        data = b""
    elif how == "not-an-engine":
        data = b"hello world, this is not an engine file at all" * 3
    out.write_bytes(bytes(data))
    return str(out)


def _edit_header(path, tmp_path, name, edit):
    """The engine with its JSON header changed by edit(header, meta) (same length or not)."""
    data = open(path, "rb").read()
    hlen = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + hlen])
    meta = json.loads(header["__metadata__"]["gastrt"])
    edit(header, meta)
    header["__metadata__"]["gastrt"] = json.dumps(meta, sort_keys=True)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-(len(hb) + 8) % 8)
    out = tmp_path / f"{name}.gastrt"
    out.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + hlen:])
    return str(out)


@pytest.mark.parametrize("extra", [1, 2, 3, 4, 6])
def test_header_padding_that_misaligns_the_weights_is_refused(small, tmp_path, extra):
    """Spaces added to the JSON header keep its checksum (it covers the parsed JSON) but would
    start every weight at an odd address, which the native kernels read as whole floats."""
    data = open(small[1], "rb").read()
    hlen = struct.unpack("<Q", data[:8])[0]
    out = tmp_path / "pad.gastrt"
    out.write_bytes(struct.pack("<Q", hlen + extra) + data[8:8 + hlen] + b" " * extra + data[8 + hlen:])
    for verify in (True, False):
        with pytest.raises(gastrt.EngineFileError, match="leaves the data unaligned"):
            gastrt.load(str(out), backend="numpy", verify=verify)


def _rewritten(small, tmp_path, name, edit):
    """The small engine with its metadata edited by edit(meta) and the file written again by
    gastrt's own writer: valid checksums, as a crafted file would have."""
    from gastrt.engine_file import write_engine
    meta, tensors = read_engine(small[1])
    dt = {"float32": "F32", "float16": "F16", "uint16": "BF16"}
    edit(meta)
    out = str(tmp_path / f"{name}.gastrt")
    write_engine(out, {k: v for k, v in meta.items() if k not in ("format", "format_version", "data_bytes",
                                                                   "data_sha256", "content_sha256")},
                 {n: (dt[a.dtype.name], np.asarray(a)) for n, a in tensors.items()})
    return out


def _op_edit(key, value, op_index=0):
    def edit(meta):
        meta["plans"]["pos"]["ops"][op_index][key] = value
    return edit


@pytest.mark.parametrize("name, edit", [
    ("hyper-list", lambda m: m.__setitem__("hyper", [1, 2])),
    ("family-list", lambda m: m.__setitem__("family", [1])),
    ("pad-list", lambda m: m.__setitem__("pad", [1])),
    ("pad-huge", lambda m: m.__setitem__("pad", 10 ** 20)),
    ("joints-right-huge", lambda m: m["joints_right"].__setitem__(0, 10 ** 20)),
    ("joints-right-short", lambda m: m["joints_right"].pop()),
    ("kps-duplicate", lambda m: m["kps_left"].__setitem__(0, m["kps_right"][0])),
    ("num-joints-zero", lambda m: m.__setitem__("num_joints", 0)),
    ("causal-string", lambda m: m.__setitem__("causal", "yes")),
    ("plan-rf-disagrees", lambda m: m["plans"]["pos"].__setitem__("receptive_field", 7)),
    ("plan-in-joints-zero", lambda m: m["plans"]["pos"].__setitem__("in_joints", 0)),
    ("op-input-unknown", lambda m: m["plans"]["pos"]["ops"][0].__setitem__("inputs", ["nowhere"])),
])
def test_crafted_engines_with_valid_checksums_are_one_error(small, tmp_path, capsys, name, edit):
    """Found by the #15 audit: edits re-written with valid hashes gave AttributeError / KeyError /
    TypeError / OverflowError tracebacks in `gastrt info` and the API."""
    from gastrt.cli import main
    path = _rewritten(small, tmp_path, name, edit)
    with pytest.raises(gastrt.EngineFileError, match="corrupted engine metadata"):
        gastrt.load(path, backend="numpy")
    assert main(["info", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted engine metadata" in err[0]


def test_rewriting_an_engine_unchanged_still_loads(small, tmp_path):
    """The crafting helper above is sound: the same metadata written again loads and lifts alike."""
    path = _rewritten(small, tmp_path, "same", lambda m: None)
    a, b = gastrt.load(path, backend="numpy"), gastrt.load(small[1], backend="numpy")
    x = np.random.default_rng(2).standard_normal((2, 9, 17, 2)).astype(np.float32) * 0.3
    np.testing.assert_array_equal(a.lift(x, flip=True), b.lift(x, flip=True))


def _first_tensor(header):
    return next(k for k in header if k != "__metadata__")


@pytest.mark.parametrize("name, edit", [
    # one digit of an offset: loaded fine and gave outputs off by 7.7e36 before the header checksum
    ("offset-digit", lambda h, m: h[_first_tensor(h)]["data_offsets"].__setitem__(
        0, h[_first_tensor(h)]["data_offsets"][0] + 4)),
    ("causal-flag", lambda h, m: m.__setitem__("causal", not m["causal"])),
    ("flip-joints", lambda h, m: m.__setitem__("kps_left", m["kps_left"][::-1])),
    ("plan-edit", lambda h, m: m["plans"]["pos"].__setitem__("pad", 0)),
])
def test_header_edits_fail_the_checksum(small, tmp_path, name, edit):
    with pytest.raises(gastrt.EngineFileError, match="header checksum"):
        gastrt.load(_edit_header(small[1], tmp_path, name, edit), backend="numpy")


def test_every_loader_failure_is_an_engine_file_error(small, tmp_path):
    """Without verification the header is trusted: damage still surfaces as EngineFileError,
    never KeyError / TypeError / OverflowError."""
    cases = {
        "offsets-out-of-range": lambda h, m: h[_first_tensor(h)].__setitem__("data_offsets", [0, 10**12]),
        "offset-misaligned": lambda h, m: h[_first_tensor(h)].__setitem__(
            "data_offsets", [h[_first_tensor(h)]["data_offsets"][0] + 1, h[_first_tensor(h)]["data_offsets"][1] + 1]),
        "shape-not-a-list": lambda h, m: h[_first_tensor(h)].__setitem__("shape", 5),
        "huge-shape": lambda h, m: h[_first_tensor(h)].__setitem__("shape", [2**62, 2**62]),
        "plans-garbage": lambda h, m: m.__setitem__("plans", {"pos": [1, 2]}),
        "dtype-unknown": lambda h, m: h[_first_tensor(h)].__setitem__("dtype", "C64"),
    }
    for name, edit in cases.items():
        with pytest.raises(gastrt.EngineFileError):
            gastrt.load(_edit_header(small[1], tmp_path, name, edit), backend="numpy", verify=False)


def test_a_loaded_engine_holds_no_file_descriptor(small):
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc")
    before = fds()
    engines = [gastrt.load(small[1], backend="numpy") for _ in range(20)]
    assert fds() - before <= 1, "an fd per engine (1018 loads hit the fd limit)"
    del engines


def test_offsets_are_element_aligned_without_holes(small):
    meta, tensors = read_engine(small[1])
    data = open(small[1], "rb").read()
    hlen = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + hlen])
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and spans[-1][1] == meta["data_bytes"]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # no holes (safetensors' rule)
    for k, v in header.items():
        if k != "__metadata__":
            assert v["data_offsets"][0] % tensors[k].dtype.itemsize == 0


@pytest.mark.parametrize("how, match", [
    ("truncated", "truncated"), ("flipped-byte", "checksum"), ("header-garbage", "not a gastrt engine"),
    ("newer-format", "newer"), ("empty", "too short"), ("not-an-engine", "not a gastrt engine"),
])
def test_bad_engine_files(small, tmp_path, how, match):
    with pytest.raises(gastrt.EngineFileError, match=match):
        gastrt.load(_corrupt(small[1], tmp_path, how))


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(ValueError, match="cannot open"):
        gastrt.load(str(tmp_path / "nope.gastrt"))
    with pytest.raises(ValueError, match="directory"):
        gastrt.load(str(tmp_path))


def test_bad_device_and_threads(small):
    with pytest.raises(ValueError, match="unknown device"):
        gastrt.load(small[1], device="tpu")
    with pytest.raises(ValueError, match="threads"):
        gastrt.load(small[1], threads=0)
    if not gastrt.cuda_available():
        with pytest.raises(ValueError, match="CUDA|GPU"):
            gastrt.load(small[1], device="cuda")


def test_mismatched_checkpoints(tmp_path, small):
    sd = dict(torch.load(small[0], weights_only=True)["model_pos"])
    cases = {
        "missing": ({k: v for k, v in sd.items() if "gcn_con.e" not in k}, r"GAST-Net.*gcn_con\.e"),
        "shape": (dict(sd, **{"layers_graph_conv.0.cat_conv.weight": torch.zeros(3, 3, 1, 1)}),
                  r"GAST-Net.*cat_conv.weight.*shape"),
        "extra": (dict(sd, **{"mystery.weight": torch.zeros(2)}), r"unexpected key 'mystery.weight'"),
        "unrelated": ({"fc.weight": torch.zeros(2, 2), "conv1.bias": torch.zeros(2)}, r"matches none"),
        "vp3d-no-shrink": ({k: v for k, v in torch.load(_vp3d(tmp_path), weights_only=True)["model_pos"].items()
                            if not k.startswith("shrink")}, r"VideoPose3D.*shrink"),
    }
    for name, (obj, match) in cases.items():
        p = str(tmp_path / f"{name}.bin")
        torch.save({"epoch": 1, "model_pos": obj}, p)
        out = str(tmp_path / f"{name}.gastrt")
        with pytest.raises(ValueError, match=match):
            gastrt.build(p, out)
        assert not os.path.exists(out), "a failed build must not leave a file"
    assert_no_temp_files(tmp_path)


def _vp3d(tmp_path):
    p = str(tmp_path / "vp3d.bin")
    cfg = {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3],
           "channels": 32, "trajectory": False}
    torch.save(factory.make_checkpoint("videopose3d", cfg, seed=2), p)
    return p


def test_unreadable_checkpoints(tmp_path):
    # random bytes may start like a zip or a pickle: that message varies, the path is always named
    for name, data, match in [("empty.bin", b"", "empty.bin: empty file"),
                              ("text.bin", b"{\"model_pos\": 1}", "text.bin: not a PyTorch checkpoint"),
                              ("rand.bin", os.urandom(4096), "rand.bin: ")]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=match):
            gastrt.build(str(p), str(tmp_path / "x.gastrt"))
        assert not (tmp_path / "x.gastrt").exists()
    assert_no_temp_files(tmp_path)


def test_bad_precision(small, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        gastrt.build(small[0], str(tmp_path / "x.gastrt"), precision="int8")


def test_runtime_does_not_import_torch(small):
    """load / lift / lift_sequence never import torch (checked in a fresh interpreter)."""
    import subprocess
    import sys
    code = ("import sys, numpy as np, gastrt\n"
            f"e = gastrt.load({small[1]!r})\n"
            "e.lift(np.zeros((1, 9, 17, 2), np.float32)); e.lift_sequence(np.zeros((5, 17, 2), np.float32), flip=True)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_lift_sequence_chunks_by_workspace_budget(small, monkeypatch):
    """Long sequences run in chunks sized from a workspace budget (issue #15: a fixed 16384-frame
    chunk of GAST-27 with flip was a 6.4 GiB workspace); the chunking is exact."""
    eng = gastrt.load(small[1])
    big = eng.sequence_chunk("pos", 1, True)
    eng.workspace_budget = 8 << 20
    small_chunk = eng.sequence_chunk("pos", 1, True)
    assert 1 <= small_chunk < big <= eng.max_sequence_frames
    shape = ("pos", 2, small_chunk + eng.receptive_field - 1, "sequence")
    bb, ws = eng.backend.budget_bytes(*shape), eng.backend.workspace_bytes(*shape)
    if bb is not None:
        # the fit counts the context frames and any fixed part, for one thread's workspace
        # (chunks are the same for any thread count); each further thread adds its scratch
        assert bb <= eng.workspace_budget and ws >= bb
    assert 1 <= eng.window_chunk("pos", True) <= 2048  # RIE's one-window-per-frame path is bounded too
    seq = (np.random.default_rng(3).standard_normal((3 * small_chunk + 7, 17, 2)) * 0.3).astype(np.float32)
    y_small = eng.lift_sequence(seq, flip=True)
    eng.workspace_budget = 1 << 40
    np.testing.assert_allclose(y_small, eng.lift_sequence(seq, flip=True), rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("GASTRT_WORKSPACE_BUDGET", "256M")
    assert gastrt.load(small[1], backend="numpy").workspace_budget == 256 << 20
    monkeypatch.setenv("GASTRT_WORKSPACE_BUDGET", "12")
    with pytest.raises(gastrt.GastrtError, match="GASTRT_WORKSPACE_BUDGET"):
        gastrt.load(small[1], backend="numpy")


@pytest.mark.parametrize("value", ["inf", "1e400", "infG", "abc", "-5G"])
def test_bad_workspace_budget_is_one_error(small, monkeypatch, value):
    monkeypatch.setenv("GASTRT_WORKSPACE_BUDGET", value)
    with pytest.raises(gastrt.GastrtError, match="GASTRT_WORKSPACE_BUDGET"):
        gastrt.load(small[1], backend="numpy")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_16bit_engine_with_fp32_weights_is_refused(small, tmp_path, capsys, precision):
    """The native runtime streams a 16-bit engine's conv weights as 16-bit panels: a crafted file
    whose metadata says fp16 / bf16 while it stores fp32 weights is one EngineFileError (not a
    native error at load, nor weights silently rounded)."""
    from gastrt.cli import main
    path = _rewritten(small, tmp_path, precision, lambda m: m.__setitem__("precision", precision))
    for backend in ("numpy", None):
        with pytest.raises(gastrt.EngineFileError, match=f"a {precision} engine stores {precision} weights; "
                                                          r"'.+' is float32"):
            gastrt.load(path, backend=backend)
    assert main(["info", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"a {precision} engine stores {precision} weights" in err[0]
