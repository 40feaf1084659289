"""GAST-Net (SpatioTemporalModel / SpatioTemporalModelOptimized1f) -> plan.

Folds init_bn into expand_conv, every BatchNorm into its conv, each SemCHGraphConv's per-channel
masked softmax adjacency into a diagonal / off-diagonal mixing table, and each global-attention
head's theta / phi projections into the concat_project logit vectors.
"""
from __future__ import annotations

import numpy as np

from ..errors import CheckpointMismatch
from ..plan import Plan
from ..skeletons import gast_masks, skeleton_for
from .common import PlanBuilder, StateReader, pack_conv, receptive_field, temporal_geometry

FAMILY = "GAST-Net"


def _masked_softmax(e: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """e [C, nnz] -> per-channel adjacency [C, J, J]: softmax over j of e on the mask, 0 elsewhere
    (the original fills -9e15, whose exp underflows to exactly 0)."""
    c = e.shape[0]
    logits = np.full((c,) + mask.shape, -np.inf)
    logits[:, mask] = e  # row-major order of the mask, as the original's adj[m] = e.view(-1)
    logits -= logits.max(axis=2, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=2, keepdims=True)


def _local_graph(R: StateReader, p: str, c: int, masks) -> dict:
    ws, diags, offs, biases = [], [], [], []
    j = masks[0].shape[0]
    eye = np.eye(j, dtype=bool)
    for name, bn, mask in (("gcn_sym", "bn_1", masks[0]), ("gcn_con", "bn_2", masks[1])):
        w = R.get(f"{p}.{name}.W", (2, c, c))
        e = R.get(f"{p}.{name}.e", (c, int(mask.sum())))
        s, t = R.bn(f"{p}.{bn}", c)
        adj = _masked_softmax(e, mask)                         # [C, J, J]
        diags.append((adj * eye).sum(axis=2).T)                 # [J, C]
        offs.append(np.where(eye, 0.0, adj).transpose(1, 2, 0))  # [J, J, C]
        ws += [w[0] * s, w[1] * s]
        biases.append(t)
    cw = R.get(f"{p}.cat_conv.weight", (c, 2 * c, 1, 1))
    s, t = R.bn(f"{p}.cat_bn", c)
    return {"loc_w": np.concatenate(ws, axis=1), "loc_diag": np.stack(diags), "loc_off": np.stack(offs),
            "loc_b": np.concatenate(biases), "loc_cat_w": pack_conv(cw) * s, "loc_cat_b": t}


def _global_graph(R: StateReader, p: str, c: int, j: int) -> tuple[dict, int, int]:
    heads = 0
    while R.has(f"{p}.attentions.{heads}.g.weight"):
        heads += 1
    if heads == 0:
        raise CheckpointMismatch(FAMILY, f"key {p + '.attentions.0.g.weight'!r} is missing")
    gw0 = R.sd[f"{p}.attentions.0.g.weight"]
    gc = gw0.shape[0]
    ic = R.sd[f"{p}.attentions.0.theta.weight"].shape[0]  # inter channels (C // 4 in GAST-Net)
    us, vs, cu, cv, gws, gbs, cks = [], [], [], [], [], [], []
    for h in range(heads):
        q = f"{p}.attentions.{h}"
        gw = R.get(f"{q}.g.weight", (gc, c, 1))[..., 0]
        gb = R.get(f"{q}.g.bias", (gc,))
        tw = R.get(f"{q}.theta.weight", (ic, c, 1))[..., 0]
        tb = R.get(f"{q}.theta.bias", (ic,))
        pw = R.get(f"{q}.phi.weight", (ic, c, 1))[..., 0]
        pb = R.get(f"{q}.phi.bias", (ic,))
        cp = R.get(f"{q}.concat_project.0.weight", (1, 2 * ic, 1, 1)).reshape(2 * ic)
        cks.append(R.get(f"{q}.C_k", (j, j)))
        us.append(cp[:ic] @ tw)
        vs.append(cp[ic:] @ pw)
        cu.append(cp[:ic] @ tb)
        cv.append(cp[ic:] @ pb)
        gws.append(gw.T)
        gbs.append(gb)
    cw = R.get(f"{p}.cat_conv.weight", (c, heads * gc, 1, 1))
    s, t = R.bn(f"{p}.cat_bn", c)
    w = {"glb_u": np.stack(us + vs, axis=1), "glb_c": np.array(cu + cv),
         "glb_g_w": np.concatenate(gws, axis=1), "glb_g_b": np.concatenate(gbs),
         "glb_ck": np.stack(cks), "glb_cat_w": pack_conv(cw) * s, "glb_cat_b": t}
    return w, heads, gc


def _graph_block(B: PlanBuilder, R: StateReader, i: int, x: str, c: int, masks) -> str:
    p = f"layers_graph_conv.{i}"
    j = masks[0].shape[0]
    w = _local_graph(R, p + ".local_graph_layer", c, masks)
    gw, heads, gc = _global_graph(R, p + ".global_graph_layer", c, j)
    w.update(gw)
    cw = R.get(f"{p}.cat_conv.weight", (2 * c, 3 * c, 1, 1))
    s, t = R.bn(f"{p}.cat_bn", 2 * c)
    w["cat_w"] = pack_conv(cw) * s
    w["cat_b"] = t
    out = B.fresh("t")
    B.op("gast_block", [x], [out], {"heads": heads, "head_channels": gc},
         {role: B.weight(f"block{i}.{role}", a) for role, a in w.items()})
    return out


def lower(sd: dict, causal: bool):
    R = StateReader(sd, FAMILY)
    ew = R.get("expand_conv.weight", ndim=4)
    ch, feats, fw0, _ = ew.shape
    ck_key = "layers_graph_conv.0.global_graph_layer.attentions.0.C_k"
    if not R.has(ck_key):
        raise CheckpointMismatch(FAMILY, f"key {ck_key!r} is missing")
    j = int(R.sd[ck_key].shape[0])
    try:
        skel = skeleton_for(j)
    except ValueError as e:
        raise CheckpointMismatch(FAMILY, str(e)) from None
    masks = gast_masks(skel)
    widths = [fw0]
    while R.has(f"layers_conv.{2 * (len(widths) - 1)}.weight"):
        widths.append(int(R.sd[f"layers_conv.{2 * (len(widths) - 1)}.weight"].shape[2]))
    for fw in widths:
        if fw % 2 == 0:
            raise CheckpointMismatch(FAMILY, f"filter width {fw} is even (the model supports odd widths only)")

    B = PlanBuilder("pos")
    x = B.op("input_joint_major", ["input"], ["x"])[0]
    s0, t0 = R.bn("init_bn", feats)
    s1, t1 = R.bn("expand_bn", ch)
    w = pack_conv(ew)                                   # [fw0*F, ch], row tau*F + f
    bias = (np.tile(t0, fw0) @ w) * s1 + t1
    w = w * np.tile(s0, fw0)[:, None] * s1
    x = B.conv("expand", x, w, bias, k=fw0, act="relu")
    x = _graph_block(B, R, 0, x, ch, masks)
    c = 2 * ch
    for i, geo in enumerate(temporal_geometry(widths, causal)):
        wk = R.get(f"layers_conv.{2 * i}.weight", (c, c, geo["k"], 1))
        s, t = R.bn(f"layers_bn.{2 * i}", c)
        y = B.conv(f"layer{i + 1}.conv", x, pack_conv(wk) * s, t, k=geo["k"], dilation=geo["dilation"], act="relu")
        w1 = R.get(f"layers_conv.{2 * i + 1}.weight", (c, c, 1, 1))
        s, t = R.bn(f"layers_bn.{2 * i + 1}", c)
        y = B.conv(f"layer{i + 1}.pointwise", y, pack_conv(w1) * s, t, k=1, act="relu", res=x,
                   res_win_offset=geo["shift_win"] + geo["k"] // 2, res_win_stride=geo["k"],
                   res_seq_offset=geo["pad"] + geo["shift_seq"])
        x = _graph_block(B, R, i + 1, y, c, masks)
        c *= 2
    sw = R.get("shrink.weight", (3, c, 1, 1))
    y = B.conv("shrink", x, pack_conv(sw), np.zeros(3), k=1)
    B.op("output_joint_major", [y], ["output"])
    R.finish()
    rf = receptive_field(widths)
    plan = Plan("pos", B.ops, rf, j, j, ("window", "sequence"), int(feats))
    hyper = {"filter_widths": widths, "channels": int(ch), "num_joints": j, "in_features": int(feats),
             "skeleton": skel.name, "heads": B.ops[2].attrs["heads"]}
    return plan, B.weights, hyper, skel
