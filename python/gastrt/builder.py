"""`gastrt.build`: checkpoint (original training-script layout) -> `.gastrt` engine file.

checkpoint import (never unpickled as code) -> family detection + lowering -> plan + weights ->
engine file, written atomically. Needs neither torch nor the compiled runtime."""
from __future__ import annotations

import hashlib
import os

import numpy as np

from ._version import __version__
from .checkpoint import load_state_dicts
from .engine_file import cast_weight, check_output_path, check_precision, write_engine
from .families import detect_and_lower


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _param_count(sd: dict) -> int:
    skip = (".running_mean", ".running_var", ".num_batches_tracked")
    return int(sum(np.asarray(v).size for k, v in sd.items() if not k.endswith(skip)))


def default_output_path(checkpoint: str) -> str:
    base, _ = os.path.splitext(checkpoint)
    return base + ".gastrt"


def lower_checkpoint(checkpoint: str, causal: bool = False):
    """-> (Lowered, load info, parameter count). Reads the checkpoint without executing pickle code."""
    pos, traj, info = load_state_dicts(checkpoint)
    lowered = detect_and_lower(pos, traj, causal)
    n = _param_count(pos) + (_param_count(traj) if traj is not None else 0)
    return lowered, info, n


def build(checkpoint, output=None, causal: bool = False, precision: str = "fp32") -> str:
    """Checkpoint (original training-script layout, bare or DataParallel state dict, zip or legacy
    torch format) -> `.gastrt` engine file. Returns the output path. Writes atomically."""
    checkpoint = os.fspath(checkpoint)
    check_precision(precision)
    output = os.fspath(output) if output is not None else default_output_path(checkpoint)
    check_output_path(output, [checkpoint])  # before the work: never replace the checkpoint
    lowered, info, nparams = lower_checkpoint(checkpoint, causal)
    pos = lowered.plans["pos"]
    pad = pos.pad
    skel = lowered.skeleton
    meta = {
        "gastrt_version": __version__,
        "family": lowered.family,
        "hyper": lowered.hyper,
        "receptive_field": pos.receptive_field,
        "pad": pad,
        "causal": bool(causal),
        "causal_shift": pad if causal else 0,
        "num_joints": pos.in_joints,
        "num_joints_out": pos.out_joints,
        "skeleton": skel.name if skel else None,
        "joints_left": list(skel.joints_left) if skel else [],
        "joints_right": list(skel.joints_right) if skel else [],
        "kps_left": list(lowered.input_lr[0]) if lowered.input_lr else [],
        "kps_right": list(lowered.input_lr[1]) if lowered.input_lr else [],
        "precision": precision,
        "parameter_count": nparams,
        "source_name": os.path.basename(checkpoint),
        "source_sha256": _sha256_file(checkpoint),
        "source_format": info.get("format"),
        "plans": {name: p.to_json() for name, p in lowered.plans.items()},
    }
    tensors = {name: cast_weight(a, precision) for name, a in lowered.weights.items()}
    write_engine(output, meta, tensors, inputs=[checkpoint])
    return output
