"""RIE (RIEModel, stage 1 / 2 / 3) -> plan. Window mode only: RIE's temporal encoding is relative
to the centre frame of each window, so a window's columns cannot be shared with its neighbours."""
from __future__ import annotations

import numpy as np

from ..errors import CheckpointMismatch
from ..plan import Plan
from ..skeletons import H36M_17
from .common import PlanBuilder, StateReader
from .videopose3d import lower_temporal_stack

FAMILY = "RIE"
BRANCHES = ("Torso", "LArm", "RArm", "LLeg", "RLeg")
# channels of the flattened [T, 34] input (c = 2*joint + xy) each branch encodes
GROUPS = ([0, 1] + list(range(14, 22)), list(range(28, 34)), list(range(22, 28)),
          list(range(2, 8)), list(range(8, 14)))
# output joint k <- (branch, joint within the branch's decoder output): root, LLeg, RLeg, torso, RArm, LArm
SOURCES = ([(0, 0)] + [(3, i) for i in range(3)] + [(4, i) for i in range(3)] + [(0, i) for i in range(1, 5)]
           + [(2, i) for i in range(3)] + [(1, i) for i in range(3)])


def _fc_block(B: PlanBuilder, R: StateReader, p: str, x: str, name: str) -> str:
    """FCBlock: fc_1 + bn_1 + LeakyReLU, residual Linear blocks, fc_2. x [N, 1, 1, Ci]."""
    w = R.get(p + ".fc_1.weight", ndim=2)
    hid = w.shape[0]
    b = R.get(p + ".fc_1.bias", (hid,))
    s, t = R.bn(p + ".bn_1", hid)
    x = B.conv(f"{name}.fc_1", x, w.T * s, b * s + t, k=1, act="lrelu")
    m = 0
    while R.has(f"{p}.layers.{m}.w1.weight"):
        q = f"{p}.layers.{m}"
        w1, b1 = R.get(q + ".w1.weight", (hid, hid)), R.get(q + ".w1.bias", (hid,))
        s1, t1 = R.bn(q + ".batch_norm1", hid)
        w2, b2 = R.get(q + ".w2.weight", (hid, hid)), R.get(q + ".w2.bias", (hid,))
        s2, t2 = R.bn(q + ".batch_norm2", hid)
        y = B.conv(f"{name}.layers{m}.w1", x, w1.T * s1, b1 * s1 + t1, k=1, act="lrelu")
        x = B.conv(f"{name}.layers{m}.w2", y, w2.T * s2, b2 * s2 + t2, k=1, act="lrelu", res=x)
        m += 1
    w = R.get(p + ".fc_2.weight", ndim=2)
    if w.shape[1] != hid:
        raise CheckpointMismatch(FAMILY, f"{p + '.fc_2.weight'!r} has shape {tuple(w.shape)}, expected (out, {hid})")
    b = R.get(p + ".fc_2.bias", (w.shape[0],))
    return B.conv(f"{name}.fc_2", x, w.T, b, k=1)


def lower(sd: dict, causal: bool):
    R = StateReader(sd, FAMILY)
    B = PlanBuilder("pos")
    enc = [B.fresh("t") for _ in range(6)]
    B.op("rie_encode", ["input"], enc, {"groups": [list(g) for g in GROUPS]})
    feats, widths, ch = [], None, None
    for i, br in enumerate(BRANCHES):
        y, widths, ch = lower_temporal_stack(B, R, f"LocalLayer_{br}.", enc[i], "lrelu", causal, f"branch_{br}")
        feats.append(y)
    latent = int(R.sd["LocalLayer_Torso.shrink.weight"].shape[0])
    for i, br in enumerate(BRANCHES):
        cin = int(R.sd[f"LocalLayer_{br}.expand_conv.weight"].shape[1])
        if cin != 3 * len(GROUPS[i]):
            raise CheckpointMismatch(FAMILY, f"'LocalLayer_{br}.expand_conv.weight' takes {cin} channels, "
                                     f"expected {3 * len(GROUPS[i])}")
    glob = _fc_block(B, R, "GlobalInfo", enc[5], "global")
    stage = 1
    mixes = [None] * 5
    if R.has("FuseBlocks.0.fc_1.weight"):
        stage = 3
        for i in range(5):
            others = [feats[k] for k in range(5) if k != i]
            cat = B.fresh("t")
            B.op("concat", others, [cat])
            mixes[i] = _fc_block(B, R, f"FuseBlocks.{i}", cat, f"fuse{i}")
    outs = []
    for i, br in enumerate(BRANCHES):
        cat = B.fresh("t")
        B.op("concat", [feats[i]] + ([mixes[i]] if mixes[i] else []) + [glob], [cat])
        outs.append(_fc_block(B, R, f"Integration_{br}", cat, f"decode_{br}"))
    B.op("output_assemble", outs, ["output"], {"sources": [list(s) for s in SOURCES]})
    R.finish()
    rf = int(np.prod(widths))
    plan = Plan("pos", B.ops, rf, 17, 17, ("window",), 2)
    hyper = {"filter_widths": widths, "channels": ch, "latent": latent, "stage": "2/3" if stage == 3 else 1,
             "num_joints": 17}
    return plan, B.weights, hyper, H36M_17
