"""gastrt: fast inference for 2D->3D pose lifting (GAST-Net, VideoPose3D, RIE).

    import gastrt
    gastrt.build("ckpt.bin", "model.gastrt")
    eng = gastrt.load("model.gastrt")
    poses = eng.lift_sequence(keypoints)      # (T, J, 2) normalised -> (T, J, 3)
    prep = gastrt.prepare_keypoints(pixels, size=(1920, 1080), layout="coco17", engine=eng)
    poses = eng.lift_sequence(prep.keypoints_2d)   # detector pixels (P, T, J, 2) -> (P, T, J, 3)

Importing gastrt needs neither torch nor a GPU.
"""
from ._version import __version__
from .backends import build_config, cuda_available
from .builder import build
from .engine import Engine, load
from .keypoints import prepare_keypoints
from .errors import (CheckpointMismatch, DeviceOutOfMemory, EngineFileError, GastrtError, NativeError,
                     OutOfMemoryError)


__all__ = ["__version__", "Engine", "build", "load", "prepare_keypoints", "build_config", "cuda_available",
           "GastrtError", "CheckpointMismatch", "EngineFileError", "NativeError", "OutOfMemoryError",
           "DeviceOutOfMemory"]
