"""Tests of the eager reference models (gastrt.reference).

Shapes/keys are checked against an independent enumeration of the original architectures
(written from the original sources, not from gastrt.reference); strided vs dilated forms are
checked for equality on every window; checkpoints round-trip through torch.save/load.
Channel counts are shrunk where a test runs the networks, to keep CPU time small.
"""
from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gastrt.reference import (PRESETS, build_model, make_checkpoint,  # noqa: E402
                              random_state_dict, local_graph_adjacencies)
from gastrt.skeletons import adjacency, gast_masks, skeleton_for  # noqa: E402

# Small channel overrides for tests that run the networks (GAST needs channels % 4 == 0).
SMALL = {"gast": {"channels": 4}, "videopose3d": {"channels": 32}, "rie": {"channels": 16, "latent": 16}}


def small(family: str, config: dict) -> dict:
    return {**config, **SMALL[family]}


def joints_in(family: str, config: dict) -> int:
    return config["num_joints_in"] if family == "videopose3d" else config["num_joints"]


# --------------------------------------------------------------------------------------------
# Independent enumeration of the original state_dicts: ordered [(name, shape)].
# --------------------------------------------------------------------------------------------
def _bn(out, prefix, n):
    out += [(f"{prefix}.weight", (n,)), (f"{prefix}.bias", (n,)), (f"{prefix}.running_mean", (n,)),
            (f"{prefix}.running_var", (n,)), (f"{prefix}.num_batches_tracked", ())]


# (nnz of adj_sym, nnz of adj_con) counted by hand from the skeletons:
#   sym = J diagonal + 2 * #pairs; con = sum(deg+1) over proximal + #(dist <= 2) over distal rows.
# H36M-17: sym 17+12; con: proximal rows 0:4 1:3 2:3 4:3 5:3 7:3 8:5 9:3 11:3 12:3 14:3 15:3
#          (= 39) + distal rows 3,6,10,13,16 with 3 each (= 15)
# HumanEva-15: sym 15+12; con: proximal 0:4 1:5 2:3 3:3 5:3 6:3 8:3 9:3 11:3 12:3 14:2 (= 35)
#          + distal 4,7,10,13 with 3 each (= 12)
# H36M+toes-19: sym 19+14; con: proximal 0:4 1:3 2:3 5:3 6:3 9:3 10:5 11:3 13:3 14:3 16:3 17:3
#          (= 39) + distal 3:4 4:3 7:4 8:3 12:3 15:3 18:3 (= 23)
NNZ = {17: (29, 54), 15: (27, 47), 19: (33, 62)}


def gast_expected(j, c, fw):
    out = []
    n = len(fw)
    _bn(out, "init_bn", 2)
    _bn(out, "expand_bn", c)
    out.append(("shrink.weight", (3, 2 ** n * c, 1, 1)))
    out.append(("expand_conv.weight", (c, 2, fw[0], 1)))
    for i in range(1, n):
        d = 2 ** i * c
        out += [(f"layers_conv.{2 * i - 2}.weight", (d, d, fw[i], 1)), (f"layers_conv.{2 * i - 1}.weight", (d, d, 1, 1))]
    for i in range(1, n):
        d = 2 ** i * c
        _bn(out, f"layers_bn.{2 * i - 2}", d)
        _bn(out, f"layers_bn.{2 * i - 1}", d)
    nsym, ncon = NNZ[j]
    for b in range(n):
        d = 2 ** b * c
        k = d // 4
        p = f"layers_graph_conv.{b}"
        lg = f"{p}.local_graph_layer"
        out += [(f"{lg}.gcn_sym.W", (2, d, d)), (f"{lg}.gcn_sym.e", (d, nsym))]
        _bn(out, f"{lg}.bn_1", d)
        out += [(f"{lg}.gcn_con.W", (2, d, d)), (f"{lg}.gcn_con.e", (d, ncon))]
        _bn(out, f"{lg}.bn_2", d)
        out.append((f"{lg}.cat_conv.weight", (d, 2 * d, 1, 1)))
        _bn(out, f"{lg}.cat_bn", d)
        gg = f"{p}.global_graph_layer"
        for h in range(4):
            a = f"{gg}.attentions.{h}"
            out += [(f"{a}.C_k", (j, j)),
                    (f"{a}.g.weight", (k, d, 1)), (f"{a}.g.bias", (k,)),
                    (f"{a}.theta.weight", (k, d, 1)), (f"{a}.theta.bias", (k,)),
                    (f"{a}.phi.weight", (k, d, 1)), (f"{a}.phi.bias", (k,)),
                    (f"{a}.concat_project.0.weight", (1, 2 * k, 1, 1))]
        out.append((f"{gg}.cat_conv.weight", (d, d, 1, 1)))
        _bn(out, f"{gg}.cat_bn", d)
        out.append((f"{p}.cat_conv.weight", (2 * d, 3 * d, 1, 1)))
        _bn(out, f"{p}.cat_bn", 2 * d)
    return out


def _temporal_expected(out, prefix, cin, cout, c, fw, shrink_bias=True):
    _bn(out, f"{prefix}expand_bn", c)
    out.append((f"{prefix}shrink.weight", (cout, c, 1)))
    if shrink_bias:
        out.append((f"{prefix}shrink.bias", (cout,)))
    out.append((f"{prefix}expand_conv.weight", (c, cin, fw[0])))
    for i in range(1, len(fw)):
        out += [(f"{prefix}layers_conv.{2 * i - 2}.weight", (c, c, fw[i])),
                (f"{prefix}layers_conv.{2 * i - 1}.weight", (c, c, 1))]
    for i in range(1, len(fw)):
        _bn(out, f"{prefix}layers_bn.{2 * i - 2}", c)
        _bn(out, f"{prefix}layers_bn.{2 * i - 1}", c)


def vp3d_expected(j_in, f, j_out, c, fw):
    out = []
    _temporal_expected(out, "", j_in * f, j_out * 3, c, fw)
    return out


def _fc_expected(out, prefix, cin, cout, blocks, size=1024):
    out += [(f"{prefix}.fc_1.weight", (size, cin)), (f"{prefix}.fc_1.bias", (size,))]
    _bn(out, f"{prefix}.bn_1", size)
    out += [(f"{prefix}.fc_2.weight", (cout, size)), (f"{prefix}.fc_2.bias", (cout,))]
    for b in range(blocks):
        lp = f"{prefix}.layers.{b}"
        out += [(f"{lp}.w1.weight", (size, size)), (f"{lp}.w1.bias", (size,))]
        _bn(out, f"{lp}.batch_norm1", size)
        out += [(f"{lp}.w2.weight", (size, size)), (f"{lp}.w2.bias", (size,))]
        _bn(out, f"{lp}.batch_norm2", size)


def rie_expected(c, latent, fw, stage):
    out = []
    for name, parts in (("Torso", 5), ("LArm", 3), ("RArm", 3), ("LLeg", 3), ("RLeg", 3)):
        _temporal_expected(out, f"LocalLayer_{name}.", parts * 3 * 2, latent, c, fw)
    _fc_expected(out, "GlobalInfo", 34, latent, 2)
    if stage != 1:
        for i in range(5):
            _fc_expected(out, f"FuseBlocks.{i}", 4 * latent, latent, 1)
    dim = 2 * latent if stage == 1 else 3 * latent
    for name, parts in (("Torso", 5), ("LArm", 3), ("RArm", 3), ("LLeg", 3), ("RLeg", 3)):
        _fc_expected(out, f"Integration_{name}", dim, parts * 3, 1)
    return out


def expected(family, config, trajectory=False):
    fw = config["filter_widths"]
    if family == "gast":
        return gast_expected(config["num_joints"], config["channels"], fw)
    if family == "videopose3d":
        return vp3d_expected(config["num_joints_in"], config.get("in_features", 2),
                             1 if trajectory else config["num_joints_out"], config["channels"], fw)
    return rie_expected(config["channels"], config["latent"], fw, config["stage"])


def n_params(entries):
    skip = ("running_mean", "running_var", "num_batches_tracked")
    total = 0
    for name, shape in entries:
        if not name.endswith(skip):
            size = 1
            for s in shape:
                size *= s
            total += size
    return total


# Parameter counts of every preset (regression table; VideoPose3D matches the paper's
# 8.56M / 12.75M / 16.95M for 27 / 81 / 243 frames).
PRESET_PARAMS = {
    "gast-27": 6915984, "gast-81": 7054612, "gast-243": 7091736,
    "gast-27-toes": 6927600, "gast-27-humaneva": 6907152,
    "videopose3d-27": 8555571, "videopose3d-81": 12753971, "videopose3d-243": 16952371,
    "videopose3d-27-humaneva": 8549421,
    "rie-243": 52861491, "rie-243-gt": 41783091, "rie-243-stage1": 23385651,
}

PRESET_RF = {"gast-27": 27, "gast-81": 81, "gast-243": 243, "gast-27-toes": 27, "gast-27-humaneva": 27,
             "videopose3d-27": 27, "videopose3d-81": 81, "videopose3d-243": 243,
             "videopose3d-27-humaneva": 27, "rie-243": 243, "rie-243-gt": 243, "rie-243-stage1": 243}


# --------------------------------------------------------------------------------------------
# (2) key sets, shapes, parameter counts, strict loading
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_keys_shapes_and_param_count(name):
    family, config = PRESETS[name]
    want = expected(family, config)
    assert set(PRESET_PARAMS) == set(PRESETS)
    for optimized in (False, True):
        with torch.device("meta"):                            # shapes only: skip weight init
            model = build_model(family, config, optimized=optimized)
        assert not model.training
        got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
        assert got == want                                    # names, shapes and order
        count = sum(p.numel() for p in model.parameters())
        assert count == n_params(want) == PRESET_PARAMS[name]
        assert model.receptive_field() == PRESET_RF[name]


def test_hand_counted_layers():
    # A couple of layers of GAST-27 (17 joints, 128 ch) counted by hand.
    m = build_model("gast", PRESETS["gast-27"][1], optimized=False)
    assert m.expand_conv.weight.numel() == 128 * 2 * 3               # Conv2d(2, 128, (3, 1))
    assert m.shrink.weight.numel() == 3 * 1024                        # 2**3 * 128 -> 3
    blk = m.layers_graph_conv[2]                                      # 512 channels
    assert sum(p.numel() for p in blk.local_graph_layer.gcn_sym.parameters()) == 2 * 512 * 512 + 512 * 29
    assert sum(p.numel() for p in blk.local_graph_layer.gcn_con.parameters()) == 2 * 512 * 512 + 512 * 54
    head = blk.global_graph_layer.attentions[0]                       # inter = 128
    assert sum(p.numel() for p in head.parameters()) == 3 * (512 * 128 + 128) + 17 * 17 + 256
    # VideoPose3D-243: 34*1024*3 + 2*1024 + 4*(3*1024^2 + 1024^2 + 4*1024) + 1024*51 + 51
    assert PRESET_PARAMS["videopose3d-243"] == 34 * 1024 * 3 + 2048 + 4 * (4 * 1024 ** 2 + 4096) + 1024 * 51 + 51


@pytest.mark.parametrize("name", ["gast-27", "gast-27-toes", "gast-27-humaneva", "videopose3d-27",
                                  "videopose3d-27-humaneva", "rie-243"])
def test_random_state_dict_loads_strict(name):
    family, config = PRESETS[name]
    config = small(family, config)
    sd = random_state_dict(family, config, seed=3)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected(family, config)
    build_model(family, config, optimized=True).load_state_dict(sd, strict=True)
    build_model(family, config, optimized=False, state_dict=sd)
    if family == "rie":
        return                 # 1024-wide FC blocks: skip the (slow) re-generation checks
    # deterministic per seed, different across seeds; no constant-init leftovers
    again = random_state_dict(family, config, seed=3)
    other = random_state_dict(family, config, seed=4)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    assert any(not torch.equal(sd[k], other[k]) for k in sd if sd[k].is_floating_point())
    for k, v in sd.items():
        if v.is_floating_point() and v.numel() > 1:
            assert v.std() > 0, k
        if k.endswith("running_var"):
            assert v.min() >= 0.5 and v.max() <= 2.0


def test_random_state_dict_trajectory():
    family, config = "videopose3d", small("videopose3d", PRESETS["videopose3d-27"][1])
    sd = random_state_dict(family, config, seed=0, trajectory=True)
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected(family, config, trajectory=True)
    assert sd["shrink.weight"].shape == (3, 32, 1)


# --------------------------------------------------------------------------------------------
# GAST LocalGraph masks: rebuilt from the adjacency as the original does == skeletons.gast_masks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("j", [15, 17, 19])
def test_local_graph_masks_match_skeletons(j):
    skel = skeleton_for(j)
    adj = adjacency(skel)
    adj_sym, adj_con = local_graph_adjacencies(torch.from_numpy(adj))
    sym, con = gast_masks(skel)
    np.testing.assert_array_equal((adj_sym > 0).numpy(), sym)    # shapes too, no broadcasting
    np.testing.assert_array_equal((adj_con > 0).numpy(), con)
    assert (int(sym.sum()), int(con.sum())) == NNZ[j]
    m = build_model("gast", {"num_joints": j, "filter_widths": [3], "channels": 4}, optimized=True)
    lg = m.layers_graph_conv[0].local_graph_layer
    assert lg.gcn_sym.e.shape == (4, NNZ[j][0]) and lg.gcn_con.e.shape == (4, NNZ[j][1])


# --------------------------------------------------------------------------------------------
# (1) strided (single-frame) form == dilated form on every window
# --------------------------------------------------------------------------------------------
def _max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


_SD_CACHE: dict = {}


def _cached_sd(family, config, seed, trajectory):
    key = (family, repr(sorted(config.items())), seed, trajectory)
    if key not in _SD_CACHE:
        _SD_CACHE.clear()
        _SD_CACHE[key] = random_state_dict(family, config, seed=seed, trajectory=trajectory)
    return _SD_CACHE[key]


def _strided_vs_dilated(family, config, causal, trajectory=False, seed=0, extra=4):
    sd = _cached_sd(family, config, seed, trajectory)
    dil = build_model(family, config, optimized=False, causal=causal, trajectory=trajectory, state_dict=sd)
    strd = build_model(family, config, optimized=True, causal=causal, trajectory=trajectory, state_dict=sd)
    rf = dil.receptive_field()
    assert strd.receptive_field() == rf
    gen = torch.Generator().manual_seed(seed + 11)
    seq = torch.randn(1, rf + extra, joints_in(family, config), 2, generator=gen) * 0.5
    windows = seq.unfold(1, rf, 1)[0].permute(0, 3, 1, 2).contiguous()   # [extra+1, RF, J, 2]
    with torch.no_grad():
        if family == "rie":
            # RIE encodes each window relative to its centre frame: run both forms per window.
            full = dil(windows)                                           # [W, 1, 17, 3]
        else:
            full = dil(seq)[0].unsqueeze(1)                               # [W, 1, J, 3]
        single = strd(windows)                                            # [W, 1, J, 3]
    assert full.shape == single.shape == (extra + 1, 1, full.shape[2], 3)
    assert torch.isfinite(full).all()
    assert float(full.abs().max()) > 1e-3
    return full, single


@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_strided_equals_dilated(name, causal):
    family, config = PRESETS[name]
    config = small(family, config)
    full, single = _strided_vs_dilated(family, config, causal)
    assert _max_rel(single, full) < 1e-5


@pytest.mark.parametrize("causal", [False, True], ids=["symmetric", "causal"])
def test_strided_equals_dilated_trajectory(causal):
    config = small("videopose3d", PRESETS["videopose3d-81"][1])
    full, single = _strided_vs_dilated("videopose3d", config, causal, trajectory=True)
    assert single.shape[1:] == (1, 1, 3)
    assert _max_rel(single, full) < 1e-5


@pytest.mark.parametrize("name", ["gast-27", "videopose3d-27", "rie-243-stage1"])
def test_causal_flag_changes_output(name):
    family, config = PRESETS[name]
    config = small(family, config)
    sym, _ = _strided_vs_dilated(family, config, causal=False, extra=0)
    cau, _ = _strided_vs_dilated(family, config, causal=True, extra=0)
    assert _max_rel(cau, sym) > 1e-3


def test_dilated_full_sequence_length():
    family, config = "gast", small("gast", PRESETS["gast-27"][1])
    m = build_model(family, config, optimized=False)
    with torch.no_grad():
        y = m(torch.randn(2, 40, 17, 2))
    assert y.shape == (2, 40 - 27 + 1, 17, 3)


def test_total_causal_shift():
    # As in the originals, total_causal_shift() is only meaningful for the Optimized1f form
    # (the dilated form stores shifts already multiplied by the dilation and multiplies again);
    # the training scripts use causal_shift = pad instead.
    for name in ("gast-81", "videopose3d-243"):
        family, config = PRESETS[name]
        config = small(family, config)
        m = build_model(family, config, optimized=True, causal=True)
        assert m.total_causal_shift() == (m.receptive_field() - 1) // 2
        for optimized in (False, True):
            m = build_model(family, config, optimized=optimized, causal=False)
            assert m.total_causal_shift() == 0
        dil = build_model(family, config, optimized=False, causal=True)
        assert dil.causal_shift == [1, 3, 9, 27, 81][:len(config["filter_widths"])]
        assert dil.pad == [1, 3, 9, 27, 81][:len(config["filter_widths"])]


# --------------------------------------------------------------------------------------------
# (3) checkpoints round-trip through torch.save / torch.load(weights_only=True)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,trajectory", [("gast-27", False), ("videopose3d-27", False),
                                             ("videopose3d-27", True), ("rie-243-stage1", False)])
def test_checkpoint_roundtrip(name, trajectory):
    family, config = PRESETS[name]
    config = small(family, config)
    if family == "videopose3d":
        config["trajectory"] = trajectory
    ck = make_checkpoint(family, config, seed=5)
    keys = {"epoch", "lr", "optimizer", "model_pos"} | ({"model_traj"} if trajectory else set())
    assert set(ck) == keys

    buf = io.BytesIO()
    torch.save(ck, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert set(back) == keys
    assert back["epoch"] == ck["epoch"] and back["lr"] == ck["lr"]

    ref = random_state_dict(family, config, seed=5)
    assert list(back["model_pos"]) == list(ref)
    assert all(torch.equal(back["model_pos"][k], ref[k]) for k in ref)
    model = build_model(family, config, optimized=False, state_dict=back["model_pos"])
    params = list(model.parameters())
    if trajectory:
        traj = build_model(family, config, optimized=False, trajectory=True, state_dict=back["model_traj"])
        params += list(traj.parameters())

    opt_sd = back["optimizer"]
    assert len(opt_sd["state"]) == len(params)
    state0 = opt_sd["state"][0]
    assert {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"} <= set(state0)
    assert float(state0["step"]) == 1.0
    assert any(float(s["exp_avg"].abs().max()) > 0 for s in opt_sd["state"].values())
    assert opt_sd["param_groups"][0]["amsgrad"] is True
    assert opt_sd["param_groups"][0]["lr"] == pytest.approx(ck["lr"])
    cls = torch.optim.AdamW if family == "rie" else torch.optim.Adam
    cls(params, lr=1e-3, amsgrad=True).load_state_dict(opt_sd)

    if family == "rie":
        return                 # 1024-wide FC blocks: skip the (slow) determinism re-run
    # deterministic per seed
    ck2 = make_checkpoint(family, config, seed=5)
    for i, s in ck["optimizer"]["state"].items():
        assert torch.equal(s["exp_avg"], ck2["optimizer"]["state"][i]["exp_avg"])


# --------------------------------------------------------------------------------------------
# (4) RIE stages, VideoPose3D trajectory outputs
# --------------------------------------------------------------------------------------------
def test_rie_stages_fuse_blocks():
    base = small("rie", PRESETS["rie-243"][1])
    for stage in (1, 2, 3):
        sd = random_state_dict("rie", {**base, "stage": stage}, seed=0)
        has = any(k.startswith("FuseBlocks.") for k in sd)
        assert has == (stage != 1)
        dim = 2 * base["latent"] if stage == 1 else 3 * base["latent"]
        assert sd["Integration_Torso.fc_1.weight"].shape == (1024, dim)
    one = build_model("rie", {**base, "stage": 1}, optimized=True)
    three = random_state_dict("rie", {**base, "stage": 3}, seed=0)
    with pytest.raises(RuntimeError, match=r"(?s)Unexpected key.*FuseBlocks"):
        one.load_state_dict(three, strict=True)


def test_videopose3d_trajectory_output_shape():
    config = small("videopose3d", PRESETS["videopose3d-27"][1])
    sd = random_state_dict("videopose3d", config, seed=1, trajectory=True)
    for optimized in (True, False):
        m = build_model("videopose3d", config, optimized=optimized, trajectory=True)
        m.load_state_dict(sd, strict=True)
        with torch.no_grad():
            y = m(torch.randn(4, 27, 17, 2))
        assert y.shape == (4, 1, 1, 3)      # one root position (x, y, z) per window


def test_rie_rejects_other_joint_counts_and_bad_family():
    with pytest.raises(ValueError, match="17-joint"):
        build_model("rie", {**PRESETS["rie-243"][1], "num_joints": 15}, optimized=True)
    with pytest.raises(ValueError, match="unknown family 'nope'"):
        build_model("nope", {}, optimized=True)
    with pytest.raises(ValueError, match="only for videopose3d"):
        build_model("gast", PRESETS["gast-27"][1], optimized=True, trajectory=True)


def test_runs_on_input_device_without_cuda():
    # The original RIE fusion buffer was hard-coded to .cuda(); ours follows the input.
    config = small("rie", PRESETS["rie-243"][1])
    m = build_model("rie", config, optimized=True)
    m.load_state_dict(random_state_dict("rie", config, seed=2))
    with torch.no_grad():
        y = m(torch.randn(2, 243, 17, 2, dtype=torch.float32))
    assert y.shape == (2, 1, 17, 3) and y.device.type == "cpu"


def test_build_model_with_state_dict_matches_load_state_dict():
    family, config = "gast", small("gast", PRESETS["gast-27-toes"][1])
    sd = random_state_dict(family, config, seed=9)
    a = build_model(family, config, optimized=True)
    a.load_state_dict(sd, strict=True)
    b = build_model(family, config, optimized=True, state_dict=sd)
    assert all(t.device.type == "cpu" for t in list(b.parameters()) + list(b.buffers()))
    assert b.layers_graph_conv[0].local_graph_layer.gcn_sym.E.device.type == "cpu"
    x = torch.randn(3, 27, 19, 2)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    b.expand_conv.weight.data.zero_()                   # weights were copied, not shared
    assert not torch.equal(sd["expand_conv.weight"], b.expand_conv.weight)
    bad = dict(sd)
    bad.pop("shrink.weight")
    with pytest.raises(RuntimeError, match=r"missing \['shrink\.weight'\]"):
        build_model(family, config, optimized=True, state_dict=bad)
