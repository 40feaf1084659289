"""Which family a state dict belongs to, by parameter names; then lower it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointMismatch, GastrtError
from ..plan import Plan
from ..skeletons import Skeleton
from . import gast, rie, videopose3d

# top-level module names of each family's state dict
_MODULES = {
    "gast": {"init_bn", "expand_conv", "expand_bn", "layers_conv", "layers_bn", "layers_graph_conv", "shrink"},
    "videopose3d": {"expand_conv", "expand_bn", "layers_conv", "layers_bn", "shrink"},
    "rie": {"LocalLayer_Torso", "LocalLayer_LArm", "LocalLayer_RArm", "LocalLayer_LLeg", "LocalLayer_RLeg",
            "GlobalInfo", "FuseBlocks", "Integration_Torso", "Integration_LArm", "Integration_RArm",
            "Integration_LLeg", "Integration_RLeg"},
}
_DISTINCT = {"gast": "layers_graph_conv", "rie": "LocalLayer_Torso", "videopose3d": "expand_conv"}
FAMILY_NAMES = {"gast": "GAST-Net", "videopose3d": "VideoPose3D", "rie": "RIE"}


@dataclass
class Lowered:
    family: str
    plans: dict[str, Plan]
    weights: dict[str, np.ndarray]   # float64, packed
    hyper: dict
    skeleton: Skeleton | None       # of the output joints
    input_lr: tuple | None = None   # (left, right) input keypoints for flip; None: no flip


def guess_family(sd: dict) -> str:
    tops = {k.split(".")[0] for k in sd}
    for fam in ("gast", "rie", "videopose3d"):
        if _DISTINCT[fam] in tops:
            return fam
    scores = {fam: len(tops & mods) / len(mods) for fam, mods in _MODULES.items()}
    best = max(scores, key=scores.get)
    if scores[best] == 0:
        first = next(iter(sd), None)
        raise GastrtError("state dict matches none of GAST-Net, VideoPose3D or RIE "
                          f"(first key {first!r}; expected e.g. 'expand_conv.weight' or 'LocalLayer_Torso...')")
    return best


def detect_and_lower(pos: dict, traj: dict | None, causal: bool) -> Lowered:
    fam = guess_family(pos)
    if fam == "gast":
        plan, weights, hyper, skel = gast.lower(pos, causal)
        plans, lr = {"pos": plan}, (skel.joints_left, skel.joints_right)
    elif fam == "rie":
        plan, weights, hyper, skel = rie.lower(pos, causal)
        plans, lr = {"pos": plan}, (skel.joints_left, skel.joints_right)
    else:
        plans, weights, hyper, (skel, lr) = videopose3d.lower(pos, causal, traj)
    if traj is not None and fam != "videopose3d":
        raise CheckpointMismatch(FAMILY_NAMES[fam], "it carries a 'model_traj' (only VideoPose3D has one)")
    return Lowered(fam, plans, weights, hyper, skel, lr)
