"""Build reference models, random weights and original-layout checkpoints from config dicts.

Config dicts (exact keys):
  gast:        {'num_joints': 17, 'filter_widths': [3, 3, 3], 'channels': 128}
  videopose3d: {'num_joints_in': 17, 'in_features': 2, 'num_joints_out': 17,
                'filter_widths': [3, 3, 3, 3, 3], 'channels': 1024, 'trajectory': False}
  rie:         {'num_joints': 17, 'filter_widths': [3, 3, 3, 3, 3], 'channels': 256,
                'latent': 512, 'stage': 1 | 2 | 3}
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gastrt.skeletons import adjacency, skeleton_for

from .gast import SemCHGraphConv, GlobalGraph, SpatioTemporalModel, SpatioTemporalModelOptimized1f
from .rie import RIEModel
from .videopose3d import TemporalModel, TemporalModelOptimized1f

FAMILIES = ("gast", "videopose3d", "rie")

# Dropout of the shipped configurations (irrelevant in eval mode, kept for fidelity).
_DROPOUT = {"gast": 0.05, "videopose3d": 0.25, "rie": 0.2}

# name -> (family, config): every configuration the original repositories ship / document.
PRESETS: dict[str, tuple[str, dict]] = {
    # GAST-Net: reconstruction.py / gen_skes.py (27 -> 128 ch, 81 -> 64 ch, 243 -> 32 ch).
    "gast-27": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3], "channels": 128}),
    "gast-81": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3, 3], "channels": 64}),
    "gast-243": ("gast", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 32}),
    "gast-27-toes": ("gast", {"num_joints": 19, "filter_widths": [3, 3, 3], "channels": 128}),
    # HumanEva (README): -arc 3,3,3 with the default 128 channels; 15 joints in and out
    # (trainval/main.py converts the COCO detections to the 15-joint layout first).
    "gast-27-humaneva": ("gast", {"num_joints": 15, "filter_widths": [3, 3, 3], "channels": 128}),
    # VideoPose3D (default 1024 channels).
    "videopose3d-27": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                       "filter_widths": [3, 3, 3], "channels": 1024, "trajectory": False}),
    "videopose3d-81": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                       "filter_widths": [3, 3, 3, 3], "channels": 1024, "trajectory": False}),
    "videopose3d-243": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 17,
                                        "filter_widths": [3, 3, 3, 3, 3], "channels": 1024,
                                        "trajectory": False}),
    # pretrained_humaneva15_detectron.bin: default -arc 3,3,3; its inputs are the 17 COCO
    # keypoints of `detectron_pt_coco` (VideoPose3D does not convert them), outputs 15 joints.
    "videopose3d-27-humaneva": ("videopose3d", {"num_joints_in": 17, "in_features": 2, "num_joints_out": 15,
                                                "filter_widths": [3, 3, 3], "channels": 1024,
                                                "trajectory": False}),
    # RIE (README / arguments.py: -arc 3,3,3,3,3, -ch 256). cpn_pretrained: stage 3, -lfd 512;
    # gt_pretrained: stage 3, -lfd 256; first-stage training: stage 1, -lfd 256.
    "rie-243": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 256,
                        "latent": 512, "stage": 3}),
    "rie-243-gt": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 256,
                           "latent": 256, "stage": 3}),
    "rie-243-stage1": ("rie", {"num_joints": 17, "filter_widths": [3, 3, 3, 3, 3], "channels": 256,
                               "latent": 256, "stage": 1}),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")


def build_model(family: str, config: dict, *, optimized: bool, causal: bool = False,
                trajectory: bool = False, state_dict: dict | None = None) -> nn.Module:
    """The original architecture in eval() mode on CPU (float32).

    optimized=True: strided single-frame form (input T == receptive field -> 1 frame);
    optimized=False: dilated full-sequence form. trajectory=True (VideoPose3D only) builds
    `model_traj` (num_joints_out = 1). state_dict: if given, loaded with strict=True (copied,
    cast to float32 where the model is) without running the original weight init first.
    """
    if state_dict is None:
        return _build(family, config, optimized=optimized, causal=causal, trajectory=trajectory)
    with torch.device("meta"):
        model = _build(family, config, optimized=optimized, causal=causal, trajectory=trajectory)
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise RuntimeError(f"state_dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    sd = {}
    for k, ref in own.items():
        v = state_dict[k]
        if tuple(v.shape) != tuple(ref.shape):
            raise RuntimeError(f"size mismatch for {k}: {tuple(v.shape)} vs {tuple(ref.shape)}")
        sd[k] = v.detach().to(device="cpu", dtype=ref.dtype, copy=True)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _build(family: str, config: dict, *, optimized: bool, causal: bool, trajectory: bool) -> nn.Module:
    _check_family(family)
    fw = list(config["filter_widths"])
    if trajectory and family != "videopose3d":
        raise ValueError("trajectory models exist only for videopose3d")

    if family == "gast":
        j = config["num_joints"]
        adj = torch.from_numpy(adjacency(skeleton_for(j)))
        cls = SpatioTemporalModelOptimized1f if optimized else SpatioTemporalModel
        model = cls(adj, j, 2, j, filter_widths=fw, causal=causal, dropout=_DROPOUT[family],
                    channels=config["channels"])
    elif family == "videopose3d":
        j_out = 1 if trajectory else config["num_joints_out"]
        cls = TemporalModelOptimized1f if optimized else TemporalModel
        model = cls(config["num_joints_in"], config.get("in_features", 2), j_out, filter_widths=fw,
                    causal=causal, dropout=_DROPOUT[family], channels=config["channels"])
    else:
        j = config["num_joints"]
        if j != 17:
            raise ValueError("RIE is hard-wired to the 17-joint Human3.6M layout")
        model = RIEModel(j, 2, j, filter_widths=fw, causal=causal, dropout=_DROPOUT[family],
                         latten_features=config["latent"], channels=config["channels"],
                         is_train=False, Optimize1f=optimized, stage=config["stage"])
    return model.eval()


def _fan_in(t: torch.Tensor) -> int:
    return int(math.prod(t.shape[1:])) if t.dim() > 1 else int(t.shape[0])


def _randomize(model: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random values for every state_dict entry of `model`, in state_dict order."""
    # Which module owns each entry decides its distribution.
    kind: dict[str, str] = {}
    for mname, mod in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                kind[prefix + k] = "bn_" + k
        elif isinstance(mod, SemCHGraphConv):
            kind[prefix + "W"] = "gcn_W"
            kind[prefix + "e"] = "gcn_e"
            kind[prefix + "bias"] = "bias"
        elif isinstance(mod, GlobalGraph):
            kind[prefix + "C_k"] = "C_k"
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            kind[prefix + "weight"] = "weight"
            kind[prefix + "bias"] = "bias"

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    def uniform(shape, lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    fan_in_of: dict[str, int] = {}
    for name, t in model.state_dict().items():
        if kind.get(name) == "weight":
            fan_in_of[name.rsplit(".", 1)[0]] = _fan_in(t)

    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        k = kind.get(name)
        shape = tuple(t.shape)
        if k == "bn_weight":
            v = uniform(shape, 0.5, 1.5)
        elif k == "bn_bias":
            v = normal(shape, 0.2)
        elif k == "bn_running_mean":
            v = normal(shape, 0.3)
        elif k == "bn_running_var":
            v = uniform(shape, 0.5, 2.0)
        elif k == "bn_num_batches_tracked":
            out[name] = torch.tensor(int(torch.randint(1, 100000, (1,), generator=gen)), dtype=t.dtype)
            continue
        elif k == "weight":
            v = normal(shape, 1.0 / math.sqrt(_fan_in(t)))
        elif k == "bias":
            owner = name.rsplit(".", 1)[0]
            bound = 1.0 / math.sqrt(fan_in_of.get(owner, shape[0]))
            v = uniform(shape, -bound, bound)
        elif k == "gcn_W":     # [2, Cin, Cout]
            v = normal(shape, 1.0 / math.sqrt(shape[1]))
        elif k == "gcn_e":     # per-channel edge logits (init is constant 1)
            v = normal(shape, 1.0)
        elif k == "C_k":       # additive global attention bias (init is zeros)
            v = normal(shape, 0.1)
        else:
            raise KeyError(f"no random rule for state_dict entry {name!r}")
        out[name] = v.to(t.dtype).contiguous()
    return out


def random_state_dict(family: str, config: dict, *, seed: int, trajectory: bool = False) -> dict[str, torch.Tensor]:
    """Deterministic random weights for the (dilated == strided) key set of the model.

    Conv/linear weights ~ N(0, 1/fan_in), biases ~ U(+-1/sqrt(fan_in)); BatchNorm weight ~
    U(0.5, 1.5), bias ~ N(0, 0.2), running_mean ~ N(0, 0.3), running_var ~ U(0.5, 2); GAST
    SemCHGraphConv W ~ N(0, 1/Cin), e ~ N(0, 1), GlobalGraph C_k ~ N(0, 0.1).
    """
    _check_family(family)
    with torch.device("meta"):                        # shapes only: skip the (slow) weight init
        model = build_model(family, config, optimized=False, trajectory=trajectory)
    gen = torch.Generator().manual_seed(int(seed) + (7919 if trajectory else 0))
    return _randomize(model, gen)


def _one_step_optimizer(family: str, config: dict, models: list[nn.Module], seed: int,
                        step: bool = True) -> dict:
    """A real optimizer state_dict after one training step and one epoch of lr decay, built
    the way the original training scripts build their optimizer (step=False: the state_dict
    of the same optimizer before its first step, whose 'state' is empty)."""
    # build_model(state_dict=...) copied the weights: the step does not touch the saved ones.
    if family == "rie":
        if config["stage"] == 2:                      # stage 2 freezes the encoders (run.py)
            for name, p in models[0].named_parameters():
                if name.startswith(("LocalLayer_", "GlobalInfo.")):
                    p.requires_grad = False
        params = [p for m in models for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=0.001, amsgrad=True)
    else:
        params = [p for m in models for p in m.parameters()]
        opt = torch.optim.Adam(params, lr=0.001, amsgrad=True)
    if not step:
        return opt.state_dict()

    gen = torch.Generator().manual_seed(int(seed) + 1)
    rf = models[0].receptive_field()
    j_in = config["num_joints_in"] if family == "videopose3d" else config["num_joints"]
    x = torch.randn(2, rf, j_in, 2, generator=gen) * 0.3
    for m in models:
        m.train()
    opt.zero_grad()
    with torch.random.fork_rng(devices=[]):          # dropout masks: deterministic per seed
        torch.manual_seed(int(seed) + 2)
        loss = sum(m(x).square().mean() for m in models)
    loss.backward()
    opt.step()
    for group in opt.param_groups:                    # end of epoch: exponential lr decay
        group["lr"] *= 0.95
    return opt.state_dict()


def make_checkpoint(family: str, config: dict, *, seed: int, optimizer_step: bool = True) -> dict:
    """A checkpoint in the layout of the original training scripts:
    {'epoch', 'lr', 'optimizer', 'model_pos'} (+ 'model_traj' for videopose3d with
    config['trajectory']). 'model_pos' == random_state_dict(family, config, seed=seed) and
    'model_traj' == random_state_dict(..., trajectory=True). The originals also store
    'random_state' (a numpy RNG state tuple); it is omitted so the checkpoint loads with
    torch.load(weights_only=True). The optimizer is Adam(amsgrad) for GAST/VideoPose3D and
    AdamW(amsgrad) for RIE, as in the originals. Its amsgrad state holds three tensors per
    parameter, so a 243-frame checkpoint weighs 270-850 MB; optimizer_step=False saves the
    optimizer as it is before its first step (same keys, empty 'state'), which the test suite
    uses for large models to keep its disk use bounded.
    """
    _check_family(family)
    with_traj = family == "videopose3d" and bool(config.get("trajectory"))

    pos_sd = random_state_dict(family, config, seed=seed)
    models = [build_model(family, config, optimized=True, state_dict=pos_sd)]
    ckpt = {"epoch": 1, "lr": 0.001 * 0.95}
    traj_sd = None
    if with_traj:
        traj_sd = random_state_dict(family, config, seed=seed, trajectory=True)
        models.append(build_model(family, config, optimized=True, trajectory=True, state_dict=traj_sd))

    ckpt["optimizer"] = _one_step_optimizer(family, config, models, seed, step=optimizer_step)
    ckpt["model_pos"] = pos_sd
    if traj_sd is not None:
        ckpt["model_traj"] = traj_sd
    return ckpt
