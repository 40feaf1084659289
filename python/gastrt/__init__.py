"""gastrt: fast inference for 2D->3D pose lifting (GAST-Net, VideoPose3D, RIE).

    import gastrt
    gastrt.build("ckpt.bin", "model.gastrt")
    eng = gastrt.load("model.gastrt")
    poses = eng.lift_sequence(keypoints)      # (T, J, 2) -> (T, J, 3)

Importing gastrt needs neither torch nor a GPU.
"""
from ._version import __version__
from .engine import Engine, build, load
from .errors import CheckpointMismatch, EngineFileError, GastrtError


def build_config() -> dict:
    """What this install was compiled with: native CPU runtime, BLAS, CUDA and its archs."""
    from .backends import native_module

    mod = native_module()
    cfg = {"version": __version__, "native": mod is not None, "cuda": False, "cuda_archs": [],
           "blas": None, "compiler": None, "cuda_version": None}
    if mod is not None:
        cfg.update(mod.build_config())
    return cfg


def cuda_available() -> bool:
    """True when this build has CUDA kernels and at least one GPU is visible."""
    from .backends import native_module

    mod = native_module()
    if mod is None or not mod.build_config().get("cuda"):
        return False
    try:
        return mod.cuda_device_count() > 0
    except Exception:
        return False


__all__ = ["__version__", "Engine", "build", "load", "build_config", "cuda_available",
           "GastrtError", "CheckpointMismatch", "EngineFileError"]
