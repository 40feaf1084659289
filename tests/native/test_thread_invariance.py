"""Results of the native CPU runtime do not depend on the thread count: bit for bit, kernel by
kernel and through the engine API (window, flip, sequence, stream). The GEMM tile grid and the
GAST chunking depend on the problem only (csrc/cpu/tiling.h), so every element is computed by
the same calls whatever the team. (A bf16 conv's row tiles on the vdpbf16ps kernel follow the
team: that kernel computes an element the same way in any tile, which the bf16 cases check.)
Sizes are chosen to cross the tiling thresholds (several row and column tiles, the small-M
kernel with column tails and several K blocks, Winograd)."""
from __future__ import annotations

import numpy as np
import pytest

_native = pytest.importorskip("gastrt._native")

import gastrt  # noqa: E402
from gastrt_testutil import conv_reference64, gast_weights, round_to_16bit  # noqa: E402
from test_kernels import f32  # noqa: E402

THREADS = (1, 2, 3, 5)


def assert_same_for_all_threads(fn):
    """fn(threads) -> array; every thread count gives the same bits as threads=1 (and no NaN)."""
    ref = fn(1)
    assert np.isfinite(ref).all()
    for t in THREADS[1:]:
        got = fn(t)
        assert got.shape == ref.shape
        diff = np.abs(got.astype(np.float64) - ref).max()
        assert np.array_equal(got, ref), f"threads={t} differs from threads=1 by {diff:.3g}"


CONV_CASES = [
    # n, t, ci, co, k, stride, dilation, algo
    (1, 27, 512, 1000, 3, 3, 1, "direct"),     # few rows: small-M kernel, column strips + tail
    (1, 81, 200, 517, 3, 1, 3, "direct"),      # shifted GEMMs, odd columns
    (4, 243, 64, 300, 3, 1, 9, "direct"),      # many rows: row x column tiles on OpenBLAS
    (3, 120, 256, 256, 3, 1, 3, "winograd"),
    (1, 1, 1030, 1030, 1, 1, 1, "direct"),     # one row, K > one K block of the small kernel
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv_bitwise_across_threads(case):
    n, t, ci, co, k, stride, dil, algo = case
    rng = np.random.default_rng(n * 1000 + t + ci)
    x = f32(rng.standard_normal((n, 1, t, ci)))
    w = f32(rng.standard_normal((k * ci, co)) / np.sqrt(k * ci))
    b = f32(rng.standard_normal(co))
    assert_same_for_all_threads(lambda th: _native.conv(x, w, b, k=k, stride=stride, dilation=dil,
                                                        act="relu", threads=th, algo=algo))


BF16_THREAD_CASES = [
    # kernel, algo, n, t, co (rows per sequence: t - 6). On the vdpbf16ps kernel (native: the
    # machine's, else its emulation) row tiles follow the team (tiling.h bf16_pairs_grid): two
    # 294-row segments (at 3 threads two tiles each, at 5 three); one 128-row product over 600
    # columns (two row tiles from 2 threads on, at 5 threads x two column tiles); four 100-row
    # segments on the emulation (at 5 threads 80-row tiles: each segment split 50 + 50).
    # Winograd F(2,3) over several 64-tile x 256-column tasks. On emulated AMX, which keeps the
    # team-independent grid: 114- and 100-row segments.
    ("native", "direct", 2, 300, 300),
    ("native", "direct", 1, 134, 600),
    ("emulated", "direct", 4, 106, 300),
    ("native", "winograd", 2, 300, 300),
    ("emulated-amx", "direct", 2, 120, 300),
    ("emulated-amx", "direct", 4, 106, 300),
]


@pytest.mark.parametrize("case", BF16_THREAD_CASES, ids=lambda c: "-".join(map(str, c)))
def test_bf16_conv_bitwise_across_threads(case):
    """A bf16 engine's conv on its dot-product kernels gives the same bits for every team size."""
    kernel, algo, n, t, co = case
    if kernel == "native":
        kernel = "avx512bf16" if "avx512bf16" in _native.bf16_dot_kernels() else "emulated"
    rng = np.random.default_rng(17)
    x = f32(rng.standard_normal((n, 1, t, 130)))
    w = round_to_16bit(rng.standard_normal((390, co)) / np.sqrt(390), "bf16")
    b = f32(rng.standard_normal(co))
    assert_same_for_all_threads(lambda th: _native.conv(x, w, b, k=3, stride=1, dilation=3, act="relu",
                                                        threads=th, algo=algo, bf16_dot=kernel))


@pytest.mark.parametrize("nt", [(1, 9), (1, 27), (2, 81), (7, 3)], ids=lambda v: f"n{v[0]}t{v[1]}")
def test_gast_block_bitwise_across_threads(nt):
    n, t = nt
    rng = np.random.default_rng(t)
    j, c, heads = 17, 64, 4
    W = gast_weights(rng, j, c, heads)
    x = f32(rng.standard_normal((n, j, t, c)))
    assert_same_for_all_threads(
        lambda th: _native.gast_block(x, W, heads=heads, head_channels=c // heads, threads=th))


CONFIGS = {
    "gast": {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 96},
    "videopose3d": {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                    "filter_widths": [3, 3, 3], "channels": 512},
    "rie": {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 128, "latent": 64, "stage": 3},
}


@pytest.fixture(scope="module")
def engine_paths(ckpt_cache, module_dir):
    d = module_dir
    return {fam: gastrt.build(ckpt_cache(fam, cfg, seed=5), str(d / f"{fam}.gastrt"))
            for fam, cfg in CONFIGS.items()}


@pytest.mark.parametrize("fam", list(CONFIGS))
def test_engine_bitwise_across_threads(engine_paths, fam):
    engines = {t: gastrt.load(engine_paths[fam], backend="native", threads=t) for t in THREADS}
    e1 = engines[1]
    rng = np.random.default_rng(17)
    rf = e1.receptive_field
    wins = {b: f32(rng.standard_normal((b, rf, 17, 2)) * 0.4) for b in (1, 6)}
    seq = f32(rng.standard_normal((230, 17, 2)) * 0.4)
    for b, x in wins.items():
        assert_same_for_all_threads(lambda th: engines[th].lift(x))
        assert_same_for_all_threads(lambda th: engines[th].lift(x, flip=True))
    assert_same_for_all_threads(lambda th: engines[th].lift_sequence(seq))
    assert_same_for_all_threads(lambda th: engines[th].lift_sequence(seq, flip=True))

    def streamed(th):
        st = engines[th].stream(slots=2)
        two = np.stack([seq[:60], seq[60:120]], axis=1)  # [60, 2 slots, J, 2]
        outs = [st.push(f).poses for f in two] + [st.flush().poses]
        return np.concatenate(outs)

    assert_same_for_all_threads(streamed)


PANEL_CASES = [
    # n, t, ci, co, k, stride, dilation: few rows (the small-M kernel), odd widths (a partial
    # last panel), per-tap GEMMs (dilated / overlapping windows) and one fused K
    (1, 27, 64, 1000, 3, 3, 1),
    (1, 9, 171, 37, 3, 3, 1),
    (2, 11, 33, 200, 3, 1, 2),
    (1, 7, 300, 5, 1, 1, 1),
    (3, 5, 97, 129, 3, 1, 1),
    (1, 1, 1030, 513, 1, 1, 1),
    # many rows (AVX2 runs every conv on the small-M kernel, over 144-row blocks of A): row tiles,
    # a partial last panel, one K block and several (1 x 400 x 300: 208-row tiles, one K block,
    # whole panels, a VW strip and a tail of the unpacked kernel; 1 x 400 x 800: 64-row tiles,
    # three K blocks; 1 x 1800 x 300 x 512: 160-row tiles, more than one 144-row block per K
    # block, three K blocks)
    (1, 400, 300, 110, 1, 1, 1),
    (1, 400, 800, 110, 1, 1, 1),
    (1, 1800, 300, 512, 3, 3, 1),
    (3, 301, 90, 200, 3, 3, 1),
    (2, 130, 257, 256, 1, 1, 1),
    (1, 700, 31, 97, 3, 1, 2),
]


@pytest.mark.parametrize("panel_dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", PANEL_CASES, ids=lambda c: "x".join(map(str, c)))
def test_packed_small_gemm_is_bit_identical(case, panel_dtype):
    """Weights packed into the small-M kernel's panels (what the engine does for the convs on that
    kernel; fp16 / bf16 engines: 16-bit panels of their weights) give the bits of the unpacked
    kernel, at every thread count, and match float64."""
    n, t, ci, co, k, stride, dil = case
    rng = np.random.default_rng(ci * 7 + co)
    x = f32(rng.standard_normal((n, 1, t, ci)))
    w = f32(rng.standard_normal((k * ci, co)) / np.sqrt(k * ci))
    if panel_dtype != "fp32":
        w = round_to_16bit(w, panel_dtype)
    b = f32(rng.standard_normal(co))
    run = lambda th, packed: _native.conv(x, w, b, k=k, stride=stride, dilation=dil, act="lrelu",
                                          threads=th, algo="direct", small_panels=packed,
                                          panel_dtype=panel_dtype if packed else "fp32")
    plain = run(1, False)
    try:
        packed = run(1, True)
    except ValueError as e:   # this conv runs on OpenBLAS on this CPU (the base variant keeps the row rule)
        if panel_dtype == "fp32" or _native.build_config()["cpu_isa"].endswith("avx2") \
                or "on OpenBLAS here" not in str(e):
            raise
        pytest.skip("this conv runs on OpenBLAS on this CPU (no panels)")
    assert_same_for_all_threads(lambda th: run(th, True))
    assert np.array_equal(packed, plain)
    # and the value: float64 reference of the same conv (tolerance relative to the terms)
    ref, scale = conv_reference64(x, w, b, k, stride, dil)
    ref = np.where(ref > 0, ref, 0.2 * ref)
    assert np.abs(plain[:, 0] - ref).max() <= 1e-5 * scale


def test_chunked_sequences_are_bitwise_across_threads(engine_paths):
    """Long inputs run in chunks sized from a workspace budget; the chunks are planned from one
    thread's workspace (Backend.budget_bytes), so their boundaries, and the bits, do not
    depend on the thread count."""
    rng = np.random.default_rng(23)
    seq = f32(rng.standard_normal((700, 17, 2)) * 0.4)
    engines = {t: gastrt.load(engine_paths["videopose3d"], backend="native", threads=t) for t in THREADS}
    for e in engines.values():
        e.workspace_budget = 4 << 20      # a few chunks of this sequence
    chunks = {e.sequence_chunk("pos", 1, False) for e in engines.values()}
    assert len(chunks) == 1 and next(iter(chunks)) < 700, chunks
    assert_same_for_all_threads(lambda th: engines[th].lift_sequence(seq))


def test_empty_gast_block_input_is_empty_output():
    rng = np.random.default_rng(2)
    W = gast_weights(rng, 17, 8, 4)
    for th in (1, 2):
        y = _native.gast_block(np.zeros((0, 17, 5, 8), np.float32), W, heads=4, head_channels=2, threads=th)
        assert y.shape == (0, 17, 5, 16)
