"""gastrt: fast inference for 2D->3D pose lifting (GAST-Net, VideoPose3D, RIE).

    import gastrt
    gastrt.build("ckpt.bin", "model.gastrt")
    eng = gastrt.load("model.gastrt")
    poses = eng.lift_sequence(keypoints)      # (T, J, 2) -> (T, J, 3)

Importing gastrt needs neither torch nor a GPU.
"""
from ._version import __version__
from .backends import build_config, cuda_available
from .builder import build
from .engine import Engine, load
from .errors import (CheckpointMismatch, DeviceOutOfMemory, EngineFileError, GastrtError, NativeError,
                     OutOfMemoryError)


__all__ = ["__version__", "Engine", "build", "load", "build_config", "cuda_available",
           "GastrtError", "CheckpointMismatch", "EngineFileError", "NativeError", "OutOfMemoryError",
           "DeviceOutOfMemory"]
