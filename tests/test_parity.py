"""Engine vs the eager PyTorch reference over every configuration the originals ship:
lift (strided single-frame model), lift_sequence (dilated full-sequence model), flip on and off,
causal and not, random weights and random BatchNorm statistics."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from gastrt_testutil import TOL, rel_err

torch = pytest.importorskip("torch")

import gastrt  # noqa: E402
from gastrt.reference import factory  # noqa: E402
from gastrt.skeletons import COCO_17_LR, skeleton_for  # noqa: E402

CONFIGS = {
    "gast-27": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 128}),
    "gast-81": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3, 3], "channels": 64}),
    "gast-243": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 32}),
    "gast-27-toes": ("gast", {"num_joints": 19, "filter_widths": [3, 3, 3], "channels": 128}),
    "gast-27-humaneva": ("gast", {"num_joints": 15, "filter_widths": [3, 3, 3], "channels": 128}),
    "vp3d-27": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                "filter_widths": [3, 3, 3], "channels": 1024, "trajectory": False}),
    "vp3d-81": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                "filter_widths": [3, 3, 3, 3], "channels": 1024, "trajectory": False}),
    "vp3d-243": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                 "filter_widths": [3, 3, 3, 3, 3], "channels": 1024, "trajectory": False}),
    "vp3d-27-humaneva": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                                         "filter_widths": [3, 3, 3], "channels": 1024, "trajectory": False}),
    "rie-243-s1-l256": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 256,
                                "latent": 256, "stage": 1}),
    "rie-243-s3-l512": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 256,
                                "latent": 512, "stage": 3}),
}
BACKENDS = ["numpy", "native"] + (["cuda"] if gastrt.cuda_available() else [])


def _symmetry(family, config):
    if family == "videopose3d":
        out = skeleton_for(config["num_joints_out"])
        inp = (out.joints_left, out.joints_right) if config["num_joints_in"] == config["num_joints_out"] \
            else COCO_17_LR
    else:
        out = skeleton_for(config["num_joints"])
        inp = (out.joints_left, out.joints_right)
    return inp, (out.joints_left, out.joints_right)


def _perm(n, lr):
    p = np.arange(n)
    p[list(lr[0])] = lr[1]
    p[list(lr[1])] = lr[0]
    return p


def eager(model, x, flip=False, sym=None):
    """The originals' evaluate(): flip = batch of [x, mirrored x], un-mirror, average."""
    with torch.no_grad():
        if not flip:
            return model(torch.from_numpy(x)).numpy()
        xf = x[:, :, _perm(x.shape[2], sym[0])].copy()
        xf[..., 0] *= -1
        y = model(torch.from_numpy(np.concatenate([x, xf]))).numpy()
        n = x.shape[0]
        yf = y[n:][:, :, _perm(y.shape[2], sym[1])].copy()
        yf[..., 0] *= -1
        return (y[:n] + yf) / 2


@pytest.fixture(scope="module")
def setup(ckpt_cache, module_dir):
    cache = {}

    def get(name, causal):
        key = (name, causal)
        if key not in cache:
            family, config = CONFIGS[name]
            ck = ckpt_cache(family, config, seed=zlib.crc32(name.encode()) % 1000)
            eng_path = str(module_dir / f"{name}-{causal}.gastrt")
            gastrt.build(ck, eng_path, causal=causal)
            sd = torch.load(ck, weights_only=True)["model_pos"]
            win = factory.build_model(family, config, optimized=True, causal=causal)
            win.load_state_dict(sd)
            seq = None
            if family != "rie":
                seq = factory.build_model(family, config, optimized=False, causal=causal)
                seq.load_state_dict(sd)
            cache[key] = (family, config, eng_path, win, seq)
        return cache[key]

    return get


def _engine(path, backend):
    # skip only when the extension is absent: a built runtime that fails to load is a failure
    if backend == "native":
        pytest.importorskip("gastrt._native", reason="native runtime not built")
    if backend == "cuda":
        return gastrt.load(path, device="cuda")
    return gastrt.load(path, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity(setup, name, causal, backend):
    family, config, path, win_model, seq_model = setup(name, causal)
    eng = _engine(path, backend)
    rf = eng.receptive_field
    j_in = eng.num_joints
    sym = _symmetry(family, config)
    rng = np.random.default_rng(zlib.crc32(f"{name}{causal}{backend}".encode()))
    assert eng.family == family and eng.causal == causal and rf == np.prod(config["filter_widths"])

    # lift: B odd windows, flip off and on
    x = rng.standard_normal((3, rf, j_in, 2)).astype(np.float32) * 0.5
    for flip in (False, True):
        ref = eager(win_model, x, flip, sym)[:, 0]
        got = eng.lift(x, flip=flip)
        assert rel_err(got, ref) < TOL["fp32"], (name, "lift", flip)

    # lift_sequence: a prime length, edge padded as UnchunkedGenerator; equals lift on its windows
    t = 11
    seq = rng.standard_normal((t, j_in, 2)).astype(np.float32) * 0.5
    pad = (rf - 1) // 2
    shift = pad if causal else 0
    padded = np.pad(seq, ((pad + shift, pad - shift), (0, 0), (0, 0)), mode="edge")[None]
    windows = np.stack([padded[0, i:i + rf] for i in range(t)])
    for flip in (False, True):
        got = eng.lift_sequence(seq, flip=flip)
        assert got.shape == (t, eng.num_joints_out, 3)
        if seq_model is not None:
            ref = eager(seq_model, padded, flip, sym)[0]
        else:
            ref = eager(win_model, windows, flip, sym)[:, 0]
        assert rel_err(got, ref) < TOL["fp32"], (name, "lift_sequence", flip)
        assert rel_err(got, eng.lift(windows, flip=flip)) < TOL["fp32"], (name, "windows == sequence", flip)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sequence_lengths_and_batching(setup, backend):
    """T = 1, T < receptive field, and several people in one call equal one person at a time."""
    family, config, path, _, seq_model = setup("gast-81", False)
    eng = _engine(path, backend)
    rng = np.random.default_rng(7)
    for t in (1, 2, 40):
        seq = rng.standard_normal((t, 17, 2)).astype(np.float32)
        pad = eng.pad
        padded = np.pad(seq, ((pad, pad), (0, 0), (0, 0)), mode="edge")[None]
        assert rel_err(eng.lift_sequence(seq), eager(seq_model, padded)[0]) < TOL["fp32"]
    # long sequences run in overlapping pieces: same result as one call
    seq = rng.standard_normal((101, 17, 2)).astype(np.float32)
    assert eng.max_sequence_frames >= 101     # an existing knob, and `whole` is one piece
    whole = eng.lift_sequence(seq, flip=True)
    eng.max_sequence_frames = 7
    assert rel_err(eng.lift_sequence(seq, flip=True), whole) < TOL["fp32"]
    eng.max_sequence_frames = 16384
    people = rng.standard_normal((3, 13, 17, 2)).astype(np.float32)
    batched = eng.lift_sequence(people, flip=True)
    for p in range(3):
        assert rel_err(batched[p], eng.lift_sequence(people[p], flip=True)) < TOL["fp32"]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_weights(setup, tmp_path, ckpt_cache, precision):
    """fp16 / bf16 engines store weights in that precision; the CPU computes in fp32, so the error
    is the weight rounding alone."""
    family, config = CONFIGS["gast-27"]
    ck = ckpt_cache(family, config, seed=zlib.crc32(b"gast-27") % 1000)
    path = gastrt.build(ck, str(tmp_path / f"m-{precision}.gastrt"), precision=precision)
    eng = gastrt.load(path, backend="numpy")
    assert eng.precision == precision
    _, _, _, win, _ = setup("gast-27", False)
    x = np.random.default_rng(3).standard_normal((5, 27, 17, 2)).astype(np.float32)
    assert rel_err(eng.lift(x), eager(win, x)[:, 0]) < TOL[precision]


def test_trajectory_model(tmp_path):
    """VideoPose3D checkpoints with 'model_traj': the engine carries the trajectory plan."""
    config = {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3],
              "channels": 64, "trajectory": True}
    ck = factory.make_checkpoint("videopose3d", config, seed=5)
    assert "model_traj" in ck
    p = str(tmp_path / "traj.bin")
    torch.save(ck, p)
    eng = gastrt.load(gastrt.build(p, str(tmp_path / "traj.gastrt")), backend="numpy")
    assert eng.has_trajectory
    traj = factory.build_model("videopose3d", config, optimized=True, trajectory=True)
    traj.load_state_dict(ck["model_traj"])
    x = np.random.default_rng(1).standard_normal((4, 9, 17, 2)).astype(np.float32)
    with torch.no_grad():
        ref = traj(torch.from_numpy(x)).numpy()[:, 0, 0]
    assert rel_err(eng.lift_trajectory(x), ref) < TOL["fp32"]
    seq = np.random.default_rng(2).standard_normal((6, 17, 2)).astype(np.float32)
    assert eng.trajectory_sequence(seq).shape == (6, 3)


@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
def test_long_sequence_videopose3d_243(setup, causal):
    """A sequence long enough that every width-3 layer of the native runtime runs Winograd F(4,3)
    (blocks of 4 * dilation frames, up to 324) plus its direct tail, against the eager model."""
    family, config, path, _, seq_model = setup("vp3d-243", causal)
    eng = _engine(path, "native")
    seq = np.random.default_rng(11).standard_normal((401, 17, 2)).astype(np.float32) * 0.5
    pad = eng.pad
    shift = pad if causal else 0
    padded = np.pad(seq, ((pad + shift, pad - shift), (0, 0), (0, 0)), mode="edge")[None]
    ref = eager(seq_model, padded)[0]
    assert rel_err(eng.lift_sequence(seq), ref) < TOL["fp32"]
