"""What bench measures: the built-in presets (shipped architectures, seeded random weights,
engines cached under ``~/.cache/gastrt/presets/``) and TARGET resolution (preset name,
checkpoint or engine file -> an engine path, plus the weights the eager model needs)."""
from __future__ import annotations

import os
import tempfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import GastrtError
from ..engine_file import check_precision

BASE_PRESETS = ("gast-27", "gast-81", "gast-243", "videopose3d-27", "videopose3d-81",
                "videopose3d-243", "rie-243")
PRESETS = tuple(p for b in BASE_PRESETS for p in (b, b + "-causal"))


def import_torch():
    """torch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def preset_cache_dir() -> str:
    root = os.environ.get("GASTRT_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "gastrt")
    return os.path.join(root, "presets")


def split_preset(name: str) -> tuple[str, bool]:
    """'gast-27-causal' -> ('gast-27', True)."""
    if name.endswith("-causal"):
        return name[:-len("-causal")], True
    return name, False


def preset_weights(base: str):
    """-> (family, factory config, seeded random state dict in the original layout) of a base preset."""
    from ..reference import factory
    family, config = factory.PRESETS[base]
    seed = zlib.crc32(base.encode()) % 100000
    return family, dict(config), factory.random_state_dict(family, config, seed=seed)


def _engine_ok(path: str) -> bool:
    from ..engine_file import read_engine
    try:
        read_engine(path, verify=True)
    except (GastrtError, OSError):
        return False
    return True


def preset_engine(name: str, precision: str = "fp32", notes: list | None = None) -> str:
    """Path of the engine of a built-in preset, building it (seeded random weights in the
    original checkpoint layout) into the cache on first use. Needs torch to build."""
    from ..engine_file import FORMAT_VERSION
    from ..plan import PLAN_VERSION

    if name not in PRESETS:
        raise GastrtError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
    check_precision(precision)
    d = preset_cache_dir()
    fname = f"{name}-{precision}-gastrt{__version__}-f{FORMAT_VERSION}p{PLAN_VERSION}.gastrt"
    path = os.path.join(d, fname)
    if os.path.isfile(path) and _engine_ok(path):
        return path
    torch = import_torch()
    if torch is None:
        raise GastrtError(f"preset {name!r} needs torch to generate its weights, which is not installed "
                          "(pip install 'gastrt[torch]'); or bench an engine file")
    from ..builder import build
    try:
        os.makedirs(d, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=d, prefix=".probe-", delete=True)
        probe.close()
    except OSError as e:
        d = tempfile.mkdtemp(prefix="gastrt-presets-")
        path = os.path.join(d, fname)
        if notes is not None:
            notes.append(f"preset cache {preset_cache_dir()} is not writable ({e.strerror or e}); "
                         f"built into {d} (not reused)")
    base, causal = split_preset(name)
    _, _, sd = preset_weights(base)
    with tempfile.TemporaryDirectory(prefix="gastrt-preset-") as tmp:
        ck = os.path.join(tmp, f"{base}.bin")
        torch.save({"model_pos": sd}, ck)
        build(ck, path, causal=causal, precision=precision)
    return path


# ---- TARGET ------------------------------------------------------------------------------------------

def _is_checkpoint_file(path: str) -> bool:
    """Torch checkpoints are zip archives or legacy pickles; anything else is taken for an engine
    (whose reader then says clearly what is wrong with it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _config_from_hyper(family: str, hyper: dict) -> dict:
    """The factory config dict of a lowered checkpoint (its hyper-parameters)."""
    if family == "gast":
        return {"num_joints": int(hyper["num_joints"]), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"])}
    if family == "videopose3d":
        return {"num_joints_in": int(hyper["num_joints_in"]), "in_features": 2,
                "num_joints_out": int(hyper["num_joints_out"]), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"]), "trajectory": False}
    if family == "rie":
        return {"num_joints": int(hyper.get("num_joints", 17)), "filter_widths": list(hyper["filter_widths"]),
                "channels": int(hyper["channels"]), "latent": int(hyper["latent"]),
                "stage": 3 if str(hyper["stage"]) != "1" else 1}
    raise GastrtError(f"unknown family {family!r}")


@dataclass
class Target:
    """A resolved TARGET: the engine to measure and, when torch can have them, the family,
    factory config and weights of the eager model."""
    kind: str                       # preset | checkpoint | engine
    engine_path: str
    family: str | None = None
    config: dict | None = None
    state_dict: dict | None = None  # model_pos as torch tensors, for the eager model
    why_no_torch: str | None = None
    tmpdir: Any = None              # owns a checkpoint's temporary engine: cleanup() when done


def resolve_target(target, precision: str | None, causal: bool, want_torch: bool, torch,
                   notes: list) -> Target:
    """TARGET (engine file, checkpoint or preset name) -> :class:`Target`; a checkpoint is
    built into a temporary engine, a preset into the cache."""
    path = os.fspath(target)
    if os.path.exists(path):
        if os.path.isdir(path):
            raise GastrtError(f"{path}: is a directory; expected an engine file, a checkpoint or a preset name")
        if not _is_checkpoint_file(path):
            if causal:
                raise GastrtError("--causal applies to checkpoints; an engine file records whether it is causal")
            return Target("engine", path, why_no_torch="an engine file holds lowered weights (BatchNorm folded); "
                          "bench its checkpoint or a preset to compare with eager PyTorch / torch.compile")
        from ..builder import build
        from ..engine_file import read_engine
        tmp = tempfile.TemporaryDirectory(prefix="gastrt-bench-")
        eng_path = build(path, os.path.join(tmp.name, "engine.gastrt"), causal=causal,
                         precision=precision or "fp32")
        meta, _ = read_engine(eng_path, verify=False)
        t = Target("checkpoint", eng_path, meta["family"], _config_from_hyper(meta["family"], meta["hyper"]),
                   tmpdir=tmp)
        if want_torch and torch is not None:
            from ..checkpoint import load_state_dicts
            pos, _, _ = load_state_dicts(path)
            t.state_dict = {k: torch.from_numpy(np.array(v)) for k, v in pos.items()}
        return t
    if target in PRESETS:
        if causal:
            raise GastrtError(f"--causal applies to checkpoints; use the preset {split_preset(target)[0]}-causal")
        # a cached engine needs no torch; building one does (preset_engine says so)
        eng_path = preset_engine(target, precision or "fp32", notes)
        t = Target("preset", eng_path)
        if want_torch and torch is not None:
            t.family, t.config, t.state_dict = preset_weights(split_preset(target)[0])
        return t
    raise GastrtError(f"{target!r}: no such file, and not a built-in preset (presets: {', '.join(PRESETS)})")
