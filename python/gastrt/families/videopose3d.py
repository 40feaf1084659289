"""VideoPose3D (TemporalModel / TemporalModelOptimized1f, and the trajectory model) -> plan.
The temporal stack is shared with RIE's branches (same layer names, LeakyReLU there)."""
from __future__ import annotations


from ..errors import CheckpointMismatch
from ..plan import Plan
from ..skeletons import COCO_17_LR, skeleton_for
from .common import PlanBuilder, StateReader, pack_conv, receptive_field, temporal_geometry

FAMILY = "VideoPose3D"


def stack_widths(R: StateReader, prefix: str = "") -> list[int]:
    ew = R.get(prefix + "expand_conv.weight", ndim=3)
    widths = [int(ew.shape[2])]
    while R.has(f"{prefix}layers_conv.{2 * (len(widths) - 1)}.weight"):
        widths.append(int(R.sd[f"{prefix}layers_conv.{2 * (len(widths) - 1)}.weight"].shape[2]))
    for fw in widths:
        if fw % 2 == 0:
            raise CheckpointMismatch(R.family, f"filter width {fw} is even (odd widths only)")
    return widths


def lower_temporal_stack(B: PlanBuilder, R: StateReader, prefix: str, x: str, act: str,
                         causal: bool, name: str) -> tuple[str, list[int], int]:
    """expand_conv/expand_bn, layers_conv/layers_bn with residuals, shrink (with bias).
    x [N, 1, T, Ci] -> [N, 1, T', shrink_out]. Returns (buffer, widths, channels)."""
    widths = stack_widths(R, prefix)
    ew = R.get(prefix + "expand_conv.weight", ndim=3)
    ch = ew.shape[0]
    s, t = R.bn(prefix + "expand_bn", ch)
    x = B.conv(f"{name}.expand", x, pack_conv(ew) * s, t, k=widths[0], act=act)
    for i, geo in enumerate(temporal_geometry(widths, causal)):
        wk = R.get(f"{prefix}layers_conv.{2 * i}.weight", (ch, ch, geo["k"]))
        s, t = R.bn(f"{prefix}layers_bn.{2 * i}", ch)
        y = B.conv(f"{name}.layer{i + 1}.conv", x, pack_conv(wk) * s, t, k=geo["k"],
                   dilation=geo["dilation"], act=act)
        w1 = R.get(f"{prefix}layers_conv.{2 * i + 1}.weight", (ch, ch, 1))
        s, t = R.bn(f"{prefix}layers_bn.{2 * i + 1}", ch)
        x = B.conv(f"{name}.layer{i + 1}.pointwise", y, pack_conv(w1) * s, t, k=1, act=act, res=x,
                   res_win_offset=geo["shift_win"] + geo["k"] // 2, res_win_stride=geo["k"],
                   res_seq_offset=geo["pad"] + geo["shift_seq"])
    sw = R.get(prefix + "shrink.weight", ndim=3)
    if sw.shape[1:] != (ch, 1):
        raise CheckpointMismatch(R.family, f"{prefix + 'shrink.weight'!r} has shape {tuple(sw.shape)}, "
                                 f"expected (out, {ch}, 1)")
    sb = R.get(prefix + "shrink.bias", (sw.shape[0],))
    x = B.conv(f"{name}.shrink", x, pack_conv(sw), sb, k=1)
    return x, widths, int(ch)


def _lower_one(sd: dict, causal: bool, plan_name: str):
    R = StateReader(sd, FAMILY)
    ew = R.get("expand_conv.weight", ndim=3)
    if ew.shape[1] % 2:
        raise CheckpointMismatch(FAMILY, f"'expand_conv.weight' has {ew.shape[1]} input channels, "
                                 "expected 2 per joint")
    j_in = ew.shape[1] // 2
    B = PlanBuilder(plan_name)
    x = B.op("input_flat", ["input"], ["x"])[0]
    y, widths, ch = lower_temporal_stack(B, R, "", x, "relu", causal, plan_name)
    out_c = R.sd["shrink.weight"].shape[0]
    if out_c % 3:
        raise CheckpointMismatch(FAMILY, f"'shrink.weight' has {out_c} outputs, expected 3 per joint")
    B.op("output_flat", [y], ["output"])
    R.finish()
    plan = Plan(plan_name, B.ops, receptive_field(widths), int(j_in), int(out_c // 3), ("window", "sequence"), 2)
    return plan, B.weights, {"filter_widths": widths, "channels": ch, "num_joints_in": int(j_in),
                             "num_joints_out": int(out_c // 3)}


def lower(sd: dict, causal: bool, traj_sd: dict | None = None):
    plan, weights, hyper = _lower_one(sd, causal, "pos")
    plans = {"pos": plan}
    if traj_sd is not None:
        tplan, tweights, thyper = _lower_one(traj_sd, causal, "traj")
        if tplan.in_joints != plan.in_joints:
            raise CheckpointMismatch(FAMILY, f"model_traj takes {tplan.in_joints} joints but model_pos "
                                     f"takes {plan.in_joints}")
        plans["traj"] = tplan
        weights.update(tweights)
        hyper["trajectory"] = {"filter_widths": thyper["filter_widths"], "channels": thyper["channels"]}
    hyper["num_joints"] = plan.in_joints
    return plans, weights, hyper, _symmetry(plan.in_joints, plan.out_joints)


def _symmetry(j_in: int, j_out: int):
    """(skeleton of the outputs, left/right of the inputs). VideoPose3D's HumanEva model takes the
    17 COCO keypoints of its detector and outputs the 15 HumanEva joints."""
    try:
        out = skeleton_for(j_out)
    except ValueError:
        return None, None
    if j_in == j_out:
        return out, (out.joints_left, out.joints_right)
    if j_in == 17:
        return out, COCO_17_LR
    return out, None
