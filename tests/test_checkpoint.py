"""Tests for gastrt.checkpoint: torch-free, pickle-code-free checkpoint reading.

torch is used only to WRITE fixtures (both torch.save formats); every loaded
array is compared bit-for-bit with the tensor that was saved.
"""

import collections
import io
import json
import os
import pickle
import time
import zipfile
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gastrt.checkpoint import CheckpointError, load_state_dicts, read_torch_file  # noqa: E402

FORMATS = ["zip", "legacy"]


@pytest.fixture
def seed(request):
    """A per-test seed (stable across runs, different for every test and parameter)."""
    s = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(s)
    return s


def save(obj, path, fmt):
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def assert_same(arr, tensor):
    """Bit-for-bit equality of a loaded array with the saved tensor (bfloat16 -> float32)."""
    t = tensor.detach()
    if t.dtype == torch.bfloat16:
        t = t.float()  # exact widening, same as the reader's bit shift
    expected = t.contiguous().numpy()
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == expected.dtype and arr.shape == expected.shape
    assert arr.flags.c_contiguous and arr.dtype.isnative
    assert arr.tobytes() == expected.tobytes()


class Small(torch.nn.Module):
    """Conv1d + BatchNorm1d + Linear: float weights plus int64 num_batches_tracked."""

    def __init__(self, cin=4, cout=5):
        super().__init__()
        self.conv = torch.nn.Conv1d(cin, 8, 3)
        self.bn = torch.nn.BatchNorm1d(8)
        self.fc = torch.nn.Linear(8, cout)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(-1))


def trained(model):
    """One Adam step, so BN stats move and the optimizer has per-parameter state."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(6, 4, 9)).square().mean().backward()
    opt.step()
    return opt


def assert_state_dict(loaded, sd):
    assert set(loaded) == set(sd)
    for k, v in sd.items():
        assert_same(loaded[k], v)


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_checkpoint(tmp_path, seed, fmt):
    pos, traj = Small(), Small(cout=1)
    opt = trained(pos)
    trained(traj)
    ckpt = {"epoch": 3, "lr": 1e-3, "optimizer": opt.state_dict(),
            "model_pos": pos.state_dict(), "model_traj": traj.state_dict()}
    path = save(ckpt, tmp_path / "ckpt.bin", fmt)

    model_pos, model_traj, info = load_state_dicts(path)
    assert_state_dict(model_pos, pos.state_dict())
    assert_state_dict(model_traj, traj.state_dict())
    assert model_pos["bn.num_batches_tracked"].dtype == np.int64
    assert info == {"format": fmt, "epoch": 3,
                    "keys": ["epoch", "lr", "optimizer", "model_pos", "model_traj"]}

    # The whole object, optimizer included, with plain data intact.
    raw = read_torch_file(path)
    sd = opt.state_dict()
    assert sd["state"]  # Adam has per-parameter state after a step: the loop below runs
    assert raw["lr"] == 1e-3 and raw["epoch"] == 3
    assert raw["optimizer"]["param_groups"] == sd["param_groups"]
    assert set(raw["optimizer"]["state"]) == set(sd["state"])
    for i, st in sd["state"].items():
        for name, value in st.items():
            assert_same(raw["optimizer"]["state"][i][name], value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_model_traj_none_and_random_state(tmp_path, seed, fmt):
    """VideoPose3D's run.py saves model_traj=None and numpy RandomState state."""
    model = Small()
    rs = np.random.RandomState(seed % 2**32).get_state()
    ckpt = {"epoch": 80, "lr": np.float64(0.00095), "random_state": rs,
            "losses": np.random.default_rng(seed).random((3, 2), dtype=np.float32).T,
            "optimizer": trained(model).state_dict(), "model_pos": model.state_dict(),
            "model_traj": None, "random_state_semi": None}
    path = save(ckpt, tmp_path / "vp3d.bin", fmt)
    model_pos, model_traj, info = load_state_dicts(path)
    assert model_traj is None and info["epoch"] == 80
    assert_state_dict(model_pos, model.state_dict())
    raw = read_torch_file(path)
    assert raw["lr"] == np.float64(0.00095) and raw["lr"].dtype == np.float64
    assert raw["random_state"][0] == "MT19937"
    np.testing.assert_array_equal(raw["random_state"][1], rs[1])
    assert raw["random_state"][1].dtype == rs[1].dtype
    assert raw["random_state"][2:] == rs[2:]
    np.testing.assert_array_equal(raw["losses"], ckpt["losses"])
    assert raw["losses"].dtype == np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_bare_state_dict(tmp_path, seed, fmt):
    model = Small()
    trained(model)
    model_pos, model_traj, info = load_state_dicts(save(model.state_dict(), tmp_path / "sd.pt", fmt))
    assert_state_dict(model_pos, model.state_dict())
    assert model_traj is None and info["epoch"] is None and info["format"] == fmt
    assert info["keys"] == list(model.state_dict())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_other_pickle_protocols(tmp_path, seed, fmt, protocol):
    """torch.save(..., pickle_protocol=N): frames / MEMOIZE opcodes at 4 and up."""
    model = Small()
    path = tmp_path / "p.pt"
    torch.save({"model_pos": model.state_dict()}, path, pickle_protocol=protocol,
               _use_new_zipfile_serialization=(fmt == "zip"))
    assert_state_dict(load_state_dicts(path)[0], model.state_dict())


@pytest.mark.parametrize("fmt", FORMATS)
def test_dataparallel_prefix_stripped(tmp_path, seed, fmt):
    model = Small()
    wrapped = torch.nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in wrapped)
    for obj, has_traj in ((wrapped, False), ({"epoch": 1, "model_pos": wrapped, "model_traj": wrapped}, True)):
        model_pos, model_traj, _ = load_state_dicts(save(obj, tmp_path / "dp.pt", fmt))
        assert_state_dict(model_pos, model.state_dict())
        if has_traj:
            assert_state_dict(model_traj, model.state_dict())
        else:
            assert model_traj is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_tensor_entries_dropped(tmp_path, seed, fmt):
    sd = {"w": torch.randn(3, 2), "note": "hello", "n": 7, "b": torch.randn(2)}
    model_pos, _, _ = load_state_dicts(save(sd, tmp_path / "x.pt", fmt))
    assert set(model_pos) == {"w", "b"}
    assert_same(model_pos["w"], sd["w"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_sharing_one_storage(tmp_path, seed, fmt):
    base = torch.randn(6, 8)
    obj = {
        "base": base,
        "slice": base[2:5, 1:7],      # offset + non-contiguous
        "T": base.t(),                # transposed, saved as-is
        "col": base[:, 3],            # stride 8
        "elem": base[4, 5],           # 0-d view with an offset
        "step": base[::2, ::3],
        "expanded": torch.randn(3, 1).expand(3, 4),  # stride 0
        "empty": torch.zeros(0, 3),
        "empty_view": base[:, 2:2],
        "zero_d": torch.tensor(2.5),
    }
    path = save(obj, tmp_path / "views.pt", fmt)
    if fmt == "zip":  # the views really share one record: base, expanded, empty, zero_d
        assert sum("/data/" in n for n in zipfile.ZipFile(path).namelist()) == 4
    out = read_torch_file(path)
    for k, t in obj.items():
        assert_same(out[k], t)
    # Copies, not views of each other or of the file buffer.
    assert not np.shares_memory(out["base"], out["slice"])
    assert out["slice"].flags.writeable


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
                                   torch.bool, torch.uint16, torch.complex64])
def test_dtypes(tmp_path, seed, fmt, dtype):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point or dtype.is_complex:
        t = (torch.randn(4, 5, generator=g) * 100).to(dtype)
        if dtype.is_floating_point:  # special values survive bit-for-bit
            t[0, :4] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0]).to(dtype)
    elif dtype == torch.bool:
        t = torch.rand(4, 5, generator=g) > 0.5
    elif dtype == torch.uint16:  # saved via _rebuild_tensor_v3 + UntypedStorage
        t = torch.randint(0, 2**16, (4, 5), generator=g, dtype=torch.int32).to(dtype)
    else:
        info = torch.iinfo(dtype)
        t = torch.randint(info.min, info.max, (4, 5), generator=g, dtype=torch.int64).to(dtype)
    obj = {"t": t, "tT": t.t(), "row": t[2], "scalar": t[1, 3]}
    out = read_torch_file(save(obj, tmp_path / "d.pt", fmt))
    for k, v in obj.items():
        assert_same(out[k], v)
    if dtype == torch.bfloat16:
        assert out["t"].dtype == np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_parameters_and_non_dict_objects(tmp_path, seed, fmt):
    p = torch.nn.Parameter(torch.randn(3, 2))
    q = torch.nn.Parameter(torch.randn(2))
    q.tag = "has python state"  # written with _rebuild_parameter_with_state
    raw = torch.randn(5).untyped_storage()  # a bare storage: its bytes as uint8
    out = read_torch_file(save([p, (q, 5), {"s": {1, 2}}, raw], tmp_path / "p.pt", fmt))
    assert_same(out[0], p)
    assert_same(out[1][0], q)
    assert out[1][1] == 5
    assert out[2] == {"s": {1, 2}}
    assert out[3].dtype == np.uint8 and out[3].tobytes() == bytes(raw)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_state_dicts(tmp_path / "p.pt")


def test_large_checkpoint_is_fast(tmp_path, seed):
    """~70 MB of weights: storages are read with frombuffer, no per-element Python work."""
    sd = {f"layer{i}.weight": torch.randn(1024, 1024) for i in range(17)}
    for fmt in FORMATS:
        path = save({"model_pos": sd}, tmp_path / f"big_{fmt}.bin", fmt)
        start = time.perf_counter()
        model_pos, _, _ = load_state_dicts(path)
        elapsed = time.perf_counter() - start
        assert_same(model_pos["layer16.weight"], sd["layer16.weight"])
        assert elapsed < 2.0, f"{fmt}: {elapsed:.2f}s"  # typically ~0.1s; slack for slow CI


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.bfloat16])
def test_big_endian_zip(tmp_path, seed, dtype):
    """A zip written on a big-endian machine: byteorder record 'big', byteswapped records."""
    t = (torch.randn(4, 6) * 1000).to(dtype)
    obj = {"t": t, "view": t[1:, ::2].t()}
    src = zipfile.ZipFile(save(obj, tmp_path / "le.pt", "zip"))
    path = tmp_path / "be.pt"
    with zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in name:
                data = np.frombuffer(data, f"<u{t.element_size()}").byteswap().tobytes()
            dst.writestr(name, data)
    for k, v in torch.load(path).items():  # torch agrees the crafted file means the same
        assert torch.equal(v, obj[k])
    out = read_torch_file(path)
    for k, v in obj.items():
        assert_same(out[k], v)


class _OldStorage:
    """A storage as pre-1.0 torch pickled it (CUDA class, optional view of a root storage)."""

    def __init__(self, root_key, numel, view=None):
        self.root_key, self.numel, self.view = root_key, numel, view


class _OldTensor:
    def __init__(self, storage, offset, size, stride, v1):
        self.args = (storage, offset, size, stride)
        self.v1 = v1

    def __reduce__(self):
        if self.v1:
            return torch._utils._rebuild_tensor, self.args
        return torch._utils._rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


class _OldPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _OldStorage):
            return ("storage", torch.cuda.FloatStorage, obj.root_key, "cuda:0", obj.numel, obj.view)
        return None


def test_old_legacy_variants(tmp_path, seed):
    """What very old torch wrote: torch.cuda.*Storage, storage views (view_metadata), _rebuild_tensor."""
    data = torch.randn(12)
    root = _OldStorage("140001", 12)
    view = _OldStorage("140001", 12, ("140002", 4, 6))  # elements 4..9 of the root
    obj = {"w": _OldTensor(root, 0, (3, 4), (4, 1), v1=False),
           "v": _OldTensor(view, 1, (2, 2), (1, 3), v1=True)}  # [[view[1], view[4]], [view[2], view[5]]]
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    _OldPickler(buf, protocol=2).dump(obj)
    pickle.dump(["140001"], buf, protocol=2)
    buf.write(np.int64(12).tobytes() + data.numpy().tobytes())
    path = tmp_path / "old.bin"
    path.write_bytes(buf.getvalue())

    expected = {"w": data.reshape(3, 4), "v": data.as_strided((2, 2), (1, 3), 4 + 1)}
    ref = torch.load(path, map_location="cpu", weights_only=False)  # our own file: safe to unpickle
    for k, v in expected.items():
        assert torch.equal(ref[k], v)
    model_pos, _, info = load_state_dicts(path)
    assert info["format"] == "legacy"
    for k, v in expected.items():
        assert_same(model_pos[k], v)


# --------------------------------------------------------------------------- bad files


def _raises(path, match):
    with pytest.raises(CheckpointError, match=match) as e:
        load_state_dicts(path)
    assert str(path) in str(e.value)
    assert isinstance(e.value, ValueError)
    return str(e.value)


def test_missing_path_and_directory(tmp_path):
    _raises(tmp_path / "nope.bin", "no such file")
    _raises(tmp_path, "is a directory")


def test_empty_json_and_random_bytes(tmp_path, seed):
    (tmp_path / "empty.bin").write_bytes(b"")
    _raises(tmp_path / "empty.bin", "empty file")
    (tmp_path / "c.json").write_text(json.dumps({"model_pos": {"w": [1, 2]}}))
    _raises(tmp_path / "c.json", "not a PyTorch checkpoint")
    rng = np.random.default_rng(seed)
    data = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data[0] = 0x41  # not a zip (PK) / pickle (0x80) start, so the message is deterministic
    (tmp_path / "rand.bin").write_bytes(bytes(data))
    _raises(tmp_path / "rand.bin", "not a PyTorch checkpoint")
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"model_pos": {"w": 1.0}}, protocol=2))
    _raises(tmp_path / "plain.pkl", "not a PyTorch checkpoint")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_everywhere(tmp_path, seed, fmt):
    model = Small()
    data = save({"epoch": 1, "model_pos": model.state_dict()}, tmp_path / "full.bin", fmt).read_bytes()
    cut = tmp_path / "cut.bin"
    rng = np.random.default_rng(seed)
    # ~200 cut points spread over the file (random phase) plus the last few bytes.
    step = max(1, len(data) // 200)
    cuts = list(range(int(rng.integers(1, step + 1)), len(data), step)) + [len(data) - 8, len(data) - 1]
    for n in cuts:
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as e:
            load_state_dicts(cut)
        assert str(cut) in str(e.value)
        assert "truncated or corrupted" in str(e.value) or "not a PyTorch" in str(e.value), (n, e.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_random_corruption_never_escapes(tmp_path, seed, fmt):
    """Flipped bytes either still load or give CheckpointError, never another exception."""
    model = Small()
    data = save({"model_pos": model.state_dict()}, tmp_path / "full.bin", fmt).read_bytes()
    rng = np.random.default_rng(seed)
    bad = tmp_path / "bad.bin"
    for _ in range(300):
        buf = bytearray(data)
        for i in rng.integers(0, len(buf), rng.integers(1, 4)):
            buf[i] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(buf))
        try:
            load_state_dicts(bad)
        except CheckpointError:
            pass


class _System:
    """Pickles as a call of os.system(cmd)."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _legacy_framed(obj_pickle):
    """A legacy torch file whose header is genuine but whose object pickle is ours."""
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    buf.write(obj_pickle)
    pickle.dump([], buf, protocol=2)
    return buf.getvalue()


def _zip_with_data_pkl(tmp_path, obj_pickle, src=None):
    """A genuine torch zip file (``src`` or a fresh one) with data.pkl replaced."""
    src = zipfile.ZipFile(src or save({"w": torch.ones(2)}, tmp_path / "src.pt", "zip"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, obj_pickle if name.endswith("data.pkl") else src.read(name))
    return out.getvalue()


@pytest.mark.parametrize("container", ["raw", "legacy", "zip"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, container):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"model_pos": {"w": _System(f"touch {marker}")}}, protocol=2)
    data = {"raw": lambda: evil, "legacy": lambda: _legacy_framed(evil),
            "zip": lambda: _zip_with_data_pkl(tmp_path, evil)}[container]()
    path = tmp_path / "evil.bin"
    path.write_bytes(data)
    msg = _raises(path, "refuses to load global")
    assert "system" in msg and "only tensors and plain data" in msg
    with pytest.raises(CheckpointError):
        read_torch_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("extra", [
    np.array([1, "a", None], dtype=object),
    np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]),
    np.array(["2020-01-01"], dtype="datetime64[D]"),
])
def test_numpy_beyond_plain_numbers_is_refused(tmp_path, seed, fmt, extra):
    path = save({"model_pos": Small().state_dict(), "extra": extra}, tmp_path / "np.pt", fmt)
    _raises(path, "refused")


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_model_pickle_is_refused(tmp_path, seed, fmt):
    """torch.save(model) pickles the module classes: refused, the user must save state_dict()."""
    _raises(save(Small(), tmp_path / "model.pt", fmt), r"refuses to load global .*Small")


@pytest.mark.parametrize("fmt", FORMATS)
def test_dict_without_tensors(tmp_path, fmt):
    _raises(save({"epoch": 1, "lr": 0.1}, tmp_path / "a.pt", fmt), "no 'model_pos'")
    _raises(save({"model_pos": {"x": 1}}, tmp_path / "b.pt", fmt), "contains no tensors")
    _raises(save({"model_pos": [torch.ones(1)]}, tmp_path / "c.pt", fmt), "expected a state_dict")


def test_huge_memo_index_is_refused_cheaply(tmp_path):
    """A corrupt LONG_BINPUT index would make the C unpickler zero a 2**32-entry memo table."""
    evil = b"\x80\x02}r\xf0\xff\xff\xff."  # EMPTY_DICT, LONG_BINPUT 0xfffffff0, STOP
    (tmp_path / "memo.pt").write_bytes(_legacy_framed(evil))
    start = time.perf_counter()
    _raises(tmp_path / "memo.pt", "memo index")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_zero_stride_blowup_is_refused(tmp_path, fmt):
    """Stride 0 lets one stored float describe a 2**40-element tensor: refused, not allocated."""
    data = bytearray(save({"w": torch.ones(1).expand(4, 4)}, tmp_path / "ok.pt", fmt).read_bytes())
    if fmt == "zip":
        data = bytearray(zipfile.ZipFile(io.BytesIO(bytes(data))).read("ok/data.pkl"))
    i = data.index(b"K\x04K\x04\x86")  # the size (4, 4): BININT1 4, BININT1 4, TUPLE2
    data[i:i + 5] = b"J\x00\x00\x10\x00J\x00\x00\x10\x00\x86"  # (2**20, 2**20) as BININT
    if fmt == "zip":
        data = _zip_with_data_pkl(tmp_path, bytes(data), src=tmp_path / "ok.pt")
    (tmp_path / "big.pt").write_bytes(bytes(data))
    _raises(tmp_path / "big.pt", "far more than the file holds")


def test_out_of_bounds_view_is_refused(tmp_path):
    """A crafted size/stride that reaches past the storage must not read foreign memory."""
    data = bytearray(save({"w": torch.ones(4)}, tmp_path / "ok.pt", "legacy").read_bytes())
    i = data.index(b"K\x04\x85")  # BININT1 4, TUPLE1: the size (4,)
    data[i + 1] = 200
    (tmp_path / "oob.pt").write_bytes(bytes(data))
    _raises(tmp_path / "oob.pt", "needs 200 elements")


# ---- hostile files: bounded depth, opcodes and inflation (issue #15) -------------------------------

def _legacy_file(path, obj_pickle: bytes) -> str:
    """A legacy torch.save layout around a hand-made object pickle."""
    with open(path, "wb") as f:
        for o in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            f.write(pickle.dumps(o, protocol=2))
        f.write(obj_pickle)
        f.write(pickle.dumps([], protocol=2))
    return str(path)


@pytest.mark.parametrize("depth", [150, 1000, 1_000_000])
def test_deeply_nested_objects_are_refused_not_crashed(tmp_path, depth):
    """A dict keyed by a tuple nested `depth` deep: the C unpickler / hashing would recurse on the
    C stack (SIGSEGV at 10^6); the pre-scan refuses it, at once."""
    key = b"N" + b"\x85" * depth                       # None, then TUPLE1 `depth` times
    path = _legacy_file(tmp_path / "deep.bin", b"\x80\x02}" + key + b"Ns.")
    t0 = time.perf_counter()
    _raises(path, "nested more than 100 levels")
    assert time.perf_counter() - t0 < 10


def test_nesting_within_the_limit_still_loads(tmp_path):
    obj = {"model_pos": collections.OrderedDict(w=torch.zeros(2)), "extra": ((((1,),),),)}
    path = tmp_path / "ok.bin"
    torch.save(obj, path)
    pos, _, _ = load_state_dicts(path)
    assert list(pos) == ["w"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_long_flat_containers_are_not_deep(tmp_path, fmt):
    """Pickle appends list items / sets dict items in batches of 1,000: a 200k-entry loss history
    in a training checkpoint is one level deep, not 200 (the depth pre-scan once counted batches)."""
    obj = {"model_pos": collections.OrderedDict(w=torch.ones(3)), "losses": [0.5] * 200_000,
           "per_step": {i: float(i) for i in range(200_000)}, "seen": set(range(5000))}
    pos, _, _ = load_state_dicts(save(obj, tmp_path / "flat.bin", fmt))
    assert list(pos) == ["w"]
    nested = [[0.5] * 2000] * 3
    for _ in range(120):                    # but nesting built from such batches still counts
        nested = [nested]
    with pytest.raises(CheckpointError, match="nested more than 100 levels"):
        load_state_dicts(save({"model_pos": collections.OrderedDict(w=torch.ones(3)), "x": nested},
                              tmp_path / "deep.bin", fmt))


def test_zip_members_cannot_inflate_past_what_they_hold(tmp_path):
    # data.pkl inflating to 300 MB from a 300 kB archive
    bomb = tmp_path / "bomb.bin"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00." + b"\x00" * (300 << 20))
    assert os.path.getsize(bomb) < 1 << 20
    _raises(str(bomb), "declares 314,572,806 bytes")
    # a storage member larger than its record says (2 floats declared, 64 MiB stored)
    good = tmp_path / "good.bin"
    torch.save({"model_pos": {"w": torch.zeros(2)}}, good)
    evil = tmp_path / "evil.bin"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if "/data/" in info.filename:
                data = bytes(64 << 20)
            zout.writestr(info.filename, data)
    _raises(str(evil), "for a storage of 8 bytes")
    # a byteorder record is a word, not megabytes
    bo = tmp_path / "bo.bin"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bo, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("byteorder"):
                data = b"little" + bytes(1 << 20)
            zout.writestr(info.filename, data)
    _raises(str(bo), "byteorder")


def test_a_zip_member_lying_about_its_size_is_not_inflated_whole(tmp_path):
    """Found by the #15 audit: data.pkl inflating to 512 MiB while the central directory says it
    holds the real pickle's few kB; one zipfile read() inflated it all (2.1 GB RSS)."""
    import resource
    good = save({"model_pos": Small().state_dict()}, tmp_path / "good.bin", "zip")
    liar = tmp_path / "liar.bin"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(liar, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                real = len(data)
                zout.writestr(info.filename, data + bytes(512 << 20), compress_type=zipfile.ZIP_DEFLATED)
            else:
                zout.writestr(info.filename, data)
    raw = bytearray(liar.read_bytes())
    cd = raw.find(b"PK\x01\x02")
    while cd >= 0:                                   # the central record of data.pkl: size := real
        name_len = int.from_bytes(raw[cd + 28:cd + 30], "little")
        if bytes(raw[cd + 46:cd + 46 + name_len]).endswith(b"data.pkl"):
            raw[cd + 24:cd + 28] = real.to_bytes(4, "little")
        cd = raw.find(b"PK\x01\x02", cd + 4)
    liar.write_bytes(bytes(raw))
    assert len(raw) < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _raises(str(liar), "truncated or corrupted|holds more than")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 64, grown_mb


def test_a_declared_size_is_not_allocated_before_the_data_arrives(tmp_path):
    """Found by review: a 1 kB checkpoint whose data.pkl entry claims 200 MiB made the reader
    allocate 200 MiB before finding 182 bytes."""
    import resource
    good = save({"model_pos": Small().state_dict()}, tmp_path / "good.bin", "zip")
    raw = bytearray(good.read_bytes())
    cd = raw.find(b"PK\x01\x02")
    while cd >= 0:
        name_len = int.from_bytes(raw[cd + 28:cd + 30], "little")
        if bytes(raw[cd + 46:cd + 46 + name_len]).endswith(b"data.pkl"):
            raw[cd + 24:cd + 28] = (200 << 20).to_bytes(4, "little")
        cd = raw.find(b"PK\x01\x02", cd + 4)
    liar = tmp_path / "claims.bin"
    liar.write_bytes(bytes(raw))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _raises(str(liar), "ends after|truncated or corrupted")
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 50


def test_checkpoint_mismatch_survives_pickling():
    """Ray and multiprocessing send errors between processes as pickles."""
    import pickle
    from gastrt.errors import CheckpointMismatch
    e = pickle.loads(pickle.dumps(CheckpointMismatch("GAST-Net", "key 'x' is missing")))
    assert isinstance(e, CheckpointMismatch) and e.family == "GAST-Net" and "key 'x' is missing" in str(e)
    from gastrt.errors import EngineFileError, GastrtError
    for cls in (GastrtError, EngineFileError, CheckpointError):
        e = pickle.loads(pickle.dumps(cls("m" * 5000)))
        assert type(e) is cls and len(str(e)) == 2000
