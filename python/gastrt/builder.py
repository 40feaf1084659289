"""`gastrt.build`: checkpoint (original training-script layout) -> `.gastrt` engine file.

checkpoint import (never unpickled as code) -> family detection + lowering -> plan + weights ->
engine file, written atomically. Needs neither torch nor the compiled runtime."""
from __future__ import annotations

import os

import numpy as np

from ._version import __version__
from .backends.numpy_backend import NumpyBackend
from .checkpoint import CheckpointError, load_state_dicts
from .engine_file import cast_weight, check_output_path, check_precision, file_sha256, write_engine
from .errors import GastrtError
from .families import Lowered, detect_and_lower


def _short(v, n: int = 80) -> str:
    """A key or value for an error line: a hostile file's 50 MB key must not become the message."""
    r = repr(v) if not isinstance(v, str) else v
    return r if len(r) <= n else r[:n] + f"... ({len(r):,} characters)"


def check_weights(sd: dict, where: str, allow_nonfinite: bool = False) -> None:
    """Values a model cannot have, named by key: complex or non-numeric tensors, NaN / inf
    (unless ``allow_nonfinite``), negative BatchNorm variances (their square root is NaN)."""
    for k, v in sd.items():
        a = np.asarray(v)
        if np.iscomplexobj(a):
            raise CheckpointError(f"{where}: {_short(k)} holds complex numbers; a pose model's weights are real")
        if a.dtype.kind not in "fiub":
            raise CheckpointError(f"{where}: {_short(k)} has dtype {a.dtype}, expected a numeric tensor")
        if a.dtype.kind != "f":
            continue
        bad = a.size - int(np.count_nonzero(np.isfinite(a)))
        if bad and not allow_nonfinite:
            raise CheckpointError(f"{where}: {_short(k)} holds {bad} NaN / inf value{'s' if bad > 1 else ''} "
                                  f"(of {a.size}); the engine would output NaN. Build anyway with "
                                  "allow_nonfinite=True (--allow-nonfinite)")
        if k.endswith("running_var") and np.any(a < 0):
            raise CheckpointError(f"{where}: {_short(k)} has {int(np.sum(a < 0))} negative BatchNorm variance(s): "
                                  "a variance is >= 0 (the checkpoint is corrupt)")


def _lower(pos, traj, causal: bool, checkpoint: str):
    """detect_and_lower, with what a broken state dict raises inside the family code (a missing
    key, a tensor of the wrong rank) turned into one CheckpointError naming the checkpoint."""
    try:
        return detect_and_lower(pos, traj, causal)
    except GastrtError:
        raise
    except KeyError as e:
        raise CheckpointError(f"{checkpoint}: inconsistent checkpoint: parameter "
                              f"{_short(e.args[0] if e.args else '?')} is missing") from None
    except (IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError) as e:
        raise CheckpointError(f"{checkpoint}: inconsistent checkpoint: its tensors do not fit the model "
                              f"({type(e).__name__}: {_short(str(e), 160)})") from None


def smoke_run(lowered, checkpoint: str, check_finite: bool = True) -> None:
    """'Builds' means 'runs': every plan once on a small random window with the NumPy oracle. A
    chain of layers whose channel counts disagree, or weights that compute NaN / inf, fail the
    build here instead of at the user's first lift."""
    be = NumpyBackend(lowered.plans, lowered.weights)
    rng = np.random.default_rng(0)
    for name, plan in lowered.plans.items():
        if plan.in_joints < 1 or plan.in_features < 1 or plan.out_joints < 1:
            raise CheckpointError(f"{checkpoint}: the {name} model has no input joints or no output joints "
                                  f"({plan.in_joints} x {plan.in_features} in, {plan.out_joints} out): its first "
                                  "or last layer is empty")
        x = (rng.standard_normal((1, plan.receptive_field, plan.in_joints, plan.in_features)) * 0.1).astype(np.float32)
        try:
            y = be.run(name, x, "window")
        except Exception as e:  # noqa: BLE001 - any failure here is the checkpoint's
            raise CheckpointError(f"{checkpoint}: the checkpoint's layers do not fit together ({name} model: "
                                  f"{_short(str(e), 160)})") from None
        if check_finite and not np.isfinite(y).all():
            raise CheckpointError(f"{checkpoint}: the {name} model computes NaN / inf on a test input "
                                  "(overflowing or corrupt weights)")


def _param_count(sd: dict) -> int:
    skip = (".running_mean", ".running_var", ".num_batches_tracked")
    return int(sum(np.asarray(v).size for k, v in sd.items() if not k.endswith(skip)))


def default_output_path(checkpoint: str) -> str:
    base, _ = os.path.splitext(checkpoint)
    return base + ".gastrt"


def lower_checkpoint(checkpoint: str, causal: bool = False, allow_nonfinite: bool = False):
    """-> (Lowered, load info, parameter count). Reads the checkpoint without executing pickle code;
    refuses values a model cannot have (check_weights) and layers that do not fit (smoke_run)."""
    pos, traj, info = load_state_dicts(checkpoint)
    check_weights(pos, checkpoint, allow_nonfinite)
    if traj is not None:
        check_weights(traj, checkpoint, allow_nonfinite)
    lowered = _lower(pos, traj, causal, checkpoint)
    smoke_run(lowered, checkpoint, check_finite=not allow_nonfinite)
    n = _param_count(pos) + (_param_count(traj) if traj is not None else 0)
    return lowered, info, n


def build(checkpoint, output=None, causal: bool = False, precision: str = "fp32",
          allow_nonfinite: bool = False) -> str:
    """Checkpoint (original training-script layout, bare or DataParallel state dict, zip or legacy
    torch format) -> `.gastrt` engine file. Returns the output path. Writes atomically.
    ``allow_nonfinite``: build even from NaN / inf weights (the engine then outputs NaN).
    (``gastrt build --precision auto``: ``gastrt.bench.precision.build_auto``.)"""
    checkpoint = os.fspath(checkpoint)
    check_precision(precision)
    output = os.fspath(output) if output is not None else default_output_path(checkpoint)
    check_output_path(output, [checkpoint])  # before the work: never replace the checkpoint
    lowered, info, nparams = lower_checkpoint(checkpoint, causal, allow_nonfinite)
    return write_lowered(lowered, info, nparams, checkpoint, output, causal=causal, precision=precision,
                         allow_nonfinite=allow_nonfinite)


def write_lowered(lowered: Lowered, info: dict, nparams: int, checkpoint: str, output: str, *,
                  causal: bool, precision: str, allow_nonfinite: bool = False,
                  extra_meta: dict | None = None) -> str:
    """A lowered checkpoint (``lower_checkpoint``) -> engine file at ``output`` in ``precision``;
    ``extra_meta`` joins the metadata (e.g. how the precision was chosen). -> output."""
    check_precision(precision)
    check_output_path(output, [checkpoint])
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
        "source_sha256": file_sha256(checkpoint),
        "source_format": info.get("format"),
        "plans": {name: p.to_json() for name, p in lowered.plans.items()},
    }
    meta.update(extra_meta or {})
    tensors = {name: cast_weight(a, precision) for name, a in lowered.weights.items()}
    if precision == "fp16" and not allow_nonfinite:  # finite fp32 values past 65504 become inf
        for name, (_, a) in tensors.items():
            if a.dtype == np.float16 and not np.isfinite(a).all() and np.isfinite(lowered.weights[name]).all():
                raise CheckpointError(f"{checkpoint}: weight {name} exceeds the fp16 range (|w| > 65504 after "
                                      "BatchNorm folding): build it in bf16 or fp32")
    write_engine(output, meta, tensors, inputs=[checkpoint])
    return output
