"""Helpers shared by the test modules (imported by name; conftest.py only holds fixtures)."""
from __future__ import annotations

import os
import threading

import numpy as np

import gastrt
from gastrt.engine_file import PRECISION_TOLERANCE
from gastrt.stream import StreamOutput

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")

# max |engine - eager| / max |eager| per engine precision (the library's documented promise)
TOL = dict(PRECISION_TOLERANCE)


# Small models with layers wide enough for whole and partial panels of every CPU kernel variant.
SMALL_ENGINE_CONFIGS = {
    "gast": {"num_joints": 17, "filter_widths": [3, 3], "channels": 72},
    "videopose3d": {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17, "filter_widths": [3, 3, 3],
                    "channels": 136, "trajectory": False},
    "rie": {"num_joints": 17, "filter_widths": [3, 3], "channels": 40, "latent": 48, "stage": 3},
}


def eager_reference64(ck, family: str, config: dict, windows, sequence=None):
    """The eager model of checkpoint ``ck`` in float64: (windows [N, rf, J, 2] -> [N, J, 3]
    (the centre frame), sequence [T, J, 2] -> [T, J, 3] with the edge padding of lift_sequence, or
    None). Needs torch."""
    import torch
    from gastrt.reference import factory

    sd = torch.load(ck, weights_only=True)["model_pos"]
    rf = int(np.prod(config["filter_widths"]))
    with torch.no_grad():
        win = factory.build_model(family, config, optimized=True).double()
        win.load_state_dict(sd)
        win.eval()
        ref_w = win(torch.from_numpy(np.asarray(windows, np.float64))).numpy()[:, 0]
        ref_s = None
        if sequence is not None:
            full = factory.build_model(family, config, optimized=False).double()
            full.load_state_dict(sd)
            full.eval()
            pad = (rf - 1) // 2
            seq = np.asarray(sequence)
            padded = np.concatenate([np.repeat(seq[:1], pad, 0), seq, np.repeat(seq[-1:], pad, 0)])
            ref_s = full(torch.from_numpy(padded[None].astype(np.float64))).numpy()[0]
    return ref_w, ref_s


def rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.isfinite(got).all(), "non-finite values in the result"
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


# The amsgrad state of a full-size model is 3x its weights (a 243-frame checkpoint with it weighs
# 270-850 MB): models above this many parameters are saved with their optimizer as it is before
# the first step, which keeps a full test run's temp files to a few GB.
OPTIMIZER_STATE_MAX_PARAMS = 1_000_000


def save_checkpoint(path, family: str, config: dict, *, seed: int = 0, legacy: bool = False) -> str:
    """Write a random checkpoint in the original training-script layout (torch.save, zip format
    or the legacy one); returns ``path``. Needs torch."""
    import torch
    from gastrt.reference.factory import make_checkpoint

    ck = make_checkpoint(family, config, seed=seed, optimizer_step=False)
    if sum(t.numel() for t in ck["model_pos"].values()) <= OPTIMIZER_STATE_MAX_PARAMS:
        ck = make_checkpoint(family, config, seed=seed)
    torch.save(ck, os.fspath(path), _use_new_zipfile_serialization=not legacy)
    return os.fspath(path)


def temp_files(folder, *outputs) -> list[str]:
    """Names in ``folder`` that are an atomic writer's temp files, by the writers' own naming
    (gastrt.engine_file.temp_prefix): those of ``outputs`` (names or paths) when given, else any."""
    from gastrt.engine_file import TEMP_PREFIX, temp_prefix

    prefixes = tuple(temp_prefix(os.fspath(o)) for o in outputs) or (TEMP_PREFIX,)
    return sorted(n for n in os.listdir(folder) if n.startswith(prefixes))


def assert_no_temp_files(folder, *outputs) -> None:
    """No atomic-write temp file (of ``outputs``, or any) is left in ``folder``."""
    left = temp_files(folder, *outputs)
    assert not left, f"temp files left behind in {folder}: {left}"


def subprocess_env() -> dict:
    """Environment for a child interpreter that imports the same gastrt as the tests."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(gastrt.__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    return env


def small_engine(folder, name: str, family: str, config: dict, causal: bool = False) -> tuple[str, str]:
    """A checkpoint {'model_pos'(, 'model_traj')} with random weights and random BatchNorm
    statistics (saved once per name in ``folder``), built into an engine.
    -> (checkpoint path, engine path)"""
    import zlib

    import torch
    from gastrt.reference import factory

    ck = os.path.join(os.fspath(folder), f"{name}.bin")
    if not os.path.exists(ck):
        seed = zlib.crc32(name.encode()) % 1000
        sd = {"model_pos": factory.random_state_dict(family, config, seed=seed)}
        if config.get("trajectory"):
            sd["model_traj"] = factory.random_state_dict(family, config, seed=seed, trajectory=True)
        torch.save(sd, ck)
    out = os.path.join(os.fspath(folder), f"{name}-{int(causal)}.gastrt")
    return ck, gastrt.build(ck, out, causal=causal)


def run_in_threads(fn, n: int) -> list:
    """fn(i) for i in range(n), each on its own thread, all released at once (a barrier).
    Returns what the threads raised, as (i, repr(exception)) pairs: empty when all returned."""
    errors, barrier = [], threading.Barrier(n)

    def body(i):
        try:
            barrier.wait()
            fn(i)
        except Exception as e:  # reported to the caller
            errors.append((i, repr(e)))

    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def stream_seqs(eng, lengths, seed=0) -> list:
    """Random keypoint sequences (T, J, 2) of the given lengths for ``eng``."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, eng.num_joints, 2)) * 0.5).astype(np.float32) for n in lengths]


def drive_stream(stream, seqs, starts, gaps=None) -> list:
    """Push each sequence i into slot i from push number starts[i] on (slot i skips the pushes
    where gaps[i](step) is True; a None gap: never), flush it after its last frame. -> per slot: frames, poses, filled."""
    n = stream.slots
    J = stream.num_joints
    outs = []
    pos = [0] * len(seqs)
    step = 0
    done = [False] * len(seqs)
    while not all(done):
        fr = np.full((n, J, 2), np.nan, np.float32)   # frames of absent slots are ignored
        pres = np.zeros(n, bool)
        for i, q in enumerate(seqs):
            if done[i] or step < starts[i] or (gaps and gaps[i] and gaps[i](step)):
                continue
            fr[i] = q[pos[i]]
            pres[i] = True
            pos[i] += 1
        outs.append(stream.push(fr, pres))
        for i, q in enumerate(seqs):
            if not done[i] and pos[i] == len(q):
                outs.append(stream.flush(i))
                done[i] = True
        step += 1
    out = StreamOutput.concat(outs, stream.num_joints_out)
    res = []
    for i, q in enumerate(seqs):
        o = out.for_slot(i)
        np.testing.assert_array_equal(o.frames, np.arange(len(q)))
        res.append(o)
    return res


def gast_weights(rng, j, c, heads=4, sparse=True) -> dict:
    """Random weights in the lowered layout (families/gast.py), with GAST's sparse local
    tables (zero diagonal, off-diagonal only on the masks) or dense ones."""
    gc = c // heads
    hg = heads * gc
    s = 1 / np.sqrt(c)
    from gastrt.skeletons import gast_masks, skeleton_for

    if sparse:
        masks = gast_masks(skeleton_for(j))
    else:
        masks = (np.ones((j, j), bool), np.ones((j, j), bool))
    off = np.stack([rng.uniform(0, 1, (j, j, c)) * (m & ~np.eye(j, dtype=bool))[..., None] for m in masks])
    W = {
        "loc_w": rng.standard_normal((c, 4 * c)) * s,
        "loc_diag": rng.uniform(0, 1, (2, j, c)),
        "loc_off": off,
        "loc_b": rng.standard_normal(2 * c) * 0.2,
        "loc_cat_w": rng.standard_normal((2 * c, c)) / np.sqrt(2 * c),
        "loc_cat_b": rng.standard_normal(c) * 0.2,
        "glb_u": rng.standard_normal((c, 2 * heads)) * s,
        "glb_c": rng.standard_normal(2 * heads) * 0.2,
        "glb_g_w": rng.standard_normal((c, hg)) * s,
        "glb_g_b": rng.standard_normal(hg) * 0.2,
        "glb_ck": rng.standard_normal((heads, j, j)) * 0.1,
        "glb_cat_w": rng.standard_normal((hg, c)) / np.sqrt(hg),
        "glb_cat_b": rng.standard_normal(c) * 0.2,
        "cat_w": rng.standard_normal((3 * c, 2 * c)) / np.sqrt(3 * c),
        "cat_b": rng.standard_normal(2 * c) * 0.2,
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in W.items()}


def conv_reference64(x, w, b, k: int, stride: int, dilation: int):
    """A temporal conv in float64, before its activation: x [n, 1, t, ci], w [k*ci, co], b [co]
    -> (y [n, t_out, co], scale), scale = the size of its summed terms (max |x| * the largest
    column sum of |w| + max |b|), which error bounds are relative to."""
    ci, co = x.shape[-1], w.shape[1]
    span = (k - 1) * dilation + 1
    to = (x.shape[2] - span) // stride + 1
    x64, w64 = np.asarray(x, np.float64)[:, 0], np.asarray(w, np.float64).reshape(k, ci, co)
    y = np.zeros((x.shape[0], to, co))
    for tau in range(k):
        y += x64[:, tau * dilation: tau * dilation + (to - 1) * stride + 1: stride] @ w64[tau]
    y += b
    scale = float(np.abs(x64).max() * np.abs(w64).sum(axis=(0, 1)).max() + np.abs(b).max())
    return y, scale


def bf16_activations(a):
    """float32 -> the bf16 values the kernel multiplies (vcvtne2ps2bf16: RNE, zero and denormal
    inputs to a signed zero, NaN quieted), widened back to float32."""
    b = np.ascontiguousarray(a, np.float32).view(np.uint32)
    e = b & 0x7F800000
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint32)
    r = np.where(e == 0, (b >> 16) & 0x8000, r)
    r = np.where((b & 0x7FFFFFFF) > 0x7F800000, (b >> 16) | 0x40, r)
    return (r.astype(np.uint32) << 16).view(np.float32)


def round_to_16bit(w, precision: str):
    """w rounded to fp16 / bf16 and widened back to float32 (what a 16-bit engine's weights hold)."""
    from gastrt.engine_file import from_bf16_bits, to_bf16_bits
    w = np.asarray(w, np.float32)
    return w.astype(np.float16).astype(np.float32) if precision == "fp16" else from_bf16_bits(to_bf16_bits(w))


def all_finite_16bit(precision: str, cols: int):
    """Every finite fp16 / bf16 value, widened to float32, as a [K, cols] matrix (the last row
    wrapping round to the first values)."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    if precision == "fp16":
        v = bits.view(np.float16).astype(np.float32)
    else:
        v = (bits.astype(np.uint32) << 16).view(np.float32)
    v = v[np.isfinite(v)]
    return np.resize(v, ((v.size + cols - 1) // cols, cols)).astype(np.float32)


def one_hot_rows(k: int, r0: int, rows: int):
    """(x [1, 1, rows, k] with a 1 at column sel[i] of row i, sel = r0.. mod k): a 1x1 conv of x
    reads back rows sel of its weights exactly."""
    sel = np.arange(r0, r0 + rows) % k
    x = np.zeros((1, 1, rows, k), np.float32)
    x[0, 0, np.arange(rows), sel] = 1
    return x, sel
